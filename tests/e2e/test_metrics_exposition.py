"""/metrics as Prometheus reads it, and ops/observability/ as Prometheus and Grafana load it.

`promtool` (Debian package `prometheus`; CI installs it, see ops/test) lints the exposition of a server
that has done some work and checks the scrape configuration and the alert rules; without it those
tests are skipped, saying why. Labels come from small fixed sets only, and every metric the rules and
the dashboard query exists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from infrastructure.telemetry import metrics
from tests.e2e.plugin_kit import installed, manifest, unique_id

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "ops" / "observability"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on PATH (Debian package `prometheus`; CI installs it through ops/test)"
)
# Every label Charter's metrics carry: each takes values from a small fixed set, never an id or an e-mail
# (but for `plugin`: installed plugin ids, capped per process, see metrics.PLUGIN_SERIES).
BOUNDED_LABELS = {
    "method", "route", "status", "command", "outcome", "projection", "dependency", "tier", "reason", "action", "format",
    "plugin", "event",
}
PLUGIN_ID = unique_id("metrics")


@pytest.fixture(scope="module")
async def exposition(client) -> str:
    # The plugin label is capped per process (PLUGIN_SERIES): the modules before this one may have
    # installed more plugins than that, so this one's counts start from a process that labelled none.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_plugins_labelled", set())
        await installed(client, manifest(PLUGIN_ID))
        assert (await client.post(f"/api/v1/plugins/{PLUGIN_ID}/restart", json={})).status_code == 200
        assert (await client.get("/api/v1/plugins", params={"consistent": "true"})).status_code == 200
        assert (await client.get("/api/v1/plugins/no-such-plugin")).status_code == 404
        response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60)


def charter_metric_names() -> set[str]:
    """Every series name Charter's metrics can expose (with histogram and counter suffixes)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("charter_"):
            names |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum", "_created")}
    return names


@needs_promtool
def test_promtool_accepts_the_exposition(exposition: str) -> None:
    assert "charter_commands_total{" in exposition and "charter_http_request_seconds_bucket{" in exposition
    checked = promtool("check", "metrics", stdin=exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_the_alert_rules() -> None:
    rules = promtool("check", "rules", str(OBSERVABILITY / "charter-alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "--syntax-only", str(OBSERVABILITY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_labels_are_bounded(exposition: str) -> None:
    labels = set(re.findall(r"[{,]([a-z_]+)=\"", "\n".join(line for line in exposition.splitlines() if line.startswith("charter_"))))
    assert labels and labels <= BOUNDED_LABELS | {"le"}
    routes = set(re.findall(r'route="([^"]*)"', exposition))
    assert "/api/v1/plugins/{plugin_id}" in routes and not any("no-such-plugin" in r for r in routes)


def test_events_about_a_plugin_are_counted_by_plugin_and_event(exposition: str) -> None:
    for event in ("Plugin.Installed", "Plugin.Restarted"):
        assert f'charter_plugin_events_total{{event="{event}",plugin="{PLUGIN_ID}"}} 1.0' in exposition, event


def test_the_rules_and_the_dashboard_query_only_metrics_that_exist() -> None:
    known = charter_metric_names()
    rules = (OBSERVABILITY / "charter-alerts.yml").read_text()
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(re.findall(r"charter_[a-z_]+", rules + "\n".join(queries)))
    assert used and used <= known, f"not a Charter metric: {sorted(used - known)}"
    families = {name.removesuffix("_total") for name in known if not name.endswith(("_bucket", "_count", "_sum", "_created"))}
    unused = {f for f in families if f.startswith("charter_") and not any(u.startswith(f) for u in used)}
    assert not unused, f"metrics neither charted nor alerted on: {sorted(unused)}"
