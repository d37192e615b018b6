"""`/ready` tells the truth: each check flips to failing with its reason when its component fails, and
back when it recovers. NATS is a throw-away server of the test's own (the shared one is never stopped)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.embedded.nats import EmbeddedNats
from infrastructure.embedded.process import find_free_port
from interfaces.app import create_app
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import install, manifest, unique_id


async def _until(client, predicate: Callable[[dict], bool], timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = (await client.get("/ready")).json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_projection_beyond_its_lag_limit_is_not_ready(databases, tmp_path: Path) -> None:
    settings = make_settings(
        await databases.create("ready_lag"), tmp_path, run_projectors=False, ready_max_projection_lag=0, bootstrap_admin_email=None
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/ready")

        assert response.status_code == 503
        check = response.json()["checks"]["projection:plugins"]
        assert check["status"] == "failing"
        assert "events behind (limit 0)" in check["reason"]
        assert check["for_seconds"] >= 0
        components = (await client.get("/health")).json()["components"]
        assert components["projection:plugins"]["status"] == "failing"


@pytest.fixture
def throwaway_nats(tmp_path: Path):
    server = EmbeddedNats(tmp_path / "nats", port=find_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_nats_down_and_a_stuck_relay_are_not_ready_until_they_recover(
    databases, tmp_path: Path, throwaway_nats: EmbeddedNats
) -> None:
    settings = make_settings(
        await databases.create("ready_nats"),
        tmp_path / "charter",
        nats_url=throwaway_nats.url,
        ready_relay_stall_seconds=0.5,
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        await _until(client, lambda body: body["status"] == "ready")

        await asyncio.to_thread(throwaway_nats.stop)
        body = await _until(client, lambda body: body["checks"].get("nats", {}).get("status") == "failing")
        assert "NATS connection down" in body["checks"]["nats"]["reason"]
        assert (await client.get("/ready")).status_code == 503

        # Events keep being written while NATS is away; the relay cannot publish them: stuck.
        for _ in range(3):
            assert (await install(client, manifest(unique_id("stuck")))).status_code == 201
        body = await _until(client, lambda body: body["checks"].get("relay", {}).get("status") == "failing")
        assert body["checks"]["relay"]["lag"] >= 3
        assert "stuck" in body["checks"]["relay"]["reason"]

        await asyncio.to_thread(throwaway_nats.start)
        body = await _until(client, lambda body: body["status"] == "ready", timeout=30)
        assert body["checks"]["relay"]["lag"] == 0
        assert body["checks"]["relay"]["last_error"] is None
        assert body["checks"]["nats"]["status"] == "ok"
