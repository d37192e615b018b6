"""`charter bench rebuild` runs end to end on the test server with a small log and writes its report."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from projections import PROJECTIONS
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_rebuild_measures_the_floor_every_rebuild_and_the_live_lag(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    monkeypatch.setenv("CHARTER_REBUILD_CHUNK", "100")
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(
        command="bench", suite="rebuild", events=600, clients=2, seconds=1.0, report=str(tmp_path / "reports")
    )

    assert in_thread(run_bench, args, timeout=300) == 0

    (report_path,) = sorted((tmp_path / "reports").glob("rebuild-*.json"))
    assert "raw scan" in report_path.with_suffix(".md").read_text()
    report = json.loads(report_path.read_text())
    in_log = report["config"]["events_in_log"]
    assert in_log >= 600 and report["config"]["chunk"] == 100
    assert {"plugin", "user", "role"} <= set(report["config"]["stream_types"])
    replays = report["replays"]
    rebuilds = {f"rebuild_{p.name}" for p in PROJECTIONS} | {"rebuild_all"}
    assert set(replays) == {"raw_scan"} | rebuilds
    for key, replay in replays.items():
        assert replay["events"] == in_log and replay["rate"] > 0, key
    assert set(report["ratios"]) == rebuilds
    lag = report["lag"]
    assert lag["append_events"] > 0 and lag["errors"] == 0
    for name in ("plugins", "identity", "sites"):
        assert lag["samples"][name] > 0 and lag["lag_ms"][name]["p99"] >= 0, name
    assert set(in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))) <= before
