"""`charter bench append`: the three phases on one server, one fresh database, and the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from ops.bench.append.ceiling import find_pgbench, phase_ceiling
from ops.bench.append.charter import phase_charter
from ops.bench.append.phase import PhaseResult
from ops.bench.append.report import fmt_ratio, markdown, ratios, ratios_table, results_table
from ops.bench.append.telemetry import describe_floor, floor_analysis, sdk_floor, telemetry_on
from ops.bench.append.stock import phase_eventsourcing
from ops.bench.common import bench_progress, machine_info, warmup_for, write_report
from ops.bench.postgres import bench_server, connection_budget, database_name, fresh_database, server_info


def run_append(args: argparse.Namespace) -> int:
    clients = max(1, int(getattr(args, "clients", 64)))
    seconds = max(0.5, float(getattr(args, "seconds", 10.0)))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    warmup = warmup_for(seconds)
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    telemetry = bool(getattr(args, "telemetry", False))
    console = Console()
    started_at = datetime.now(timezone.utc)
    database = database_name()

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as server, fresh_database(server, database) as dsn:
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
                if telemetry:
                    with telemetry_on() as sink:
                        results["charter_telemetry"] = phase_charter(
                            dsn, clients, warmup, seconds, workdir / "charter-telemetry", budget, progress, processes, telemetry=True
                        )
                        received = sink.received()
                        floor_task = progress.add_task("(e) SDK floor", total=None, status="one span at a time, exported")
                        floor_us = sdk_floor()
                        shown = "the floor process failed" if floor_us is None else f"[bold]{floor_us:.1f} µs/span[/bold]"
                        progress.update(floor_task, total=1, completed=1, status=shown)
                    results["charter_telemetry"].extra["otlp_sink"] = received
                    results["charter_telemetry"].extra["floor"] = floor_analysis(results, floor_us, received)

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
            "telemetry": telemetry,
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
    if telemetry:
        sink = results["charter_telemetry"].extra["otlp_sink"]
        console.print(
            f"telemetry on / off: {fmt_ratio(found['telemetry_on_vs_off']['value'])} "
            f"({results['charter_telemetry'].rate:,.0f} vs {results['charter'].rate:,.0f} events/s; "
            f"{sink['exports']} OTLP exports, {sink['bytes']:,} bytes, {sink['spans']:,} spans received by the sink)"
        )
        console.print(describe_floor(results["charter_telemetry"].extra["floor"]))
    console.print(ratios_table(found))
    console.print(f"report: {json_path}  {md_path}")
    return 0
