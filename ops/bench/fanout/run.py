"""`charter bench fanout`: one PostgreSQL and one NATS server, a fresh database and streams, phases (1)-(5)
and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.bench.common import bench_progress, machine_info, raise_nofile, run_loop, write_report
from ops.bench.fanout.config import TARGET_CLIENTS, TARGET_RATE, FanoutConfig, auto_client_processes
from ops.bench.fanout.floor import raw_floor
from ops.bench.fanout.load import run_fanout_phases
from ops.bench.fanout.relay import delete_streams, relay_phases
from ops.bench.fanout.report import analysis, markdown, results_tables, targets
from ops.bench.fanout.server import PROFILE_ENV
from ops.bench.postgres import bench_server, database_name, fresh_database, migrate_database, server_info


@contextlib.contextmanager
def bench_nats(workdir: Path, console: Console) -> Iterator[tuple[str, str, int | None]]:
    """CHARTER_NATS_URL's server, or an embedded nats-server (JetStream) under `workdir`: (url, kind, pid)."""
    given = os.environ.get("CHARTER_NATS_URL")
    if given:
        yield given, "external", None
        return
    from infrastructure.embedded.nats import EmbeddedNats

    server = EmbeddedNats(workdir / "nats")
    console.print(f"starting embedded NATS (JetStream) under {server.store_dir} ...")
    url = server.start()
    try:
        yield url, "embedded", server.pid
    finally:
        server.stop()
        console.print("embedded NATS stopped")


async def _nats_info(url: str) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url, connect_timeout=5)
    try:
        info = nc._server_info  # noqa: SLF001 - the INFO the server sent
        return {"version": info.get("version"), "jetstream": info.get("jetstream"), "max_payload": info.get("max_payload")}
    finally:
        await nc.close()


def run_fanout(args: argparse.Namespace) -> int:
    clients = max(1, int(getattr(args, "sse_clients", TARGET_CLIENTS) or TARGET_CLIENTS))
    rate = max(1.0, float(getattr(args, "rate", TARGET_RATE) or TARGET_RATE))
    seconds = max(1.0, float(getattr(args, "seconds", None) or 20.0))
    relay_events = max(1000, int(getattr(args, "relay_events", 20_000) or 20_000))
    relay_rounds = max(1, int(getattr(args, "relay_rounds", 2) or 2))
    processes = int(getattr(args, "client_processes", 0) or 0) or auto_client_processes(clients)
    processes = max(1, min(processes, clients))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    workers = max(1, int(getattr(args, "server_workers", 1) or 1))
    profile = getattr(args, "profile_server", None) or os.environ.get(PROFILE_ENV)
    if profile and workers > 1:
        raise SystemExit("--profile-server profiles a one-worker server; leave out --server-workers")
    cfg = FanoutConfig(
        clients=clients,
        rate=rate,
        seconds=seconds,
        warmup=min(3.0, max(1.0, seconds / 5)),
        idle_seconds=float(getattr(args, "idle_seconds", None) or (5.0 if clients >= 200 else 1.0)),
        client_processes=processes,
        plugins=max(64, min(5000, int(rate * 2))),
        server_projectors=bool(getattr(args, "server_projectors", False)),
        relay_in=str(getattr(args, "relay_in", None) or "server"),
        profile=Path(profile).absolute() if profile else None,
        server_workers=workers,
    )
    console = Console()
    load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    started_at = datetime.now(timezone.utc)
    token = uuid.uuid4().hex[:12]
    database = database_name()
    from infrastructure.stream.relay import StreamSettings

    stream = StreamSettings(name=f"CHARTER_BENCH_{token.upper()}", prefix=f"charter_bench_{token}.events", max_age_days=1)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="charter-bench-fanout-") as tmp:
        workdir = Path(tmp)
        with (
            bench_server(workdir, console) as pg,
            bench_nats(workdir, console) as (nats_url, nats_kind, nats_pid),
            fresh_database(pg, database) as dsn,
        ):
            try:
                asyncio.run(migrate_database(dsn))
                pg_info = asyncio.run(server_info(dsn))
                nats_info = asyncio.run(_nats_info(nats_url))
                console.print(
                    f"database {database} on PostgreSQL {pg_info['version']} ({pg.kind}); NATS {nats_info.get('version')} ({nats_kind}), "
                    f"stream {stream.name}; server with {workers} worker(s); {clients:,} SSE clients in {processes} process(es), {rate:g} events/s for "
                    f"{cfg.warmup:g}s warm-up + {seconds:g}s; relay phase {relay_events:,} events x {relay_rounds} rounds"
                )
                with bench_progress(28) as progress:
                    fan = run_fanout_phases(dsn, nats_url, stream, cfg, workdir, progress, nats_pid)
                    flooring = progress.add_task("(5) floor: bare socket writes", total=None, status="")
                    floor = raw_floor(cfg.clients, int(fan.load.get("bytes_per_chunk") or 25_000))
                    progress.update(
                        flooring, total=1, completed=1,
                        status=f"{floor['us_per_write_wall']:,.1f} µs per write, {floor['pass_ms_p50']:,.1f} ms per pass",
                    )
                    relay = run_loop(relay_phases(dsn, nats_url, token, relay_events, relay_rounds, progress))
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run(delete_streams(nats_url, [stream.name]))

    report: dict[str, Any] = {
        "suite": "fanout",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "sse_clients": clients,
            "server_workers": workers,
            "client_processes": processes,
            "rate": rate,
            "seconds": seconds,
            "warmup": cfg.warmup,
            "idle_seconds": cfg.idle_seconds,
            "plugins": cfg.plugins,
            "server_projectors": cfg.server_projectors,
            "relay_in": cfg.relay_in,
            "relay_events": relay_events,
            "relay_rounds": relay_rounds,
            "database": database,
            "stream": stream.name,
            "profile": str(cfg.profile) if cfg.profile else None,
            "loadavg_at_start": load_at_start,
        },
        "machine": machine_info(),
        "servers": {"postgres": {"kind": pg.kind, **pg_info}, "nats": {"kind": nats_kind, **nats_info}},
        "server_process": fan.server,
        "memory": fan.memory,
        "fanout": fan.load,
        "floor": floor,
        "relay": relay,
        "targets": {},
        "notes": [
            "recorded_at is the domain event's timestamp, taken in the writer just before the append is queued for "
            "the group commit; latencies include the commit.",
            "All processes (server, clients, writer, PostgreSQL, NATS) share one machine.",
        ],
    }
    report["targets"] = targets(cfg, fan, relay)
    report["analysis"] = analysis(report)
    if fan.profile_top:
        report["profile_top"] = fan.profile_top
    json_path, md_path = write_report(folder, "fanout", report, markdown)
    for table in results_tables(report):
        console.print(table)
    for line in report["analysis"]:
        console.print(line)
    if fan.server.get("exit_code") not in (0, None, -signal.SIGTERM):  # uvicorn re-raises SIGTERM when done
        console.print(f"[yellow]server exited with {fan.server.get('exit_code')}; log tail:\n{fan.server.get('log_tail')}[/yellow]")
    console.print(f"report: {json_path}  {md_path}")
    return 0
