"""Idempotency fingerprints are keyed (HMAC), so a stored one cannot confirm a guess of the request behind it."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from application.identity.handlers import RegisterUser
from application.bus import fingerprint
from infrastructure.eventlog.migrate import available
from infrastructure.plugins.secrets import IDEMPOTENCY_FINGERPRINT, derive_key
from interfaces.app import create_app
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import assert_error

REGISTER = "/api/v1/admin/users"  # an administrator creating an account: a password in the body, a 201 with the result


@pytest.fixture(scope="module")
async def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("charter-idem")))
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


async def stored_fingerprint(database_url: str, key: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT fingerprint FROM idempotency_keys WHERE key = $1", key)
    finally:
        await conn.close()


def registration(password: str) -> dict[str, str]:
    return {"email": f"idem-{uuid.uuid4().hex[:10]}@charter.test", "password": password, "full_name": "Idem"}


class TestStoredFingerprint:
    async def test_is_not_a_plain_digest_of_a_body_holding_a_password(self, client, database_url: str) -> None:
        password = f"correct horse battery {uuid.uuid4().hex[:6]}"
        data = registration(password)
        key = f"idem-{uuid.uuid4()}"

        response = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})
        assert response.status_code == 201, response.text

        stored = await stored_fingerprint(database_url, key)
        command = RegisterUser(email=data["email"], password=password, full_name=data["full_name"])
        encoded = msgspec.json.encode(command, order="sorted")
        guesses = [  # what someone holding the table and guessing the password could compute
            hashlib.sha256(b"RegisterUser\0" + encoded).hexdigest(),  # the digest stored before this fix
            hashlib.sha256(encoded).hexdigest(),
            hashlib.sha256(json.dumps(data).encode()).hexdigest(),
            hashlib.sha256(response.request.content).hexdigest(),
        ]
        assert stored and not any(guess in stored for guess in guesses), stored
        assert password not in stored

    async def test_depends_on_the_server_key(self) -> None:
        command = RegisterUser(email="someone@charter.test", password="hunter2")
        one = fingerprint(command, derive_key("server one secret", IDEMPOTENCY_FINGERPRINT))
        other = fingerprint(command, derive_key("server two secret", IDEMPOTENCY_FINGERPRINT))

        assert one != other
        assert one == fingerprint(command, derive_key("server one secret", IDEMPOTENCY_FINGERPRINT))
        assert derive_key("server one secret", IDEMPOTENCY_FINGERPRINT) != derive_key("server one secret", b"other use")


class TestReuseDetection:
    async def test_the_same_request_again_replays_the_first_result(self, client) -> None:
        data, key = registration("first password of this user"), f"idem-{uuid.uuid4()}"

        first = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})
        again = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})

        assert first.status_code == 201, first.text
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["stream_version"] == first.json()["stream_version"]

    async def test_the_key_reused_for_another_request_is_refused(self, client) -> None:
        data, key = registration("a password"), f"idem-{uuid.uuid4()}"
        first = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})
        assert first.status_code == 201, first.text

        other = await client.post(REGISTER, json={**data, "password": "another password"}, headers={"Idempotency-Key": key})

        assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED")


class TestKeysRecordedBeforeKeying:
    async def test_a_key_whose_plain_digest_was_dropped_still_replays(self, client, database_url: str) -> None:
        """Migration 0005 replaces the old plain digests with 'unverified'; such a key answers its first result."""
        data, key = registration("a password from before"), f"idem-{uuid.uuid4()}"
        first = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE idempotency_keys SET fingerprint = 'unverified' WHERE key = $1", key)
        finally:
            await conn.close()

        again = await client.post(REGISTER, json=data, headers={"Idempotency-Key": key})

        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"

    async def test_the_migration_drops_plain_digests_and_keeps_keyed_ones(self, fresh_database_url: str) -> None:
        migration = next(m for m in available() if m.name == "idempotency_keyed_fingerprints")
        plain = hashlib.sha256(b"RegisterUser\0{...}").hexdigest()
        keyed = fingerprint(RegisterUser(email="a@charter.test", password="p"), b"k" * 32)
        conn = await asyncpg.connect(fresh_database_url)
        try:
            await conn.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, stream_id, version) VALUES ('old', $1, 's', 1), ('new', $2, 's', 1)",
                plain,
                keyed,
            )
            await conn.execute(migration.sql)
            rows = dict(await conn.fetch("SELECT key, fingerprint FROM idempotency_keys"))
        finally:
            await conn.close()

        assert rows == {"old": "unverified", "new": keyed}
