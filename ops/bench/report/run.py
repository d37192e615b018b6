"""`charter bench report`: fill one fresh database, project it, time the read-model and the as-of reports."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from application.as_of import AsOf
from application.sites.report_render import render
from application.sites.reports import compliance_report
from infrastructure.eventlog.as_of import StoreHistory, read_stream_until
from infrastructure.eventlog.eventstore import create_pool
from infrastructure.eventlog.projector import apply_batch, connect, ensure_projection
from ops.bench.common import bench_progress, machine_info, run_loop, write_report
from ops.bench.postgres import bench_server, database_name, fresh_database, migrate_database, server_info
from ops.bench.report.fill import SITE, fill
from projections.identity.projection import AccessProjection
from projections.identity.queries import printed_names
from projections.sites.projection import SitesProjection
from projections.sites.report import compliance_report_now

TARGET = 5.0  # the as-of report's time over the read model's


async def project(dsn: str) -> None:
    """Fold the whole log into the `sites` and `identity` read models."""
    conn = await connect(dsn)
    try:
        for projection in (SitesProjection(), AccessProjection()):
            await ensure_projection(conn, projection)
            await conn.execute(f'SET search_path TO "{projection.schema}", public')
            while await apply_batch(conn, projection, 2_000):
                pass
    finally:
        await conn.close()


async def timed(rounds: int, make: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    seconds, report, size = [], {}, 0
    for _ in range(rounds):
        started = time.perf_counter()
        report = await make()
        size = len(render(report, "json").document)
        seconds.append(time.perf_counter() - started)
    return {"as_of": report["as_of"], "since": report["since"], "changes": len(report["changes"]), "bytes": size,
            "median_ms": statistics.median(seconds) * 1000, "best_ms": min(seconds) * 1000, "rounds": rounds}


async def measure(dsn: str, rounds: int, window: int, every: int) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        history, whole = StoreHistory(pool, every), StoreHistory(pool, 0)

        async def names(user_ids: list[str]) -> dict[str, str]:
            return await printed_names(pool, user_ids)

        stream = await read_stream_until(pool, f"site:{SITE}")
        head = await history.settled_position()
        await compliance_report(history, SITE, AsOf(position=head))  # takes the snapshots, untimed

        def at(version: int) -> tuple[AsOf, AsOf, int]:
            """The point at a version of the stream, the window of `window` events before it, the events to fold."""
            version = max(1, min(version, len(stream)))
            since = stream[max(0, version - 1 - window)].position
            return AsOf(position=stream[version - 1].position), AsOf(position=since), version % every if every else version

        now_since = AsOf(position=stream[max(0, len(stream) - 1 - window)].position)
        past, past_since, past_fold = at(int(len(stream) * 0.9))
        worst, worst_since, worst_fold = at(((int(len(stream) * 0.9) // every) + 1) * every - 1 if every else len(stream))
        phases = {
            "read_model": await timed(rounds, lambda: compliance_report_now(pool, names, SITE, now_since)),
            "as_of": await timed(rounds, lambda: compliance_report(history, SITE, past, past_since)),
            "as_of_worst": await timed(rounds, lambda: compliance_report(history, SITE, worst, worst_since)),
            "as_of_no_snapshots": await timed(rounds, lambda: compliance_report(whole, SITE, past, past_since)),
        }
        phases["read_model"]["folded"] = 0
        phases["as_of"]["folded"], phases["as_of_worst"]["folded"] = past_fold, worst_fold
        phases["as_of_no_snapshots"]["folded"] = int(len(stream) * 0.9)
        from_model = await compliance_report_now(pool, names, SITE, now_since)
        replayed = await compliance_report(whole, SITE, AsOf(position=from_model["position"]), now_since)
        same = render(from_model, "json").document == render(replayed, "json").document
        return {"phases": phases, "same_as_replay": same}
    finally:
        await pool.close()


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# charter bench report ({report['started_at']})", "",
             f"{report['config']['site_events']:,} events in the site's stream; snapshots every"
             f" {report['config']['snapshot_every']} versions; median of {report['config']['rounds']} rounds.", "",
             "| phase | as of | events folded | changes listed | JSON bytes | median ms | best ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, phase in report["phases"].items():
        lines.append(f"| {key} | {phase['as_of']} | {phase['folded']:,} | {phase['changes']:,} | {phase['bytes']:,}"
                     f" | {phase['median_ms']:.1f} | {phase['best_ms']:.1f} |")
    ratio = report["ratio"]
    lines += ["", f"as of / read model: {ratio['value']:.2f}x (target <= {TARGET:g}x: {'met' if ratio['met'] else 'not met'});"
              f" worst case {ratio['worst']:.2f}x; without snapshots {ratio['no_snapshots']:.2f}x",
              "", f"read-model report byte-identical to the as-of report at its checkpoint: {report['same_as_replay']}", ""]
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    events = max(100, int(getattr(args, "events", 10_000) or 10_000))
    rounds = max(1, int(getattr(args, "rounds", 5) or 5))
    window = max(1, int(getattr(args, "window", 100) or 100))
    every = max(0, int(getattr(args, "snapshot_every", 500) or 0))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    console = Console(stderr=True)
    started_at = datetime.now(timezone.utc)
    database = database_name()
    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        with bench_server(Path(tmp), console) as server, fresh_database(server, database) as dsn:
            info = asyncio.run(server_info(dsn))
            asyncio.run(migrate_database(dsn))
            with bench_progress(24) as progress:
                task = progress.add_task("fill the site", total=events, status="")
                counts = run_loop(fill(dsn, events, lambda done: progress.update(task, completed=done, status=f"{done:,} events")))
                task = progress.add_task("project, time the reports", total=None, status="")
                run_loop(project(dsn))
                found = run_loop(measure(dsn, rounds, window, every))
                progress.update(task, total=1, completed=1, status="done")
    phases = found["phases"]
    base = phases["read_model"]["median_ms"] or float("nan")
    value = phases["as_of"]["median_ms"] / base
    report = {
        "suite": "report",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"events": events, **counts, "rounds": rounds, "window": window, "snapshot_every": every,
                   "database": database},
        "machine": machine_info(),
        "server": {"kind": server.kind, **info},
        "phases": phases,
        "ratio": {"value": value, "target": TARGET, "met": value <= TARGET,
                  "worst": phases["as_of_worst"]["median_ms"] / base,
                  "no_snapshots": phases["as_of_no_snapshots"]["median_ms"] / base},
        "same_as_replay": found["same_as_replay"],
    }
    json_path, md_path = write_report(folder, "report", report, markdown)
    out = Console()
    table = Table(title=f"charter bench report: {counts['site_events']:,} site events", title_justify="left")
    for column in ("phase", "as of", "folded", "changes", "median ms", "best ms"):
        table.add_column(column, justify="left" if column in ("phase", "as of") else "right")
    for key, phase in phases.items():
        table.add_row(key, phase["as_of"], f"{phase['folded']:,}", f"{phase['changes']:,}",
                      f"{phase['median_ms']:.1f}", f"{phase['best_ms']:.1f}")
    out.print(table)
    verdict = "[green]met[/green]" if report["ratio"]["met"] else "[red]not met[/red]"
    out.print(f"as of / read model: {value:.2f}x ({verdict}, target <= {TARGET:g}x); worst case"
              f" {report['ratio']['worst']:.2f}x; without snapshots {report['ratio']['no_snapshots']:.2f}x")
    out.print(f"read-model report byte-identical to the as-of report at its checkpoint: {found['same_as_replay']}")
    out.print(f"report: {json_path}  {md_path}")
    return 0
