"""Live projection lag under `charter bench append`'s load: while the append phase's Charter runtime
installs plugins, the projectors run in the same process (one runner per projection, woken by NOTIFY,
as in `charter serve`) and a sampler notes, every `SAMPLE_EVERY` seconds, the last committed event of
the global order and when each projection's cursor passes it. Lag = that time. After the load the
projectors drain what is left, so the last samples count too."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

import asyncpg

from infrastructure.eventlog.projector import Notifier, ProjectionRunner
from ops.bench.append.charter import charter_phase, charter_settings
from ops.bench.common import latency_summary, run_loop

SAMPLE_EVERY = 0.02
LAST = "SELECT transaction_id::text::bigint AS tx, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
CURSORS = "SELECT name, transaction_id::text::bigint AS tx, position FROM checkpoints WHERE name = ANY($1::text[])"


DRAIN_SECONDS = 30.0


async def sample(dsn: str, names: list[str], warmup: float, stop: asyncio.Event) -> dict[str, list[float]]:
    """Seconds from an event being the newest committed to each projection having handled it; after
    `stop`, no new samples, until the pending ones are handled (at most DRAIN_SECONDS)."""
    conn = await asyncpg.connect(dsn)
    pending = {name: deque[tuple[float, tuple[int, int]]]() for name in names}
    found: dict[str, list[float]] = {name: [] for name in names}
    try:
        await asyncio.sleep(warmup)
        drain_until = None
        while drain_until is None or (any(pending.values()) and time.perf_counter() < drain_until):
            if stop.is_set() and drain_until is None:
                drain_until = time.perf_counter() + DRAIN_SECONDS
            last = await conn.fetchrow(LAST) if drain_until is None else None
            now = time.perf_counter()
            if last:
                for queue in pending.values():
                    queue.append((now, (last["tx"], last["position"])))
            cursors = {r["name"]: (r["tx"], r["position"]) for r in await conn.fetch(CURSORS, names)}
            now = time.perf_counter()
            for name, queue in pending.items():
                cursor = cursors.get(name, (0, 0))
                while queue and queue[0][1] <= cursor:
                    found[name].append(now - queue.popleft()[0])
            await asyncio.sleep(SAMPLE_EVERY)
    finally:
        await conn.close()
    return found


def phase_lag(dsn: str, clients: int, warmup: float, seconds: float, data_dir: Path, budget: int, progress: Any) -> dict[str, Any]:
    from infrastructure.telemetry.logging import configure_logging
    from projections import PROJECTIONS

    settings = charter_settings(dsn, data_dir, budget)  # the append phase's: its runtime runs no projectors
    configure_logging(settings.log_level, json=False)
    names = [p.name for p in PROJECTIONS]

    async def run() -> tuple[Any, dict[str, list[float]]]:
        notifier = Notifier(dsn)
        await notifier.start()
        runners = [ProjectionRunner(dsn, p, notifier.subscribe(), poll_interval=settings.poll_interval) for p in PROJECTIONS]
        tasks = [asyncio.create_task(r.run()) for r in runners]
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(dsn, names, warmup, stop))
        try:
            try:
                load = await charter_phase(settings, clients, warmup, seconds, progress)
            finally:
                stop.set()
            return load, await sampler
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await notifier.stop()

    load, samples = run_loop(run())
    return {
        "append_rate": load.rate,
        "append_events": load.operations,
        "clients": clients,
        "seconds": load.seconds,
        "errors": load.errors,
        "lag_ms": {name: latency_summary(found) for name, found in samples.items()},
        "samples": {name: len(found) for name, found in samples.items()},
    }
