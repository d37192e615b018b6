"""`charter bench auth` runs end to end, tiny, on the test server and writes a report with two positive rates."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_auth_writes_report_with_two_rates(pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    monkeypatch.delenv("CHARTER_NATS_URL", raising=False)
    monkeypatch.delenv("CHARTER_BENCH_AUTH_ROUNDS", raising=False)
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(command="bench", suite="auth", clients=4, seconds=1.0, report=str(tmp_path / "reports"))

    started = time.monotonic()
    assert in_thread(run_bench, args) == 0
    took = time.monotonic() - started

    reports = sorted((tmp_path / "reports").glob("auth-*.json"))
    assert len(reports) == 1
    markdown = reports[0].with_suffix(".md")
    assert markdown.is_file() and "Authorized / unauthorized" in markdown.read_text()
    report = json.loads(reports[0].read_text())
    sides = report["sides"]
    assert set(sides) == {"authorized", "unauthorized"}
    for key, side in sides.items():
        assert side["rate"] > 0, key
        assert side["requests"] > 0 and side["errors"] == 0, (key, side["first_error"])
        assert side["latency_ms"]["p99"] >= side["latency_ms"]["p50"] > 0, key
        assert len(side["phase_rates"]) == 2 and all(r > 0 for r in side["phase_rates"]), key
    assert [p["side"] for p in report["phases"]] == ["authorized", "unauthorized"] * 2  # A B A B
    assert report["target"]["value"] > 0 and report["target"]["target"] == 0.9
    assert isinstance(report["target"]["met"], bool)
    assert report["check"]["same_body"] is True and report["check"]["total"] >= 20
    assert report["config"]["clients"] == 4
    assert [(s["label"], s["authorization"]) for s in report["servers"]] == [("P", True), ("A", True), ("B", False)]
    assert report["client_cores_max"] is not None and report["client_cores_max"] >= 0
    guard = report["guard"]  # the guard alone, measured in process
    assert guard["authorized_us"] > 0 and guard["disabled_us"] > 0 and guard["calls"] > 0
    assert 0 < report["expected_ratio_from_guard"] <= 1.5
    # The bench database is dropped again.
    assert in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn))) <= before
    assert took < 30, f"the tiny run took {took:.0f} s"
