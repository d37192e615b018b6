"""What the sites controllers share: the command context at a site, the access rules, answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
from litestar import Request

from application.context import CommandContext
from application.sites.validation import Validation
from interfaces.http.common import command_context
from interfaces.http.security import rule
from interfaces.http.sites.schemas import ProblemOut, ValidationOut

PROJECTION = "sites"
READ = "sites:read"  # seeing a site at all: without it there, a site answers 404 as if it did not exist
CREATE = "sites:create"
CONFIGURE = "extensions:configure"
SIGN = "signoffs:sign"


def at_site(permission: str) -> dict[str, Any]:
    """The rule of a route under /site/{site_id}: `permission` held at that site (or everywhere); a
    caller who cannot see the site gets 404, as for a site that does not exist."""
    return rule(permission, "site", hidden_without=READ)


def site_context(request: Request, site_id: str) -> CommandContext:
    """The command context of a request acting at `site_id` (kept in the events' metadata)."""
    return replace(command_context(request), site_id=site_id)


def problems_out(validation: Validation) -> list[ProblemOut]:
    return [msgspec.convert(p.to_dict(), ProblemOut) for p in validation.problems]


def validation_out(validation: Validation) -> ValidationOut:
    return ValidationOut(
        site_id=validation.site_id, plugin_id=validation.plugin_id, version=validation.version, valid=validation.valid,
        configuration_hash=validation.configuration_hash, problems=problems_out(validation),
        missing_signoffs=validation.missing_signoffs(),
    )
