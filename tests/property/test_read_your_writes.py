"""Read-your-writes through the read cache: a write followed by a read with `Charter-Min-Position` (or
`?consistent=true`) never answers from before the write, however many writers run at once and however warm
the cache is.

Hypothesis draws rounds of concurrent writers: each writer enables or disables one of a few plugins, or
updates its configuration (every write moves the plugin's stream version), then reads the plugin's detail
and the catalog list with the position its write answered (`Charter-Min-Position`), or with
`?consistent=true`. Meanwhile a reader without any consistency option keeps reading the same documents,
so the read cache and the kept reads always hold answers from before the writes. Property: every
read-your-writes answer shows the plugin at least at the stream version its write answered (the detail's
`stream_version` and ETag, and the plugin's row in the list).

The app (projectors in process) runs on an event loop of its own in a background thread; hypothesis drives
it from outside, as tests/property/test_site_isolation.py does.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import install, manifest
from tests.property.test_site_isolation import LoopThread

PLUGINS = "/api/v1/plugins"
COUNT = 3
ACTIONS = ("enable", "disable", "config")


@dataclass
class World:
    loop: LoopThread
    client: AsyncTestClient
    ids: list[str]
    reads: int = 0


async def _start(database_url: str, data_dir: Path) -> tuple[AsyncTestClient, list[str]]:
    app = create_app(make_settings(database_url, data_dir, poll_interval=0.05))
    client = AsyncTestClient(app=app, timeout=30)
    await client.__aenter__()
    client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
    ids = []
    for i in range(COUNT):
        plugin_id = f"ryw-{i}-{uuid.uuid4().hex[:6]}"
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
        response = await install(client, manifest(plugin_id, config_schema=schema))
        assert response.status_code == 201, response.text
        ids.append(plugin_id)
    return client, ids


@pytest.fixture(scope="module")
def world(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    loop = LoopThread()
    databases = DatabaseFactory(pg_server_dsn)
    try:
        url = loop.run(databases.create("ryw"))
        client, ids = loop.run(_start(url, tmp_path_factory.mktemp("charter-ryw")))
        try:
            yield World(loop, client, ids)
        finally:
            loop.run(client.__aexit__(None, None, None))
    finally:
        try:
            loop.run(databases.drop_all())
        finally:
            loop.close()


async def _write(client: AsyncTestClient, plugin_id: str, action: str, n: int) -> httpx.Response:
    if action == "config":
        return await client.put(f"{PLUGINS}/{plugin_id}/config", json={"config": {"n": n}})
    return await client.post(f"{PLUGINS}/{plugin_id}/{action}", json={"reason": "read-your-writes"})


async def _writer(world: World, plugin_id: str, action: str, n: int, consistent: bool) -> list[str]:
    """One write, then its reads; answers what went wrong (nothing: an empty list)."""
    written = await _write(world.client, plugin_id, action, n)
    if written.status_code >= 500:
        return [f"{action} {plugin_id}: {written.status_code} {written.text[:200]}"]
    if written.status_code != 200:  # lost a race on the stream, or refused (already enabled): nothing to read back
        return []
    version, position = written.json()["stream_version"], written.headers.get("Charter-Position")
    if position is None:  # nothing to record (enabling an enabled plugin)
        return []
    if consistent:
        options: dict = {"params": {"consistent": "true"}}
    else:
        options = {"headers": {"Charter-Min-Position": position}}
    problems = []
    detail = await world.client.get(f"{PLUGINS}/{plugin_id}", **options)
    if detail.status_code != 200 or detail.json()["stream_version"] < version:
        problems.append(f"detail of {plugin_id} after writing version {version}: {detail.status_code} {detail.text[:200]}")
    elif int(detail.headers["ETag"].strip('"')) < version:
        problems.append(f"ETag {detail.headers['ETag']} of {plugin_id} after writing version {version}")
    params = {"limit": "100", **options.get("params", {})}
    listed = await world.client.get(PLUGINS, params=params, headers=options.get("headers", {}))
    rows = {item["id"]: item for item in listed.json()["items"]} if listed.status_code == 200 else {}
    if plugin_id not in rows or rows[plugin_id]["stream_version"] < version:
        problems.append(f"list after writing {plugin_id} version {version}: {rows.get(plugin_id)}")
    return problems


async def _round(world: World, writes: list[tuple[int, str, bool]]) -> list[str]:
    stop = asyncio.Event()

    async def warm() -> None:  # keeps the cache holding answers from before each write
        while not stop.is_set():
            for plugin_id in world.ids:
                await world.client.get(f"{PLUGINS}/{plugin_id}")
            await world.client.get(PLUGINS, params={"limit": "100"})
            world.reads += 1
            await asyncio.sleep(0.002)  # the writers' turn too

    warming = asyncio.create_task(warm())
    await asyncio.sleep(0.01)
    try:
        found = await asyncio.gather(*(
            _writer(world, world.ids[which], action, n, consistent)
            for n, (which, action, consistent) in enumerate(writes)
        ))
    finally:
        stop.set()
        await warming
    return [problem for problems in found for problem in problems]


@settings(max_examples=10, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(
    st.lists(st.tuples(st.integers(0, COUNT - 1), st.sampled_from(ACTIONS), st.booleans()), min_size=1, max_size=6),
    min_size=1, max_size=3,
))
def test_a_read_after_a_write_never_answers_from_before_it(world: World, rounds: list[list[tuple[int, str, bool]]]) -> None:
    for writes in rounds:
        problems = world.loop.run(_round(world, writes))
        assert not problems, problems


def test_the_warm_reads_were_answered_from_the_cache(world: World) -> None:
    runtime = world.client.app.state.runtime
    assert world.reads > 0 and runtime.read_cache.hits > 0
