"""`charter bench sites`: one fresh database, the sites set up, the two phases in rounds, and the report."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.bench.append.charter import charter_settings
from ops.bench.append.phase import PhaseResult
from ops.bench.common import bench_progress, machine_info, run_loop, warmup_for, write_report
from ops.bench.postgres import bench_server, connection_budget, database_name, fresh_database, server_info
from ops.bench.sites.fleet import SITES_PER_CLIENT, SPARES
from ops.bench.sites.load import phase_activate, phase_deactivate, phase_install
from ops.bench.sites.report import markdown, ratio, results_table
from ops.bench.sites.setup import set_up


def _setup_counter(progress: Any, installs: int, activations: int) -> Any:
    task = progress.add_task("setup", total=installs + activations, status="")
    done = {"install": 0, "activate": 0}

    def tick(kind: str) -> None:
        done[kind] += 1
        progress.update(task, advance=1, status=f"{done['install']:,}/{installs:,} installed, "
                                                f"{done['activate']:,}/{activations:,} activated")

    return tick


async def bench(settings: Any, clients: int, sites: int, extensions: int, spares: int, warmup: float, seconds: float, rounds: int,
                progress: Any) -> tuple[dict[str, PhaseResult], dict[str, list[float]], float]:
    from interfaces.runtime import start_runtime, stop_runtime

    runtime = await start_runtime(settings)
    execute = runtime.application.execute
    try:
        started = time.monotonic()
        tick = _setup_counter(progress, extensions + sites * spares, extensions * sites)
        await set_up(execute, extensions, sites, spares, clients, tick)
        setup_seconds = time.monotonic() - started
        best: dict[str, PhaseResult] = {}
        every: dict[str, list[float]] = {"install": [], "activate": [], "deactivate": []}
        numbers = itertools.count(1)
        for n in range(1, rounds + 1):
            label = f"[{n}/{rounds}]"
            installed = await phase_install(execute, clients, warmup, seconds, progress, label, numbers)
            activated = await phase_activate(execute, clients, sites, extensions, spares, warmup, seconds, progress, label)
            restored = await phase_deactivate(execute, activated, progress, label)
            for result in (installed, activated, restored):
                result.extra.pop("done")
                every[result.key].append(round(result.rate, 1))
                if result.key not in best or result.rate > best[result.key].rate:
                    best[result.key] = result
        return best, every, setup_seconds
    finally:
        await stop_runtime(runtime)


def run_sites(args: argparse.Namespace) -> int:
    from infrastructure.telemetry.logging import configure_logging

    clients = max(1, int(getattr(args, "clients", 8) or 8))
    extensions = max(4, int(getattr(args, "extensions", 200) or 200))
    spares = max(1, int(getattr(args, "spares", SPARES) or SPARES))
    sites = max(clients, int(getattr(args, "sites", None) or SITES_PER_CLIENT * clients))
    seconds = max(0.5, float(getattr(args, "seconds", 10.0)))
    rounds = max(1, int(getattr(args, "rounds", 2) or 1))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    warmup = warmup_for(seconds)
    console = Console(stderr=True)
    started_at = datetime.now(timezone.utc)
    database = database_name()

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        with bench_server(Path(tmp), console) as server, fresh_database(server, database) as dsn:
            info = asyncio.run(server_info(dsn))
            settings = charter_settings(dsn, Path(tmp) / "charter", connection_budget(info))
            configure_logging(settings.log_level, json=False)
            console.print(f"database {database} on PostgreSQL {info['version']} ({server.kind}); {sites} sites of "
                          f"{extensions} extensions, {clients} clients, {seconds:g}s per phase after {warmup:g}s warm-up")
            with bench_progress(34) as progress:
                best, every, setup_seconds = run_loop(bench(settings, clients, sites, extensions, spares, warmup, seconds, rounds, progress))

    results = {key: {**asdict(result), "rounds": every[key]} for key, result in best.items()}
    report = {
        "suite": "sites",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"clients": clients, "sites": sites, "extensions": extensions, "spares_per_site": spares,
                   "seconds": seconds, "warmup": warmup, "rounds": rounds, "setup_seconds": round(setup_seconds, 1),
                   "database": database, "pool_size": settings.pool_size, "writers": settings.writers},  # fmt: skip
        "machine": machine_info(),
        "server": {"kind": server.kind, **info},
        "results": results,
        "ratio": ratio(results),
    }
    json_path, md_path = write_report(folder, "sites", report, markdown)
    out = Console()
    out.print(results_table(report))
    for item in results.values():
        if item["first_error"]:
            out.print(f"[red]{item['name']}: {item['errors']} errors, first: {item['first_error']}[/red]")
    out.print(f"report: {json_path}  {md_path}")
    return 0
