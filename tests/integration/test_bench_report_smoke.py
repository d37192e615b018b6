"""`charter bench report` runs end to end on the test server with a short site history and writes its report:
the read-model report equals the as-of report at its checkpoint, and the as-of phases fold only the events
after the latest snapshot."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_report_times_the_read_model_and_the_as_of_report(pg_server_dsn: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(command="bench", suite="report", events=300, rounds=1, window=20, snapshot_every=50,
                              report=str(tmp_path / "reports"))

    assert in_thread(run_bench, args, timeout=300) == 0

    (report_path,) = sorted((tmp_path / "reports").glob("report-*.json"))
    assert "as of / read model" in report_path.with_suffix(".md").read_text()
    report = json.loads(report_path.read_text())
    assert report["config"]["site_events"] >= 300
    phases = report["phases"]
    assert phases["as_of_no_snapshots"]["folded"] == 270 and phases["as_of_worst"]["folded"] == 49
    assert phases["as_of"]["folded"] < 50
    assert {p["changes"] for p in phases.values()} == {20}
    assert report["same_as_replay"] is True
    assert report["ratio"]["value"] > 0 and report["ratio"]["target"] == 5.0
    assert set(in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))) <= before
