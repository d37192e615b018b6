"""`charter bench tasks`: the phases one after the other on one PostgreSQL server, then the report."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.bench.common import machine_info, run_loop, warmup_for, write_report
from ops.bench.postgres import bench_server, database_name, fresh_database, migrate_database, server_info
from ops.bench.tasks.phases import idle_jitter, scheduler_phase
from ops.bench.tasks.report import largest_sustained, markdown, table, verdicts
from ops.bench.tasks.setup import create_tasks

DEFAULT_FULL = "250,500,1000,2000"


def sizes(text: str) -> list[int]:
    return sorted({max(1, int(part)) for part in str(text).split(",") if part.strip()})


def run_tasks(args: argparse.Namespace) -> int:
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    tasks = max(1, int(getattr(args, "tasks", 10_000) or 10_000))
    full_sizes = sizes(getattr(args, "full_tasks", None) or DEFAULT_FULL)
    seconds = max(1.0, float(getattr(args, "seconds", 20.0)))
    warmup = max(2.0, warmup_for(seconds))  # the first second after start reads the whole catalog
    folder = Path(getattr(args, "report", None) or "bench-reports")
    console = Console(stderr=True)
    started_at = datetime.now(timezone.utc)

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp, bench_server(Path(tmp), console) as server:
        console.print(f"(0) idle event loop, {seconds:g} s ...")
        idle = run_loop(idle_jitter(warmup, seconds))
        info: dict[str, Any] = {}
        with fresh_database(server, database_name()) as dsn:
            info = asyncio.run(server_info(dsn))
            asyncio.run(migrate_database(dsn))
            console.print(f"(a) creating {tasks:,} tasks ...")
            run_loop(create_tasks(dsn, tasks))
            console.print(f"(a) scheduler with a recorder, {tasks:,} tasks every second, {seconds:g} s ...")
            scheduler = run_loop(scheduler_phase(dsn, warmup, seconds, tasks, full=False))
        full = []
        for size in full_sizes:
            with fresh_database(server, database_name()) as dsn:
                asyncio.run(migrate_database(dsn))
                run_loop(create_tasks(dsn, size))
                console.print(f"(b) full path, {size:,} tasks every second, {seconds:g} s ...")
                full.append(run_loop(scheduler_phase(dsn, warmup, seconds, size, full=True)))

    floor = (idle["lateness_ms"] or {}).get("p99")
    for phase in (scheduler, *full):
        phase["verdict"] = verdicts(phase, floor)
    report = {
        "suite": "tasks",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"tasks": tasks, "full_tasks": full_sizes, "seconds": seconds, "warmup": warmup, "every": 1.0},
        "machine": machine_info(),
        "server": {"kind": server.kind, **info},
        "idle": idle,
        "scheduler": scheduler,
        "full_path": full,
        "largest_sustained": largest_sustained(full),
    }
    json_path, md_path = write_report(folder, "tasks", report, markdown)
    out = Console()
    out.print(table(report))
    out.print(f"largest full-path size sustained: {report['largest_sustained'] or 'none'} runs/s")
    out.print(f"report: {json_path}  {md_path}")
    return 0
