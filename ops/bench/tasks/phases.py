"""The measured phases: an idle loop's timer jitter (the floor), the scheduler with a recorder in place
of the port that starts runs, and the scheduler on the full path (every run appended to the store)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from application.tasks.ports import RunContext
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.tasks.scheduler import Entry, Scheduler, SchedulerSettings
from ops.bench.common import latency_summary
from ops.bench.tasks.setup import bench_actions
from projections.tasks.queries import Catalog

JITTER_PERIOD = 0.05  # the idle loop wakes at every 50 ms boundary of the wall clock


@dataclass
class Window:
    """What one phase saw in its measured window."""

    open: bool = False
    lateness: list[float] = field(default_factory=list)  # seconds from tick (or boundary) to start (or wake)
    started: int = 0
    cpu: float = 0.0
    wall: float = 0.0

    def measure(self) -> None:
        self.open, self._cpu, self._wall = True, time.process_time(), time.monotonic()

    def close(self) -> None:
        self.open = False
        self.cpu, self.wall = time.process_time() - self._cpu, time.monotonic() - self._wall

    def summary(self, offered: float | None = None) -> dict[str, Any]:
        out = {"lateness_ms": latency_summary(self.lateness), "samples": len(self.lateness),
               "started_per_s": round(self.started / self.wall, 1) if self.wall else 0.0,
               "cores": round(self.cpu / self.wall, 4) if self.wall else None, "seconds": round(self.wall, 2)}
        if offered:
            out["offered_per_s"] = offered
            out["started_share"] = round(self.started / (offered * self.wall), 3) if self.wall else 0.0
        return out


async def idle_jitter(warmup: float, seconds: float) -> dict[str, Any]:
    """Floor: wake at each JITTER_PERIOD boundary of the wall clock, nothing else on the loop."""
    window = Window()
    stop = time.time() + warmup + seconds
    measure_at = time.time() + warmup
    while True:
        now = time.time()
        if now >= stop:
            break
        if not window.open and now >= measure_at:
            window.measure()
        target = (now // JITTER_PERIOD + 1) * JITTER_PERIOD
        await asyncio.sleep(target - time.time())
        if window.open:
            window.lateness.append(time.time() - target)
            window.started += 1
    window.close()
    return window.summary()


async def scheduler_phase(dsn: str, warmup: float, seconds: float, tasks: int, *, full: bool) -> dict[str, Any]:
    """The scheduler over `tasks` tasks due every second: with runs started by a recorder (`full` False)
    or through the store (`full` True: each run appended, executed, its outcome appended)."""
    window = Window()
    pool = await create_pool(dsn, min_size=2, max_size=10)
    store = EventStore(pool, writers=4, max_batch=512)
    await store.start()

    def executed(_: RunContext) -> None:
        if window.open:
            window.started += 1  # full path: counted when the action runs

    async def recorder(scheduler: Scheduler, entry: Entry, tick: datetime, trigger: str) -> None:
        if window.open:
            window.lateness.append((scheduler.clock() - tick).total_seconds())
            window.started += 1

    async def through_the_store(scheduler: Scheduler, entry: Entry, tick: datetime, trigger: str) -> None:
        won = scheduler.stats.won
        await Scheduler.request(scheduler, entry, tick, trigger)  # appended, and the action handed to the loop
        if window.open and scheduler.stats.won > won:
            window.lateness.append((scheduler.clock() - tick).total_seconds())

    settings = SchedulerSettings(reload=max(1.0, min(30.0, seconds / 2)))  # a full catalog read in the window
    scheduler = Scheduler(AggregateRepository(store), Catalog(pool), bench_actions(executed if full else None),
                          replica="bench", settings=settings, launch=through_the_store if full else recorder)
    loop = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(warmup)
        window.measure()
        await asyncio.sleep(seconds)
        window.close()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await scheduler.stop()
        await store.stop()
        await pool.close()
    found = window.summary(offered=float(tasks))
    found.update(tasks=tasks, fired=scheduler.stats.fired, won=scheduler.stats.won, lost=scheduler.stats.lost,
                 full_catalog_reads_every_s=settings.reload)
    return found
