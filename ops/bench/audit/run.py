"""`charter bench audit`: fill one fresh database, seal it, then the raw scan and the verification on it."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from infrastructure.audit.signing import Signer
from ops.bench.append.report import fmt_ratio
from ops.bench.common import bench_progress, machine_info, run_loop, write_report
from ops.bench.postgres import bench_server, database_name, fresh_database, migrate_database, server_info
from ops.bench.rebuild.fill import fill
from ops.bench.rebuild.replay import SCAN_PAGE, Replay, raw_scan
from ops.bench.rebuild.run import _counter

TARGET = 0.3  # verification events/s over the raw scan's
PER_CHECKPOINT = 10_000


def ratios(replays: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    floor = replays["raw_scan"]["rate"]
    return {
        key: {"value": r["rate"] / floor if floor else None, "target": TARGET, "met": bool(floor) and r["rate"] / floor >= TARGET}
        for key, r in replays.items() if key != "raw_scan"
    }  # fmt: skip


def table(report: dict[str, Any]) -> Table:
    out = Table(title=f"charter bench audit: {report['config']['events_in_log']:,} events, "
                      f"{report['config']['checkpoints']} checkpoints", title_justify="left")  # fmt: skip
    for column in ("phase", "events/s", "measured", "vs raw scan", ""):
        out.add_column(column, justify="left" if column in ("phase", "") else "right")
    for key, replay in report["replays"].items():
        ratio = report["ratios"].get(key)
        verdict = "" if ratio is None else ("[green]met[/green]" if ratio["met"] else "[red]not met[/red]") + f" (>= {TARGET}x)"
        out.add_row(replay["name"], f"{replay['rate']:,.0f}", f"{replay['events']:,} in {replay['seconds']:.2f}s",
                    "1.00x (floor)" if ratio is None else fmt_ratio(ratio["value"]), verdict)  # fmt: skip
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# charter bench audit ({report['started_at']})", "",
             f"{report['config']['events_in_log']:,} events, {report['config']['checkpoints']} checkpoints of "
             f"{PER_CHECKPOINT:,}; best of {report['config']['rounds']} rounds; PostgreSQL {report['server'].get('version')}.", "",
             "| phase | events/s | vs raw scan | target |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    for key, replay in report["replays"].items():
        ratio = report["ratios"].get(key)
        lines.append(f"| {replay['name']} | {replay['rate']:,.0f} | {'1.00x (floor)' if ratio is None else fmt_ratio(ratio['value'])} | "
                     f"{'' if ratio is None else ('met' if ratio['met'] else 'not met') + f' (>= {TARGET}x)'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_audit(args: argparse.Namespace) -> int:
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    events = max(100, int(getattr(args, "events", 200_000)))
    rounds = max(1, int(getattr(args, "rounds", 2) or 1))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    console = Console(stderr=True)
    started_at = datetime.now(timezone.utc)
    database = database_name()
    replays: dict[str, Replay] = {}
    outcomes: dict[str, Any] = {}
    from ops.bench.audit.measure import seal_all, verify_phase

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        signer = Signer.load_or_create(Path(tmp) / "audit-ed25519.pem")
        with bench_server(Path(tmp), console) as server, fresh_database(server, database) as dsn:
            info = run_loop(server_info(dsn))
            run_loop(migrate_database(dsn))
            console.print(f"database {database} on PostgreSQL {info['version']} ({server.kind}); {events:,} events")
            with bench_progress(34) as progress:
                tick, finish = _counter(progress, "fill the log", events)
                stream_types = run_loop(fill(dsn, events, tick))
                finish(status=f"{sum(stream_types.values()):,} events")
                checkpoints = run_loop(seal_all(dsn, signer, PER_CHECKPOINT))
                in_log = sum(stream_types.values()) + checkpoints
                phases = (
                    ("raw_scan", "(a) raw scan (floor)", lambda t: raw_scan(dsn, SCAN_PAGE, t)),
                    ("verify", "(b) charter audit verify", lambda t: verify_phase(dsn, signer.public, t)),
                    ("verify_export", "(c) verify --export", lambda t: verify_phase(dsn, signer.public, t, export=True)),
                )
                for round_ in range(1, rounds + 1):  # phases alternate, so that others' load falls on each alike
                    for key, title, phase in phases:
                        tick, finish = _counter(progress, f"{title} [{round_}/{rounds}]", in_log)
                        found = run_loop(phase(tick))
                        replay, outcome = found if isinstance(found, tuple) else (found, None)
                        finish(replay)
                        if outcome is not None:
                            outcomes[key] = outcome
                        if key not in replays or replay.rate > replays[key].rate:
                            replays[key] = replay

    found = {key: {**asdict(r), "rate": r.rate} for key, r in replays.items()}
    report = {
        "suite": "audit",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"events": events, "events_in_log": in_log, "stream_types": stream_types, "checkpoints": checkpoints,
                   "per_checkpoint": PER_CHECKPOINT, "rounds": rounds, "scan_page": SCAN_PAGE, "database": database},  # fmt: skip
        "machine": machine_info(),
        "server": {"kind": server.kind, **info},
        "replays": found,
        "ratios": ratios(found),
        "verification": outcomes,
    }
    json_path, md_path = write_report(folder, "audit", report, markdown)
    out = Console()
    out.print(table(report))
    for key, ratio in report["ratios"].items():
        out.print(f"{key}: {fmt_ratio(ratio['value'])} of the raw scan's events/s (target >= {TARGET}x)")
    out.print(f"report: {json_path}  {md_path}")
    return 0
