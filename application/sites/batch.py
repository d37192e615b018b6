"""One extension activated or deactivated across many sites in one request: each site is its own
command, dispatched through the bus (its own retries, its own Idempotency-Key derived from the
request's), with its own outcome. Partial success is reported per site, never hidden."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

from msgspec import Meta

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.sites.commands import ACTIVATE, DEACTIVATE, ActivateExtension, DeactivateExtension
from domain.errors import DomainError
from domain.limits import Id

MAX_SITES = 100  # sites per batch
Execute = Callable[[Command, CommandContext], Awaitable[CommandResult]]
SiteIds = Annotated[list[Id], Meta(min_length=1, max_length=MAX_SITES)]


class ActivateAtSites(Command):
    plugin_id: str
    site_ids: SiteIds
    configuration: dict[str, Any] = {}
    version: str | None = None
    reason: str | None = None

    def per_site(self) -> list[ActivateExtension]:
        return [ActivateExtension(site_id=s, plugin_id=self.plugin_id, configuration=self.configuration,
                                  version=self.version, reason=self.reason) for s in unique(self.site_ids)]


class DeactivateAtSites(Command):
    plugin_id: str
    site_ids: SiteIds
    reason: str | None = None
    force: bool = False

    def per_site(self) -> list[DeactivateExtension]:
        return [DeactivateExtension(site_id=s, plugin_id=self.plugin_id, reason=self.reason, force=self.force)
                for s in unique(self.site_ids)]


@dataclass(frozen=True)
class SiteOutcome:
    """What one site's command did: its result, or the refusal (code, message, details)."""

    site_id: str
    result: CommandResult | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


def unique(site_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(site_ids))


async def run_batch(execute: Execute, batch: ActivateAtSites | DeactivateAtSites, ctx: CommandContext) -> list[SiteOutcome]:
    """Run `batch` site by site with `execute` (the bus's `Application.execute`). The caller's access is
    checked at each site (the request names many, so no single guard covers them)."""
    permission = ACTIVATE if isinstance(batch, ActivateAtSites) else DEACTIVATE
    outcomes = []
    for command in batch.per_site():
        site_id = command.site_id
        if ctx.access is not None and not ctx.access.allows(permission, site_id):
            outcomes.append(SiteOutcome(site_id, code="FORBIDDEN", message=f"you do not hold {permission} at site {site_id}",
                                        details={"required_permission": permission}))
            continue
        key = f"{ctx.idempotency_key}:{site_id}" if ctx.idempotency_key else None
        site_ctx = replace(ctx, site_id=site_id, idempotency_key=key, idempotency=None, expected_version=None)
        try:
            outcomes.append(SiteOutcome(site_id, result=await execute(command, site_ctx)))
        except DomainError as exc:
            outcomes.append(SiteOutcome(site_id, code=exc.code, message=exc.message, details=dict(exc.details)))
        except Exception as exc:  # the store failed for this site: say so, and go on with the others
            outcomes.append(SiteOutcome(site_id, code="COMMAND_FAILED", message=f"the command failed ({type(exc).__name__})"))
    return outcomes
