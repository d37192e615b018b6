"""OpenTelemetry tracing, configured by the standard OTEL_* variables.

`OTEL_TRACES_EXPORTER` names the exporters (comma-separated): `otlp` (OTLP over HTTP/protobuf, to
`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`), `console` (spans as JSON on stdout) or `none`. Charter's default
is `none`, and then nothing is traced at all: no span is made, no middleware added, asyncpg is left
uninstrumented, so tracing off costs nothing. `OTEL_SDK_DISABLED=true` turns it off as well. The sampler
(`OTEL_TRACES_SAMPLER[_ARG]`), the batch processor (`OTEL_BSP_*`), the resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`) and the exporter's endpoint, headers and timeout are read by the SDK itself.

Context travels with the event: the command's span is stored as the W3C `traceparent` in the event's
metadata, the relay sends it as a NATS header, and every batch that serves events (projector, relay,
SSE hub) continues it: as its parent when the batch serves one trace, as span links when it serves
several.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

INSTRUMENTATION = "charter"
DEFAULT_SERVICE = "charter"
EXPORTERS = ("otlp", "console", "none")
PRODUCER, CONSUMER = SpanKind.PRODUCER, SpanKind.CONSUMER
MAX_LINKS = 64  # links one batch span carries (a batch of 500 events from 500 requests keeps the first 64)


class TracingConfigError(ValueError):
    """An OTEL_* variable Charter cannot honour (named in the message)."""


@dataclass
class Tracing:
    """What the process traces with; `enabled` False: nothing is traced and nothing is paid for."""

    enabled: bool = False
    provider: TracerProvider | None = None
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    exporters: tuple[str, ...] = ()

    def flush(self, timeout_ms: int = 5000) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


TRACING = Tracing()  # the process's current tracing (set by `install`)


def exporter_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters OTEL_TRACES_EXPORTER asks for (Charter's default: none)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (use {', '.join(EXPORTERS)})")
    return tuple(n for n in names if n != "none")


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE)
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol.strip() != "http/protobuf":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: Charter exports OTLP over http/protobuf"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def configure_tracing(environ: Mapping[str, str] | None = None, *, processors: Iterable[SpanProcessor] = ()) -> Tracing:
    """Tracing as the OTEL_* variables ask; `processors` are added besides (a test's in-memory exporter,
    which turns tracing on by itself)."""
    env = os.environ if environ is None else environ
    names, extra = exporter_names(env), list(processors)
    if not names and not extra:
        return Tracing()
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": DEFAULT_SERVICE}
    # TracerProvider reads OTEL_TRACES_SAMPLER(_ARG) itself; Resource.create reads OTEL_SERVICE_NAME and
    # OTEL_RESOURCE_ATTRIBUTES (from os.environ, like the exporters).
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    for processor in extra:
        provider.add_span_processor(processor)
    return Tracing(True, provider, provider.get_tracer(INSTRUMENTATION), names)


def install(tracing: Tracing) -> Tracing:
    """Make `tracing` the process's (what Charter's own spans and asyncpg's use); returns the previous."""
    global TRACING
    previous, TRACING = TRACING, tracing
    _instrument_asyncpg(tracing)
    return previous


def _instrument_asyncpg(tracing: Tracing) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # one per process: it patches asyncpg's Connection
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if tracing.enabled:
        instrumentor.instrument(tracer_provider=tracing.provider)  # statements only, never their parameters


def enabled() -> bool:
    return TRACING.enabled


def tracer() -> trace.Tracer:
    return TRACING.tracer


# -- the W3C traceparent carried by events ----------------------------------------------------------


def traceparent_of(span: Span) -> str | None:
    """The span as a W3C traceparent (None for a span that is no real one)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The remote span a stored traceparent names; None when absent or malformed (ignored, as W3C asks)."""
    if not traceparent or len(traceparent) != 55:
        return None
    version, trace_id, span_id, flags = (traceparent.split("-") + ["", "", "", ""])[:4]
    try:
        ctx = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)))
    except ValueError:
        return None
    return ctx if version == "00" and ctx.is_valid else None


def current_span_context() -> SpanContext | None:
    """The current span's context, when tracing and inside a real span (what a batch links to)."""
    if not TRACING.enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def parent_and_links(remotes: Iterable[SpanContext | None]) -> tuple[Any, list[Link]]:
    """Where a batch span goes: a child of the one trace it serves, else a new trace linked to each."""
    distinct = list({(r.trace_id, r.span_id): r for r in remotes if r is not None}.values())
    if distinct and all(r.trace_id == distinct[0].trace_id for r in distinct):
        parent = trace.set_span_in_context(NonRecordingSpan(distinct[0]), otel_context.Context())
        return parent, [Link(r) for r in distinct[1:MAX_LINKS]]
    return otel_context.Context(), [Link(r) for r in distinct[:MAX_LINKS]]


