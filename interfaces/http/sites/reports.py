"""Compliance reports: `/api/v1/site/{site_id}/reports`, rebuilt from the log as of a point.

The point (`as_of`: an ISO 8601 instant with its offset, or `position:N`; none: now, resolved to the last
settled position and echoed) and the window of changes (`since`, the same forms) are checked before the
log is read; the report renders to the same bytes for the same point every time
(application/sites/report_render.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from application.as_of import History
from application.sites.report_html import CSP
from application.sites.report_render import FORMATS, MEDIA_TYPES
from interfaces import reporting
from interfaces.http import dependencies as services
from interfaces.http.errors import ApiError
from interfaces.http.sites.common import at_site

READ = "reports:read"
DOWNLOAD = {"csv": "attachment", "json": "inline", "html": "inline"}


def report_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ApiError(400, "VALIDATION_FAILED", f"format must be one of {', '.join(FORMATS)}", field="format")
    return fmt


class ReportController(Controller):
    path = "/api/v1/site/{site_id:str}/reports"
    tags = ["reports"]
    dependencies = services.REPORTS

    @get(
        "/compliance",
        operation_id="getComplianceReport",
        opt=at_site(READ),
        summary="The site's compliance report as of an instant or a position, rebuilt from the log (json, csv, html)",
        media_type="application/octet-stream",
    )
    async def compliance(
        self,
        request: Request,
        history: NamedDependency[History],
        site_id: FromPath[str],
        as_of: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        fmt: Annotated[str, QueryParameter(name="format", description="json, csv or html")] = "json",
    ) -> Response[bytes]:
        fmt = report_format(fmt)
        generated = await reporting.compliance(history, site_id, as_of, since, fmt, datetime.now(timezone.utc))
        report, rendered = generated.report, generated.rendered
        name = f"compliance-{site_id}-{generated.as_of.text().replace(':', '')}.{fmt}"
        headers = {
            "Charter-Position": str(report["position"]),
            "Charter-As-Of": report["as_of"],
            "Charter-Report-SHA256": rendered.sha256,
            "Content-Disposition": f'{DOWNLOAD[fmt]}; filename="{name}"',
            "Cache-Control": "private, max-age=0",
        }
        if fmt == "html":
            headers["content-security-policy"] = f"{CSP}; frame-ancestors 'none'"
        return Response(rendered.document, media_type=MEDIA_TYPES[fmt], headers=headers)
