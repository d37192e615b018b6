"""Spans of the work Charter does outside a command: task runs, compliance reports, the sealer and the
online verification (an in-memory exporter, as in test_tracing.py).

A task run is one trace from the scheduled tick to its outcome, its trace id derived from its run id: the
`task run` span holds the request append, the action and the outcome append, and the run's events store
traceparents of that trace. A failing action is recorded by its exception's type only: neither the URL's
query nor a header planted with a secret reaches a span.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from infrastructure.telemetry.tracing import configure_tracing
from tests.e2e.conftest import live_server, make_settings
from tests.e2e.site_kit import created_site
from tests.waiting import eventually

TIMEOUT = 30.0
SECRET = f"s3cr3t-{uuid.uuid4().hex}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Traced:
    memory: InMemorySpanExporter
    database_url: str
    http: httpx.AsyncClient
    port: int

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def named(self, name: str, **attributes: Any) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())]

    def in_trace(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.context.trace_id == span.context.trace_id]


@pytest.fixture(scope="module")
async def traced(databases, tmp_path_factory) -> AsyncIterator[Traced]:
    memory = InMemorySpanExporter()
    tracing = configure_tracing({}, processors=[SimpleSpanProcessor(memory)])
    database_url = await databases.create("tracing_operations")
    port = closed_port()
    settings = make_settings(
        database_url, tmp_path_factory.mktemp("charter-tracing-operations"),
        task_refresh=0.2, task_url_allowlist=f"127.0.0.1:{port}", audit_seal_interval=0.3,
    )
    try:
        async with live_server(settings, tracing=tracing) as live:
            async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=TIMEOUT) as http:
                yield Traced(memory, database_url, http, port)
    finally:
        tracing.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def everything_said(spans: list[ReadableSpan]) -> str:
    """Every attribute, event and status of `spans` as text (what a secret must never be part of)."""
    parts = []
    for s in spans:
        parts += [s.name, repr(dict(s.attributes or {})), repr(s.status.description)]
        parts += [f"{e.name} {dict(e.attributes or {})!r}" for e in s.events]
    return "\n".join(parts)


async def create_task(traced: Traced, task_id: str, action: str, payload: dict[str, Any]) -> None:
    response = await traced.http.post("/api/v1/tasks", json={
        "id": task_id, "name": task_id, "schedule": {"kind": "interval", "every": 0.5}, "action": action,
        "payload": payload,
    })  # fmt: skip
    assert response.status_code == 201, response.text


async def finished_run(traced: Traced, task_id: str, outcome: str) -> ReadableSpan:
    async def found() -> bool:
        return bool(traced.named("task run", **{"charter.task.id": task_id, "charter.outcome": outcome}))

    await eventually(found, TIMEOUT, f"a {outcome} run of {task_id} was traced")
    await traced.http.delete(f"/api/v1/tasks/{task_id}")
    return traced.named("task run", **{"charter.task.id": task_id, "charter.outcome": outcome})[0]


class TestATaskRun:
    async def test_one_trace_from_the_tick_to_the_outcome(self, traced: Traced) -> None:
        task_id = f"traced-{uuid.uuid4().hex[:8]}"
        await create_task(traced, task_id, "projections.rebuild", {"name": "plugins"})
        run = await finished_run(traced, task_id, "succeeded")
        attributes = run.attributes
        assert attributes["charter.task.action"] == "projections.rebuild"
        assert attributes["charter.task.attempt"] == 1
        assert attributes["charter.task.trigger"] in ("schedule", "catch-up")
        assert attributes["charter.task.replica"] and attributes["charter.task.recorded"] is True
        run_id = attributes["charter.task.run_id"]

        trace = traced.in_trace(run)
        children = {s.name: s for s in trace if parent_of(s) == run.context.span_id}
        assert {"task request", "task action projections.rebuild", "task outcome"} <= set(children)
        assert children["task request"].attributes["charter.outcome"] == "won"
        for step in ("task request", "task outcome"):
            appends = [s for s in trace if s.name == "eventstore append" and parent_of(s) == children[step].context.span_id]
            assert appends, f"no append under {step}"

        conn = await asyncpg.connect(traced.database_url)
        try:
            rows = await conn.fetch("SELECT metadata->>'traceparent' FROM events WHERE stream_id = $1", f"task-run:{run_id}")
        finally:
            await conn.close()
        assert rows and all(r[0] and r[0].split("-")[1] == f"{run.context.trace_id:032x}" for r in rows)

    async def test_a_failed_action_is_named_by_its_type_only(self, traced: Traced) -> None:
        task_id = f"failing-{uuid.uuid4().hex[:8]}"
        url = f"http://127.0.0.1:{traced.port}/hook?token={SECRET}"
        await create_task(traced, task_id, "http.request", {"url": url, "headers": {"Authorization": f"Bearer {SECRET}"}})
        run = await finished_run(traced, task_id, "failed")
        assert run.status.status_code == StatusCode.ERROR
        action = next(s for s in traced.in_trace(run) if s.name == "task action http.request")
        assert action.status.status_code == StatusCode.ERROR
        assert [e.attributes["exception.type"] for e in action.events] == [action.status.description]
        assert SECRET not in everything_said(traced.spans())


class TestAReport:
    async def test_the_report_span_says_what_was_generated(self, traced: Traced) -> None:
        site_id = await created_site(traced.http)
        response = await traced.http.get(f"/api/v1/site/{site_id}/reports/compliance", params={"format": "csv"})
        assert response.status_code == 200, response.text
        span = traced.named("report compliance", **{"charter.site_id": site_id})[0]
        assert span.attributes["charter.report.format"] == "csv"
        assert span.attributes["charter.outcome"] == "ok"
        assert span.attributes["charter.report.position"] == int(response.headers["Charter-Position"])
        assert span.attributes["charter.report.as_of"] == response.headers["Charter-As-Of"]
        assert span.attributes["charter.report.bytes"] == len(response.content)
        assert span.attributes["charter.report.events_replayed"] >= 1
        server = [s for s in traced.in_trace(span) if s.context.span_id == parent_of(span)]
        assert server and server[0].name.startswith("GET /api/v1/site/")

    async def test_a_report_of_no_site_is_traced_with_its_code(self, traced: Traced) -> None:
        response = await traced.http.get("/api/v1/site/no-such-site-here/reports/compliance")
        assert response.status_code == 404, response.text
        span = traced.named("report compliance", **{"charter.site_id": "no-such-site-here"})[0]
        assert span.attributes["charter.outcome"] == "SITE_NOT_FOUND"


class TestTamperEvidence:
    async def test_a_checkpoint_is_traced_with_what_it_sealed(self, traced: Traced) -> None:
        await created_site(traced.http)

        async def sealed() -> bool:
            return bool(traced.named("audit seal", **{"charter.outcome": "sealed"}))

        await eventually(sealed, TIMEOUT, "the sealer traced a checkpoint")
        span = traced.named("audit seal", **{"charter.outcome": "sealed"})[-1]
        assert span.attributes["charter.audit.events"] >= 1
        assert span.attributes["charter.audit.sequence"] >= 1
        assert span.attributes["charter.audit.to_position"] >= 1
        assert any(s.name == "eventstore append" and parent_of(s) == span.context.span_id for s in traced.in_trace(span))

    async def test_an_online_verification_is_traced_with_its_findings(self, traced: Traced) -> None:
        await asyncio.sleep(0)
        response = await traced.http.get("/api/v1/audit/verify", params={"max_events": 100000})
        assert response.status_code == 200, response.text
        body = response.json()
        span = traced.named("audit verify")[-1]
        assert span.attributes["charter.audit.events"] == body["events"] >= 1
        assert span.attributes["charter.audit.findings"] == body["findings_total"] == 0
        assert span.attributes["charter.outcome"] == "ok"
        assert span.attributes["charter.audit.max_events"] == 100000
