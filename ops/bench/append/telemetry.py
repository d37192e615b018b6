"""(d) Charter with telemetry on, for `charter bench append --telemetry`: the Charter phase again, each
command through `Runtime.execute` (its command metrics and span) with tracing on in every replica (the
always-on sampler, so every command is traced, asyncpg instrumented, spans exported over OTLP/HTTP to a
local sink run by the bench). Phase (c) is the same work with tracing off (OTEL_TRACES_EXPORTER=none)
and the command called directly. Target: (d) >= 0.9x (c).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TARGET = 0.9
# What every replica reads when it configures tracing (the SDK's own variables).
ON = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}


class _Sink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and keeps only their count and size (what a collector would receive)."""

    server: "OtlpSink"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        size = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(size)
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes += size
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
