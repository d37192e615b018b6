"""Extensions at one site: `/api/v1/site/{site_id}/extensions`. Validation answers every problem without
recording anything; activation, reconfiguration, deactivation and signoffs run one command each."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from application.sites import commands as c
from domain.sites.errors import ExtensionNotActive
from interfaces.http.bodies import JSON_BODY
from interfaces.http.common import page_params, read_consistency, written
from interfaces.http.dependencies import Commands
from interfaces.http.schemas import Page, Written
from interfaces.http.sites.common import CONFIGURE, PROJECTION, READ, SIGN, at_site, problems_out, site_context, validation_out
from interfaces.http.sites.dependencies import SITES, SiteChecks, SiteReads
from interfaces.http.sites.schemas import (
    AuditEntry,
    CombinationOut,
    ExtensionActivate,
    ExtensionCombination,
    ExtensionDeactivate,
    ExtensionProposal,
    ExtensionReconfigure,
    SignoffCreate,
    SignoffsOut,
    ValidationOut,
)
from interfaces.http.sites.site import audit_page


class ExtensionController(Controller):
    path = "/api/v1/site/{site_id:str}/extensions"
    tags = ["sites"]
    dependencies = SITES

    @post(
        "/validate-combination", operation_id="validateExtensionCombination", opt=at_site(READ), status_code=200,
        summary="Can these extensions run together at the site, beside what is active there?", **JSON_BODY,
    )
    async def validate_combination(
        self, checks: NamedDependency[SiteChecks], site_id: FromPath[str], data: JSONBody[ExtensionCombination]
    ) -> CombinationOut:
        found = await checks.combination(site_id, [(e.id, e.version) for e in data.extensions])
        return CombinationOut(site_id=site_id, valid=found.valid, problems=problems_out(found))

    @post(
        "/{plugin_id:str}/validate", operation_id="validateExtension", opt=at_site(READ), status_code=200,
        summary="Every problem activating this extension would meet (200 with valid false when refused)", **JSON_BODY,
    )
    async def validate(
        self, checks: NamedDependency[SiteChecks], site_id: FromPath[str], plugin_id: FromPath[str],
        data: JSONBody[ExtensionProposal | None] = None,
    ) -> ValidationOut:
        data = data or ExtensionProposal()
        return validation_out(await checks.activation(site_id, plugin_id, data.version, data.configuration))

    @post(
        "/{plugin_id:str}/activate", operation_id="activateExtension", opt=at_site(c.ACTIVATE), status_code=200,
        summary="Activate at the site; refused (422) with every problem listed in details.problems", **JSON_BODY,
    )
    async def activate(
        self, request: Request, commands: NamedDependency[Commands], site_id: FromPath[str], plugin_id: FromPath[str],
        data: JSONBody[ExtensionActivate | None] = None,
    ) -> Response[Written]:
        data = data or ExtensionActivate()
        cmd = c.ActivateExtension(site_id=site_id, plugin_id=plugin_id, configuration=data.configuration,
                                  version=data.version, reason=data.reason)
        return written(await commands.execute(cmd, site_context(request, site_id)), plugin_id)

    @put(
        "/{plugin_id:str}/configuration", operation_id="reconfigureExtension", opt=at_site(CONFIGURE),
        summary="Replace the configuration; signoffs of the old one are invalidated", **JSON_BODY,
    )
    async def reconfigure(
        self, request: Request, commands: NamedDependency[Commands], site_id: FromPath[str], plugin_id: FromPath[str],
        data: JSONBody[ExtensionReconfigure],
    ) -> Response[Written]:
        cmd = c.ReconfigureExtension(site_id=site_id, plugin_id=plugin_id, configuration=data.configuration, reason=data.reason)
        return written(await commands.execute(cmd, site_context(request, site_id)), plugin_id)

    @delete(
        "/{plugin_id:str}", operation_id="deactivateExtension", opt=at_site(c.DEACTIVATE), status_code=200,
        summary="Deactivate; refused (409, details.dependents) while active extensions depend on it unless forced",
        **JSON_BODY,
    )
    async def deactivate(
        self, request: Request, commands: NamedDependency[Commands], site_id: FromPath[str], plugin_id: FromPath[str],
        data: JSONBody[ExtensionDeactivate | None] = None,
    ) -> Response[Written]:
        data = data or ExtensionDeactivate()
        cmd = c.DeactivateExtension(site_id=site_id, plugin_id=plugin_id, reason=data.reason, force=data.force)
        return written(await commands.execute(cmd, site_context(request, site_id)), plugin_id)

    @post(
        "/{plugin_id:str}/signoffs", operation_id="recordSignoff", opt=at_site(SIGN), status_code=201,
        summary="Sign one compliance aspect (re-authenticate with password or a fresh access token)", **JSON_BODY,
    )
    async def sign(
        self, request: Request, commands: NamedDependency[Commands], site_id: FromPath[str], plugin_id: FromPath[str],
        data: JSONBody[SignoffCreate],
    ) -> Response[Written]:
        cmd = c.RecordSignoff(
            site_id=site_id, plugin_id=plugin_id, aspect=data.aspect, configuration_hash=data.configuration_hash,
            notes=data.notes, password=data.password, access_token=data.access_token,
        )
        return written(await commands.execute(cmd, site_context(request, site_id)), plugin_id, 201)

    @get("/{plugin_id:str}/signoffs", operation_id="listSignoffs", opt=at_site(READ),
         summary="Signoffs given (invalidated ones marked) and pending for the active configuration")
    async def signoffs(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str], plugin_id: FromPath[str],
        consistent: FromQuery[bool] = False,
    ) -> SignoffsOut:
        await read_consistency(request, reads, PROJECTION, consistent)
        found = await reads.queries.signoffs(site_id, plugin_id)
        if found is None:
            raise ExtensionNotActive(f"{plugin_id} is not active at site {site_id}", site_id=site_id, plugin_id=plugin_id)
        return msgspec.convert(found, SignoffsOut, strict=False)

    @get("/{plugin_id:str}/audit-trail", operation_id="extensionAuditTrail", opt=at_site(READ),
         summary="Every activation, reconfiguration, deactivation, signoff and invalidation of the extension")
    async def audit_trail(
        self, request: Request, reads: NamedDependency[SiteReads], site_id: FromPath[str], plugin_id: FromPath[str],
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 50, consistent: FromQuery[bool] = False,
    ) -> Page[AuditEntry]:
        page_params(skip, limit, "position", "asc", {"position": "position"})
        await read_consistency(request, reads, PROJECTION, consistent)
        total, rows = await reads.queries.extension_audit_trail(site_id, plugin_id, skip, limit)
        return audit_page(total, rows, skip, limit)
