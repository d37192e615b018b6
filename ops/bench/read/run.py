"""`charter bench read`: the seed, the servers for each worker count, the load and the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.bench.auth.server import server_env, wait_healthy
from ops.bench.auth.setup import seed_plugins, viewer_token
from ops.bench.common import ServerProcess, bench_progress, machine_info, run_loop, warmup_for, write_report
from ops.bench.http_load import HOST, PhaseResult, request_bytes, run_phase, side_summary
from ops.bench.postgres import bench_server, fresh_database, migrate_database, postmaster_pid, server_info
from ops.bench.read import (
    APP_ENV, BODIES_ENV, DETAILS, LIST_PATH, P99_TARGET_MS, PLUGINS, PREFIX, PROFILE_ENV, RATIO_TARGET, ROUNDS_ENV,
    WORKERS_ENV, detail_path,
)
from ops.bench.read.report import markdown, results_table

PATHS = {"list": [LIST_PATH], "detail": [detail_path(i) for i in range(DETAILS)]}


@dataclass
class ReadServer(ServerProcess):
    label: str = ""
    workers: int = 1

    def family(self) -> list[int]:
        """The server's process and its workers (uvicorn's supervisor spawns them)."""
        pids = [self.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                        pids.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue
        return pids


def start(label: str, app: str, workers: int, env: dict[str, str], port: int, workdir: Path) -> ReadServer:
    env = {**env, APP_ENV: app, WORKERS_ENV: str(workers), "CHARTER_PORT": str(port)}
    return ReadServer.spawn(
        "ops.bench.read.server", env, port, workdir / f"server-{label}.log", workdir / f"server-{label}",
        label=label, workers=workers,
    )


async def fetch_bodies(port: int, token: str) -> dict[str, Any]:
    """The list page and one detail as the viewer reads them (and a check that no token gets 401)."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
        viewer = {"Authorization": f"Bearer {token}"}
        page, detail, anonymous = (
            await http.get(LIST_PATH, headers=viewer), await http.get(detail_path(0), headers=viewer), await http.get(LIST_PATH)
        )
    if page.status_code != 200 or detail.status_code != 200 or anonymous.status_code != 401:
        raise RuntimeError(f"Charter must answer 200, 200 with the token and 401 without: {page.status_code} "
                           f"{detail.status_code} {anonymous.status_code}")
    return {"list": page.json(), "detail": detail.json(), "list_bytes": len(page.content), "detail_bytes": len(detail.content)}


async def run_load(
    charter: ReadServer, hello: ReadServer, token: str, clients: int, warmup: float, seconds: float, rounds: int,
    progress: Any, pg_pid: int | None,
) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    n = charter.workers
    for path, paths in PATHS.items():
        plans = [
            (charter, "charter", [request_bytes(charter.port, p, token, "charter-bench-read") for p in paths]),
            (hello, "hello", [request_bytes(hello.port, p, None, "charter-bench-read") for p in paths]),
        ]
        for server, app, requests_ in plans:  # one unmeasured warm-up each
            await run_phase(server.port, server.family(), f"{app}:{path}:{n}", 0, f"warm-up {app} {path} N={n}",
                            requests_, clients, warmup / 2, warmup, progress, pg_pid)
        for round_ in range(1, rounds + 1):
            for server, app, requests_ in plans:
                results.append(await run_phase(
                    server.port, server.family(), f"{app}:{path}:{n}", round_, f"{app} {path} N={n} #{round_}",
                    requests_, clients, warmup, seconds, progress, pg_pid,
                ))
    return results


