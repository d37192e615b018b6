"""`charter bench append`: how fast commands become durable events, next to two baselines from the same run.

Three phases run one after the other on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one
started for the run), in a fresh database `charter_bench_<random>` that is dropped at the end. Each phase
runs `--clients` concurrent clients for a short warm-up, then is measured for `--seconds`:

(a) ceiling        one-row INSERT transactions into a plain table: pgbench with a custom script, or an
                   asyncpg loop when no pgbench binary is found. Rows/s = transactions/s.
(b) eventsourcing  eventsourcing 9.5's stock PostgreSQL application recorder (psycopg 3 pool, schema
                   `es_stock`): threads each saving a new one-event aggregate. Events/s.
(c) charter        the full application: asyncio tasks each executing `InstallPlugin` of a new plugin
                   (load stream, check dependencies, append through the group-committing event store).
                   Events/s = commands/s (one event each), plus commands per commit transaction.

Targets: Charter >= 1.0x the ceiling and >= 10x the stock recorder. The report is printed and written to
`<report>/append-<timestamp>.json` and `.md`.

Charter's Settings for the run can be varied through the usual CHARTER_WRITERS, CHARTER_MAX_BATCH and
CHARTER_POOL_SIZE environment variables; the values used are part of the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
from eventsourcing.domain import Aggregate, event
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from ops.bench.common import bench_progress, write_report

CEILING_TARGET = 1.0  # Charter events/s over one-row INSERT transactions/s
STOCK_TARGET = 10.0  # Charter events/s over eventsourcing's stock recorder events/s
ES_SCHEMA = "es_stock"

# Charter settings for the run where they differ from Settings' defaults (each overridable by its
# CHARTER_* variable). Settings' defaults are what the bench measured best on a 2-CPU machine.
CHARTER_DEFAULTS: dict[str, Any] = {}

_TABLE_SQL = """
CREATE TABLE bench_rows (
    id       bigserial PRIMARY KEY,
    stream   text        NOT NULL,
    payload  jsonb       NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
)
"""
_INSERT_SQL = "INSERT INTO bench_rows (stream, payload) VALUES ($1, $2::jsonb)"
_PAYLOAD = '{"kind": "bench", "n": 1}'
PGBENCH_SCRIPT = (
    "\\set s random(1, 1000000)\n"
    "INSERT INTO bench_rows (stream, payload) VALUES ('stream-' || :s, '{\"kind\": \"bench\", \"n\": 1}');\n"
)


# -- results ----------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    key: str
    name: str  # short, for tables
    title: str
    method: str
    unit: str
    rate: float  # operations per second over the measured window
    operations: int
    seconds: float
    clients: int
    errors: int = 0
    first_error: str | None = None
    latency_ms: dict[str, float] | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # cores used in the window: this process, the machine
    extra: dict[str, Any] = field(default_factory=dict)


def latency_summary(samples: list[float]) -> dict[str, float] | None:
    """p50/p95/p99/max in milliseconds of per-operation seconds."""
    if not samples:
        return None
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(ordered[-1] * 1000, 3)}


class CpuMeter:
    """CPU used during a window: this process (all threads) and the whole machine, in cores."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.process = _process_cpu()
        self.machine = _machine_cpu()

    def read(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out = {"process_cores": round((_process_cpu() - self.process) / elapsed, 2)}
        machine = _machine_cpu()
        if machine is not None and self.machine is not None:
            busy = (machine[0] - self.machine[0]) / elapsed
            out["machine_busy_cores"] = round(busy, 2)
            out["machine_idle_cores"] = round((machine[1] - self.machine[1]) / elapsed, 2)
        return out


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields[:8]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, idle / hz


# -- progress ---------------------------------------------------------------------------------------


class Meter:
    """The progress line of one phase: warm-up, then the measured window, with the rate of the last second."""

    def __init__(self, progress: Progress, title: str, unit: str, warmup: float, seconds: float) -> None:
        self.progress, self.title, self.unit = progress, title, unit
        self.warmup, self.seconds = warmup, seconds
        self.task: TaskID = progress.add_task(title, total=warmup + seconds, status="starting")
        self.started = time.monotonic()
        self.history: deque[tuple[float, int]] = deque()
        self.measuring = False
        self.window: tuple[float, int] | None = None
        self.cpu_meter: CpuMeter | None = None
        self.cpu: dict[str, float] = {}

    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def tick(self, total: int) -> None:
        now = time.monotonic()
        self.history.append((now, total))
        while len(self.history) > 2 and now - self.history[0][0] > 1.0:
            self.history.popleft()
        then, before = self.history[0]
        rate = (total - before) / (now - then) if now > then else 0.0
        elapsed = now - self.started
        stage = (
            f"measuring {max(0.0, elapsed - self.warmup):4.1f}/{self.seconds:g}s"
            if self.measuring or self.window
            else f"warm-up {elapsed:3.1f}/{self.warmup:g}s"
        )
        self.progress.update(
            self.task,
            completed=min(elapsed, self.warmup + self.seconds),
            status=f"{stage}  {rate:>10,.0f} {self.unit}/s  ({total:,} done)",
        )

    def show_rate(self, elapsed: float, rate: float, measuring: bool) -> None:
        """For phases that report their own rate (pgbench's progress lines)."""
        stage = f"measuring {elapsed:4.1f}/{self.seconds:g}s" if measuring else f"warm-up {elapsed:3.1f}/{self.warmup:g}s"
        done = self.warmup + elapsed if measuring else elapsed
        self.progress.update(self.task, completed=min(done, self.warmup + self.seconds), status=f"{stage}  {rate:>10,.0f} {self.unit}/s")

    def begin(self, total: int) -> None:
        self.measuring = True
        self.window = (time.monotonic(), total)
        self.cpu_meter = CpuMeter()

    def end(self, total: int) -> tuple[int, float]:
        self.measuring = False
        self.cpu = self.cpu_meter.read()
        assert self.window is not None
        start, before = self.window
        return total - before, time.monotonic() - start

    def done(self, result: PhaseResult) -> None:
        self.progress.update(
            self.task,
            completed=self.warmup + self.seconds,
            status=f"[bold]{result.rate:,.0f} {self.unit}/s[/bold] over {result.seconds:.1f}s ({result.operations:,} {self.unit})",
        )


def drive_sync(meter: Meter, count: Callable[[], int], stop: threading.Event) -> tuple[int, float]:
    """Warm up, measure, then tell the workers to stop; returns (operations, seconds) of the window."""
    meter.restart_clock()
    warm_until = time.monotonic() + meter.warmup
    while time.monotonic() < warm_until:
        time.sleep(0.2)
        meter.tick(count())
    meter.begin(count())
    end_at = time.monotonic() + meter.seconds
    while (left := end_at - time.monotonic()) > 0:
        time.sleep(min(0.2, left))
        meter.tick(count())
    result = meter.end(count())
    stop.set()
    return result


async def drive_async(meter: Meter, count: Callable[[], int]) -> tuple[int, float]:
    meter.restart_clock()
    warm_until = time.monotonic() + meter.warmup
    while time.monotonic() < warm_until:
        await asyncio.sleep(0.2)
        meter.tick(count())
    meter.begin(count())
    end_at = time.monotonic() + meter.seconds
    while (left := end_at - time.monotonic()) > 0:
        await asyncio.sleep(min(0.2, left))
        meter.tick(count())
    return meter.end(count())


# -- server and database ----------------------------------------------------------------------------


@dataclass
class Server:
    admin_dsn: str
    kind: str  # "embedded" or "external"
    bin_dir: Path | None = None


@contextlib.contextmanager
def bench_server(workdir: Path, console: Console) -> Iterator[Server]:
    """CHARTER_DATABASE_URL's server, or an embedded PostgreSQL under `workdir` for the duration."""
    given = os.environ.get("CHARTER_DATABASE_URL")
    if given:
        yield Server(given, "external")
        return
    from infrastructure.embedded.servers import EmbeddedPostgres

    server = EmbeddedPostgres(workdir / "postgres")
    console.print(f"starting embedded PostgreSQL under {server.pgdata} ...")
    dsn = server.start()
    try:
        yield Server(dsn, "embedded", server.bin_dir)
    finally:
        server.stop()
        console.print("embedded PostgreSQL stopped")


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def connection_params(dsn: str) -> dict[str, str]:
    """host/port/user/password/dbname of a postgresql:// URI (a `host=` query parameter wins, for sockets)."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "host": query.get("host") or parts.hostname or "localhost",
        "port": str(query.get("port") or parts.port or 5432),
        "user": query.get("user") or unquote(parts.username or "") or os.environ.get("USER", "postgres"),
        "password": query.get("password") or unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")) or query.get("dbname") or "postgres",
    }


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


SERVER_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
    "wal_buffers",
    "max_connections",
    "superuser_reserved_connections",
    "max_wal_size",
)


async def server_info(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = any($1::text[])", list(SERVER_SETTINGS))
        settings = {r["name"]: r["setting"] + (f" ({r['unit']})" if r["unit"] else "") for r in rows}
        for name in ("shared_buffers", "wal_buffers", "max_wal_size"):
            with contextlib.suppress(Exception):
                settings[name] = await conn.fetchval(f"SHOW {name}")
        return {
            "version": await conn.fetchval("SHOW server_version"),
            "version_full": await conn.fetchval("SELECT version()"),
            "settings": settings,
        }
    finally:
        await conn.close()


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError, ValueError):
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    with contextlib.suppress(OSError):
        model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if model:
            info["cpu_model"] = model.group(1).strip()
    with contextlib.suppress(Exception):
        import eventsourcing

        info["eventsourcing"] = getattr(eventsourcing, "__version__", None) or _dist_version("eventsourcing")
    with contextlib.suppress(Exception):
        info["asyncpg"] = asyncpg.__version__
    with contextlib.suppress(Exception):
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=root, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5, cwd=root
        ).stdout.strip()
        info["git_commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    return info


def _dist_version(name: str) -> str | None:
    from importlib.metadata import version

    with contextlib.suppress(Exception):
        return version(name)
    return None


def connection_budget(info: dict[str, Any]) -> int:
    """Connections one phase may open: max_connections minus reserved slots and a few for the bench itself."""
    settings = info.get("settings", {})
    try:
        limit = int(str(settings.get("max_connections", "100")).split()[0])
        reserved = int(str(settings.get("superuser_reserved_connections", "3")).split()[0])
    except ValueError:
        return 64
    return max(1, limit - reserved - 5)


# -- (a) PostgreSQL ceiling -------------------------------------------------------------------------


def find_pgbench(bin_dir: Path | None) -> Path | None:
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(bin_dir / "pgbench")
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True))
    with contextlib.suppress(Exception):
        from infrastructure.embedded.servers import _wheel_bin_dir

        wheel = _wheel_bin_dir()
        if wheel is not None:
            candidates.append(wheel / "pgbench")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


_PROGRESS_LINE = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps")


def run_pgbench(
    pgbench: Path, dsn: str, script: Path, clients: int, seconds: int, on_progress: Callable[[float, float], None]
) -> dict[str, Any]:
    threads = 2 if clients >= 2 and clients % 2 == 0 else 1
    command = [
        str(pgbench), "-n", "-M", "prepared", "-f", str(script),
        "-c", str(clients), "-j", str(threads), "-T", str(seconds), "-P", "1", dsn,
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PGAPPNAME": "charter-bench"},
    )
    errors: list[str] = []
    try:
        assert process.stderr is not None and process.stdout is not None
        for line in process.stderr:
            match = _PROGRESS_LINE.match(line)
            if match:
                on_progress(float(match.group(1)), float(match.group(2)))
            elif line.strip():
                errors.append(line.strip())
        output = process.stdout.read()
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    if code != 0 or tps is None:
        raise RuntimeError(f"pgbench exited with {code}: {' | '.join(errors[-5:]) or output[-500:]}")

    def number(pattern: str) -> float | None:
        found = re.search(pattern, output, re.MULTILINE)
        return float(found.group(1)) if found else None

    return {
        "tps": float(tps.group(1)),
        "transactions": int(number(r"^number of transactions actually processed: (\d+)") or 0),
        "failed": int(number(r"^number of failed transactions: (\d+)") or 0),
        "latency_avg_ms": number(r"^latency average = ([\d.]+) ms"),
        "latency_stddev_ms": number(r"^latency stddev = ([\d.]+) ms"),
        "threads": threads,
        "command": " ".join(command[:-1] + ["<dsn>"]),
        "stderr": errors[-5:],
    }


def phase_ceiling(
    dsn: str, pgbench: Path | None, clients: int, warmup: float, seconds: float, workdir: Path, progress: Progress
) -> PhaseResult:
    asyncio.run(_create_rows_table(dsn))
    if pgbench is None:
        return asyncio.run(_asyncpg_ceiling(dsn, clients, warmup, seconds, progress))
    script = workdir / "insert_row.sql"
    script.write_text(PGBENCH_SCRIPT)
    warm_s, measure_s = max(1, round(warmup)), max(1, round(seconds))
    meter = Meter(progress, "(a) PostgreSQL ceiling", "rows", warm_s, measure_s)
    run_pgbench(pgbench, dsn, script, clients, warm_s, lambda t, tps: meter.show_rate(t, tps, False))
    cpu = CpuMeter()
    measured = run_pgbench(pgbench, dsn, script, clients, measure_s, lambda t, tps: meter.show_rate(t, tps, True))
    machine_cpu = {k: v for k, v in cpu.read().items() if k.startswith("machine")}
    version = subprocess.run([str(pgbench), "--version"], capture_output=True, text=True, check=False).stdout
    number = re.search(r"\d+(?:\.\d+)+", version)
    result = PhaseResult(
        key="postgres_ceiling",
        name="(a) PostgreSQL ceiling",
        title="one-row INSERT transactions into a plain table",
        method=f"pgbench {number.group(0) if number else '?'} ({pgbench}), -M prepared, "
        f"{clients} clients, {measured['threads']} threads",
        unit="rows",
        rate=measured["tps"],
        operations=measured["transactions"],
        seconds=float(measure_s),
        clients=clients,
        errors=measured["failed"],
        latency_ms={"avg": measured["latency_avg_ms"], "stddev": measured["latency_stddev_ms"]}
        if measured["latency_avg_ms"] is not None
        else None,
        cpu=machine_cpu,
        extra={"pgbench": str(pgbench), "command": measured["command"], "threads": measured["threads"], "script": PGBENCH_SCRIPT},
    )
    meter.done(result)
    return result


async def _create_rows_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_TABLE_SQL)
    finally:
        await conn.close()


async def _asyncpg_ceiling(dsn: str, clients: int, warmup: float, seconds: float, progress: Progress) -> PhaseResult:
    meter = Meter(progress, "(a) PostgreSQL ceiling", "rows", warmup, seconds)
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(clients)))
    counts = [0] * clients
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = False

    async def client(i: int, conn: asyncpg.Connection) -> None:
        stream = f"stream-{i}"
        while not stop:
            started = time.perf_counter()
            try:
                await conn.execute(_INSERT_SQL, stream, _PAYLOAD)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
                await asyncio.sleep(0.01)
                continue
            counts[i] += 1
            if meter.measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(conns)]
    try:
        operations, elapsed = await drive_async(meter, lambda: sum(counts))
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    result = PhaseResult(
        key="postgres_ceiling",
        name="(a) PostgreSQL ceiling",
        title="one-row INSERT transactions into a plain table",
        method="asyncpg, one autocommit INSERT per transaction (pgbench not found)",
        unit="rows",
        rate=operations / elapsed,
        operations=operations,
        seconds=elapsed,
        clients=clients,
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        latency_ms=latency_summary(latencies),
        cpu=meter.cpu,
    )
    meter.done(result)
    return result


# -- (b) eventsourcing's stock PostgreSQL recorder --------------------------------------------------


class BenchItem(Aggregate):
    """A one-event aggregate: created, saved, never changed."""

    @event("Created")
    def __init__(self, n: int, note: str) -> None:
        self.n = n
        self.note = note


def phase_eventsourcing(dsn: str, clients: int, pool: int, warmup: float, seconds: float, progress: Progress) -> PhaseResult:
    from eventsourcing.application import Application

    asyncio.run(_create_schema(dsn, ES_SCHEMA))
    params = connection_params(dsn)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params["host"],
        "POSTGRES_PORT": params["port"],
        "POSTGRES_USER": params["user"],
        "POSTGRES_PASSWORD": params["password"],
        "POSTGRES_SCHEMA": ES_SCHEMA,
        "POSTGRES_POOL_SIZE": str(pool),  # one connection per thread: nobody waits for the pool
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "30",
        "CREATE_TABLE": "yes",
    }

    class StockRecorderBench(Application):
        pass

    import psycopg

    impl = psycopg.pq.__impl__  # "python" (ctypes) unless psycopg[c] or psycopg[binary] is installed
    meter = Meter(progress, "(b) eventsourcing stock", "events", warmup, seconds)
    app = StockRecorderBench(env=env)
    counts = [0] * clients
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                app.save(BenchItem(n, "bench"))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
                time.sleep(0.01)
                continue
            n += 1
            counts[i] += 1
            if meter.measuring:
                latencies.append(time.perf_counter() - started)

    try:
        with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="es-bench") as executor:
            futures = [executor.submit(client, i) for i in range(clients)]
            try:
                operations, elapsed = drive_sync(meter, lambda: sum(counts), stop)
            finally:
                stop.set()
            for future in futures:
                future.result()
    finally:
        app.close()
    result = PhaseResult(
        key="eventsourcing_stock",
        name="(b) eventsourcing stock",
        title="Application.save() of a new one-event aggregate, eventsourcing 9.5's stock PostgreSQL recorder",
        method=f"eventsourcing.postgres, psycopg {psycopg.__version__} ({impl} libpq wrapper), {clients} threads, "
        f"pool {pool}, schema {ES_SCHEMA}",
        unit="events",
        rate=operations / elapsed,
        operations=operations,
        seconds=elapsed,
        clients=clients,
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        latency_ms=latency_summary(latencies),
        cpu=meter.cpu,
        extra={"pool_size": pool, "psycopg": psycopg.__version__, "psycopg_impl": impl},
    )
    meter.done(result)
    return result


async def _create_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await conn.close()


# -- (c) Charter --------------------------------------------------------------------------------------


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


def phase_charter(
    dsn: str, clients: int, warmup: float, seconds: float, data_dir: Path, budget: int, progress: Progress, processes: int = 1
) -> PhaseResult:
    from infrastructure.telemetry.logging import configure_logging

    settings = charter_settings(dsn, data_dir, budget)
    configure_logging(settings.log_level, json=False)
    if processes > 1:
        settings.pool_size = max(2, min(settings.pool_size, budget // processes))
        return _charter_processes(settings, clients, processes, warmup, seconds, progress)
    coroutine = _charter(settings, clients, warmup, seconds, progress)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


async def _charter(settings: Any, clients: int, warmup: float, seconds: float, progress: Progress) -> PhaseResult:
    from application.commands import InstallPlugin
    from application.context import CommandContext
    from interfaces.runtime import start_runtime, stop_runtime

    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    meter = Meter(progress, "(c) Charter InstallPlugin", "events", warmup, seconds)
    runtime = await start_runtime(settings)
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
                manifest={"id": f"bench-{n}", "name": f"Bench plugin {n}", "version": "1.0.0"}, source=source
            )
            started = time.perf_counter()
            try:
                await runtime.application.execute(command, ctx)
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
                "SELECT count(*) AS events, count(DISTINCT transaction_id) AS transactions,"
                " count(*)::float / nullif(count(DISTINCT transaction_id), 0) AS per_tx FROM events"
            )
            window = await conn.fetchrow(
                "SELECT count(*) AS events, count(DISTINCT transaction_id) AS transactions,"
                " count(*)::float / nullif(count(DISTINCT transaction_id), 0) AS per_tx"
                " FROM events WHERE position > $1 AND position <= $2",
                first,
                last,
            )
    finally:
        await stop_runtime(runtime)
    completed = sum(counts)
    result = PhaseResult(
        key="charter",
        name="(c) Charter",
        title="InstallPlugin of a new plugin through the full application (one event each)",
        method=f"application.execute on {loop_name}, {clients} tasks, "
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
        },
    )
    meter.done(result)
    return result


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _charter_child(settings: Any, clients: int, prefix: str, counter: Any, measuring: Any, stop: Any, out: Any) -> None:
    """One replica of the Charter phase: its own runtime (pool, group committer) and `clients` callers."""
    _run_loop(_charter_replica(settings, clients, prefix, counter, measuring, stop, out))


async def _charter_replica(settings: Any, clients: int, prefix: str, counter: Any, measuring: Any, stop: Any, out: Any) -> None:
    from application.commands import InstallPlugin
    from application.context import CommandContext
    from infrastructure.telemetry.logging import configure_logging
    from interfaces.runtime import start_runtime, stop_runtime

    configure_logging(settings.log_level, json=False)
    settings.migrate_on_start = False
    runtime = await start_runtime(settings)
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
                await runtime.application.execute(command, ctx)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))
                await asyncio.sleep(0.01)
                continue
            counter.value += 1
            if measuring.is_set():
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    while not stop.is_set():
        await asyncio.sleep(0.05)
    running = False
    await asyncio.gather(*tasks, return_exceptions=True)
    await stop_runtime(runtime)
    out.put(("done", {"latencies": latencies, "errors": len(errors), "first_error": errors[0] if errors else None}))


def _charter_processes(settings: Any, clients: int, processes: int, warmup: float, seconds: float, progress: Progress) -> PhaseResult:
    """The Charter phase spread over `processes` replicas, as Charter runs in production (N API processes)."""
    import multiprocessing
    import queue as queues

    from infrastructure.eventlog.migrate import migrate

    async def prepare() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    mp = multiprocessing.get_context("spawn")
    counters = [mp.Value("q", 0, lock=False) for _ in range(processes)]
    measuring, stop, out = mp.Event(), mp.Event(), mp.Queue()
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    children = [
        mp.Process(target=_charter_child, args=(settings, shares[i], f"r{i}", counters[i], measuring, stop, out), daemon=True)
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        ready = 0
        while ready < processes:
            kind, _ = out.get(timeout=120)
            ready += kind == "ready"
        meter = Meter(progress, f"(c) Charter x{processes} processes", "events", warmup, seconds)

        def count() -> int:
            return sum(c.value for c in counters)

        meter.restart_clock()
        warm_until = time.monotonic() + meter.warmup
        while time.monotonic() < warm_until:
            time.sleep(0.2)
            meter.tick(count())
        meter.begin(count())
        measuring.set()
        end_at = time.monotonic() + meter.seconds
        while (left := end_at - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            meter.tick(count())
        operations, elapsed = meter.end(count())
        measuring.clear()
        stop.set()
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
                "SELECT count(*) AS events, count(DISTINCT transaction_id) AS transactions,"
                " count(*)::float / nullif(count(DISTINCT transaction_id), 0) AS per_tx FROM events"
            )
        finally:
            await conn.close()

    overall = asyncio.run(batching())
    latencies = [x for r in reports for x in r["latencies"]]
    errors = sum(r["errors"] for r in reports)
    first_error = next((r["first_error"] for r in reports if r["first_error"]), None)
    result = PhaseResult(
        key="charter",
        name="(c) Charter",
        title="InstallPlugin of a new plugin through the full application (one event each)",
        method=f"application.execute in {processes} processes (replicas) on uvloop, {clients} tasks in all, "
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
        },
    )
    meter.done(result)
    return result


# -- the run and its report -------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def ratios(results: dict[str, PhaseResult]) -> dict[str, dict[str, Any]]:
    charter = results["charter"].rate
    out = {}
    for key, base, target in (
        ("charter_vs_ceiling", "postgres_ceiling", CEILING_TARGET),
        ("charter_vs_eventsourcing", "eventsourcing_stock", STOCK_TARGET),
    ):
        value = ratio(charter, results[base].rate)
        out[key] = {"value": value, "target": target, "met": value is not None and value >= target}
    return out


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_latency(latency: dict[str, float] | None) -> str:
    if not latency:
        return "-"
    if "p50" in latency:
        return f"p50 {latency['p50']:.2f} / p99 {latency['p99']:.2f}"
    return f"avg {latency.get('avg') or 0:.2f}"


def fmt_cpu(cpu: dict[str, float] | None) -> str:
    """`bench process / whole machine` cores busy during the window."""
    if not cpu:
        return "-"
    process = f"{cpu['process_cores']:.2f}" if "process_cores" in cpu else "-"
    machine = f"{cpu['machine_busy_cores']:.2f}" if "machine_busy_cores" in cpu else "?"
    return f"{process} / {machine}"


def results_table(results: dict[str, PhaseResult]) -> Table:
    table = Table(title="charter bench append", title_justify="left")
    table.add_column("phase")
    table.add_column("rate", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("latency ms", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("CPU cores", justify="right")
    for result in results.values():
        table.add_row(
            result.name,
            f"{result.rate:,.0f} {result.unit}/s",
            f"{result.operations:,} in {result.seconds:.1f}s",
            fmt_latency(result.latency_ms),
            str(result.errors),
            fmt_cpu(result.cpu),
        )
    return table


def ratios_table(found: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="targets", title_justify="left")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    names = {"charter_vs_ceiling": "Charter / PostgreSQL ceiling", "charter_vs_eventsourcing": "Charter / eventsourcing stock"}
    for key, item in found.items():
        verdict = "[green]met[/green]" if item["met"] else "[red]not met[/red]"
        table.add_row(names[key], fmt_ratio(item["value"]), f">= {item['target']:g}x", verdict)
    return table


def markdown(report: dict[str, Any]) -> str:
    res = report["results"]
    lines = [
        f"# charter bench append — {report['started_at']}",
        "",
        f"{report['config']['clients']} concurrent clients, {report['config']['seconds']:g} s measured per phase after "
        f"{report['config']['warmup']:g} s warm-up, all phases on the same PostgreSQL server ({report['server']['kind']}).",
        "",
        "| phase | rate | measured | latency (ms) | errors | CPU cores: bench process / machine | how |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for item in res.values():
        lines.append(
            f"| {item['name']}: {item['title']} | {item['rate']:,.0f} {item['unit']}/s | {item['operations']:,} in {item['seconds']:.1f} s "
            f"| {fmt_latency(item['latency_ms'])} | {item['errors']} | {fmt_cpu(item['cpu'])} | {item['method']} |"
        )
    charter = res["charter"]["extra"]
    lines += [
        "",
        f"CPU cores: busy during the measured window, the bench process (all its threads) / the whole machine "
        f"({report['machine'].get('cpu_count')} CPUs, so other load on the machine shows up here too); pgbench runs "
        "in a process of its own.",
        "",
        f"Charter commands per commit transaction: {charter.get('commands_per_transaction')} over the whole run, "
        f"{charter.get('commands_per_transaction_window')} in the measured window "
        f"({charter.get('events_in_log')} events in {charter.get('transactions')} transactions).",
        "",
        "| ratio | value | target | |",
        "|---|---:|---:|---|",
    ]
    names = {"charter_vs_ceiling": "Charter / PostgreSQL ceiling", "charter_vs_eventsourcing": "Charter / eventsourcing stock"}
    for key, item in report["ratios"].items():
        lines.append(f"| {names[key]} | {fmt_ratio(item['value'])} | ≥ {item['target']:g}x | {'met' if item['met'] else 'NOT met'} |")
    errors = [f"- {item['title']}: {item['errors']} errors, first: `{item['first_error']}`" for item in res.values() if item["first_error"]]
    if errors:
        lines += ["", "## Errors", "", *errors]
    machine, server = report["machine"], report["server"]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## PostgreSQL", "", f"- server: {server['kind']}", f"- version: {server.get('version_full') or server.get('version')}"]
    lines += [f"- {k}: {v}" for k, v in server.get("settings", {}).items()]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in report["config"].items()]
    return "\n".join(lines) + "\n"




def warmup_for(seconds: float) -> float:
    return min(2.0, max(0.5, seconds / 5))


def run_append(args: argparse.Namespace) -> int:
    clients = max(1, int(getattr(args, "clients", 64)))
    seconds = max(0.5, float(getattr(args, "seconds", 10.0)))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    warmup = warmup_for(seconds)
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    console = Console()
    started_at = datetime.now(timezone.utc)
    database = f"charter_bench_{uuid.uuid4().hex[:12]}"

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as server:
            asyncio.run(create_database(server.admin_dsn, database))
            dsn = with_database(server.admin_dsn, database)
            try:
                info = asyncio.run(server_info(dsn))
                budget = connection_budget(info)
                connections = min(clients, budget)
                if connections < clients:
                    console.print(
                        f"[yellow]max_connections allows {budget} connections per phase: "
                        f"pgbench and the eventsourcing pool use {connections} for {clients} clients[/yellow]"
                    )
                pgbench = find_pgbench(server.bin_dir)
                console.print(
                    f"database {database} on PostgreSQL {info['version']} ({server.kind}); {clients} clients, "
                    f"{seconds:g}s per phase after {warmup:g}s warm-up"
                )
                results: dict[str, PhaseResult] = {}
                with bench_progress(28) as progress:
                    results["postgres_ceiling"] = phase_ceiling(dsn, pgbench, connections, warmup, seconds, workdir, progress)
                    results["eventsourcing_stock"] = phase_eventsourcing(dsn, clients, connections, warmup, seconds, progress)
                    results["charter"] = phase_charter(
                        dsn, clients, warmup, seconds, workdir / "charter", budget, progress, processes
                    )
            finally:
                asyncio.run(drop_database(server.admin_dsn, database))

    found = ratios(results)
    report = {
        "suite": "append",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "clients": clients,
            "seconds": seconds,
            "warmup": warmup,
            "database": database,
            "connections_per_phase": connections,
            "charter_processes": processes,
        },
        "machine": machine_info(),
        "server": {"kind": server.kind, **info},
        "results": {key: asdict(result) for key, result in results.items()},
        "ratios": found,
    }
    json_path, md_path = write_report(folder, "append", report, markdown)
    console.print(results_table(results))
    for result in results.values():
        console.print(f"{result.name}: {result.method}")
        if result.first_error:
            console.print(f"  [red]{result.errors} errors, first: {result.first_error}[/red]")
    charter = results["charter"].extra
    console.print(
        f"Charter commands per commit transaction: {charter['commands_per_transaction']} "
        f"(measured window: {charter['commands_per_transaction_window']})"
    )
    console.print(
        f"CPU cores = busy in the measured window: bench process / whole machine ({os.cpu_count()} CPUs); "
        "pgbench runs in its own process"
    )
    console.print(ratios_table(found))
    console.print(f"report: {json_path}  {md_path}")
    return 0
