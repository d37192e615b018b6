"""(c) Charter: the full application, asyncio tasks each executing `InstallPlugin` of a new plugin (load
stream, check dependencies, append through the group-committing event store), in one process or in N
replicas. Events/s = commands/s (one event each), plus commands per commit transaction."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import Progress

from ops.bench.append.phase import PhaseResult, drive_async, drive_sync
from ops.bench.append.telemetry import start_tracing, stop_tracing
from ops.bench.common import Meter, latency_summary, run_loop
from ops.bench.postgres import migrate_database

# Charter settings for the run where they differ from Settings' defaults (each overridable by its
# CHARTER_* variable). Settings' defaults are what the bench measured best on a 2-CPU machine.
CHARTER_DEFAULTS: dict[str, Any] = {}

# Commands per commit transaction: events (one per command) over distinct transaction ids.
BATCHING_SQL = (
    "SELECT count(*) AS events, count(DISTINCT transaction_id) AS transactions,"
    " count(*)::float / nullif(count(DISTINCT transaction_id), 0) AS per_tx FROM events"
)


def charter_settings(dsn: str, data_dir: Path, budget: int) -> Any:
    """The Settings of the Charter phase: bench defaults, CHARTER_WRITERS/MAX_BATCH/POOL_SIZE win."""
    from cryptography.fernet import Fernet

    from infrastructure.settings import Settings

    tuned = {k: v for k, v in CHARTER_DEFAULTS.items() if not os.environ.get(f"CHARTER_{k.upper()}")}
    settings = Settings.from_env(
        database_url=dsn,
        run_projectors=False,
        migrate_on_start=True,
        data_dir=data_dir,
        secret_key=Fernet.generate_key().decode(),
        log_level="warning",
        **tuned,
    )
    settings.pool_size = max(2, min(settings.pool_size, budget))
    return settings


def cpu_per_command(cpu_seconds: float, commands: int) -> float | None:
    """Microseconds of CPU the Charter process(es) spent per command in the measured window (all threads:
    the batch span processor's export included)."""
    return cpu_seconds / commands * 1e6 if commands > 0 and cpu_seconds > 0 else None


def phase_charter(
    dsn: str, clients: int, warmup: float, seconds: float, data_dir: Path, budget: int, progress: Progress, processes: int = 1,
    telemetry: bool = False,
) -> PhaseResult:
    """Phase (c); with `telemetry`, phase (d): the same with tracing and command metrics on (see telemetry.py)."""
    from infrastructure.telemetry.logging import configure_logging

    settings = charter_settings(dsn, data_dir, budget)
    configure_logging(settings.log_level, json=False)
    if processes > 1:
        settings.pool_size = max(2, min(settings.pool_size, budget // processes))
        return _charter_processes(settings, clients, processes, warmup, seconds, progress, telemetry)
    return run_loop(charter_phase(settings, clients, warmup, seconds, progress, telemetry))


def _phase(telemetry: bool) -> dict[str, str]:
    if telemetry:
        return {"key": "charter_telemetry", "name": "(d) Charter + telemetry",
                "title": "(c) with tracing (always-on sampler, OTLP/HTTP to a local sink) and command metrics on"}
    return {"key": "charter", "name": "(c) Charter", "title": "InstallPlugin of a new plugin through the full application (one event each)"}


async def charter_phase(settings: Any, clients: int, warmup: float, seconds: float, progress: Progress, telemetry: bool = False) -> PhaseResult:
    from application.commands import InstallPlugin
    from application.context import CommandContext
    from interfaces.runtime import start_runtime, stop_runtime

    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    meter = Meter(progress, f"{_phase(telemetry)['name']} InstallPlugin", "events", warmup, seconds)
    traced = start_tracing() if telemetry else None
    runtime = await start_runtime(settings)
    execute = runtime.execute if telemetry else runtime.application.execute
    tag = "t" if telemetry else ""  # (d) installs plugins of its own in the database (c) filled
    counts = [0] * clients
    latencies: list[float] = []
    errors: list[BaseException] = []
    numbers = itertools.count(1)
    ctx = CommandContext(actor="bench")
    source = {"kind": "bench"}
    stop = False

    async def client(i: int) -> None:
        while not stop:
            n = next(numbers)
            command = InstallPlugin(
                manifest={"id": f"bench-{tag}{n}", "name": f"Bench plugin {n}", "version": "1.0.0"}, source=source
            )
            started = time.perf_counter()
            try:
                await execute(command, ctx)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
                await asyncio.sleep(0.01)
                continue
            counts[i] += 1
            if meter.measuring:
                latencies.append(time.perf_counter() - started)

    try:
        tasks = [asyncio.create_task(client(i), name=f"bench-client-{i}") for i in range(clients)]
        try:
            first = await runtime.store.head()
            operations, elapsed = await drive_async(meter, lambda: sum(counts))
            last = await runtime.store.head()
        finally:
            stop = True
            await asyncio.gather(*tasks, return_exceptions=True)
        async with runtime.pool.acquire() as conn:
            overall = await conn.fetchrow(
                BATCHING_SQL
            )
            window = await conn.fetchrow(
                BATCHING_SQL + " WHERE position > $1 AND position <= $2",
                first,
                last,
            )
    finally:
        await stop_runtime(runtime)
        if traced is not None:
            stop_tracing(traced)
    completed = sum(counts)
    result = PhaseResult(
        **_phase(telemetry),
        method=f"{'Runtime' if telemetry else 'application'}.execute on {loop_name}, {clients} tasks, "
        f"writers={settings.writers} max_batch={settings.max_batch} pool={settings.pool_size}",
        unit="events",
        rate=operations / elapsed,
        operations=operations,
        seconds=elapsed,
        clients=clients,
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        latency_ms=latency_summary(latencies),
        cpu=meter.cpu,
        extra={
            "loop": loop_name,
            "settings": {"writers": settings.writers, "max_batch": settings.max_batch, "pool_size": settings.pool_size},
            "commands_per_transaction": round(overall["per_tx"] or 0.0, 2),
            "commands_per_transaction_window": round(window["per_tx"] or 0.0, 2),
            "transactions": overall["transactions"],
            "events_in_log": overall["events"],
            "commands_completed": completed,
            "cpu_us_per_command": cpu_per_command(meter.cpu.get("process_cores", 0.0) * elapsed, operations),
        },
    )
    meter.done(result)
    return result


def _charter_child(
    settings: Any, clients: int, prefix: str, counter: Any, measuring: Any, stop: Any, out: Any, telemetry: bool = False
) -> None:
    """One replica of the Charter phase: its own runtime (pool, group committer) and `clients` callers."""
    run_loop(_charter_replica(settings, clients, prefix, counter, measuring, stop, out, telemetry))


async def _charter_replica(
    settings: Any, clients: int, prefix: str, counter: Any, measuring: Any, stop: Any, out: Any, telemetry: bool = False
) -> None:
    from application.commands import InstallPlugin
    from application.context import CommandContext
    from infrastructure.telemetry.logging import configure_logging
    from interfaces.runtime import start_runtime, stop_runtime

    configure_logging(settings.log_level, json=False)
    settings.migrate_on_start = False
    traced = start_tracing() if telemetry else None
    runtime = await start_runtime(settings)
    execute = runtime.execute if telemetry else runtime.application.execute
    out.put(("ready", prefix))
    latencies: list[float] = []
    errors: list[str] = []
    ctx = CommandContext(actor="bench")
    source = {"kind": "bench"}
    running = True

    async def client(i: int) -> None:
        n = 0
        while running:
            n += 1
            pid = f"bench-{prefix}-{i}-{n}"
            command = InstallPlugin(manifest={"id": pid, "name": f"Bench plugin {pid}", "version": "1.0.0"}, source=source)
            started = time.perf_counter()
            try:
                await execute(command, ctx)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))
                await asyncio.sleep(0.01)
                continue
            counter.value += 1
            if measuring.is_set():
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    window: list[tuple[float, int]] = []  # (process CPU, commands) as the measured window opens and closes
    while not stop.is_set():
        await asyncio.sleep(0.05)
        if len(window) == 0 and measuring.is_set() or len(window) == 1 and not measuring.is_set():
            window.append((time.process_time(), counter.value))
    running = False
    if len(window) == 1:
        window.append((time.process_time(), counter.value))
    await asyncio.gather(*tasks, return_exceptions=True)
    await stop_runtime(runtime)
    if traced is not None:
        stop_tracing(traced)
    cpu = {"seconds": window[1][0] - window[0][0], "commands": window[1][1] - window[0][1]} if len(window) == 2 else None
    out.put(("done", {"latencies": latencies, "errors": len(errors), "first_error": errors[0] if errors else None, "cpu": cpu}))


def _charter_processes(
    settings: Any, clients: int, processes: int, warmup: float, seconds: float, progress: Progress, telemetry: bool = False
) -> PhaseResult:
    """The Charter phase spread over `processes` replicas, as Charter runs in production (N API processes)."""
    import multiprocessing
    import queue as queues

    asyncio.run(migrate_database(settings.database_url))
    mp = multiprocessing.get_context("spawn")
    counters = [mp.Value("q", 0, lock=False) for _ in range(processes)]
    measuring, stop, out = mp.Event(), mp.Event(), mp.Queue()
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    children = [
        mp.Process(
            target=_charter_child,
            args=(settings, shares[i], f"{'t' if telemetry else 'r'}{i}", counters[i], measuring, stop, out, telemetry),
            daemon=True,
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        ready = 0
        while ready < processes:
            kind, _ = out.get(timeout=120)
            ready += kind == "ready"
        meter = Meter(progress, f"{_phase(telemetry)['name']} x{processes} processes", "events", warmup, seconds)

        def count() -> int:
            return sum(c.value for c in counters)

        operations, elapsed = drive_sync(meter, count, stop, measuring)
        reports = []
        while len(reports) < processes:
            try:
                kind, body = out.get(timeout=60)
            except queues.Empty:
                break
            if kind == "done":
                reports.append(body)
    finally:
        stop.set()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()

    async def batching() -> Any:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await conn.fetchrow(
                BATCHING_SQL
            )
        finally:
            await conn.close()

    overall = asyncio.run(batching())
    windows = [r["cpu"] for r in reports if r.get("cpu")]
    latencies = [x for r in reports for x in r["latencies"]]
    errors = sum(r["errors"] for r in reports)
    first_error = next((r["first_error"] for r in reports if r["first_error"]), None)
    result = PhaseResult(
        **_phase(telemetry),
        method=f"{'Runtime' if telemetry else 'application'}.execute in {processes} processes (replicas) on uvloop, {clients} tasks in all, "
        f"writers={settings.writers} max_batch={settings.max_batch} pool={settings.pool_size} each",
        unit="events",
        rate=operations / elapsed,
        operations=operations,
        seconds=elapsed,
        clients=clients,
        errors=errors,
        first_error=first_error,
        latency_ms=latency_summary(latencies),
        cpu=meter.cpu,
        extra={
            "processes": processes,
            "settings": {"writers": settings.writers, "max_batch": settings.max_batch, "pool_size": settings.pool_size},
            "commands_per_transaction": round(overall["per_tx"] or 0.0, 2),
            "commands_per_transaction_window": round(overall["per_tx"] or 0.0, 2),
            "transactions": overall["transactions"],
            "events_in_log": overall["events"],
            "commands_completed": overall["events"],
            "cpu_us_per_command": cpu_per_command(sum(w["seconds"] for w in windows), sum(w["commands"] for w in windows)),
        },
    )
    meter.done(result)
    return result
