"""(a) The PostgreSQL ceiling: one-row INSERT transactions into a plain table, by pgbench with a custom
script, or by an asyncpg loop when no pgbench binary is found. Rows/s = transactions/s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import Progress

from ops.bench.append.phase import PhaseResult, drive_async
from ops.bench.common import Meter, bench_cores, latency_summary
from ops.bench.postgres import execute

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


def find_pgbench(bin_dir: Path | None) -> Path | None:
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(bin_dir / "pgbench")
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True))
    with contextlib.suppress(Exception):
        from infrastructure.embedded.postgres_install import wheel_bin_dir

        wheel = wheel_bin_dir()
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
    asyncio.run(execute(dsn, _TABLE_SQL))
    if pgbench is None:
        return asyncio.run(_asyncpg_ceiling(dsn, clients, warmup, seconds, progress))
    script = workdir / "insert_row.sql"
    script.write_text(PGBENCH_SCRIPT)
    warm_s, measure_s = max(1, round(warmup)), max(1, round(seconds))
    meter = Meter(progress, "(a) PostgreSQL ceiling", "rows", warm_s, measure_s)
    run_pgbench(pgbench, dsn, script, clients, warm_s, lambda t, tps: meter.show_rate(t, tps, False))
    cpu = bench_cores()
    measured = run_pgbench(pgbench, dsn, script, clients, measure_s, lambda t, tps: meter.show_rate(t, tps, True))
    machine_cpu = {k: v for k, v in cpu.known().items() if k.startswith("machine")}
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
