"""Telemetry set-up without I/O: OTEL_* parsing, the traceparent carried by events, batch spans that
continue or link the traces they serve, log lines carrying trace ids at per-logger levels, and the per-plugin event counter's cap."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infrastructure.telemetry import tracing
from infrastructure.telemetry.logging import configure_logging, level_of, parse_levels


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    previous = tracing.TRACING
    tracing.TRACING = tracing.configure_tracing({}, processors=[SimpleSpanProcessor(exporter)])
    try:
        yield exporter
    finally:
        tracing.TRACING = previous


class TestConfiguration:
    def test_tracing_is_off_by_default_and_costs_no_provider(self) -> None:
        off = tracing.configure_tracing({})
        assert not off.enabled and off.provider is None

    def test_none_and_a_disabled_sdk_are_off(self) -> None:
        assert not tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "none"}).enabled
        assert not tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}).enabled

    def test_console_and_otlp_exporters_are_built_from_the_variables(self) -> None:
        on = tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "console, otlp"})
        try:
            assert on.enabled and on.exporters == ("console", "otlp")
        finally:
            on.shutdown()

    def test_an_unknown_exporter_is_refused_by_name(self) -> None:
        with pytest.raises(tracing.TracingConfigError, match="OTEL_TRACES_EXPORTER.*zipkin"):
            tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})

    def test_otlp_over_grpc_is_refused_naming_the_protocol(self) -> None:
        with pytest.raises(tracing.TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"):
            tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})

    def test_the_sampler_comes_from_the_standard_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        exporter = InMemorySpanExporter()
        sampled_off = tracing.configure_tracing({}, processors=[SimpleSpanProcessor(exporter)])
        with sampled_off.tracer.start_as_current_span("dropped"):
            pass
        assert exporter.get_finished_spans() == ()


class TestTraceparent:
    def test_a_span_round_trips_through_its_traceparent(self, traced: InMemorySpanExporter) -> None:
        with tracing.tracer().start_as_current_span("command") as span:
            carried = tracing.traceparent_of(span)
        remote = tracing.span_context_of(carried)
        assert remote is not None and remote.span_id == span.get_span_context().span_id and remote.is_remote

    @pytest.mark.parametrize(
        "bad", [None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"],
    )
    def test_a_malformed_traceparent_is_ignored(self, bad: str | None) -> None:
        assert tracing.span_context_of(bad) is None

    def test_without_tracing_nothing_is_made(self) -> None:
        assert not tracing.enabled()
        with tracing.batch_span("batch", iter(lambda: pytest.fail("read while off"), None)) as span:
            assert span is None


class TestBatchSpans:
    def test_a_batch_serving_one_trace_continues_it(self, traced: InMemorySpanExporter) -> None:
        with tracing.tracer().start_as_current_span("command") as command:
            carried = tracing.traceparent_of(command)
        with tracing.batch_span("project", [carried, carried]):
            pass
        batch = next(s for s in traced.get_finished_spans() if s.name == "project")
        assert batch.context.trace_id == command.get_span_context().trace_id
        assert batch.parent.span_id == command.get_span_context().span_id and not batch.links

    def test_a_batch_serving_many_traces_links_each(self, traced: InMemorySpanExporter) -> None:
        carried = []
        for name in ("first", "second"):
            with tracing.tracer().start_as_current_span(name) as span:
                carried.append(tracing.traceparent_of(span))
        with tracing.batch_span("relay publish", [*carried, None, "malformed"]):
            pass
        batch = next(s for s in traced.get_finished_spans() if s.name == "relay publish")
        assert batch.parent is None
        assert [f"{link.context.span_id:016x}" for link in batch.links] == [c.split("-")[2] for c in carried]


class TestLogs:
    def render(self, level: str, levels: str, emit) -> list[dict]:
        out = io.StringIO()
        configure_logging(level, True, levels, file=out)
        try:
            emit()
        finally:
            configure_logging("warning", True)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def test_a_line_carries_the_current_trace_and_span_ids(self, traced: InMemorySpanExporter) -> None:
        def emit() -> None:
            with tracing.tracer().start_as_current_span("request") as span:
                emit.ids = (f"{span.get_span_context().trace_id:032x}", f"{span.get_span_context().span_id:016x}")
                structlog.get_logger("charter.test").warning("inside")
            structlog.get_logger("charter.test").warning("outside")

        inside, outside = self.render("info", "", emit)
        assert (inside["trace_id"], inside["span_id"]) == emit.ids
        assert "trace_id" not in outside and outside["logger"] == "charter.test"

    def test_a_level_per_logger_overrides_the_default_for_it_and_below(self) -> None:
        def emit() -> None:
            structlog.get_logger("infrastructure.stream.relay").debug("relay detail")
            structlog.get_logger("infrastructure.eventlog").debug("hidden detail")
            structlog.get_logger("charter.http").info("hidden request")
            structlog.get_logger("charter.http").warning("shown warning")

        lines = self.render("info", "infrastructure.stream=debug,charter.http=warning", emit)
        assert [line["event"] for line in lines] == ["relay detail", "shown warning"]

    def test_levels_are_parsed_and_refused_by_name(self) -> None:
        levels = parse_levels("a.b=debug, c=ERROR")
        assert level_of("a.b.c", 20, levels) == 10 and level_of("c", 20, levels) == 40 and level_of("d", 20, levels) == 20
        with pytest.raises(ValueError, match="CHARTER_LOG_LEVELS: 'a=loud'"):
            parse_levels("a=loud")


def test_plugin_events_are_counted_per_plugin_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from infrastructure.telemetry import metrics

    monkeypatch.setattr(metrics, "PLUGIN_SERIES", 2)
    monkeypatch.setattr(metrics, "_plugins_labelled", set())

    def counted(plugin: str, event: str) -> float:
        return metrics.REGISTRY.get_sample_value("charter_plugin_events_total", {"plugin": plugin, "event": event}) or 0.0

    def event(stream_type: str, stream_id: str, event_type: str, **payload: object) -> SimpleNamespace:
        return SimpleNamespace(stream_type=stream_type, stream_id=stream_id, event_type=event_type, payload=payload)

    before = {key: counted(*key) for key in [("cap-a", "Plugin.Installed"), ("cap-b", "Site.ExtensionActivated"), ("(other)", "Plugin.Installed")]}
    metrics.count_plugin_events([
        event("plugin", "plugin:cap-a", "Plugin.Installed"),
        event("site", "site:s1", "Site.ExtensionActivated", plugin_id="cap-b"),
        event("site", "site:s1", "Site.Renamed", name="no plugin here"),
        event("user", "user:u1", "User.Created", plugin_id="not-a-plugin-event"),
        event("plugin", "plugin:cap-c", "Plugin.Installed"),  # a third plugin: past the cap of 2
        event("plugin", "plugin:cap-a", "Plugin.Installed"),  # a plugin already labelled keeps its series
    ])
    assert counted("cap-a", "Plugin.Installed") - before[("cap-a", "Plugin.Installed")] == 2
    assert counted("cap-b", "Site.ExtensionActivated") - before[("cap-b", "Site.ExtensionActivated")] == 1
    assert counted("(other)", "Plugin.Installed") - before[("(other)", "Plugin.Installed")] == 1
    assert counted("cap-c", "Plugin.Installed") == 0
