"""What the scheduler tests share: replicas as processes, tasks made through the command handlers, and
the runs read back from the log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from application.context import CommandContext
from application.tasks.commands import CreateTask
from application.tasks.handlers import HANDLERS, TaskServices
from domain.tasks.schedule import Schedule
from domain.tasks.task import RetryPolicy
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.tasks.actions import AllowList, builtin_registry
from tests.integration.tasks.replica import test_actions

ROOT = Path(__file__).resolve().parents[3]


class Replica:
    def __init__(self, dsn: str, name: str, refresh: float = 0.2) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.tasks.replica", dsn, name, str(refresh)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    async def ready(self) -> None:
        line = await asyncio.to_thread(self.process.stdout.readline)
        assert line.strip() == b"ready", f"replica {self.name} did not start"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def start_replicas(dsn: str, names: list[str]) -> list[Replica]:
    replicas = [Replica(dsn, name) for name in names]
    await asyncio.gather(*(r.ready() for r in replicas))
    return replicas


class Tasks:
    """Tasks made the way the HTTP API makes them (the command handlers over the real store)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def __aenter__(self) -> Tasks:
        self.pool = await create_pool(self.dsn, min_size=1, max_size=4)
        self.store = EventStore(self.pool, writers=1)
        await self.store.start()
        self.services = TaskServices(AggregateRepository(self.store), test_actions(builtin_registry(AllowList.parse(""))))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.stop()
        await self.pool.close()

    async def do(self, command: Any) -> Any:
        return await HANDLERS[type(command)](command, CommandContext(actor="test"), self.services)

    async def create(self, task_id: str, every: float, action: str = "test.noop", payload: dict | None = None,
                     **options: Any) -> None:
        await self.do(CreateTask(task_id=task_id, name=task_id, schedule=Schedule(kind="interval", every=every),
                                 action=action, payload=payload or {}, **options))

    async def runs(self, task_id: str) -> list[dict[str, Any]]:
        """Every event of the task's runs, from the log (not the read models)."""
        rows = await self.pool.fetch(
            "SELECT stream_id, stream_version, event_type, payload, recorded_at FROM events"
            " WHERE stream_type = 'task-run' AND payload->>'task_id' = $1 ORDER BY position", task_id)
        return [dict(r) for r in rows]

    async def status(self, task_id: str) -> str | None:
        try:
            return await self.pool.fetchval("SELECT status FROM rm_tasks.tasks WHERE task_id = $1", task_id)
        except asyncpg.UndefinedTableError:
            return None


def of_type(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == f"TaskRun.{name}"]


__all__ = ["RetryPolicy", "Replica", "Tasks", "of_type", "start_replicas"]
