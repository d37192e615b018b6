"""A rebuild killed mid-way leaves the live read models untouched and resumes from its last chunk; the
resumed rebuild equals a clean rebuild equals the read models the live projectors kept up to date."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from application.commands import InstallPlugin, RestartPlugin, UpdatePlugin
from application.context import CommandContext
from application.identity.handlers import CreateRole, GrantRole, RegisterUser, RevokeRole
from application.sites.commands import ActivateExtension, CreateSite, DeactivateExtension, ReconfigureExtension
from infrastructure.eventlog.projector import ProjectionRunner, checkpoint, has_processed, lag
from infrastructure.eventlog.rebuild import BUILD, rebuild
from infrastructure.settings import Settings
from interfaces.runtime import Runtime, start_runtime, stop_runtime
from projections import PROJECTIONS
from tests.integration.test_projection_recovery import BASES, LEAVES, execute, last_in_global_order, manifest, write_lifecycle
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 2  # many small chunks: the kill lands between two of them
POLL = 0.05
TABLES = {
    "rm_plugins": {"plugins": "plugin_id", "plugin_versions": "plugin_id, seq", "plugin_dependencies": "plugin_id, depends_on"},
    "rm_identity": {"users": "user_id", "user_grants": "user_id, role_key, site_id", "roles": "role_key", "permissions": "name"},
    "rm_sites": {"sites": "site_id", "site_extensions": "site_id, plugin_id", "signoffs": "signoff_id",
                 "plugin_switches": "plugin_id", "audit_trail": "site_id, seq"},
}


async def of_types(pool, types: list[str]) -> int:  # type: ignore[no-untyped-def]
    return await pool.fetchval("SELECT count(*) FROM events WHERE stream_type = ANY($1)", types)


async def read_models(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    return {
        f"{schema}.{table}": [dict(r) for r in await conn.fetch(f"SELECT * FROM {schema}.{table} ORDER BY {order}")]
        for schema, tables in TABLES.items()
        for table, order in tables.items()
    }


async def caught_up(pool: asyncpg.Pool) -> bool:
    last = await last_in_global_order(pool)
    for projection in PROJECTIONS:
        if not (await has_processed(pool, projection.name, last) and await lag(pool, projection.name) == 0):
            return False
    return True


async def write_identity(runtime: Runtime, tag: str) -> None:
    await execute(runtime, CreateRole(name=f"tinkerer-{tag}", permissions=["plugins:read"]))
    for n in range(2):
        result = await runtime.application.execute(
            RegisterUser(email=f"{tag}{n}@example.org", password="correct horse battery", full_name=f"User {n}"),
            CommandContext(actor="test"),
        )
        user_id = result.stream_id.split(":", 1)[1]
        await execute(runtime, GrantRole(user_id=user_id, role=f"tinkerer-{tag}", site_id="site-1"))
        await execute(runtime, GrantRole(user_id=user_id, role=f"tinkerer-{tag}"))
        await execute(runtime, RevokeRole(user_id=user_id, role=f"tinkerer-{tag}", site_id="site-1"))


async def write_sites(runtime: Runtime, tag: str) -> None:
    """A site with an extension and its dependent, reconfigured, then the dependent deactivated."""
    site, base, leaf = f"plant-{tag}", BASES[3], LEAVES[3]  # enabled at install, never disabled
    await execute(
        runtime,
        CreateSite(site_id=site, name=f"Plant {tag}"),
        ActivateExtension(site_id=site, plugin_id=base, configuration={"level": 1, "token": f"site-{tag}"}),
        ActivateExtension(site_id=site, plugin_id=leaf),
        ReconfigureExtension(site_id=site, plugin_id=base, configuration={"level": 2, "token": "********"}),
        DeactivateExtension(site_id=site, plugin_id=leaf, reason="done"),
    )


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


class Projectors:
    """The live projectors, one runner per projection, as `charter serve` runs them."""

    def __init__(self, dsn: str) -> None:
        self.runners = [ProjectionRunner(dsn, p, poll_interval=POLL) for p in PROJECTIONS]
        self.tasks = [asyncio.create_task(r.run()) for r in self.runners]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def build_position(pool: asyncpg.Pool, name: str) -> int:
    return await pool.fetchval("SELECT position FROM checkpoints WHERE name = $1", name + BUILD) or 0


async def kill_rebuild_midway(dsn: str, pool: asyncpg.Pool) -> None:
    """`charter projections rebuild --all` in a process of its own, SIGKILLed once its builds have
    committed a chunk and before they reach the end of the log."""
    env = {**os.environ, "CHARTER_DATABASE_URL": dsn, "CHARTER_REBUILD_CHUNK": str(CHUNK), "CHARTER_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "interfaces.cli", "projections", "rebuild", "--all"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: all_started(pool), 60, "every build has committed a chunk")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


async def all_started(pool: asyncpg.Pool) -> bool:
    return all([await build_position(pool, p.name) > 0 for p in PROJECTIONS])


class TestInterruptedRebuild:
    async def test_a_killed_rebuild_resumes_and_equals_a_clean_rebuild_and_the_live_read_models(
        self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        dsn, pool = runtime.settings.database_url, runtime.pool
        projectors = Projectors(dsn)  # role grants read the access read model
        try:
            await write_lifecycle(runtime)
            await write_identity(runtime, "a")
            await write_sites(runtime, "a")
            await eventually(lambda: caught_up(pool), 30, "the live projectors have caught up")
            before = await read_models(pool)
            live_cursors = [await checkpoint(pool, p.name) for p in PROJECTIONS]

            await kill_rebuild_midway(dsn, pool)

            last = await last_in_global_order(pool)
            for projection in PROJECTIONS:  # interrupted in the middle, the live read models untouched
                assert 0 < await build_position(pool, projection.name) < last, projection.name
            assert [await checkpoint(pool, p.name) for p in PROJECTIONS] == live_cursors
            assert await read_models(pool) == before

            await execute(
                runtime,
                RestartPlugin(plugin_id=BASES[0]),
                UpdatePlugin(plugin_id=BASES[1], manifest=manifest(BASES[1], "5.0.0"), source={"kind": "test"}),
                InstallPlugin(manifest=manifest("after-the-kill", "1.0.0", BASES[2]), source={"kind": "test"}),
            )
            await write_identity(runtime, "b")
            await write_sites(runtime, "b")
            await eventually(lambda: caught_up(pool), 30, "the live projectors have caught up")
            live = await read_models(pool)
            assert len(live["rm_sites.audit_trail"]) == 10 and len(live["rm_sites.site_extensions"]) == 2
            total = await pool.fetchval("SELECT count(*) FROM events")

            resumed = await rebuild(dsn, PROJECTIONS, chunk=CHUNK)

            assert 0 < resumed < total, "the resumed rebuild replayed the whole log again"
            assert await pool.fetchval("SELECT count(*) FROM checkpoints WHERE name LIKE '%' || $1", BUILD) == 0
            assert await read_models(pool) == live

            # A rebuild reads only the events of the stream types its projections fold.
            folded = sorted(set().union(*(p.stream_types for p in PROJECTIONS)))
            assert await rebuild(dsn, PROJECTIONS, chunk=1000, fresh=True) == await of_types(pool, folded) < total
            assert await read_models(pool) == live
            # Rows let go by a row cache too small for the log are loaded again once the chunk that
            # wrote them has committed (the next chunk is folded while the one before is written).
            monkeypatch.setattr("projections.batch.ROW_CACHE_LIMIT", 3)
            assert await rebuild(dsn, PROJECTIONS, chunk=3, fresh=True) == await of_types(pool, folded)
            assert await read_models(pool) == live
            monkeypatch.undo()
            identity = next(p for p in PROJECTIONS if p.name == "identity")
            assert await rebuild(dsn, [identity], chunk=7, fresh=True) == await of_types(pool, sorted(identity.stream_types))
            assert await read_models(pool) == live

            await execute(runtime, RestartPlugin(plugin_id=BASES[0]))  # the live projectors go on after the swap
            await eventually(lambda: caught_up(pool), 30, "the live projectors have caught up")
            assert await pool.fetchval("SELECT restarts FROM rm_plugins.plugins WHERE plugin_id = $1", BASES[0]) == (
                live_restarts(live, BASES[0]) + 1
            )
        finally:
            await projectors.stop()


def live_restarts(models: dict[str, list[dict[str, Any]]], plugin_id: str) -> int:
    return next(row["restarts"] for row in models["rm_plugins.plugins"] if row["plugin_id"] == plugin_id)
