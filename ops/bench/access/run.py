"""`charter bench access-cache`: seed, load, idle and change refreshes per size, and the report."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ops.bench.access import CHANGES, IDLE_ROUNDS, RATIO_TARGET, SMALL
from ops.bench.common import latency_summary, machine_info, run_loop, write_report
from ops.bench.postgres import bench_server, fresh_database, migrate_database

FILL = """
INSERT INTO rm_identity.users (user_id, email, full_name, is_active, created_at, updated_at, grants_changed_at, stream_version)
SELECT 'filler-' || i, 'filler-' || i || '@bench.charter', 'Filler ' || i, i % 50 <> 0, now(), now(), now(), 1
FROM generate_series(1, $1) AS i;
"""
FILL_GRANTS = """
INSERT INTO rm_identity.user_grants (user_id, role_key, site_id, granted_at, granted_by)
SELECT 'filler-' || (1 + (i % $1)), (ARRAY['viewer', 'auditor', 'site-admin'])[1 + i % 3],
       CASE WHEN i % 4 = 0 THEN '' ELSE 'site-' || (i % 997) END, now(), 'bench'
FROM generate_series(1, $2) AS i
ON CONFLICT DO NOTHING;
"""


async def measure(dsn: str, data_dir: Path, users: int, grants: int, rounds: int) -> dict[str, Any]:
    from application.context import CommandContext
    from application.identity.handlers import GrantRole, RegisterUser, RevokeRole
    from infrastructure.eventlog.projector import apply_batch, connect, ensure_projection
    from infrastructure.identity.access_cache import Authority
    from infrastructure.settings import Settings
    from interfaces.runtime import bootstrap, start_runtime, stop_runtime
    from projections.identity.projection import AccessProjection

    settings = Settings(database_url=dsn, data_dir=data_dir, run_projectors=False, migrate_on_start=False,
                        log_level="warning", pool_size=4, secret_key=None)
    runtime = await start_runtime(settings)
    for task in runtime.tasks:  # the runtime's own refresh loop would measure against ours
        if task.get_name() == "authority-refresh":
            task.cancel()
    try:
        ctx = CommandContext(actor="bench")
        await bootstrap(runtime, {})
        user_id = (await runtime.execute(RegisterUser(email="real@bench.charter", password="a-bench-password"), ctx)).stream_id.split(":", 1)[1]
        projection = AccessProjection()
        conn = await connect(dsn)
        try:
            await ensure_projection(conn, projection)
            await conn.execute(f'SET search_path TO "{projection.schema}", public')
            while await apply_batch(conn, projection, 500):
                pass
            await conn.execute(FILL, users)
            await conn.execute(FILL_GRANTS, users, grants)
            await conn.execute("ANALYZE rm_identity.users; ANALYZE rm_identity.user_grants")
            seeded = await conn.fetchval("SELECT count(*) FROM rm_identity.user_grants")
        finally:
            await conn.close()

        authority = Authority(runtime.authority.tokens, None, pool=runtime.pool)
        started = time.perf_counter()
        await authority.refresh()
        load = time.perf_counter() - started
        assert len(authority.grants) >= users, (len(authority.grants), users)
        idle = []
        for _ in range(rounds):
            started = time.perf_counter()
            await authority.refresh()
            idle.append(time.perf_counter() - started)
        changed, wrong = [], 0
        for i in range(CHANGES):
            command = (GrantRole if i % 2 == 0 else RevokeRole)(user_id=user_id, role="viewer")
            await runtime.execute(command, ctx)
            started = time.perf_counter()
            await authority.refresh()
            changed.append(time.perf_counter() - started)
            wrong += (("viewer", None) in authority.grants.get(user_id, [])) != (i % 2 == 0)
        reloads = []
        for _ in range(3):  # what each refresh cost when it re-read everything: a fresh load
            fresh = Authority(runtime.authority.tokens, None, pool=runtime.pool)
            started = time.perf_counter()
            await fresh.refresh()
            reloads.append(time.perf_counter() - started)
        return {
            "users": users, "grants": seeded, "load_ms": round(load * 1000, 2),
            "full_reload_ms": round(statistics.median(reloads) * 1000, 2),
            "idle": latency_summary(idle), "change": latency_summary(changed), "changes_wrong": wrong,
        }
    finally:
        await stop_runtime(runtime)


def run_access_cache(args: argparse.Namespace) -> int:
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    console = Console()
    large = max(SMALL[0] + 1, int(getattr(args, "users", None) or 100_000))
    rounds = IDLE_ROUNDS
    folder = Path(getattr(args, "report", None) or "bench-reports")
    started_at = datetime.now(timezone.utc)
    sizes = [SMALL, (large, 2 * large)]
    results = []
    with tempfile.TemporaryDirectory(prefix="charter-bench-access-") as tmp:
        with bench_server(Path(tmp), console) as pg:
            for users, grants in sizes:
                with fresh_database(pg, f"charter_bench_{uuid.uuid4().hex[:12]}") as dsn:
                    asyncio.run(migrate_database(dsn))
                    console.print(f"{users:,} users, {grants:,} grants: seeding and refreshing ...")
                    results.append(run_loop(measure(dsn, Path(tmp) / f"data-{users}", users, grants, rounds)))
    small, big = results
    ratios = {
        kind: round(big[kind]["p50"] / small[kind]["p50"], 3) if small[kind] and small[kind]["p50"] else None
        for kind in ("idle", "change")
    }
    report = {
        "suite": "access-cache",
        "started_at": started_at.isoformat(timespec="seconds"),
        "config": {"rounds": rounds, "changes": CHANGES, "sizes": sizes},
        "results": results,
        "ratios": ratios,
        "target": {"ratio": RATIO_TARGET, "met": all(r is not None and r <= RATIO_TARGET for r in ratios.values())
                   and not any(r["changes_wrong"] for r in results)},
        "machine": machine_info(),
        "server": {"kind": pg.kind},
    }
    json_path, md_path = write_report(folder, "access-cache", report, markdown)
    table = Table(title="charter bench access-cache", title_justify="left")
    for name in HEADERS:
        table.add_column(name, justify="right")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"refresh with {big['users']:,} users over {small['users']:,}: idle {ratios['idle']}x, after a change "
                  f"{ratios['change']}x (target <= {RATIO_TARGET}x: {'met' if report['target']['met'] else 'NOT met'})")
    console.print(f"report: {json_path}  {md_path}")
    return 0


HEADERS = ["users", "grants", "first load ms", "full re-read ms (each refresh before)", "idle refresh p50 / p99 ms",
           "refresh after a change p50 / p99 ms", "changes missed"]


def rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [f"{r['users']:,}", f"{r['grants']:,}", f"{r['load_ms']}", f"{r['full_reload_ms']}",
         f"{r['idle']['p50']} / {r['idle']['p99']}", f"{r['change']['p50']} / {r['change']['p99']}", str(r["changes_wrong"])]
        for r in report["results"]
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# charter bench access-cache — {report['started_at']}", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---:|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    r = report["ratios"]
    lines += ["", f"Refresh with many users over few: idle **{r['idle']}x**, after a change **{r['change']}x** "
              f"(target ≤ {report['target']['ratio']}x: {'met' if report['target']['met'] else 'NOT met'}).", ""]
    return "\n".join(lines)
