"""One site's read models: `/api/v1/site/{site_id}` (the site, its features, capability providers,
status and audit trail), each answered by the sites read model and limited to sites the caller sees."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from application.as_of import History, fixed_window
from application.sites.reports import features_as_of
from domain.sites.errors import SiteNotFound
from interfaces.http.common import page_params, read_consistency
from interfaces.http.schemas import Page
from interfaces.http.sites.common import PROJECTION, READ, at_site
from interfaces.http.sites.dependencies import SITES, SiteReads
from interfaces.http.sites.schemas import AuditEntry, CapabilityOut, FeatureOut, FeaturesOut, ProviderOut, SiteOut, StatusOut


def site_out(row: dict[str, Any]) -> SiteOut:
    return msgspec.convert(row, SiteOut, strict=False)


def audit_page(total: int, rows: list[dict[str, Any]], skip: int, limit: int) -> Page[AuditEntry]:
    items = [msgspec.convert(r, AuditEntry, strict=False) for r in rows]
    return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)


async def known_site(reads: SiteReads, site_id: str) -> dict[str, Any]:
    row = await reads.queries.get_site(site_id)
    if row is None:
        raise SiteNotFound(f"site {site_id} is not known", site_id=site_id)
    return row


class SiteController(Controller):
    path = "/api/v1/site/{site_id:str}"
    tags = ["sites"]
    dependencies = SITES

    @get("/", operation_id="getSite", opt=at_site(READ), summary="The site: name, timezone, metadata, status")
    async def get_site(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str], consistent: FromQuery[bool] = False
    ) -> Response[SiteOut]:
        await read_consistency(request, reads, PROJECTION, consistent)
        return Response(site_out(await known_site(reads, site_id)))

    @get("/features", operation_id="siteFeatures", opt=at_site(READ),
         summary="Extensions active at the site: versions, configurations (secrets masked), hashes, signoff state")
    async def features(
        self, request: Request, reads: NamedDependency[SiteReads], history: NamedDependency[History],
        site_id: FromPath[str], consistent: FromQuery[bool] = False, as_of: FromQuery[str | None] = None,
    ) -> FeaturesOut:
        if as_of is not None:  # replayed from the log, not read from the read model (application/sites/reports.py)
            point, _ = await fixed_window(history, as_of, None, datetime.now(timezone.utc))
            rows = await features_as_of(history, site_id, point)
            features = [msgspec.convert(r, FeatureOut, strict=False) for r in rows]
            return FeaturesOut(site_id=site_id, features=features, count=len(features), as_of=point.text())
        await read_consistency(request, reads, PROJECTION, consistent)
        await known_site(reads, site_id)
        rows = await reads.queries.features(site_id)
        features = [msgspec.convert(r, FeatureOut, strict=False) for r in rows]
        return FeaturesOut(site_id=site_id, features=features, count=len(features))

    @get("/capabilities/{name:str}", operation_id="capabilityProviders", opt=at_site(READ),
         summary="Which active extensions provide a capability at the site")
    async def capability(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str], name: FromPath[str],
        consistent: FromQuery[bool] = False,
    ) -> CapabilityOut:
        await read_consistency(request, reads, PROJECTION, consistent)
        await known_site(reads, site_id)
        rows = await reads.queries.capability_providers(site_id, name)
        providers = [msgspec.convert(r, ProviderOut, strict=False) for r in rows]
        return CapabilityOut(site_id=site_id, name=name, enabled=bool(providers), providers=providers)

    @get("/status", operation_id="siteStatus", opt=at_site(READ),
         summary="Valid, invalid and conflicting extensions, unsigned compliance, what requires attention")
    async def status(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str], consistent: FromQuery[bool] = False
    ) -> StatusOut:
        await read_consistency(request, reads, PROJECTION, consistent)
        row = await reads.queries.status(site_id)
        if row is None:
            raise SiteNotFound(f"site {site_id} is not known", site_id=site_id)
        return msgspec.convert({**row, "site_id": site_id}, StatusOut, strict=False)

    @get("/audit-trail", operation_id="siteAuditTrail", opt=at_site(READ),
         summary="Every change at the site, oldest first, paginated")
    async def audit_trail(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str],
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 50, consistent: FromQuery[bool] = False,
    ) -> Page[AuditEntry]:
        page_params(skip, limit, "position", "asc", {"position": "position"})
        await read_consistency(request, reads, PROJECTION, consistent)
        await known_site(reads, site_id)
        total, rows = await reads.queries.site_audit_trail(site_id, skip, limit)
        return audit_page(total, rows, skip, limit)
