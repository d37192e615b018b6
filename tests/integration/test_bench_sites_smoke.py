"""`charter bench sites` runs end to end on the test server with tiny sites and writes its report (the
report's shape, not the speed)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


def test_bench_sites_measures_installs_beside_activations_at_sites_running_many_extensions(
    pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    args = argparse.Namespace(
        command="bench", suite="sites", clients=2, sites=3, extensions=12, spares=40, seconds=0.5, rounds=1,
        report=str(tmp_path / "reports"),
    )

    assert in_thread(run_bench, args, timeout=300) == 0

    (report_path,) = sorted((tmp_path / "reports").glob("sites-*.json"))
    assert "ActivateExtension / InstallPlugin" in report_path.with_suffix(".md").read_text()
    report = json.loads(report_path.read_text())
    config = report["config"]
    assert (config["sites"], config["extensions"], config["spares_per_site"], config["rounds"]) == (3, 12, 40, 1)
    results = report["results"]
    assert set(results) == {"install", "activate", "deactivate"}
    for key, item in results.items():
        assert item["operations"] > 0 and item["rate"] > 0 and item["errors"] == 0, key
        assert len(item["rounds"]) == 1 and item["clients"] == 2, key
    activate = results["activate"]["extra"]
    assert 12 < activate["extensions_at_end"] <= 12 + 40 and "done" not in activate
    assert results["deactivate"]["operations"] == sum(activate["completed"])  # the sites are as they were
    ratio = report["ratio"]
    assert ratio["target"] == 0.5 and ratio["value"] == pytest.approx(results["activate"]["rate"] / results["install"]["rate"])
    # its own database is dropped (other runs on the shared server may hold theirs meanwhile)
    assert config["database"] not in in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
