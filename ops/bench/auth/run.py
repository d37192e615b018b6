"""`charter bench auth`: the servers, the seed, the load and the guard in one run, and the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from ops.bench.auth import PATH, PLUGINS, RATIO_TARGET, ROUNDS_ENV
from ops.bench.auth.guard import guard_cost
from ops.bench.auth.load import run_load, side_summary
from ops.bench.auth.report import fmt_cores, markdown, results_table, side_title
from ops.bench.auth.server import AuthServer, banner, server_env, start_server, wait_healthy
from ops.bench.auth.setup import prepare, seed_plugins
from ops.bench.common import bench_progress, machine_info, run_loop, warmup_for, write_report
from ops.bench.postgres import bench_server, database_name, fresh_database, migrate_database, postmaster_pid, server_info


def run_auth(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    from infrastructure.embedded.process import find_free_port
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)

    clients = max(1, int(getattr(args, "clients", None) or 32))
    seconds = max(0.5, float(getattr(args, "seconds", None) or 10.0))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    warmup = warmup_for(seconds)
    rounds = max(1, int(os.environ.get(ROUNDS_ENV) or 2))  # A B A B; more alternations for a noisy machine
    console = Console()
    started_at = datetime.now(timezone.utc)
    database = database_name()
    secret, jwt_secret = Fernet.generate_key().decode(), uuid.uuid4().hex + uuid.uuid4().hex
    timings: dict[str, float] = {}
    clock = [time.monotonic()]

    def _lap() -> float:
        now = time.monotonic()
        took, clock[0] = round(now - clock[0], 2), now
        return took

    with tempfile.TemporaryDirectory(prefix="charter-bench-auth-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as pg:
            servers: list[AuthServer] = []
            with fresh_database(pg, database) as dsn:
                try:
                    info = asyncio.run(server_info(dsn))
                    pg_pid = asyncio.run(postmaster_pid(dsn))
                    console.print(
                        f"database {database} on PostgreSQL {info['version']} ({pg.kind}); {clients} clients, phases A B A B "
                        f"of {seconds:g}s after {warmup:g}s warm-up each"
                    )
                    asyncio.run(migrate_database(dsn))
                    timings["database"] = _lap()
                    # P first: it bootstraps the built-in roles and the administrator, and projects; the
                    # plugins are seeded while it starts. Then A and B, the viewer set up through A.
                    port = find_free_port()
                    setup = start_server(
                        "P", True, server_env(dsn, port, secret, jwt_secret, authorization=True, projectors=True), port, workdir
                    )
                    servers.append(setup)
                    console.print(f"seeding {PLUGINS} plugins while the setup server P starts ...")
                    run_loop(seed_plugins(dsn, secret, workdir / "seed", PLUGINS))
                    asyncio.run(wait_healthy(setup))
                    timings["seed_and_server_p"] = _lap()
                    port = find_free_port()
                    a = start_server("A", True, server_env(dsn, port, secret, jwt_secret, authorization=True), port, workdir)
                    servers.append(a)
                    port = find_free_port()
                    b = start_server("B", False, server_env(dsn, port, secret, jwt_secret, authorization=False), port, workdir)
                    servers.append(b)
                    asyncio.run(wait_healthy(a))
                    prepared = asyncio.run(prepare(a, b, PLUGINS))
                    setup.stop()  # no projectors anywhere during the load
                    timings["servers_and_viewer"] = _lap()
                    console.print(
                        f"servers up: A :{a.port} (pid {a.pid}, authorization on), B :{b.port} (pid {b.pid}, authorization off); "
                        f"page of {prepared.body_bytes} bytes, same on both: {prepared.same_body}"
                    )
                    with bench_progress(22) as progress:
                        phases = run_loop(run_load(a, b, prepared.token, clients, warmup, seconds, rounds, progress, pg_pid))
                    timings["load"] = _lap()
                    banners = {s.label: banner(s) for s in servers}
                finally:
                    for server in servers:
                        server.stop()
            timings["teardown"] = _lap()

    sides = {
        side: side_summary([p for p in phases if p.side == side]) for side in ("authorized", "unauthorized")
    }
    guard = guard_cost(iterations=5_000 if seconds >= 5 else 1_000)
    timings["guard"] = _lap()
    a_rate, b_rate = sides["authorized"]["rate"], sides["unauthorized"]["rate"]
    value = a_rate / b_rate if b_rate > 0 else None
    client_max = max((p.cpu.get("clients") or 0.0 for p in phases), default=None)
    a_us, b_us = sides["authorized"]["cpu_per_request"]["server_us"], sides["unauthorized"]["cpu_per_request"]["server_us"]
    report = {
        "suite": "auth",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "clients": clients,
            "seconds": seconds,
            "warmup": warmup,
            "rounds": rounds,
            "order": " ".join(["A B"] * rounds),
            "path": PATH,
            "plugins": PLUGINS,
            "database": database,
            "timings_s": timings,
        },
        "target": {"value": value, "target": RATIO_TARGET, "met": value is not None and value >= RATIO_TARGET},
        "authorization_cost_us": round(a_us - b_us, 1) if a_us is not None and b_us is not None else None,
        "guard": guard,
        # What the guard alone predicts: B's server CPU per request plus the guard's extra microseconds.
        "expected_ratio_from_guard": round(b_us / (b_us + guard["extra_us"]), 4) if b_us else None,
        "client_cores_max": client_max,
        "client_bound": None if client_max is None else client_max > 0.8,
        "sides": sides,
        "phases": [{k: v for k, v in asdict(p).items() if k != "latencies"} for p in phases],
        "check": {"same_body": prepared.same_body, "body_bytes": prepared.body_bytes, "total": prepared.total},
        "servers": [
            {
                "label": s.label,
                "role": "setup: bootstrap and projectors, stopped before the load" if s.label == "P" else "measured",
                "authorization": s.authorization,
                "banner": banners.get(s.label, ""),
            }
            for s in servers
        ],
        "machine": machine_info(),
        "server": {"kind": pg.kind, **info},
    }
    json_path, md_path = write_report(folder, "auth", report, markdown)
    console.print(results_table(report))
    verdict = "[green]met[/green]" if report["target"]["met"] else "[red]not met[/red]"
    console.print(
        f"authorized / unauthorized: [bold]{'n/a' if value is None else f'{value:.3f}x'}[/bold] "
        f"(target >= {RATIO_TARGET:g}x: {verdict}); server CPU per request authorized - unauthorized: "
        f"{report['authorization_cost_us']} µs"
    )
    console.print(
        f"the guard alone: {guard['authorized_us']} µs per request with authorization, {guard['disabled_us']} µs "
        f"without: +{guard['extra_us']} µs on {b_us} µs of server CPU per request -> "
        f"{report['expected_ratio_from_guard']}x expected"
    )
    console.print(
        f"client side at most {fmt_cores(client_max)} cores in a phase"
        + (" [red](may be the bottleneck)[/red]" if report["client_bound"] else "")
        + f"; {os.cpu_count()} CPUs on the machine"
    )
    for key, side in sides.items():
        if side["first_error"]:
            console.print(f"  [red]{side_title(key)}: {side['errors']} errors, first: {side['first_error']}[/red]")
    console.print(f"report: {json_path}  {md_path}")
    return 0
