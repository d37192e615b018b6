"""Sites as a collection: `/api/v1/sites` (list, create), the caller's pending signoffs across their
sites, and one extension activated or deactivated across many sites in one request."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from application.sites import commands as c
from application.sites.batch import ActivateAtSites, DeactivateAtSites, SiteOutcome, run_batch
from domain.identity.access import Grant
from interfaces.http.bodies import JSON_BODY
from interfaces.http.common import command_context, page_params, read_consistency, written
from interfaces.http.dependencies import Commands
from interfaces.http.schemas import Page, Written
from interfaces.http.security import AUTHENTICATED, rule, visible_sites
from interfaces.http.sites.common import CREATE, PROJECTION, READ
from interfaces.http.sites.dependencies import SITES, SiteReads
from interfaces.http.sites.schemas import (
    BatchActivate,
    BatchDeactivate,
    BatchOut,
    PendingOut,
    PendingSignoff,
    SiteCreate,
    SiteOut,
    SiteResult,
)
from interfaces.http.sites.site import site_out
from interfaces.runtime import Authority

MULTI_STATUS = 207
PARTIAL = {MULTI_STATUS: ResponseSpec(BatchOut, description="Some sites refused: every site's result is listed")}


def batch_answer(plugin_id: str, outcomes: list[SiteOutcome]) -> Response[BatchOut]:
    """200 when every site succeeded; 207 (Multi-Status) with each site's result otherwise."""
    results = [
        SiteResult(site_id=o.site_id, ok=True, stream_version=o.result.version, position=o.result.position)
        if o.ok else SiteResult(site_id=o.site_id, ok=False, code=o.code, message=o.message, details=o.details or {})
        for o in outcomes
    ]
    succeeded = sum(r.ok for r in results)
    body = BatchOut(plugin_id=plugin_id, succeeded=succeeded, failed=len(results) - succeeded, results=results)
    return Response(body, status_code=200 if succeeded == len(results) else MULTI_STATUS)


class SitesController(Controller):
    path = "/api/v1/sites"
    tags = ["sites"]
    dependencies = SITES

    @get("/", operation_id="listSites", opt=rule(READ, "any-site"), summary="Sites the caller holds a grant at")
    async def list_sites(
        self, request: Request, reads: NamedDependency[SiteReads], include_retired: FromQuery[bool] = False,
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 20, consistent: FromQuery[bool] = False,
    ) -> Page[SiteOut]:
        page_params(skip, limit, "site_id", "asc", {"site_id": "site_id"})
        await read_consistency(request, reads, PROJECTION, consistent)
        total, rows = await reads.queries.list_sites(visible_sites(request, READ), skip, limit, include_retired)
        items = [site_out(r) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post("/", operation_id="createSite", opt=rule(CREATE), status_code=201, summary="Create a site", **JSON_BODY)
    async def create_site(
        self, request: Request, commands: NamedDependency[Commands], data: JSONBody[SiteCreate]
    ) -> Response[Written]:
        cmd = c.CreateSite(site_id=data.site_id, name=data.name, timezone=data.timezone, metadata=data.metadata)
        result = await commands.execute(cmd, command_context(request))
        return written(result, data.site_id, 201, location=f"/api/v1/site/{data.site_id}")

    @get("/signoffs/pending", operation_id="myPendingSignoffs", opt=AUTHENTICATED,
         summary="The calling user's pending signoffs, at the sites where they hold the aspects' roles")
    async def pending_signoffs(
        self, request: Request, reads: NamedDependency[SiteReads], authority: NamedDependency[Authority],
        consistent: FromQuery[bool] = False,
    ) -> PendingOut:
        await read_consistency(request, reads, PROJECTION, consistent)
        claims = request.scope.get("state", {}).get("claims")
        if claims is None:
            return PendingOut(items=[], total=0)
        grants = [Grant(role, site) for role, site in authority.current_grants(claims)]
        rows = await reads.queries.pending_for_user(claims.subject, grants)
        items = [msgspec.convert(r, PendingSignoff, strict=False) for r in rows]
        return PendingOut(items=items, total=len(items))

    @post(
        "/extensions/{plugin_id:str}/activate", operation_id="activateExtensionAtSites", opt=rule(c.ACTIVATE, "any-site"),
        status_code=200, summary="Activate at many sites, each its own command: 200 when all succeed, 207 otherwise",
        responses=PARTIAL, **JSON_BODY,
    )
    async def activate_at_sites(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[BatchActivate]
    ) -> Response[BatchOut]:
        batch = ActivateAtSites(plugin_id=plugin_id, site_ids=data.site_ids, configuration=data.configuration,
                                version=data.version, reason=data.reason)
        return batch_answer(plugin_id, await run_batch(commands.execute, batch, command_context(request)))

    @post(
        "/extensions/{plugin_id:str}/deactivate", operation_id="deactivateExtensionAtSites",
        opt=rule(c.DEACTIVATE, "any-site"), status_code=200,
        summary="Deactivate at many sites, each its own command: 200 when all succeed, 207 otherwise",
        responses=PARTIAL, **JSON_BODY,
    )
    async def deactivate_at_sites(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[BatchDeactivate]
    ) -> Response[BatchOut]:
        batch = DeactivateAtSites(plugin_id=plugin_id, site_ids=data.site_ids, reason=data.reason, force=data.force)
        return batch_answer(plugin_id, await run_batch(commands.execute, batch, command_context(request)))
