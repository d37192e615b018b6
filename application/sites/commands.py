"""Commands of the sites feature (imperative names); batches live in application/sites/batch.py."""

from __future__ import annotations

from typing import Any

from application.commands import Command

# What a caller must hold at a site (checked by the HTTP guards, and per site by the batches).
ACTIVATE = "extensions:activate"
DEACTIVATE = "extensions:deactivate"
FORCE = "extensions:force"  # deactivating past active dependents (admin, site-admin through extensions:*)


class CreateSite(Command):
    site_id: str
    name: str
    timezone: str = "UTC"
    metadata: dict[str, str] = {}


class RenameSite(Command):
    site_id: str
    name: str


class RetireSite(Command):
    site_id: str
    reason: str | None = None


class ActivateExtension(Command):
    """Activate a plugin at a site; `version` defaults to the installed one. Refused with every problem
    of the activation policy listed (missing signoffs included: sign the configuration hash first)."""

    site_id: str
    plugin_id: str
    configuration: dict[str, Any] = {}
    version: str | None = None
    reason: str | None = None


class ReconfigureExtension(Command):
    """Replace an active extension's configuration; signoffs of the old configuration are invalidated.
    Secrets sent back masked (`********`) keep their stored value."""

    site_id: str
    plugin_id: str
    configuration: dict[str, Any]
    reason: str | None = None


class DeactivateExtension(Command):
    """Deactivate; refused while active extensions of the site depend on it, unless `force` (which takes
    `extensions:force` at the site and a reason)."""

    site_id: str
    plugin_id: str
    reason: str | None = None
    force: bool = False


class RecordSignoff(Command):
    """The caller signs one compliance aspect of an extension at a site, re-authenticating with their
    password or an access token issued less than five minutes ago. `configuration_hash` names the
    configuration approved (default: the active one; required before activation)."""

    site_id: str
    plugin_id: str
    aspect: str
    configuration_hash: str | None = None
    notes: str = ""
    password: str | None = None
    access_token: str | None = None
