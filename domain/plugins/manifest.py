"""The plugin manifest: what a plugin declares about itself."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from domain.errors import field_of

from domain.plugins.errors import ManifestInvalid
from domain.limits import EventNames, Id, Ids, Name, Requirements, Tags, Text, Url, VersionText
from domain.plugins.site_rules import Compliance, Conflicts, check_site_rules

PLUGIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class EventsDeclared(msgspec.Struct, forbid_unknown_fields=True):
    """Event types a plugin emits and subscribes to."""

    emits: EventNames = []
    subscribes: EventNames = []


class Manifest(msgspec.Struct, forbid_unknown_fields=True):
    """A plugin's typed manifest (`charter-plugin.json` in an archive)."""

    id: Id
    name: Name
    version: VersionText
    description: Text = ""
    author: Name = ""
    category: Id = "general"
    tags: Tags = []
    capabilities: Tags = []  # what the plugin provides at a site
    exclusive_capabilities: Tags = []  # of those, the ones no other active extension of a site may provide
    dependencies: Requirements = {}  # installed here, and active (in range) at a site before this one
    conflicts: Conflicts = []  # extensions that may not be active beside this one at a site
    recommends: Requirements = {}  # extensions worth activating beside this one (a recommendation only)
    compliance: Compliance = msgspec.field(default_factory=Compliance)  # aspects signed off per site
    config_schema: dict[str, Any] = {}
    host_versions: VersionText = ""
    events: EventsDeclared = msgspec.field(default_factory=EventsDeclared)
    permissions: Ids = []
    entry_point: Url | None = None
    homepage: Url | None = None
    license: Name | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def parse_manifest(raw: Any) -> Manifest:
    """Decode and check a manifest given as a dict or JSON bytes; raise ManifestInvalid naming the field."""
    try:
        if isinstance(raw, (bytes, str)):
            manifest = msgspec.json.decode(raw, type=Manifest)
        else:
            manifest = msgspec.convert(raw, type=Manifest)
    except msgspec.ValidationError as exc:
        field = field_of(str(exc))
        name = f"manifest.{field}" if field else "manifest"
        raise ManifestInvalid(f"{name}: {exc}", field=name) from None
    except msgspec.DecodeError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}", field="manifest") from None
    check_manifest(manifest)
    return manifest


def check_manifest(manifest: Manifest) -> None:
    """Check the rules msgspec's types cannot express."""
    if not PLUGIN_ID.fullmatch(manifest.id):
        raise ManifestInvalid(
            "manifest.id must be lowercase letters, digits, '.', '_' or '-' (max 63 chars)", field="manifest.id"
        )
    if not manifest.name.strip():
        raise ManifestInvalid("manifest.name must not be empty", field="manifest.name")
    try:
        Version(manifest.version)
    except InvalidVersion:
        raise ManifestInvalid(f"manifest.version {manifest.version!r} is not a valid version", field="manifest.version") from None
    _check_specifier(manifest.host_versions, "manifest.host_versions")
    for dep_id, spec in manifest.dependencies.items():
        if dep_id == manifest.id:
            raise ManifestInvalid("a plugin cannot depend on itself", field=f"manifest.dependencies.{dep_id}")
        if not PLUGIN_ID.fullmatch(dep_id):
            raise ManifestInvalid(f"dependency id {dep_id!r} is not a plugin id", field=f"manifest.dependencies.{dep_id}")
        _check_specifier(spec, f"manifest.dependencies.{dep_id}")
    check_site_rules(manifest, PLUGIN_ID, _check_specifier)
    if manifest.config_schema:
        from domain.plugins.configuration import check_schema

        check_schema(manifest.config_schema)


def _check_specifier(spec: str, field: str) -> None:
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        raise ManifestInvalid(f"{field} {spec!r} is not a version range such as '>=1.0,<2'", field=field) from None
