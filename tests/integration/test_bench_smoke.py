"""`charter bench append` runs end to end on the test server and writes a report with three positive rates."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_append_writes_report_with_three_rates(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    for name in ("CHARTER_WRITERS", "CHARTER_MAX_BATCH", "CHARTER_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(command="bench", suite="append", clients=4, seconds=1.0, report=str(tmp_path / "reports"))

    assert in_thread(run_bench, args) == 0

    reports = sorted((tmp_path / "reports").glob("append-*.json"))
    assert len(reports) == 1
    markdown = reports[0].with_suffix(".md")
    assert markdown.is_file() and "Charter" in markdown.read_text()
    report = json.loads(reports[0].read_text())
    results = report["results"]
    assert set(results) == {"postgres_ceiling", "eventsourcing_stock", "charter"}
    for key, result in results.items():
        assert result["rate"] > 0, key
        assert result["operations"] > 0, key
    assert results["charter"]["extra"]["commands_per_transaction"] >= 1
    assert set(report["ratios"]) == {"charter_vs_ceiling", "charter_vs_eventsourcing"}
    assert report["config"]["clients"] == 4
    assert report["machine"]["cpu_count"] >= 1
    assert report["server"]["version"]
    assert "fsync" in report["server"]["settings"]
    # The bench database is dropped again.
    after = set(in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn))))
    assert after <= before


def test_bench_append_with_telemetry_reports_on_against_off(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    args = argparse.Namespace(
        command="bench", suite="append", clients=4, seconds=1.0, report=str(tmp_path / "reports"), processes=1, telemetry=True
    )

    assert in_thread(run_bench, args) == 0

    report = json.loads(next((tmp_path / "reports").glob("append-*.json")).read_text())
    on = report["results"]["charter_telemetry"]
    assert on["rate"] > 0 and on["errors"] == 0
    assert on["extra"]["otlp_sink"]["exports"] > 0 and on["extra"]["otlp_sink"]["bytes"] > 0  # spans really went out
    assert on["extra"]["otlp_sink"]["by_name"]["command InstallPlugin"] > 0
    floor = on["extra"]["floor"]  # (e): the SDK's own cost per span, and where Charter stands against it
    assert floor["sdk_us_per_span"] > 0 and floor["spans_per_command"] > 1
    assert floor["cpu_us_per_command_off"] > 0 and floor["cpu_us_per_command_on"] > 0
    assert 0 < floor["floor_ratio_charter_spans"] < floor["best_ratio_one_span"] < 1
    assert "SDK floor" in next((tmp_path / "reports").glob("append-*.md")).read_text()
    ratio = report["ratios"]["telemetry_on_vs_off"]
    assert ratio["target"] == 0.9 and ratio["value"] > 0
    assert report["config"]["telemetry"] is True
    assert "OTEL_TRACES_EXPORTER" not in os.environ  # the run's OTEL_* variables are restored
