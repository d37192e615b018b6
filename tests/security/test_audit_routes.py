"""The audit routes, happy path and hostile: the public key is public and never the private half; the
online verification answers only to audit:read (or admin) everywhere, is bounded, and names the field
of a bad parameter with a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.audit.signing import load_public_key
from interfaces.app import create_app
from tests.e2e.access_kit import account_with, send
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import assert_error

AUDIT = "/api/v1/audit"


@pytest.fixture(scope="module")
async def world(databases, tmp_path_factory) -> AsyncIterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("charter-audit")
    settings = make_settings(await databases.create("audit"), data_dir, audit_seal_interval=0.2)
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield {"client": client, "data_dir": data_dir}


@pytest.fixture
def client(world) -> AsyncTestClient:
    return world["client"]


async def test_the_public_key_is_published_to_anyone_and_is_the_sealers(client, world) -> None:
    response = await send(client, "GET", f"{AUDIT}/public-key", anonymous=True)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"algorithm", "public_key_pem", "fingerprint"} and body["algorithm"] == "ed25519"
    assert "PRIVATE" not in response.text
    private_pem = (Path(world["data_dir"]) / "audit-ed25519.pem").read_bytes()
    assert private_pem.decode() not in response.text
    assert load_public_key(private_pem) == load_public_key(body["public_key_pem"].encode())
    assert body["fingerprint"].startswith("sha256:") and len(body["fingerprint"]) == 7 + 64
    assert oct((Path(world["data_dir"]) / "audit-ed25519.pem").stat().st_mode & 0o777) == "0o600"


async def test_an_administrator_verifies_the_sealed_log(client) -> None:
    response = await send(client, "GET", f"{AUDIT}/verify")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["findings"] == [] and body["ok"] is True and body["complete"] is True and body["events"] > 0


async def test_an_auditor_verifies_and_goes_on_from_a_checkpoint(client) -> None:
    auditor = await account_with(client, ("auditor", None), prefix="auditor")
    for _ in range(50):  # the sealer runs every 0.2 s: wait for a checkpoint
        first = (await send(client, "GET", f"{AUDIT}/verify", token=auditor.access_token, params={"max_events": 1})).json()
        if first["last_checkpoint"]:
            break
        import asyncio

        await asyncio.sleep(0.2)
    assert first["last_checkpoint"], first

    rest = await send(client, "GET", f"{AUDIT}/verify", token=auditor.access_token,
                      params={"from_checkpoint": first["last_checkpoint"]})  # fmt: skip

    assert rest.status_code == 200 and rest.json()["ok"] is True, rest.text


@pytest.mark.parametrize("grants", [(), (("viewer", None),), (("auditor", "site-a"),)], ids=["no-role", "viewer", "site-auditor"])
async def test_verification_needs_audit_read_everywhere(client, grants) -> None:
    account = await account_with(client, *grants)

    response = await send(client, "GET", f"{AUDIT}/verify", token=account.access_token)

    assert response.status_code == 403, response.text


async def test_verification_needs_a_token(client) -> None:
    assert_error(await send(client, "GET", f"{AUDIT}/verify", anonymous=True), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_events": "0"}, "max_events"),
        ({"max_events": "200001"}, "max_events"),
        ({"max_events": "99999999999999999999999"}, "max_events"),
        ({"max_events": "abc"}, "max_events"),
        ({"from_checkpoint": "-1"}, "from_checkpoint"),
        ({"from_checkpoint": "2147483648"}, "from_checkpoint"),
        ({"from_checkpoint": "1.5"}, "from_checkpoint"),
        ({"from_checkpoint": "x" * 5000}, "from_checkpoint"),
    ],
)
async def test_bad_bounds_answer_400_naming_the_parameter(client, params, field) -> None:
    response = await send(client, "GET", f"{AUDIT}/verify", params=params)

    assert response.status_code == 400, response.text
    assert field in response.text


async def test_an_unknown_checkpoint_answers_404(client) -> None:
    assert_error(
        await send(client, "GET", f"{AUDIT}/verify", params={"from_checkpoint": "2147483647"}),
        404, "CHECKPOINT_NOT_FOUND", "from_checkpoint",
    )  # fmt: skip
