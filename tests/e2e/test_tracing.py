"""One OpenTelemetry trace from the HTTP request to the SSE client and the extension consumer.

A live server traces into an in-memory exporter and, at the same time, exports OTLP over HTTP to a small
receiver started here (its protobuf decoded with opentelemetry-proto). One plugin install, sent with a
caller's `traceparent`, must yield one trace holding the HTTP server span, the command, the append,
the projector batches and the relay publish, continued by the SSE hub's delivery and a JetStream
consumer (ops/examples/consume_events.py); the event stores the command span's traceparent and the
relay sends it as the NATS header; the OTLP receiver gets the same spans.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from infrastructure.telemetry.tracing import configure_tracing
from tests.e2e.conftest import live_server, make_settings
from tests.e2e.plugin_kit import install, manifest, unique_id
from tests.waiting import eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "examples" / "consume_events.py"
CALLER_TRACE = uuid.uuid4().hex
CALLER_SPAN = uuid.uuid4().hex[:16]
TIMEOUT = 30.0


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("consume_events_traced", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Receiver(ThreadingHTTPServer):
    """A tiny OTLP/HTTP trace receiver: keeps every span it is sent as (trace id, span id, parent id, name)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[tuple[str, str, str, str]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _OtlpHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.server.spans.append(
                            (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name)
                        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@dataclass
class Journey:
    """What one traced install left behind."""

    spans: list[ReadableSpan]
    received: list[tuple[str, str, str, str]]
    metadata: dict[str, Any]
    consumed: list[Any]
    sse_frames: list[str]
    plugin_id: str
    everything: list[ReadableSpan] = field(default_factory=list)

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, prefix: str) -> ReadableSpan:
        found = self.named(prefix)
        assert found, f"no span named {prefix!r} in the trace; it has {sorted({s.name for s in self.spans})}"
        return found[0]


async def read_sse(url: str, headers: dict[str, str], frames: list[str], opened: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        async with http.stream("GET", "/api/v1/events/stream", headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    opened.set()
                if line.startswith("data: "):
                    frames.append(line)


@pytest.fixture(scope="module")
async def journey(databases, nats_url: str, jetstream_streams, tmp_path_factory) -> AsyncIterator[Journey]:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    memory = InMemorySpanExporter()
    with pytest.MonkeyPatch.context() as env:  # read when the exporter and its batch processor are made
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        env.setenv("OTEL_SERVICE_NAME", "charter-under-test")
        tracing = configure_tracing(processors=[SimpleSpanProcessor(memory)])
    stream = jetstream_streams.new("trace")
    database_url = await databases.create("tracing")
    settings = make_settings(
        database_url, tmp_path_factory.mktemp("charter-tracing"),
        nats_url=nats_url, nats_stream=stream.name, nats_subject_prefix=stream.prefix, sse_heartbeat=1.0,
    )
    example = load_example()
    plugin_id = unique_id("traced")
    consumed: list[Any] = []
    frames: list[str] = []
    try:
        async with live_server(settings, tracing=tracing) as live:
            opened = asyncio.Event()
            sse = asyncio.create_task(read_sse(live.url, live.headers, frames, opened))
            await asyncio.wait_for(opened.wait(), TIMEOUT)
            stop = asyncio.Event()

            def handle(event: Any) -> None:
                consumed.append(event)
                if event.envelope.get("stream_id") == f"plugin:{plugin_id}":
                    stop.set()

            consumer = asyncio.create_task(example.consume(
                nats_url, stream.name, f"{stream.prefix}.*.plugin.>", "traced-extension", handle,
                stop=stop, fetch_timeout=0.2, tracer=tracing.provider.get_tracer("extension"),
            ))
            async with httpx.AsyncClient(base_url=live.url, headers=live.headers) as http:
                caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
                response = await install(http, manifest(plugin_id), headers={"traceparent": caller})
                assert response.status_code == 201, response.text
            await asyncio.wait_for(consumer, TIMEOUT)
            await eventually(lambda: _async(any(plugin_id in f for f in frames)), TIMEOUT, "the SSE client got the event")
            sse.cancel()
            await asyncio.gather(sse, return_exceptions=True)

            async def traced_everywhere() -> bool:
                names = {s.name for s in memory.get_finished_spans() if f"{s.context.trace_id:032x}" == CALLER_TRACE}
                return {"relay publish", "sse deliver", "project plugins"} <= names

            await eventually(traced_everywhere, TIMEOUT, "the relay, the hub and the projector traced the event")
        conn = await asyncpg.connect(database_url)
        try:
            raw = await conn.fetchval(
                "SELECT metadata::text FROM events WHERE stream_id = $1 ORDER BY stream_version LIMIT 1", f"plugin:{plugin_id}"
            )
        finally:
            await conn.close()
        tracing.flush()
        spans = [s for s in memory.get_finished_spans() if f"{s.context.trace_id:032x}" == CALLER_TRACE]
        yield Journey(spans, list(receiver.spans), json.loads(raw), consumed, frames, plugin_id, list(memory.get_finished_spans()))
    finally:
        tracing.shutdown()
        receiver.shutdown()
        receiver.server_close()


async def _async(value: bool) -> bool:
    return value


def span_id(span: ReadableSpan) -> str:
    return f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


class TestOneTrace:
    def test_the_http_server_span_continues_the_callers_traceparent(self, journey: Journey) -> None:
        server = journey.one("POST /api/v1/plugins/install")
        assert server.kind == SpanKind.SERVER
        assert parent_id(server) == CALLER_SPAN
        assert server.attributes["http.route"] == "/api/v1/plugins/install"

    def test_the_command_span_is_a_child_of_the_request(self, journey: Journey) -> None:
        command = journey.one("command InstallPlugin")
        assert parent_id(command) == span_id(journey.one("POST /api/v1/plugins/install"))
        assert command.attributes["charter.outcome"] == "ok"
        assert command.attributes["charter.stream_id"] == f"plugin:{journey.plugin_id}"

    def test_the_event_stores_the_command_spans_traceparent_and_the_relay_sends_it(self, journey: Journey) -> None:
        command = journey.one("command InstallPlugin")
        expected = f"00-{CALLER_TRACE}-{span_id(command)}-01"
        assert journey.metadata["traceparent"] == expected
        mine = [e for e in journey.consumed if e.envelope.get("stream_id") == f"plugin:{journey.plugin_id}"]
        assert mine and all(e.headers["traceparent"] == expected for e in mine)

    def test_the_append_and_its_sql_belong_to_the_command(self, journey: Journey) -> None:
        command = journey.one("command InstallPlugin")
        assert parent_id(journey.one("eventstore append")) == span_id(command)
        assert any(s.attributes.get("db.system") == "postgresql" for s in journey.spans), "no asyncpg span in the trace"

    def test_the_group_commit_continues_or_links_every_command_it_carries(self, journey: Journey) -> None:
        command = journey.one("command InstallPlugin")
        commits = [
            s for s in journey.everything
            if s.name == "eventstore commit"
            and (f"{s.context.trace_id:032x}" == CALLER_TRACE or any(link.context.span_id == command.context.span_id for link in s.links))
        ]
        assert commits, "no group-commit span carries the command"
        assert commits[0].parent is None or parent_id(commits[0]) == span_id(command)

    def test_projector_relay_sse_and_the_extension_continue_the_command(self, journey: Journey) -> None:
        command = span_id(journey.one("command InstallPlugin"))
        for name in ("project plugins", "relay publish", "sse deliver", "consume Plugin.Installed"):
            assert parent_id(journey.one(name)) == command, name
        assert journey.one("relay publish").kind == SpanKind.PRODUCER
        assert journey.one("consume Plugin.Installed").kind == SpanKind.CONSUMER

    def test_the_otlp_receiver_got_the_same_spans(self, journey: Journey) -> None:
        received = {(s, p, n) for t, s, p, n in journey.received if t == CALLER_TRACE}
        exported = {(span_id(s), parent_id(s) or "", s.name) for s in journey.spans}
        assert received == exported
