"""(d) Charter with telemetry on, for `charter bench append --telemetry`: the Charter phase again, each
command through `Runtime.execute` (its command metrics and span) with tracing on in every replica (the
always-on sampler, so every command is traced, asyncpg instrumented, spans exported over OTLP/HTTP to a
local sink run by the bench). Phase (c) is the same work with tracing off (OTEL_TRACES_EXPORTER=none)
and the command called directly. Target: (d) >= 0.9x (c).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TARGET = 0.9
# What every replica reads when it configures tracing (the SDK's own variables).
ON = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}


class _Sink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and keeps their count, size and spans by name (what a collector would
    receive)."""

    server: "OtlpSink"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        size = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(size)
        with self.server.lock:  # decoded after the phase: with one process, this thread shares its CPU
            self.server.requests += 1
            self.server.bytes += size
            self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


class OtlpSink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Sink)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.bodies: list[bytes] = []

    def received(self) -> dict[str, Any]:
        """What the sink received: exports, bytes, spans in all and per command span."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        with self.lock:
            bodies = list(self.bodies)
        names = Counter(
            span.name
            for body in bodies
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        )
        with self.lock:
            spans, commands = sum(names.values()), sum(n for name, n in names.items() if name.startswith("command "))
            return {
                "exports": self.requests, "bytes": self.bytes, "spans": spans,
                "spans_per_command": spans / commands if commands else None, "by_name": dict(names.most_common()),
            }  # fmt: skip

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


@contextmanager
def telemetry_on() -> Iterator[OtlpSink]:
    """A local OTLP sink, and the OTEL_* variables pointing at it for this process and the replicas it
    spawns (restored afterwards)."""
    sink = OtlpSink()
    thread = threading.Thread(target=sink.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    wanted = {**ON, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield sink
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sink.shutdown()
        sink.server_close()


def start_tracing() -> Any:
    """Tracing as the OTEL_* variables say, installed for this process (the replica's runtime)."""
    from infrastructure.telemetry import tracing

    current = tracing.configure_tracing()
    tracing.install(current)
    return current


def stop_tracing(current: Any) -> None:
    from infrastructure.telemetry import tracing

    current.flush()
    tracing.install(tracing.Tracing())
    current.shutdown()


def telemetry_ratio(results: dict[str, Any]) -> dict[str, Any] | None:
    """(d) over (c), when the run had the telemetry phase."""
    if "charter_telemetry" not in results:
        return None
    off, on = results["charter"].rate, results["charter_telemetry"].rate
    value = on / off if off > 0 else None
    return {"value": value, "target": TARGET, "met": value is not None and value >= TARGET}


# -- the SDK's own floor -------------------------------------------------------------------------------

FLOOR_SPANS = 20_000
# A span shaped like Charter's command span: its name and the attributes Runtime sets on it.
_FLOOR_ATTRIBUTES = {"charter.command": "InstallPlugin", "charter.outcome": "ok", "charter.stream_id": "plugin:bench-floor",
                     "charter.stream_type": "plugin", "charter.version": 1}  # fmt: skip


def _floor_child(spans: int, out: Any) -> None:
    from infrastructure.telemetry import tracing

    current = tracing.configure_tracing()  # as the replicas: the OTEL_* variables telemetry_on set
    assert current.provider is not None
    tracer, batch = current.tracer, 512  # the batch processor's export size; flushed per batch, none dropped
    started = time.process_time()
    for made in range(0, spans, batch):
        for _ in range(min(batch, spans - made)):
            with tracer.start_as_current_span("floor InstallPlugin", attributes=_FLOOR_ATTRIBUTES):
                pass
        current.flush()
    out.put((time.process_time() - started) / spans * 1e6)
    current.shutdown()


def sdk_floor(spans: int = FLOOR_SPANS) -> float | None:
    """(e) Microseconds of CPU the OpenTelemetry SDK takes to make one span and export it over OTLP/HTTP,
    with nothing else to do: in a process of its own (the sink's decoding is not counted), configured as
    the replicas are. No command can be traced for less than this per span."""
    import multiprocessing
    import queue as queues

    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    child = mp.Process(target=_floor_child, args=(spans, out), daemon=True)
    child.start()
    try:
        return float(out.get(timeout=300))
    except queues.Empty:  # the child died or hung: the report goes out without the floor
        return None
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()


def floor_analysis(results: dict[str, Any], floor_us: float | None, received: dict[str, Any]) -> dict[str, Any]:
    """How far (d) is from what the SDK allows, all from this run: c and d are the Charter processes' CPU per
    command without and with telemetry, s the SDK's CPU per span, k the spans per traced command. When the
    Charter processes are what limits throughput, tracing one span per command can at best reach
    c / (c + s); with Charter's k spans, c / (c + k·s). What (d) spends beyond k·s is Charter's own."""
    c = results["charter"].extra.get("cpu_us_per_command")
    d = results["charter_telemetry"].extra.get("cpu_us_per_command")
    k = received.get("spans_per_command")
    out: dict[str, Any] = {"sdk_us_per_span": floor_us, "spans_per_command": k, "cpu_us_per_command_off": c, "cpu_us_per_command_on": d}
    if c and d:
        out["cpu_ratio_off_vs_on"] = c / d
    if c and d and floor_us:
        out["best_ratio_one_span"] = c / (c + floor_us)
        if k:
            out["floor_ratio_charter_spans"] = c / (c + k * floor_us)
            out["charter_own_us_per_command"] = d - c - k * floor_us
    return out


def describe_floor(floor: dict[str, Any]) -> str:
    """One paragraph for the console and the Markdown report."""
    def us(key: str) -> str:
        return "n/a" if floor.get(key) is None else f"{floor[key]:,.0f} µs"

    def x(key: str) -> str:
        return "n/a" if floor.get(key) is None else f"{floor[key]:.2f}x"

    k = floor.get("spans_per_command")
    per_span = "n/a (the floor process failed)" if floor.get("sdk_us_per_span") is None else f"{floor['sdk_us_per_span']:.1f} µs"
    return (
        f"(e) SDK floor: one span made and exported over OTLP costs {per_span} of CPU; "
        f"Charter's processes spend {us('cpu_us_per_command_off')} per command untraced, {us('cpu_us_per_command_on')} traced "
        f"(CPU ratio {x('cpu_ratio_off_vs_on')}); {'n/a' if k is None else f'{k:.1f}'} spans per traced command. "
        f"Best reachable with one span per command: {x('best_ratio_one_span')}; with Charter's spans at the SDK's cost alone: "
        f"{x('floor_ratio_charter_spans')}; Charter's own cost beyond the SDK's: {us('charter_own_us_per_command')} per command."
    )
