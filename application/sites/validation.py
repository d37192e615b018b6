"""Validation without recording anything: what `POST /site/{id}/extensions/{ext}/validate` and
`POST /site/{id}/extensions/validate-combination` answer. Both read the site's stream and the plugins'
(never a read model), and run the same pure policies as the activation command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.sites.proposals import SiteServices, propose
from application.unit import Loaded
from domain.sites.errors import SiteNotFound
from domain.sites.policies import Problem, check_combination, errors
from domain.sites.site import STREAM_TYPE, Site, site_uuid

MAX_COMBINATION = 64  # extensions checked together in one request


@dataclass(frozen=True)
class Validation:
    """Every problem found, and the configuration hash a signer approves (empty when the configuration
    broke the schema). `valid`: no problem of severity `error`."""

    site_id: str
    problems: list[Problem]
    plugin_id: str | None = None
    version: str | None = None
    configuration_hash: str = ""

    @property
    def valid(self) -> bool:
        return not errors(self.problems)

    def of_kind(self, *kinds: str) -> list[Problem]:
        return [p for p in self.problems if p.kind in kinds]

    def missing_signoffs(self) -> list[str]:
        """The aspects still to sign for this configuration."""
        return [p.details["aspect"] for p in self.problems if p.code == "SIGNOFF_MISSING"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id, "plugin_id": self.plugin_id, "version": self.version, "valid": self.valid,
            "configuration_hash": self.configuration_hash, "problems": [p.to_dict() for p in self.problems],
        }


async def load_site(services: SiteServices, site_id: str) -> Loaded[Site]:
    """The site's stream; SiteNotFound when it was never created."""
    loaded = await services.repository.load(Site, STREAM_TYPE, site_id, site_uuid(site_id))
    if loaded.aggregate is None:
        raise SiteNotFound(f"site {site_id} is not known", site_id=site_id)
    return loaded


async def validate_activation(
    services: SiteServices, site_id: str, plugin_id: str, version: str | None, configuration: dict[str, Any]
) -> Validation:
    """Every problem activating `plugin_id` at `site_id` would meet now (for an extension active there:
    every problem with the new configuration)."""
    site = (await load_site(services, site_id)).aggregate
    proposal = await propose(services, plugin_id, version, configuration)
    problems = site.validate(proposal.candidate, proposal.disabled)
    c = proposal.candidate
    return Validation(site_id, problems, plugin_id, c.version or None, c.configuration_hash)


async def validate_combination(
    services: SiteServices, site_id: str, extensions: list[tuple[str, str | None]]
) -> Validation:
    """Can these (plugin id, version) run together at the site, beside what is active there? Each is
    checked with an empty configuration (coexistence, not configuration); signoffs are warned of only."""
    site = (await load_site(services, site_id)).aggregate
    proposals = [await propose(services, plugin_id, version, {}) for plugin_id, version in extensions[:MAX_COMBINATION]]
    disabled = frozenset().union(*(p.disabled for p in proposals))
    candidates = [p.candidate for p in proposals]
    problems = [p for p in check_combination(candidates, site.extensions, disabled) if p.kind != "schema"]
    return Validation(site_id, problems)
