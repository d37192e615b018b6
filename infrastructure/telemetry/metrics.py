"""Prometheus metrics of Charter (exposed at /metrics; README "Observability" says what each means).

Labels take values from small fixed sets only (methods, route templates, command and projection
names, outcomes, tiers): never an id, an e-mail or a raw path.

`charter serve --workers N` runs N processes behind one port, and a scrape reaches one of them: the
supervisor gives the workers a directory of their own (PROMETHEUS_MULTIPROC_DIR, prometheus_client's
multi-process mode), each worker writes its values there, and whichever worker answers /metrics
exposes the sum over all of them (`exposition`). Counters and histograms of a worker that died stay
counted; gauges say how processes combine: read from the database (lags, holding, a dependency's
state) -> the most recent value any live worker set; per process (SSE clients) -> the live workers' sum."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from infrastructure.processes import pid_alive

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
SHARED = "livemostrecent"  # a value read from the database: any live worker's latest is the truth

HTTP_REQUESTS = Counter("charter_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("charter_http_request_seconds", "HTTP request latency", ["method", "route"])
COMMANDS = Counter("charter_commands_total", "Commands handled", ["command", "outcome"])
COMMAND_RETRIES = Counter(
    "charter_command_retries_total", "Commands decided again after another writer moved their stream on", ["command"]
)
COMMAND_LATENCY = Histogram("charter_command_seconds", "Command latency", ["command"])
EVENTS_APPENDED = Counter("charter_events_appended_total", "Events appended to the log")
APPEND_COMMIT_SECONDS = Histogram(
    "charter_append_commit_seconds",
    "Time one group-commit transaction took, from taking its commands off the queue to the commit",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
APPEND_BATCH = Histogram(
    "charter_append_batch_commands", "Commands per group-commit transaction", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
PROJECTION_LAG = Gauge("charter_projection_lag_events", "Events committed but not yet projected", ["projection"], multiprocess_mode=SHARED)
PROJECTION_LAG_SECONDS = Gauge(
    "charter_projection_lag_seconds", "Age of the oldest event committed but not yet projected (0 when caught up)", ["projection"],
    multiprocess_mode=SHARED,
)
RELAY_LAG = Gauge("charter_relay_lag_events", "Events committed but not yet acknowledged by JetStream", multiprocess_mode=SHARED)
RELAY_LAG_SECONDS = Gauge(
    "charter_relay_lag_seconds", "Age of the oldest event committed but not yet acknowledged by JetStream (0 when caught up)",
    multiprocess_mode=SHARED,
)
RELAY_ERRORS = Counter("charter_relay_errors_total", "Relay interruptions (NATS or the database failing under it); it resumes by itself")
RELAY_PUBLISHED = Counter("charter_relay_published_total", "Events published to JetStream and acknowledged")
RELAY_UNPUBLISHABLE = Counter(
    "charter_relay_unpublishable_events_total", "Events the relay found it cannot publish (too large, refused for good)"
)
RELAY_SKIPPED = Counter("charter_relay_skipped_events_total", "Events left out of JetStream (see `charter relay status`)")
RELAY_HOLDING = Gauge(
    "charter_relay_holding", "1 while the relay waits at an event it cannot publish (see /ready)", multiprocess_mode="livemax"
)
SSE_CLIENTS = Gauge("charter_sse_clients", "Connected Server-Sent-Events clients", multiprocess_mode="livesum")
SSE_DROPPED = Counter("charter_sse_dropped_total", "SSE clients dropped for falling too far behind")
SSE_WRITES = Counter("charter_sse_writes_total", "Batches of events written to SSE clients (one per client per hub flush)")
SSE_FLUSH_SECONDS = Histogram(
    "charter_sse_flush_seconds",
    "Event-loop time one hub flush spent writing a batch to every SSE client",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SSE_FLUSH_EVENTS = Histogram(
    "charter_sse_flush_events", "Events per hub flush", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
)
DEPENDENCY_UP = Gauge(
    "charter_dependency_up", "1 while a dependency answers, 0 during an outage", ["dependency"], multiprocess_mode=SHARED
)
RATE_LIMITED = Counter("charter_rate_limited_total", "Requests refused by the rate limiter (429)", ["tier"])
SIGNIN_FAILURES = Counter("charter_signin_failures_total", "Failed sign-ins (and wrong current passwords), by reason", ["reason"])
TASK_RUNS = Counter("charter_task_runs_total", "Task run attempts this process executed, by outcome", ["outcome"])
TASK_START_LATENESS = Histogram(
    "charter_task_start_lateness_seconds",
    "Time from a task's tick to the append that requested and started its run (runs this process won)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TASK_RUN_SECONDS = Histogram(
    "charter_task_run_seconds",
    "Time one task run attempt's action took, by action and outcome",
    ["action", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
REPORTS = Counter("charter_reports_total", "Compliance reports generated, by format and outcome", ["format", "outcome"])
REPORT_SECONDS = Histogram(
    "charter_report_seconds", "Time to rebuild a compliance report from the log and render it", ["format"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
AUDIT_CHECKPOINTS = Counter("charter_audit_checkpoints_total", "Checkpoints this process sealed")
AUDIT_SEALED_EVENTS = Counter("charter_audit_sealed_events_total", "Events covered by the checkpoints this process sealed")
AUDIT_VERIFICATIONS = Counter(
    "charter_audit_verifications_total", "Online verifications of the log, by outcome (ok, findings, error)", ["outcome"]
)
AUDIT_VERIFIED_EVENTS = Counter("charter_audit_verified_events_total", "Events checked by online verifications")
AUDIT_VERIFY_SECONDS = Histogram(
    "charter_audit_verify_seconds", "Time one online verification took",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
PROJECTION_EVENTS = Counter("charter_projection_events_total", "Events handled by a projection", ["projection"])
READ_CACHE = Counter(
    "charter_read_cache_total", "Read-model answers served from this process's read cache (hit) or queried (miss)",
    ["projection", "outcome"],
)


PLUGIN_EVENTS = Counter(
    "charter_plugin_events_total",
    "Events recorded about each plugin (its lifecycle, its activations, configurations and signoffs at sites), by plugin "
    "and event type",
    ["plugin", "event"],
)
# Plugin ids are the one id used as a label: the catalog bounds them, and past this many distinct plugins
# in one process the rest are counted together as `(other)`, so no install spree grows the series.
PLUGIN_SERIES = 500
OTHER_PLUGINS = "(other)"
_plugins_labelled: set[str] = set()


def plugin_label(plugin_id: str) -> str:
    if plugin_id in _plugins_labelled:
        return plugin_id
    if len(_plugins_labelled) < PLUGIN_SERIES:
        _plugins_labelled.add(plugin_id)
        return plugin_id
    return OTHER_PLUGINS


def count_plugin_events(events: Iterable[Any]) -> None:
    """Count committed events about a plugin: those of its own stream, and site events naming it."""
    for event in events:
        if event.stream_type == "plugin":
            plugin_id = event.stream_id.partition(":")[2]
        elif event.stream_type == "site" and isinstance(plugin_id := event.payload.get("plugin_id"), str):
            pass
        else:
            continue
        PLUGIN_EVENTS.labels(plugin_label(plugin_id), event.event_type).inc()


@functools.cache
def _command_series(command: str, outcome: str) -> tuple[Counter, Histogram]:
    return COMMANDS.labels(command, outcome), COMMAND_LATENCY.labels(command)


def command_done(command: str, outcome: str, seconds: float) -> None:
    """Count a command and time it (label lookups cached: this runs once per command)."""
    counter, latency = _command_series(command, outcome)
    counter.inc()
    latency.observe(seconds)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def exposition() -> bytes:
    """The text a scrape of /metrics gets: this process's metrics, or, under `--workers`, every worker's."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if not directory:
        return generate_latest(REGISTRY)
    _forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    return generate_latest(registry)


def _forget_dead_workers(directory: Path) -> None:
    """Live gauges of workers that are gone (one died, the supervisor started another) stop counting."""
    for entry in directory.iterdir():
        found = _LIVE_GAUGE_FILE.fullmatch(entry.name)
        if found and not pid_alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), str(directory))
