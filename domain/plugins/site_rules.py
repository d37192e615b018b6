"""What a manifest declares about life at a site: conflicts and compliance aspects (beside the
manifest's `capabilities`, `exclusive_capabilities`, `dependencies` and `recommends`), and their checks
at install, each refusal naming its field (`manifest.compliance.aspects.0.role`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta

from domain.identity.access import ROLE_NAME
from domain.limits import MAX_ITEMS, Id, Ids, Text, VersionText
from domain.plugins.errors import ManifestInvalid

if TYPE_CHECKING:
    from domain.plugins.manifest import Manifest

MAX_ASPECTS = 32  # compliance aspects per manifest
MAX_MEANING = 500  # the meaning of a signature, shown with it
ASPECT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class ComplianceAspect(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One aspect a site signs off before the extension runs there: who signs (`role`, held at that
    site) and what the signature means (`meaning`, recorded with each signature)."""

    name: Id
    role: Id
    meaning: Annotated[str, Meta(max_length=MAX_MEANING)]
    description: Text = ""


class Compliance(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The aspects, and groups of aspects that must be signed by different people (separation of duties)."""

    aspects: Annotated[list[ComplianceAspect], Meta(max_length=MAX_ASPECTS)] = []
    distinct_signers: Annotated[list[Ids], Meta(max_length=MAX_ASPECTS)] = []

    def aspect(self, name: str) -> ComplianceAspect | None:
        return next((a for a in self.aspects if a.name == name), None)

    def must_differ(self, one: str, other: str) -> bool:
        """Must aspects `one` and `other` be signed by different people?"""
        return one != other and any(one in group and other in group for group in self.distinct_signers)


class ConflictDeclared(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An extension (in a version range; empty: any version) that may not be active beside this one."""

    id: Id
    versions: VersionText = ""
    reason: Text = ""


Conflicts = Annotated[list[ConflictDeclared], Meta(max_length=MAX_ITEMS)]


def check_site_rules(manifest: "Manifest", plugin_id: re.Pattern[str], check_range: Callable[[str, str], None]) -> None:
    """Refuse site rules that could never hold or that name nothing; `check_range(spec, field)` refuses
    a version range that does not parse."""
    for index, cap in enumerate(manifest.exclusive_capabilities):
        if cap not in manifest.capabilities:
            raise ManifestInvalid(
                f"manifest.exclusive_capabilities.{index}: {cap!r} is not one of the manifest's capabilities",
                field=f"manifest.exclusive_capabilities.{index}",
            )
    for other, spec in manifest.recommends.items():
        field = f"manifest.recommends.{other}"
        if not plugin_id.fullmatch(other) or other == manifest.id:
            raise ManifestInvalid(f"{field}: {other!r} is not another plugin's id", field=field)
        check_range(spec, field)
    seen: set[str] = set()
    for index, conflict in enumerate(manifest.conflicts):
        field = f"manifest.conflicts.{index}"
        if not plugin_id.fullmatch(conflict.id) or conflict.id == manifest.id:
            raise ManifestInvalid(f"{field}.id: {conflict.id!r} is not another plugin's id", field=f"{field}.id")
        if conflict.id in manifest.dependencies:
            raise ManifestInvalid(
                f"{field}.id: {conflict.id} is also a dependency; a plugin cannot need and refuse it", field=f"{field}.id"
            )
        if conflict.id in seen:
            raise ManifestInvalid(f"{field}.id: {conflict.id} is listed twice", field=f"{field}.id")
        seen.add(conflict.id)
        check_range(conflict.versions, f"{field}.versions")
    _check_compliance(manifest.compliance)


def _check_compliance(compliance: Compliance) -> None:
    names: set[str] = set()
    for index, aspect in enumerate(compliance.aspects):
        field = f"manifest.compliance.aspects.{index}"
        if not ASPECT_NAME.fullmatch(aspect.name):
            raise ManifestInvalid(
                f"{field}.name: {aspect.name!r} must be lowercase letters, digits, '.', '_' or '-'", field=f"{field}.name"
            )
        if aspect.name in names:
            raise ManifestInvalid(f"{field}.name: aspect {aspect.name} is declared twice", field=f"{field}.name")
        names.add(aspect.name)
        if not ROLE_NAME.fullmatch(aspect.role):
            raise ManifestInvalid(f"{field}.role: {aspect.role!r} is not a role name", field=f"{field}.role")
        if not aspect.meaning.strip():
            raise ManifestInvalid(
                f"{field}.meaning: say what the signature means (e.g. 'Reviewed and approved')", field=f"{field}.meaning"
            )
    for index, group in enumerate(compliance.distinct_signers):
        field = f"manifest.compliance.distinct_signers.{index}"
        if len(set(group)) < 2:
            raise ManifestInvalid(f"{field}: name at least two different aspects", field=field)
        for position, name in enumerate(group):
            if name not in names:
                raise ManifestInvalid(
                    f"{field}.{position}: {name!r} is not a declared compliance aspect", field=f"{field}.{position}"
                )
