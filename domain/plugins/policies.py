"""Pure policies of the plugin catalog: host compatibility, dependencies, dependents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from domain.plugins.errors import DependencyError, HasDependents, PluginIncompatible
from domain.plugins.manifest import Manifest


@dataclass(frozen=True)
class UnmetDependency:
    plugin_id: str
    required: str
    found: str | None  # installed version, or None when not installed

    def describe(self) -> str:
        wanted = f"{self.plugin_id}{self.required}" if self.required else self.plugin_id
        have = f"installed is {self.found}" if self.found else "it is not installed"
        return f"requires {wanted}, {have}"


def check_host_compatibility(manifest: Manifest, host_version: str) -> None:
    """Refuse a manifest whose `host_versions` range excludes this host."""
    if manifest.host_versions and not SpecifierSet(manifest.host_versions).contains(
        Version(host_version), prereleases=True
    ):
        raise PluginIncompatible(
            f"{manifest.id} {manifest.version} requires host {manifest.host_versions}, this host is {host_version}",
            required=manifest.host_versions,
            host_version=host_version,
        )


def unmet_dependencies(manifest: Manifest, installed: Mapping[str, str | None]) -> list[UnmetDependency]:
    """Dependencies of `manifest` that `installed` (plugin id -> installed version or None) does not satisfy."""
    unmet = []
    for dep_id, spec in sorted(manifest.dependencies.items()):
        version = installed.get(dep_id)
        if version is None or not SpecifierSet(spec).contains(Version(version), prereleases=True):
            unmet.append(UnmetDependency(dep_id, spec, version))
    return unmet


def check_dependencies(manifest: Manifest, installed: Mapping[str, str | None]) -> None:
    unmet = unmet_dependencies(manifest, installed)
    if unmet:
        raise DependencyError(
            f"{manifest.id} {manifest.version} " + "; ".join(u.describe() for u in unmet),
            unmet=[{"plugin_id": u.plugin_id, "required": u.required, "found": u.found} for u in unmet],
        )


def dependents_of(plugin_id: str, installed: Iterable[Manifest]) -> list[str]:
    """Ids of installed plugins whose manifest depends on `plugin_id`."""
    return sorted(m.id for m in installed if plugin_id in m.dependencies)


def check_no_dependents(plugin_id: str, dependents: list[str], force: bool) -> None:
    if dependents and not force:
        raise HasDependents(
            f"{plugin_id} is required by {', '.join(dependents)}; uninstall them first or pass force=true",
            dependents=dependents,
        )
