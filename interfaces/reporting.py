"""A compliance report generated as the HTTP route and `charter report` both ask for it: the window made
fixed, the site replayed, the document rendered; traced (`report compliance`: site, format, the point
and the position it reflects, events replayed, bytes) and counted (charter_reports_total,
charter_report_seconds)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from application.as_of import AsOf, Replayed, fixed_window
from application.sites.report_render import Rendered, render
from application.ports import StoredEvent
from application.sites.report_state import SiteState
from application.sites.reports import SiteHistory, compliance_report
from domain.errors import DomainError
from infrastructure.telemetry import metrics, tracing

A = TypeVar("A")


class CountingHistory:
    """A `SiteHistory` that counts the events it replays (what a report cost to rebuild)."""

    def __init__(self, history: SiteHistory) -> None:
        self.history, self.events = history, 0

    async def replay(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID, as_of: AsOf) -> Replayed[A]:
        replayed = await self.history.replay(aggregate_cls, stream_type, key, aggregate_id, as_of)
        self.events += len(replayed.events)
        return replayed

    async def settled_position(self) -> int:
        return await self.history.settled_position()

    async def site_state(self, site_id: str, as_of: AsOf, since: AsOf | None) -> tuple[SiteState, list[StoredEvent]]:
        """The site folded as of the point (from a snapshot where one serves); counts the window's events read."""
        state, changes = await self.history.site_state(site_id, as_of, since)
        self.events += len(changes)
        return state, changes


@dataclass(frozen=True)
class Generated:
    report: dict[str, Any]
    rendered: Rendered
    as_of: AsOf


async def compliance(history: SiteHistory, site_id: str, as_of: str | None, since: str | None, fmt: str,
                     now: datetime) -> Generated:
    """The site's compliance report as of `as_of` (changes after `since`), rendered as `fmt`."""
    started, outcome = time.perf_counter(), "error"
    counting = CountingHistory(history)
    with tracing.operation_span("report compliance", {"charter.site_id": site_id, "charter.report.format": fmt}) as span:
        try:
            point, start = await fixed_window(counting, as_of, since, now)
            report = await compliance_report(counting, site_id, point, start)
            rendered = render(report, fmt)
            outcome = "ok"
        except DomainError as exc:
            outcome = exc.code
            raise
        finally:
            metrics.REPORTS.labels(fmt, outcome).inc()
            metrics.REPORT_SECONDS.labels(fmt).observe(time.perf_counter() - started)
            tracing.set_attributes(span, {"charter.outcome": outcome, "charter.report.events_replayed": counting.events})
        tracing.set_attributes(span, {
            "charter.report.as_of": report["as_of"], "charter.report.position": report["position"],
            "charter.report.bytes": len(rendered.document), "charter.report.extensions": len(report["extensions"]),
            "charter.report.changes": len(report["changes"]),
        })  # fmt: skip
        return Generated(report, rendered, point)