@contextmanager
def batch_span(
    name: str,
    traceparents: Iterable[str | None],
    attributes: dict[str, Any] | None = None,
    *,
    links: Iterable[SpanContext | None] = (),
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span | None]:
    """A span around work done for many commands (their events' `traceparents`, or their spans' `links`),
    continuing their traces (see parent_and_links). Without tracing: nothing at all (neither is read)."""
    if not TRACING.enabled:
        yield None
        return
    remotes = [*(span_context_of(t) for t in traceparents), *links]
    parent, span_links = parent_and_links(remotes)
    span = TRACING.tracer.start_span(name, context=parent, kind=kind, links=span_links, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        failed(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def start_linked_span(name: str, remotes: Iterable[SpanContext | None], attributes: dict[str, Any] | None = None) -> Span:
    """A span for work spread over several loop turns (ended by the caller), continuing `remotes`."""
    parent, links = parent_and_links(remotes)
    return TRACING.tracer.start_span(name, context=parent, links=links, attributes=attributes)


@contextmanager
def append_span(requests: Iterable[Any]) -> Iterator[SpanContext | None]:
    """The span of one command's append (streams and events), waiting for its group commit; yields the
    command's span, which the commit's span links to. Without tracing: nothing."""
    if not TRACING.enabled:
        yield None
        return
    command = current_span_context()
    requests = list(requests)
    attributes = {
        "charter.streams": [r.stream_id for r in requests],
        "charter.events": sum(len(r.events) for r in requests),
    }
    with TRACING.tracer.start_as_current_span(
        "eventstore append", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield command
        except Exception as exc:
            failed(span, exc)
            raise


def messaging(stream: str, count: int) -> dict[str, Any]:
    """Attributes of a span publishing or delivering `count` messages of the JetStream `stream`."""
    return {"messaging.system": "nats", "messaging.destination.name": stream, "messaging.batch.message_count": count}


def publish_span(stream: str, count: int, traceparents: Iterable[str | None]) -> Any:
    """The relay's span around publishing one batch to JetStream (continuing its events' traces)."""
    if not TRACING.enabled:
        return nullcontext()
    return batch_span("relay publish", traceparents, messaging(stream, count), kind=SpanKind.PRODUCER)


def failed(span: Span, exc: BaseException) -> None:
    """Mark `span` failed by `exc`, naming its type only: an exception's message may quote what a client
    sent (a URL with a password, a configuration value), and spans leave the process."""
    span.add_event("exception", {"exception.type": type(exc).__name__})
    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)


# -- operations outside a request: task runs, reports, the sealer, verification ----------------------


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent (what an append made outside a command stores), or None."""
    ctx = current_span_context()
    return None if ctx is None else f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@contextmanager
def operation_span(name: str, attributes: dict[str, Any] | None = None, *, parent: Span | None = None) -> Iterator[Span | None]:
    """A span around one operation, current while it runs (a child of `parent`, else of the current
    span); an exception leaving it marks it failed by type only. Without tracing: nothing."""
    if not TRACING.enabled:
        yield None
        return
    context = trace.set_span_in_context(parent) if parent is not None else None
    with TRACING.tracer.start_as_current_span(
        name, context=context, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            failed(span, exc)
            raise


def start_keyed_span(name: str, key: bytes, attributes: dict[str, Any] | None = None) -> Span | None:
    """A span (ended by the caller) in the trace `key` names: its trace id is derived from `key`, so every
    process working on the same thing (a task run: each replica, each attempt) joins one trace, under a
    parent span no process records. The span started inside links to the current one (a request that
    asked for the work). Without tracing: None."""
    if not TRACING.enabled:
        return None
    digest = hashlib.blake2b(key, digest_size=24, person=b"charter-trace").digest()
    anchor = SpanContext(int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:], "big") or 1,
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    here = current_span_context()
    links = [Link(here)] if here is not None and here.trace_id != anchor.trace_id else []
    parent = trace.set_span_in_context(NonRecordingSpan(anchor), otel_context.Context())
    return TRACING.tracer.start_span(name, context=parent, links=links, attributes=attributes)


def set_attributes(span: Span | None, attributes: dict[str, Any]) -> None:
    if span is not None:
        span.set_attributes(attributes)


def end(span: Span | None, attributes: dict[str, Any] | None = None, error: str | None = None) -> None:
    """End a span started by the caller, with its last attributes; `error` (an error's type or a short
    fixed word, never a message) marks it failed."""
    if span is None:
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        span.set_status(trace.StatusCode.ERROR, error)
    span.end()


def using(span: Span | None) -> Any:
    """Make `span` current for a block without ending it (work spread over several asyncio tasks)."""
    if span is None:
        return nullcontext()
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)
