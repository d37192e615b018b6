"""An extension as a site knows it: the plugin version activated there, its sealed configuration and
hash, and the site rules of that version's manifest (kept with the activation, so the site's policies
decide from the site's own stream without reading every plugin's)."""

from __future__ import annotations

from typing import Any

import msgspec

from domain.plugins.manifest import Manifest
from domain.plugins.site_rules import Compliance, ConflictDeclared


class ExtensionRules(msgspec.Struct, frozen=True):
    """The site-relevant part of a manifest (see domain/plugins/site_rules.py)."""

    capabilities: list[str] = []
    exclusive_capabilities: list[str] = []
    dependencies: dict[str, str] = {}
    conflicts: list[ConflictDeclared] = []
    recommends: dict[str, str] = {}
    compliance: Compliance = msgspec.field(default_factory=Compliance)

    @classmethod
    def of(cls, manifest: Manifest) -> "ExtensionRules":
        return cls(
            capabilities=list(manifest.capabilities),
            exclusive_capabilities=list(manifest.exclusive_capabilities),
            dependencies=dict(manifest.dependencies),
            conflicts=list(manifest.conflicts),
            recommends=dict(manifest.recommends),
            compliance=manifest.compliance,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtensionRules":
        return msgspec.convert(data, cls)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class ActiveExtension(msgspec.Struct, frozen=True):
    """One extension active at a site."""

    plugin_id: str
    version: str
    configuration: dict[str, Any]  # as stored: secrets sealed
    configuration_hash: str
    rules: ExtensionRules
