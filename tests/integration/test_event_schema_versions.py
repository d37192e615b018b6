"""A log written with version 1 of the Plugin events reads, after version 2 exists, exactly like the same
history written with version 2: through the aggregates, a projection rebuild, the live projector, the
event log API and the plugin API. Its hash chains still verify, over the payloads as stored.

The version 2 log is written by Charter itself (commands through the app); the version 1 log is a copy
of it, event by event (same ids, times, metadata and positions), with the events whose shape changed
put back in their version 1 shape (`reason` "" for no reason, `schema_version` 1), appended raw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from application.commands import DisablePlugin, EnablePlugin, InstallPlugin, RestartPlugin, UninstallPlugin
from application.context import CommandContext
from application.ports import AppendRequest, NewEvent
from domain.plugins.plugin import STREAM_TYPE, Plugin, plugin_uuid
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.eventlog.rebuild import rebuild
from infrastructure.eventlog.repository import AggregateRepository
from interfaces.app import create_app
from interfaces.runtime import start_runtime, stop_runtime
from projections.plugins.projection import SCHEMA, PluginsProjection
from tests.e2e.conftest import admin_token, make_settings
from tests.waiting import eventually

CHANGED = {"Plugin.Disabled", "Plugin.Uninstalled"}  # at version 2 now; their v1 wrote "" for no reason
PLUGINS = ("alpha", "beta", "gamma")
TABLES = {"plugins": "plugin_id", "plugin_versions": "plugin_id, seq", "plugin_dependencies": "plugin_id, depends_on"}


def manifest(plugin_id: str) -> dict[str, Any]:
    return {"id": plugin_id, "name": plugin_id.title(), "version": "1.0.0", "category": "test"}


HISTORY = [
    InstallPlugin(manifest=manifest("alpha"), source={"kind": "test"}, auto_enable=True),
    DisablePlugin(plugin_id="alpha"),  # no reason
    EnablePlugin(plugin_id="alpha"),
    DisablePlugin(plugin_id="alpha", reason="incident 42"),
    InstallPlugin(manifest=manifest("beta"), source={"kind": "test"}, auto_enable=True),
    DisablePlugin(plugin_id="beta"),  # no reason, left disabled
    InstallPlugin(manifest=manifest("gamma"), source={"kind": "test"}),
    RestartPlugin(plugin_id="gamma"),
    UninstallPlugin(plugin_id="gamma"),  # no reason
]


@asynccontextmanager
async def app_on(database_url: str, data_dir: Path) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(database_url, data_dir))
    async with AsyncTestClient(app=app) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield client


def as_version_1(row: asyncpg.Record) -> NewEvent:
    """A stored event of the version 2 log as Charter wrote it before version 2 existed."""
    payload, version = dict(row["payload"]), row["schema_version"]
    if row["event_type"] in CHANGED:
        assert version == 2, row["event_type"]
        payload["reason"] = payload["reason"] or ""
        version = 1
    return NewEvent(
        event_id=row["event_id"], stream_id=row["stream_id"], stream_type=row["stream_type"],
        stream_version=row["stream_version"], event_type=row["event_type"], payload=payload,
        metadata=row["metadata"], recorded_at=row["recorded_at"], site_id=row["site_id"], schema_version=version,
    )


async def copy_as_version_1(source: asyncpg.Pool, target: EventStore) -> int:
    """Append every event of `source` to `target`, one by one in the global order; answers how many were
    written in their version 1 shape."""
    heads: dict[str, bytes] = {}
    old = 0
    for row in await source.fetch("SELECT * FROM events ORDER BY position"):
        event = as_version_1(row)
        old += event.schema_version != row["schema_version"]
        request = AppendRequest(event.stream_id, event.stream_version - 1, [event], heads.get(event.stream_id, GENESIS))
        result = await target.append(request)
        assert result.position == row["position"]  # the copy keeps every position
        heads[event.stream_id] = request.hashes[0]
    return old


async def read_model(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [dict(r) for r in await pool.fetch(f"SELECT * FROM {SCHEMA}.{table} ORDER BY {key}")]
        for table, key in TABLES.items()
    }


async def aggregates(store: EventStore) -> dict[str, dict[str, Any]]:
    repository = AggregateRepository(store)
    out = {}
    for plugin_id in PLUGINS:
        loaded = await repository.load(Plugin, STREAM_TYPE, plugin_id, plugin_uuid(plugin_id))
        out[plugin_id] = dict(vars(loaded.aggregate), stream_version=loaded.version)
    return out


async def through_http(client: AsyncTestClient) -> dict[str, Any]:
    """The event log of the plugin streams (minus the writing transactions' ids, which no copy keeps) and
    each plugin's detail."""
    out: dict[str, Any] = {}
    for plugin_id in PLUGINS:
        response = await client.get("/api/v1/events", params={"stream": f"plugin:{plugin_id}", "limit": 100})
        assert response.status_code == 200, response.text
        out[f"events {plugin_id}"] = [{k: v for k, v in e.items() if k != "transaction_id"} for e in response.json()["items"]]
        response = await client.get(f"/api/v1/plugins/{plugin_id}", params={"consistent": "true"})
        assert response.status_code == 200, response.text
        out[f"plugin {plugin_id}"] = response.json()
    return out


async def projected(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval(
        "SELECT coalesce((SELECT position FROM checkpoints WHERE name = 'plugins'), 0) >= (SELECT max(position) FROM events)"
    )


async def write_version_2_log(database_url: str, data_dir: Path) -> None:
    """HISTORY through Charter's own commands (in this test's event loop: the test client's app runs in
    a loop of its own)."""
    runtime = await start_runtime(make_settings(database_url, data_dir, run_projectors=False))
    try:
        for command in HISTORY:
            await runtime.application.execute(command, CommandContext(actor="auditor-test", request_id="schema"))
    finally:
        await stop_runtime(runtime)


async def test_a_log_written_at_version_1_reads_like_one_written_at_version_2(databases, tmp_path: Path) -> None:
    v2_url, v1_url = await databases.create("v2"), await databases.create("v1")
    await write_version_2_log(v2_url, tmp_path / "writer")
    v2_pool, v1_pool = await create_pool(v2_url, min_size=1, max_size=2), await create_pool(v1_url, min_size=1, max_size=2)
    v2_store, v1_store = EventStore(v2_pool, writers=1), EventStore(v1_pool, writers=1)
    try:
        assert await copy_as_version_1(v2_pool, v1_store) == 4  # alpha's two disables, beta's, gamma's uninstall
        stored = await v1_pool.fetch("SELECT payload FROM events WHERE event_type = ANY($1) AND schema_version = 1", list(CHANGED))
        assert sorted(r["payload"].get("reason") for r in stored) == ["", "", "", "incident 42"]

        # aggregates, as loaded by every command and every as-of replay
        assert await aggregates(v1_store) == await aggregates(v2_store)

        # a projection rebuilt from each log
        assert await rebuild(v1_url, [PluginsProjection()]) == await rebuild(v2_url, [PluginsProjection()])
        assert await read_model(v1_pool) == await read_model(v2_pool)

        # the live projector, the event log API and the plugin API of an app on each log
        async with app_on(v2_url, tmp_path / "v2") as client:
            await eventually(lambda: projected(v2_pool), 30, "the v2 log is projected")
            expected_http = await through_http(client)
        async with app_on(v1_url, tmp_path / "v1") as client:
            await eventually(lambda: projected(v1_pool), 30, "the v1 log is projected")
            assert await through_http(client) == expected_http
        assert await read_model(v1_pool) == await read_model(v2_pool)
        assert [e["payload"]["reason"] for e in expected_http["events alpha"][1:]] == [None, None, "incident 42"]

        # the hash chains cover the payloads as stored: the version 1 log still verifies
        for plugin_id in PLUGINS:
            assert await v1_store.verify_stream(f"plugin:{plugin_id}")
            assert await v2_store.verify_stream(f"plugin:{plugin_id}")
    finally:
        await v1_store.stop()
        await v2_store.stop()
        await v1_pool.close()
        await v2_pool.close()
