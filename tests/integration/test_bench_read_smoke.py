"""`charter bench read` and `charter bench access-cache` run end to end, tiny, on the test server and
write their reports."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_read_writes_a_report_with_ratios_for_each_worker_count(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    monkeypatch.delenv("CHARTER_NATS_URL", raising=False)
    monkeypatch.setenv("CHARTER_BENCH_READ_ROUNDS", "1")
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(
        command="bench", suite="read", clients=4, seconds=0.5, workers=[1, 2], plugins=20, report=str(tmp_path / "reports")
    )
    assert in_thread(run_bench, args, timeout=300) == 0

    reports = sorted((tmp_path / "reports").glob("read-*.json"))
    assert len(reports) == 1 and "Charter / bare" in reports[0].with_suffix(".md").read_text()
    report = json.loads(reports[0].read_text())
    assert set(report["sides"]) == {f"{app}:{path}:{n}" for app in ("charter", "hello") for path in ("list", "detail") for n in (1, 2)}
    for key, side in report["sides"].items():
        assert side["rate"] > 0 and side["errors"] == 0, (key, side["first_error"])
        assert side["latency_ms"]["p99"] >= side["latency_ms"]["p50"] > 0, key
    for key, ratio in report["ratios"].items():
        assert ratio["ratio"] > 0, key
    assert set(report["scaling"]) == {"list", "detail"} and all(s["ratio"] > 0 for s in report["scaling"].values())
    assert report["check"]["total"] == 20
    assert in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn))) <= before


def test_bench_access_cache_refreshes_after_every_change(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    args = argparse.Namespace(command="bench", suite="access-cache", users=2_000, report=str(tmp_path / "reports"))
    assert in_thread(run_bench, args, timeout=300) == 0
    report = json.loads(sorted((tmp_path / "reports").glob("access-cache-*.json"))[0].read_text())
    small, large = report["results"]
    assert (small["users"], large["users"]) == (10, 2_000) and large["grants"] > 1_000
    assert small["changes_wrong"] == 0 and large["changes_wrong"] == 0  # every grant and revocation seen
    assert all(r["idle"]["p50"] > 0 and r["change"]["p50"] > 0 for r in report["results"])
