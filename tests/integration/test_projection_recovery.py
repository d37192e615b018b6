"""The plugins projection survives a crash mid-batch, catches up, rebuilds to the same rows, and has one leader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from application.commands import (
    ConfigurePlugin,
    DisablePlugin,
    EnablePlugin,
    InstallPlugin,
    ReloadPlugin,
    RestartPlugin,
    RollBackPlugin,
    UninstallPlugin,
    UpdatePlugin,
)
from application.context import CommandContext
from application.ports import StoredEvent
from domain.plugins.plugin import STREAM_TYPE, Plugin, plugin_uuid
from infrastructure.eventlog.eventstore import init_connection, read_global
from infrastructure.eventlog.projector import ProjectionRunner, apply_batch, checkpoint, ensure_projection, has_processed, lag
from infrastructure.eventlog.rebuild import rebuild
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.settings import Settings
from interfaces.runtime import Runtime, start_runtime, stop_runtime
from projections.plugins.projection import DDL, SCHEMA, PluginsProjection

BATCH = 100
POLL = 0.05
TABLES = {
    "plugins": "plugin_id",
    "plugin_versions": "plugin_id, seq",
    "plugin_dependencies": "plugin_id, depends_on",
}
CONFIG_SCHEMA = {
    "type": "object",
    "properties": {"level": {"type": "integer", "minimum": 0}, "token": {"type": "string", "secret": True}},
}
BASES = [f"base-{i:02d}" for i in range(10)]
LEAVES = [f"leaf-{i:02d}" for i in range(30)]


def manifest(plugin_id: str, version: str, depends_on: str | None = None) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "name": plugin_id.replace("-", " ").title(),
        "version": version,
        "category": "base" if depends_on is None else "leaf",
        "tags": ["test", plugin_id[:4]],
        "dependencies": {depends_on: ">=1.0"} if depends_on else {},
        "config_schema": CONFIG_SCHEMA,
    }


def base_of(leaf: str) -> str:
    return BASES[int(leaf.split("-")[1]) % len(BASES)]


class Killed(Exception):
    """Stands in for the process dying in the middle of a batch."""


class CrashingProjection:
    """The plugins projection, dying after handling part of a batch."""

    name, schema, version, ddl = PluginsProjection.name, PluginsProjection.schema, PluginsProjection.version, DDL

    def __init__(self, after: int) -> None:
        self.inner = PluginsProjection()
        self.after = after
        self.rows_before_crash: int | None = None

    async def handle(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        await self.inner.handle(conn, events[: self.after])
        self.rows_before_crash = await conn.fetchval("SELECT count(*) FROM plugin_versions")
        raise Killed


async def execute(runtime: Runtime, *commands: Any) -> None:
    for command in commands:
        await runtime.application.execute(command, CommandContext(actor="test", request_id="recovery"))


async def write_lifecycle(runtime: Runtime) -> None:
    """Installs, updates, configuration, kill switch, restarts, rollbacks: many plugins interleaved."""

    async def life(plugin_id: str, index: int, depends_on: str | None) -> None:
        await execute(
            runtime,
            InstallPlugin(
                manifest=manifest(plugin_id, "1.0.0", depends_on),
                source={"kind": "test", "ref": f"{plugin_id}-1.0.0"},
                config={"level": 1, "token": f"secret-{plugin_id}"},
                auto_enable=index % 3 == 0,
            ),
            UpdatePlugin(plugin_id=plugin_id, manifest=manifest(plugin_id, "1.1.0", depends_on), source={"kind": "test"}),
            ConfigurePlugin(plugin_id=plugin_id, config={"level": 2 + index, "token": "********"}),
            RestartPlugin(plugin_id=plugin_id, reason="test"),
        )
        if index % 2 == 0:
            await execute(
                runtime,
                UpdatePlugin(plugin_id=plugin_id, manifest=manifest(plugin_id, "1.2.0", depends_on), source={"kind": "t"}),
            )
        if index % 2 == 1:
            await execute(
                runtime,
                ConfigurePlugin(plugin_id=plugin_id, config={"level": index, "token": f"rotated-{index}"}),
                RestartPlugin(plugin_id=plugin_id),
            )
        if index % 4 == 0:
            await execute(runtime, DisablePlugin(plugin_id=plugin_id, reason=f"incident {index}"))
        if index % 8 == 0:
            await execute(runtime, EnablePlugin(plugin_id=plugin_id, reason="fixed"))
        if index % 5 == 0:
            await execute(runtime, RollBackPlugin(plugin_id=plugin_id))
        await execute(runtime, ReloadPlugin(plugin_id=plugin_id))

    await asyncio.gather(*(life(p, i, None) for i, p in enumerate(BASES)))
    await asyncio.gather(*(life(p, i, base_of(p)) for i, p in enumerate(LEAVES)))


async def write_removals(runtime: Runtime) -> None:
    """Uninstalls (which ask the read model for dependents), a forced one, a reinstall."""
    await asyncio.gather(
        *(execute(runtime, UninstallPlugin(plugin_id=p, reason="retired", cleanup_data=i % 2 == 0))
          for i, p in enumerate(LEAVES[20:]))
    )
    await execute(
        runtime,
        UninstallPlugin(plugin_id=BASES[9], reason="forced", force=True),
        InstallPlugin(manifest=manifest(LEAVES[25], "2.0.0", BASES[1]), source={"kind": "test"}, config={"level": 9}),
        RestartPlugin(plugin_id=LEAVES[25]),
    )


async def snapshot(conn: asyncpg.Connection | asyncpg.Pool, schema: str = SCHEMA) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [dict(r) for r in await conn.fetch(f'SELECT * FROM "{schema}".{table} ORDER BY {order}')]
        for table, order in TABLES.items()
    }


async def last_in_global_order(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def caught_up(pool: asyncpg.Pool) -> bool:
    return await has_processed(pool, "plugins", await last_in_global_order(pool)) and await lag(pool, "plugins") == 0


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    await init_connection(conn)
    return conn


class Running:
    """A ProjectionRunner of the plugins projection, running as a task."""

    def __init__(self, dsn: str) -> None:
        self.runner = ProjectionRunner(dsn, PluginsProjection(), poll_interval=POLL)
        self.task = asyncio.create_task(self.runner.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def runtime(fresh_database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=fresh_database_url,
        run_projectors=False,
        data_dir=tmp_path,
        secret_key=Fernet.generate_key().decode(),
        consistency_timeout=10.0,
    )
    started = await start_runtime(settings)
    yield started
    await stop_runtime(started)


class TestCrashInTheMiddleOfABatch:
    async def test_the_cursor_stays_at_the_last_good_batch_and_no_partial_batch_is_visible(
        self, runtime: Runtime
    ) -> None:
        await write_lifecycle(runtime)
        dsn = runtime.settings.database_url
        total = await runtime.pool.fetchval("SELECT count(*) FROM events")
        assert total > 2 * BATCH + BATCH // 2
        conn = await connect(dsn)
        try:
            projection = PluginsProjection()
            await ensure_projection(conn, projection)
            await conn.execute(f'SET search_path TO "{SCHEMA}", public')
            assert await apply_batch(conn, projection, BATCH) == BATCH
            after_first = await checkpoint(conn, "plugins")
            crashing = CrashingProjection(after=BATCH // 2)

            with pytest.raises(Killed):
                await apply_batch(conn, crashing, BATCH)

            assert await checkpoint(conn, "plugins") == after_first
            first_batch = await read_global(conn, (0, 0), BATCH)
            assert after_first[:2] == (first_batch[-1].transaction_id, first_batch[-1].position)
            crashed = await snapshot(conn)
            assert crashing.rows_before_crash is not None
            assert crashing.rows_before_crash > len(crashed["plugin_versions"]), "the crash came before any work"
            assert crashed == await state_after(conn, first_batch)
        finally:
            await conn.close()

        running = Running(dsn)
        try:
            await eventually(lambda: caught_up(runtime.pool))
        finally:
            await running.stop()
        assert await snapshot(runtime.pool) == await replayed_from_scratch(dsn)

    async def test_a_killed_runner_resumes_from_its_checkpoint(self, runtime: Runtime) -> None:
        await write_lifecycle(runtime)
        dsn = runtime.settings.database_url
        first = Running(dsn)
        await eventually(lambda: caught_up(runtime.pool))
        await first.stop()

        await execute(
            runtime,
            RestartPlugin(plugin_id=BASES[0]),
            UpdatePlugin(plugin_id=LEAVES[0], manifest=manifest(LEAVES[0], "4.0.0", base_of(LEAVES[0])),
                         source={"kind": "test"}),
        )
        assert not await caught_up(runtime.pool)
        second = Running(dsn)
        try:
            await eventually(lambda: caught_up(runtime.pool))
        finally:
            await second.stop()

        assert await snapshot(runtime.pool) == await replayed_from_scratch(dsn)


async def state_after(conn: asyncpg.Connection, events: list[StoredEvent]) -> dict[str, list[dict[str, Any]]]:
    """The read model as exactly `events` leave it, built in a scratch schema."""
    scratch = "rm_plugins__expected"
    async with conn.transaction():
        await conn.execute(f'CREATE SCHEMA "{scratch}"')
        await conn.execute(f'SET LOCAL search_path TO "{scratch}", public')
        await conn.execute(DDL)
        await PluginsProjection().handle(conn, events)
        expected = await snapshot(conn, scratch)
        await conn.execute(f'DROP SCHEMA "{scratch}" CASCADE')
    return expected


async def replayed_from_scratch(dsn: str) -> dict[str, list[dict[str, Any]]]:
    """The read model as the whole log leaves it, replayed in one go into a scratch schema."""
    conn = await connect(dsn)
    try:
        events, cursor = [], (0, 0)
        while batch := await read_global(conn, cursor, 1000):
            events.extend(batch)
            cursor = (batch[-1].transaction_id, batch[-1].position)
        return await state_after(conn, events)
    finally:
        await conn.close()


class TestCatchUpAndRebuild:
    async def test_rebuild_reproduces_the_caught_up_read_model_and_the_runner_keeps_going(
        self, runtime: Runtime
    ) -> None:
        dsn = runtime.settings.database_url
        running = Running(dsn)
        try:
            await write_lifecycle(runtime)
            await write_removals(runtime)
            await eventually(lambda: caught_up(runtime.pool))
            caught = await snapshot(runtime.pool)
            assert len(caught["plugins"]) == len(BASES) + len(LEAVES)

            progress: list[tuple[int, int]] = []
            replayed = await rebuild(dsn, [PluginsProjection()], progress=lambda done, total: progress.append((done, total)))

            # the plugin streams' events: a rebuild reads only the stream types its projections fold
            assert replayed == await runtime.pool.fetchval("SELECT count(*) FROM events WHERE stream_type = 'plugin'")
            assert progress and progress[-1][0] == replayed
            assert await snapshot(runtime.pool) == caught
            assert await caught_up(runtime.pool)

            await execute(
                runtime,
                UpdatePlugin(plugin_id=BASES[0], manifest=manifest(BASES[0], "3.0.0"), source={"kind": "test"}),
                InstallPlugin(manifest=manifest("after-rebuild", "1.0.0", BASES[0]), source={"kind": "test"},
                              auto_enable=True),
            )
            await eventually(lambda: caught_up(runtime.pool))
            assert running.runner.leading
            rows = {r["plugin_id"]: r for r in await runtime.pool.fetch(f"SELECT * FROM {SCHEMA}.plugins")}
            assert rows[BASES[0]]["version"] == "3.0.0"
            assert rows["after-rebuild"]["status"] == "enabled"
        finally:
            await running.stop()
        assert await snapshot(runtime.pool) == await replayed_from_scratch(dsn)

    async def test_the_read_model_agrees_with_the_aggregates(self, runtime: Runtime) -> None:
        running = Running(runtime.settings.database_url)
        try:
            await write_lifecycle(runtime)
            await write_removals(runtime)
            await eventually(lambda: caught_up(runtime.pool))
        finally:
            await running.stop()
        repository = AggregateRepository(runtime.store)

        for row in await runtime.pool.fetch(f"SELECT * FROM {SCHEMA}.plugins ORDER BY plugin_id"):
            loaded = await repository.load(Plugin, STREAM_TYPE, row["plugin_id"], plugin_uuid(row["plugin_id"]))
            plugin = loaded.aggregate
            assert (row["status"], row["version"], row["enabled"], row["config"], row["stream_version"]) == (
                plugin.status, plugin.current_version, plugin.enabled, plugin.config, loaded.version
            ), row["plugin_id"]
            assert (row["restarts"], row["reloads"]) == (plugin.restarts, plugin.reloads), row["plugin_id"]
            if plugin.installed:
                assert row["disabled_reason"] == plugin.disabled_reason, row["plugin_id"]


class TestLeadership:
    async def test_a_second_runner_stands_by_until_the_leader_is_gone(self, runtime: Runtime) -> None:
        dsn = runtime.settings.database_url
        await execute(
            runtime,
            *(InstallPlugin(manifest=manifest(p, "1.0.0"), source={"kind": "test"}) for p in BASES[:3]),
        )
        first = Running(dsn)
        second: Running | None = None
        try:
            await eventually(lambda: asyncio.sleep(0, first.runner.leading))
            second = Running(dsn)
            for _ in range(10):  # the stand-by polls for the lock several times and never gets it
                await asyncio.sleep(POLL)
                assert first.runner.leading and not second.runner.leading
            await eventually(lambda: caught_up(runtime.pool))

            await first.stop()
            await eventually(lambda: asyncio.sleep(0, second.runner.leading))
            await execute(runtime, RestartPlugin(plugin_id=BASES[0]), UpdatePlugin(
                plugin_id=BASES[1], manifest=manifest(BASES[1], "1.5.0"), source={"kind": "test"}))
            await eventually(lambda: caught_up(runtime.pool))
        finally:
            await first.stop()
            if second is not None:
                await second.stop()

        assert await snapshot(runtime.pool) == await replayed_from_scratch(dsn)
        assert await runtime.pool.fetchval(f"SELECT restarts FROM {SCHEMA}.plugins WHERE plugin_id = $1", BASES[0]) == 1
