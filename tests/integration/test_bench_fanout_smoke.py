"""`charter bench fanout` runs end to end, tiny, on the test servers and writes a report with positive numbers."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import pytest

from ops.bench import run_bench
from tests.integration.bench_support import bench_databases, in_thread


async def _stream_names(url: str) -> set[str]:
    import nats

    nc = await nats.connect(url, connect_timeout=5)
    try:
        return {info.config.name for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_fanout_writes_report_with_latency_memory_and_relay_numbers(
    pg_server_dsn: str, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", pg_server_dsn)
    monkeypatch.setenv("CHARTER_NATS_URL", nats_url)
    monkeypatch.delenv("CHARTER_BENCH_PROFILE_SERVER", raising=False)
    databases_before = in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn)))
    args = argparse.Namespace(
        command="bench",
        suite="fanout",
        sse_clients=20,
        client_processes=1,
        rate=50.0,
        seconds=2.0,
        idle_seconds=1.0,
        relay_events=2000,
        relay_rounds=1,
        server_workers=workers,
        report=str(tmp_path / "reports"),
    )

    started = time.monotonic()
    assert in_thread(run_bench, args, timeout=180) == 0
    took = time.monotonic() - started

    reports = sorted((tmp_path / "reports").glob("fanout-*.json"))
    assert len(reports) == 1
    markdown = reports[0].with_suffix(".md")
    assert markdown.is_file() and "commit-to-client" in markdown.read_text()
    report = json.loads(reports[0].read_text())
    load = report["fanout"]
    assert report["config"]["server_workers"] == workers and report["server_process"]["workers"] == workers
    assert load["clients"] == 20
    assert load["commands"]["completed"] > 0 and load["commands"]["errors"] == 0
    assert load["events_in_window"] > 0
    assert load["deliveries"] > 0 and load["deliveries_per_s"] > 0
    assert load["per_client_events_per_s"]["mean"] > 0
    assert load["latency_ms"]["p50"] > 0 and load["latency_ms"]["p99"] >= load["latency_ms"]["p50"]
    from_ack = load["latency_from_ack_ms"]
    assert from_ack["count"] == load["latency_ms"]["count"], "every timed delivery has its command's acknowledgement"
    assert from_ack["p50"] <= load["latency_ms"]["p50"]
    assert load["stages_ms"]["recorded_to_jetstream"]["p99"] > 0
    assert load["stages_ms"]["recorded_to_probe_sse"]["p99"] > 0
    assert load["cpu_cores"]["server"] >= 0
    assert load["hub"]["flushes"] > 0 and load["hub"]["us_per_write"] > 0
    floor = report["floor"]
    assert floor["clients"] == 20 and floor["chunk_bytes"] > 0 and floor["us_per_write_wall"] > 0
    memory = report["memory"]
    assert memory["idle_clients"] == 20
    assert memory["server_rss_before_kib"] > 0 and memory["kib_per_idle_client"] is not None
    relay = report["relay"]
    assert relay["events"] == 2000
    assert relay["best"]["relay"] > 0 and relay["best"]["raw"] > 0
    assert relay["relay_vs_raw"] > 0
    assert set(report["targets"]) == {"p99_commit_to_client_ms", "kib_per_idle_client", "relay_vs_raw"}
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    # The bench database and the bench's JetStream streams are gone again.
    assert in_thread(lambda: asyncio.run(bench_databases(pg_server_dsn))) <= databases_before
    streams = in_thread(lambda: asyncio.run(_stream_names(nats_url)))
    assert not {name for name in streams if name.startswith(report["config"]["stream"])}
    assert took < 60, f"the tiny run took {took:.0f} s"
