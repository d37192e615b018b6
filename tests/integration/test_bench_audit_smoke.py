"""`charter bench audit` runs end to end on the test server with a small log and writes its report."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_audit_measures_verification_against_the_raw_scan(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(command="bench", suite="audit", events=600, rounds=1, report=str(tmp_path / "reports"))

    assert in_thread(run_bench, args, timeout=300) == 0

    (report_path,) = sorted((tmp_path / "reports").glob("audit-*.json"))
    assert "raw scan" in report_path.with_suffix(".md").read_text()
    report = json.loads(report_path.read_text())
    in_log = report["config"]["events_in_log"]
    assert in_log >= 600 and report["config"]["checkpoints"] >= 1
    assert set(report["replays"]) == {"raw_scan", "verify", "verify_export"}
    for key, replay in report["replays"].items():
        assert replay["events"] == in_log and replay["rate"] > 0, key
    assert set(report["ratios"]) == {"verify", "verify_export"}
    assert report["verification"]["verify"] == {"ok": True, "findings": 0, "checkpoints": report["config"]["checkpoints"], "export_bytes": None}
    assert report["verification"]["verify_export"]["export_bytes"] > 0
    assert set(in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))) <= before
