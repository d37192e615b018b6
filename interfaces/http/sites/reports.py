"""Compliance reports: `/api/v1/site/{site_id}/reports`, rebuilt from the log as of a point, and the
reports task runs kept (`/archive`).

The point (`as_of`: an ISO 8601 instant with its offset, or `position:N`; none: now, resolved to the last
settled position and echoed) and the window of changes (`since`, the same forms) are checked before the
log is read; the report renders to the same bytes for the same point every time
(application/sites/report_render.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, PathParameter, QueryParameter

from application.as_of import History
from application.sites.ports import ReportArchive
from application.sites.report_html import CSP
from application.sites.report_render import FORMATS, MEDIA_TYPES
from interfaces import reporting
from interfaces.http import dependencies as services
from interfaces.http.common import page_params
from interfaces.http.errors import ApiError
from interfaces.http.schemas import Page
from interfaces.http.sites.common import at_site
from interfaces.http.sites.schemas import ArchivedReportOut

READ = "reports:read"
DOWNLOAD = {"csv": "attachment", "json": "inline", "html": "inline"}
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


def report_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ApiError(400, "VALIDATION_FAILED", f"format must be one of {', '.join(FORMATS)}", field="format")
    return fmt


def report_document(
    document: bytes, fmt: str, filename: str, position: int, as_of: str, sha256: str, *, etag: bool = False
) -> Response[bytes]:
    """A rendered report as a download: what it reflects and its digest in headers, an HTML page confined
    by its own CSP; `etag`: the digest names the bytes for good (a kept report never changes)."""
    headers = {
        "Charter-Position": str(position),
        "Charter-As-Of": as_of,
        "Charter-Report-SHA256": sha256,
        "Content-Disposition": f'{DOWNLOAD[fmt]}; filename="{filename}"',
        "Cache-Control": "private, max-age=0",
    }
    if etag:
        headers["ETag"] = f'"{sha256}"'
    if fmt == "html":
        headers["content-security-policy"] = f"{CSP}; frame-ancestors 'none'"
    return Response(document, media_type=MEDIA_TYPES[fmt], headers=headers)


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
        return report_document(rendered.document, fmt, name, report["position"], report["as_of"], rendered.sha256)

    @get(
        "/archive",
        operation_id="listArchivedReports",
        opt=at_site(READ),
        summary="The compliance reports task runs kept for the site (action reports.compliance), newest first",
    )
    async def archived(
        self, report_archive: NamedDependency[ReportArchive], site_id: FromPath[str],
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 20,
    ) -> Page[ArchivedReportOut]:
        page_params(skip, limit, "created_at", "desc", {"created_at": "created_at"})
        total, kept = await report_archive.page(site_id, skip, limit)
        items = [msgspec.convert(k, ArchivedReportOut, from_attributes=True) for k in kept]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @get(
        "/archive/{report_id:str}",
        operation_id="getArchivedReport",
        opt=at_site(READ),
        summary="One kept compliance report, as it was generated",
        media_type="application/octet-stream",
    )
    async def archived_document(
        self, report_archive: NamedDependency[ReportArchive], site_id: FromPath[str],
        report_id: Annotated[str, PathParameter(pattern=UUID_PATTERN, description="the kept report's id (a UUID)")],
    ) -> Response[bytes]:
        found = await report_archive.document(site_id, report_id)
        if found is None:
            raise ApiError(404, "REPORT_NOT_FOUND", "the site has no kept report of that id", field="report_id")
        kept, document = found
        name = f"compliance-{site_id}-{kept.id}.{kept.format}"
        return report_document(document, kept.format, name, kept.position, kept.as_of, kept.sha256, etag=True)
