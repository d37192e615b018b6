"""Hostile sizes: an event larger than CHARTER_EVENT_MAX_BYTES is refused whole (413), every string a
client sends is bounded (400 naming it), and trace headers are checked before they reach event metadata."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from application.errors import EventTooLarge
from application.ports import AppendRequest, NewEvent
from infrastructure.embedded.nats import NATS_DEFAULT_MAX_PAYLOAD, nats_max_payload
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from interfaces.app import create_app
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import PLUGINS, install, manifest, unique_id

LIMIT = 8 * 1024  # a small limit keeps the hostile bodies small
ROLES = "/api/v1/admin/roles"
USERS = "/api/v1/admin/users"


@pytest.fixture(scope="module")
async def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("limits"), event_max_bytes=LIMIT))
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def events_of(pool: asyncpg.Pool, stream_id_like: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_type, metadata FROM events WHERE stream_id LIKE $1 ORDER BY position", stream_id_like
    )


def refused(response: Any, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error["details"]["field"] == field, error
    return error


class TestEventSizeLimit:
    async def test_an_install_whose_event_is_too_large_answers_413_naming_the_field_and_writes_nothing(self, client, pool) -> None:
        plugin_id = unique_id("big")
        # auto_enable: the command records two events; neither may be written
        response = await install(client, manifest(plugin_id), config={"blob": "x" * LIMIT}, auto_enable=True)
        error = refused(response, 413, "EVENT_TOO_LARGE", "config")
        assert error["details"]["limit"] == LIMIT and error["details"]["size"] > LIMIT
        assert await events_of(pool, f"%{plugin_id}%") == []

    async def test_a_configuration_too_large_is_refused_and_the_plugin_keeps_its_version(self, client, pool) -> None:
        plugin_id = unique_id("bigcfg")
        assert (await install(client, manifest(plugin_id))).status_code == 201
        before = await events_of(pool, f"%{plugin_id}%")
        response = await client.put(f"{PLUGINS}/{plugin_id}/config", json={"config": {"items": ["y" * 100] * 100}})
        refused(response, 413, "EVENT_TOO_LARGE", "config")
        assert await events_of(pool, f"%{plugin_id}%") == before

    async def test_numbers_that_postgresql_would_print_in_full_count_at_their_stored_size(self, client, pool) -> None:
        plugin_id = unique_id("exp")
        # 40 numbers of 6 characters, stored by PostgreSQL as 301 digits each: about 12 KB
        response = await install(client, manifest(plugin_id), config={"n": [1e300] * 40})
        refused(response, 413, "EVENT_TOO_LARGE", "config")
        assert await events_of(pool, f"%{plugin_id}%") == []

    async def test_an_event_just_under_the_limit_is_written(self, client) -> None:
        response = await install(client, manifest(unique_id("fits")), config={"blob": "x" * (LIMIT // 2)})
        assert response.status_code == 201, response.text


class TestGroupCommit:
    async def test_a_command_too_large_fails_alone_and_the_others_of_its_batch_commit(self, database_url) -> None:
        pool = await create_pool(database_url, min_size=1, max_size=4)
        store = EventStore(pool, writers=1, max_event_bytes=LIMIT)
        try:

            def request(label: str, size: int) -> AppendRequest:
                stream = f"limits-{label}-{uuid.uuid4().hex[:8]}"
                events = [
                    NewEvent(uuid.uuid4(), stream, "probe", v, "Probe.Recorded", {"blob": "z" * size}, {},
                             datetime.now(timezone.utc))
                    for v in (1, 2)
                ]
                return AppendRequest(stream, 0, events, GENESIS)

            small = [request("small", 10) for _ in range(5)]
            large = request("large", LIMIT)
            outcomes = await asyncio.gather(*(store.append(r) for r in [*small, large]), return_exceptions=True)
            assert isinstance(outcomes[-1], EventTooLarge) and outcomes[-1].details["field"] == "blob"
            assert all(o.position is not None for o in outcomes[:-1]), outcomes
            assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", large.stream_id) == 0
            assert await pool.fetchval(
                "SELECT count(*) FROM events WHERE stream_id = any($1::text[])", [r.stream_id for r in small]
            ) == 10
        finally:
            await store.stop()
            await pool.close()

    def test_the_embedded_nats_server_takes_the_largest_event(self) -> None:
        assert nats_max_payload(256 * 1024) == NATS_DEFAULT_MAX_PAYLOAD
        assert nats_max_payload(4 * 1024 * 1024) >= 4 * 1024 * 1024 * 3 // 2 + 4096


class TestBoundedStrings:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "r" * 129}, "name"),
            ({"name": "ok-role", "description": "d" * 4001}, "description"),
            ({"name": "ok-role", "permissions": [f"p{i}:read" for i in range(65)]}, "permissions"),
            ({"name": "ok-role", "permissions": ["p" * 129]}, "permissions.0"),
        ],
    )
    async def test_a_role_with_an_over_long_field_is_refused(self, client, body, field) -> None:
        refused(await client.post(ROLES, json=body), 400, "VALIDATION_FAILED", field)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "a" * 250 + "@x.io", "password": "long-enough-password"}, "email"),
            ({"email": "bounded@x.io", "password": "long-enough-password", "full_name": "n" * 201}, "full_name"),
        ],
    )
    async def test_a_user_with_an_over_long_field_is_refused(self, client, body, field) -> None:
        refused(await client.post(USERS, json=body), 400, "VALIDATION_FAILED", field)

    async def test_a_reason_is_bounded(self, client) -> None:
        plugin_id = unique_id("reason")
        assert (await install(client, manifest(plugin_id))).status_code == 201
        response = await client.post(f"{PLUGINS}/{plugin_id}/disable", json={"reason": "r" * 4001})
        refused(response, 400, "VALIDATION_FAILED", "reason")

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"name": "n" * 201}, "manifest.name"),
            ({"description": "d" * 4001}, "manifest.description"),
            ({"tags": ["t"] * 65}, "manifest.tags"),
            ({"capabilities": ["c" * 65]}, "manifest.capabilities.0"),
            ({"dependencies": {"d" * 129: ">=1"}}, "manifest.dependencies"),
            ({"events": {"emits": ["e"] * 257}}, "manifest.events.emits"),
        ],
    )
    async def test_a_manifest_with_an_over_long_field_is_refused(self, client, fields, field) -> None:
        response = await install(client, manifest(unique_id("mf"), **fields))
        refused(response, 400, "MANIFEST_INVALID", field)

    async def test_an_archive_file_name_is_bounded(self, client) -> None:
        from tests.e2e.plugin_kit import archive

        content = archive(manifest(unique_id("fn")))
        response = await client.post(f"{PLUGINS}/install", files={"archive": ("f" * 201 + ".zip", content, "application/zip")})
        refused(response, 400, "VALIDATION_FAILED", "archive.filename")

    @pytest.mark.parametrize(
        ("path", "params", "field"),
        [
            (f"{PLUGINS}/{'p' * 129}", {}, "plugin_id"),
            (f"{USERS}/{'u' * 129}", {}, "user_id"),
            ("/api/v1/events", {"event_type": "e" * 129}, "event_type"),
            ("/api/v1/events", {"site_id": "s" * 1025}, "site_id"),
            (USERS, {"search": "s" * 1025}, "search"),
        ],
    )
    async def test_over_long_ids_and_filters_are_refused(self, client, path, params, field) -> None:
        refused(await client.get(path, params=params), 400, "VALIDATION_FAILED", field)

    async def test_an_over_long_site_id_cannot_be_granted(self, client) -> None:
        response = await client.post(f"{USERS}/{uuid.uuid4()}/roles/viewer", params={"site_id": "s" * 129})
        refused(response, 400, "VALIDATION_FAILED", "site_id")


class TestHeaders:
    @pytest.mark.parametrize(
        ("header", "length"), [("X-Correlation-Id", 129), ("X-Causation-Id", 129), ("Idempotency-Key", 201)]
    )
    async def test_an_over_long_id_header_is_refused_by_name(self, client, pool, header, length) -> None:
        plugin_id = unique_id("hdr")
        response = await install(client, manifest(plugin_id), headers={header: "h" * length})
        refused(response, 400, "VALIDATION_FAILED", header)
        assert await events_of(pool, f"%{plugin_id}%") == []

    @pytest.mark.parametrize(
        "traceparent",
        [
            "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # all-zero trace id
            "00-" + "a" * 32 + "-" + "0" * 16 + "-01",  # all-zero parent id
            "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # uppercase
            "00-" + "a" * 31 + "-" + "1" * 16 + "-01",
            "00-" + "a" * 32 + "-" + "1" * 16 + "-01" + "x" * 5000,
            "not a trace",
        ],
    )
    async def test_a_malformed_traceparent_is_ignored_not_stored(self, client, pool, traceparent) -> None:
        plugin_id = unique_id("tp")
        response = await install(client, manifest(plugin_id), headers={"traceparent": traceparent})
        assert response.status_code == 201, response.text
        [event] = await events_of(pool, f"%{plugin_id}%")
        assert "traceparent" not in event["metadata"]

    async def test_a_well_formed_traceparent_is_kept(self, client, pool) -> None:
        plugin_id = unique_id("tp-ok")
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = await install(client, manifest(plugin_id), headers={"traceparent": traceparent})
        assert response.status_code == 201, response.text
        [event] = await events_of(pool, f"%{plugin_id}%")
        assert event["metadata"]["traceparent"] == traceparent