def run_read(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    from infrastructure.embedded.process import find_free_port
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    clients = max(1, int(getattr(args, "clients", None) or 32))
    seconds = max(0.5, float(getattr(args, "seconds", None) or 10.0))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    worker_counts = sorted({max(1, int(n)) for n in (getattr(args, "workers", None) or [1, 2])})
    warmup = warmup_for(seconds)
    rounds = max(1, int(os.environ.get(ROUNDS_ENV) or 2))
    plugins = max(DETAILS, int(getattr(args, "plugins", None) or PLUGINS))
    console = Console()
    started_at = datetime.now(timezone.utc)
    database = f"charter_bench_{uuid.uuid4().hex[:12]}"
    secret, jwt_secret = Fernet.generate_key().decode(), uuid.uuid4().hex + uuid.uuid4().hex
    phases: list[PhaseResult] = []

    with tempfile.TemporaryDirectory(prefix="charter-bench-read-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as pg:
            with fresh_database(pg, database) as dsn:
                info = asyncio.run(server_info(dsn))
                pg_pid = asyncio.run(postmaster_pid(dsn))
                asyncio.run(migrate_database(dsn))
                env = server_env(dsn, 0, secret, jwt_secret, authorization=True, projectors=True)
                env[BODIES_ENV] = str(workdir / "bodies.json")
                console.print(
                    f"database {database} on PostgreSQL {info['version']} ({pg.kind}); {plugins} plugins, {clients} clients, "
                    f"workers {worker_counts}, {rounds} rounds of {seconds:g}s after {warmup:g}s warm-up per path"
                )
                token, bodies = "", {}
                for n in worker_counts:
                    servers: list[ReadServer] = []
                    try:
                        charter_env = dict(env)
                        if os.environ.get(PROFILE_ENV) and n == 1:
                            charter_env[PROFILE_ENV] = os.environ[PROFILE_ENV]
                        charter = start(f"C{n}", "charter", n, charter_env, find_free_port(), workdir)
                        servers.append(charter)
                        if not token:
                            console.print(f"seeding {plugins} plugins while Charter starts ...")
                            run_loop(seed_plugins(dsn, secret, workdir / "seed", plugins, PREFIX))
                        asyncio.run(wait_healthy(charter))  # type: ignore[arg-type]
                        if not token:
                            token = asyncio.run(viewer_token(charter.port, plugins, LIST_PATH))
                            bodies = asyncio.run(fetch_bodies(charter.port, token))
                            (workdir / "bodies.json").write_text(json.dumps(bodies))
                        hello = start(f"H{n}", "hello", n, env, find_free_port(), workdir)
                        servers.append(hello)
                        asyncio.run(wait_healthy(hello))  # type: ignore[arg-type]
                        with bench_progress(30) as progress:
                            phases += run_loop(run_load(charter, hello, token, clients, warmup, seconds, rounds, progress, pg_pid))
                    finally:
                        for server in servers:
                            server.stop()

    report = build_report(phases, worker_counts, clients, seconds, warmup, rounds, plugins, database, bodies, started_at)
    report["machine"], report["server"] = machine_info(), {"kind": pg.kind, **info}
    json_path, md_path = write_report(folder, "read", report, markdown)
    console.print(results_table(report))
    for line in verdicts(report):
        console.print(line)
    console.print(f"report: {json_path}  {md_path}")
    return 0


def build_report(
    phases: list[PhaseResult], worker_counts: list[int], clients: int, seconds: float, warmup: float, rounds: int,
    plugins: int, database: str, bodies: dict[str, Any], started_at: datetime,
) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    for phase in phases:
        sides.setdefault(phase.side, []).append(phase)
    summaries = {key: side_summary(found) for key, found in sides.items()}
    ratios: dict[str, Any] = {}
    for n in worker_counts:
        for path in PATHS:
            c, h = summaries.get(f"charter:{path}:{n}"), summaries.get(f"hello:{path}:{n}")
            if c and h:
                ratios[f"{path}:{n}"] = {
                    "charter": round(c["rate"], 1), "hello": round(h["rate"], 1),
                    "ratio": round(c["rate"] / h["rate"], 4) if h["rate"] else None,
                    "charter_p99_ms": (c["latency_ms"] or {}).get("p99"), "hello_p99_ms": (h["latency_ms"] or {}).get("p99"),
                }
    scaling = {}
    if 1 in worker_counts and len(worker_counts) > 1:
        top = max(worker_counts)
        for path in PATHS:
            one, many = summaries.get(f"charter:{path}:1"), summaries.get(f"charter:{path}:{top}")
            if one and many and one["rate"]:
                scaling[path] = {"workers": top, "ratio": round(many["rate"] / one["rate"], 3)}
    targets = {
        path: {
            "ratio": ratios.get(f"{path}:1", {}).get("ratio"),
            "p99_ms": ratios.get(f"{path}:1", {}).get("charter_p99_ms"),
            "met": bool(ratios.get(f"{path}:1") and (ratios[f"{path}:1"]["ratio"] or 0) >= RATIO_TARGET
                        and (ratios[f"{path}:1"]["charter_p99_ms"] or 1e9) <= P99_TARGET_MS),
        }
        for path in PATHS
    }
    return {
        "suite": "read",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "clients": clients, "seconds": seconds, "warmup": warmup, "rounds": rounds, "plugins": plugins,
            "workers": worker_counts, "paths": {"list": LIST_PATH, "detail": f"{detail_path(0)} .. ({DETAILS} plugins)"},
            "database": database,
        },
        "targets": {"ratio": RATIO_TARGET, "p99_ms": P99_TARGET_MS, "by_path": targets},
        "ratios": ratios,
        "scaling": scaling,
        "sides": summaries,
        "phases": [{k: v for k, v in asdict(p).items() if k != "latencies"} for p in phases],
        "check": {"list_bytes": bodies.get("list_bytes"), "detail_bytes": bodies.get("detail_bytes"),
                  "total": (bodies.get("list") or {}).get("total")},
    }


def verdicts(report: dict[str, Any]) -> list[str]:
    lines = []
    for path, target in report["targets"]["by_path"].items():
        ok = "[green]met[/green]" if target["met"] else "[red]not met[/red]"
        lines.append(f"{path}: Charter / bare Litestar = [bold]{target['ratio']}x[/bold], p99 {target['p99_ms']} ms "
                     f"(target >= {RATIO_TARGET}x and p99 <= {P99_TARGET_MS:g} ms, one worker: {ok})")
    for path, s in report["scaling"].items():
        lines.append(f"{path}: Charter with {s['workers']} workers / 1 worker = [bold]{s['ratio']}x[/bold]")
    for key, side in report["sides"].items():
        if side["first_error"]:
            lines.append(f"[red]{key}: {side['errors']} errors, first: {side['first_error']}[/red]")
    return lines
