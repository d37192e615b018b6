"""The tasks a phase schedules: created through the command handlers on the real store (as HTTP creates
them), then the tasks read models built from the log (what every replica's scheduler reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from application.context import CommandContext
from application.tasks.commands import CreateTask
from application.tasks.handlers import HANDLERS, TaskServices
from application.tasks.ports import RunContext
from domain.tasks.schedule import Schedule
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.rebuild import rebuild
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.tasks.actions import Registry
from projections.tasks.runs import RunsProjection
from projections.tasks.tasks import TasksProjection

ACTION = "bench.noop"
BATCH = 500  # commands in flight while creating (the store commits them in groups)


def bench_actions(on_run: Callable[[RunContext], None] | None = None) -> Registry:
    """The benchmark's one action: does nothing (but tell `on_run`), so a run costs only its events."""
    registry = Registry()

    async def noop(payload: dict[str, Any], run: RunContext) -> str:
        if on_run is not None:
            on_run(run)
        return "nothing done"

    registry.register(ACTION, {"type": "object"}, noop)
    return registry


async def create_tasks(dsn: str, count: int, every: float = 1.0) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=8)
    store = EventStore(pool, writers=4, max_batch=512)
    await store.start()
    try:
        services = TaskServices(AggregateRepository(store), bench_actions())
        ctx = CommandContext(actor="bench")
        for start in range(0, count, BATCH):
            await asyncio.gather(*(
                HANDLERS[CreateTask](CreateTask(task_id=f"bench-{n:06d}", name=f"bench {n}", action=ACTION,
                                                schedule=Schedule(kind="interval", every=every)), ctx, services)
                for n in range(start, min(count, start + BATCH))
            ))
    finally:
        await store.stop()
        await pool.close()
    await rebuild(dsn, [TasksProjection(), RunsProjection()], chunk=20_000, fresh=True)
