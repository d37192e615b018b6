"""One scheduler replica in a process of its own, for the race tests: the event store, the task read
models' projectors (one leader across replicas) and the scheduler, with two test actions beside the
built-ins (`test.noop`; `test.sleep`, which sleeps `seconds` the first time any replica runs it).

    python -m tests.integration.tasks.replica DSN NAME [REFRESH]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from application.tasks.ports import RunContext
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.projector import Notifier, ProjectionRunner
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.tasks.actions import AllowList, Registry, builtin_registry
from infrastructure.tasks.scheduler import Scheduler, SchedulerSettings
from projections.tasks.queries import Catalog
from projections.tasks.runs import RunsProjection
from projections.tasks.tasks import TasksProjection

SLEEP_SCHEMA = {"type": "object", "required": ["marker"],
                "properties": {"seconds": {"type": "number"}, "marker": {"type": "string"}}}


def test_actions(registry: Registry) -> Registry:
    async def noop(payload: dict[str, Any], run: RunContext) -> str:
        return "nothing done"

    async def sleep(payload: dict[str, Any], run: RunContext) -> str:
        """Sleeps `seconds` once across all replicas: the first to create the `marker` file."""
        try:
            open(payload["marker"], "x").close()
        except FileExistsError:
            return "already slept"
        await asyncio.sleep(payload.get("seconds", 0))
        return f"slept on attempt {run.attempt}"

    registry.register("test.noop", {"type": "object"}, noop)
    registry.register("test.sleep", SLEEP_SCHEMA, sleep)
    return registry


async def main(dsn: str, name: str, refresh: float) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=10)
    store = EventStore(pool, writers=2, max_batch=128)
    await store.start()
    notifier = Notifier(dsn)
    await notifier.start()
    runners = [ProjectionRunner(dsn, p, notifier.subscribe(), poll_interval=0.1) for p in (TasksProjection(), RunsProjection())]
    background = [asyncio.create_task(r.run()) for r in runners]
    scheduler = Scheduler(
        AggregateRepository(store), Catalog(pool), test_actions(builtin_registry(AllowList.parse("127.0.0.1"))),
        replica=name, settings=SchedulerSettings(tick=0.02, refresh=refresh, misfire_grace=0.5, recovery_grace=0.3),
    )
    print("ready", flush=True)
    await scheduler.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.2))
