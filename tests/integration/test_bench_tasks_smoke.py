"""`charter bench tasks` runs end to end on the test server at tiny sizes and writes its report."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_tasks_measures_the_floor_the_scheduler_and_the_full_path(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(command="bench", suite="tasks", tasks=50, full_tasks="5,10", seconds=1.0,
                              report=str(tmp_path / "reports"))

    assert in_thread(run_bench, args, timeout=300) == 0

    (report_path,) = sorted((tmp_path / "reports").glob("tasks-*.json"))
    assert "recorder" in report_path.with_suffix(".md").read_text()
    report = json.loads(report_path.read_text())
    assert report["idle"]["samples"] > 0 and report["idle"]["cores"] is not None
    scheduler = report["scheduler"]
    assert scheduler["tasks"] == 50 and scheduler["samples"] > 0 and scheduler["lateness_ms"]["p99"] >= 0
    assert scheduler["fired"] >= scheduler["samples"] and scheduler["won"] == 0  # the recorder started them
    assert set(scheduler["verdict"]) >= {"p99_target_ratio", "cores_target_ratio", "p99_over_floor", "sustained"}
    assert [p["tasks"] for p in report["full_path"]] == [5, 10]
    for phase in report["full_path"]:
        assert phase["won"] > 0 and phase["lost"] == 0 and phase["samples"] > 0, phase
    assert set(in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))) <= before
