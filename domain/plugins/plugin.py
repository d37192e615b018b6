"""The Plugin aggregate: one stream per plugin id, from install to uninstall."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.plugins.configuration import Location, path_of, sealed_locations
from domain.plugins.errors import (
    FieldNotSealed,
    NothingToRollBack,
    PluginAlreadyInstalled,
    PluginNotInstalled,
    VersionUnchanged,
)
from domain.plugins.manifest import Manifest
from domain.upcasting import EventSchemas, Payload

STREAM_TYPE = "plugin"


def no_reason_is_none(payload: Payload) -> Payload:
    """Disabled and Uninstalled v1 wrote "" when no reason was given; v2 writes null, as Enabled,
    Restarted and Reloaded always did, so "no reason" reads alike on every plugin event."""
    return {**payload, "reason": payload.get("reason") or None}


# Schema versions of the Plugin events (domain/upcasting.py); the others are at version 1.
SCHEMAS = EventSchemas(
    "Plugin",
    current={"Disabled": 2, "Uninstalled": 2},
    upcasters={("Disabled", 1): no_reason_is_none, ("Uninstalled", 1): no_reason_is_none},
)


def plugin_uuid(plugin_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:plugin:{plugin_id}")


class Plugin(Aggregate):
    """A plugin known to Charter. Versions installed before stay in `versions` for rollback."""

    @staticmethod
    def create_id(plugin_id: str) -> UUID:
        return plugin_uuid(plugin_id)

    @event("Installed")
    def __init__(self, plugin_id: str, manifest: dict, source: dict, config: dict, enabled: bool) -> None:
        self.plugin_id = plugin_id
        self.versions: list[dict[str, Any]] = []
        self.classified: set[Location] = set()  # locations ever sealed: they stay secret until declassified
        self._install(manifest, source, config, enabled)

    def _install(self, manifest: dict, source: dict, config: dict, enabled: bool) -> None:
        self.manifest_data = manifest
        self.source = source
        self._set_config(config)
        self.enabled = enabled
        self.installed = True
        self.disabled = False  # by the kill switch (Disabled), not merely installed without enabling
        self.disabled_reason: str | None = None
        self.restarts = 0
        self.reloads = 0
        self.versions.append({"version": manifest["version"], "manifest": manifest, "source": source})

    def _set_config(self, config: dict) -> None:
        self.config = config
        self.classified |= set(sealed_locations(config))

    @property
    def manifest(self) -> Manifest:
        """The current manifest (checked when it was installed; not checked again on every load)."""
        return msgspec.convert(self.manifest_data, Manifest)

    @property
    def current_version(self) -> str:
        return self.manifest_data["version"]

    @property
    def status(self) -> str:
        if not self.installed:
            return "uninstalled"
        return "enabled" if self.enabled else "disabled" if self.disabled else "installed"

    # -- checks -----------------------------------------------------------------------------------

    def check_installed(self) -> None:
        if not self.installed:
            raise PluginNotInstalled(f"plugin {self.plugin_id} is uninstalled", plugin_id=self.plugin_id)

    # -- commands ---------------------------------------------------------------------------------

    def reinstall(self, manifest: dict, source: dict, config: dict, enabled: bool) -> None:
        if self.installed:
            raise PluginAlreadyInstalled(
                f"plugin {self.plugin_id} is already installed at {self.current_version}",
                plugin_id=self.plugin_id,
                version=self.current_version,
            )
        self._reinstalled(manifest=manifest, source=source, config=config, enabled=enabled)

    @event("Reinstalled")
    def _reinstalled(self, manifest: dict, source: dict, config: dict, enabled: bool) -> None:
        self._install(manifest, source, config, enabled)

    def update(self, manifest: dict, source: dict, config: dict) -> None:
        """Record Updated; `config` is the configuration re-sealed for the new version's schema."""
        self.check_installed()
        if manifest["version"] == self.current_version:
            raise VersionUnchanged(
                f"plugin {self.plugin_id} is already at version {self.current_version}", version=self.current_version
            )
        self._updated(
            from_version=self.current_version, to_version=manifest["version"], manifest=manifest, source=source, config=config
        )

    @event("Updated")
    def _updated(self, from_version: str, to_version: str, manifest: dict, source: dict, config: dict) -> None:
        self.manifest_data = manifest
        self.source = source
        self._set_config(config)
        self.versions.append({"version": to_version, "manifest": manifest, "source": source})

    def previous_version(self, to_version: str | None) -> dict[str, Any]:
        """The version a rollback would return to: `to_version`, or the one installed before the current."""
        earlier = [v for v in self.versions if v["version"] != self.current_version]
        if to_version is not None:
            earlier = [v for v in earlier if v["version"] == to_version]
        if not earlier:
            wanted = f"version {to_version}" if to_version else "a previous version"
            raise NothingToRollBack(
                f"plugin {self.plugin_id} has no {wanted} to roll back to",
                available=[v["version"] for v in self.versions],
            )
        return earlier[-1]

    def roll_back(self, to_version: str | None, config: dict) -> dict[str, Any]:
        """Record RolledBack to `to_version` (default: the version before); `config` re-sealed for its schema."""
        self.check_installed()
        target = self.previous_version(to_version)
        self._rolled_back(from_version=self.current_version, to_version=target["version"], config=config)
        return target

    @event("RolledBack")
    def _rolled_back(self, from_version: str, to_version: str, config: dict) -> None:
        target = next(v for v in reversed(self.versions) if v["version"] == to_version)
        self.manifest_data = target["manifest"]
        self.source = target["source"]
        self._set_config(config)

    def enable(self, reason: str | None = None) -> bool:
        """Record Enabled; False (nothing recorded) when already enabled."""
        self.check_installed()
        if self.enabled:
            return False
        self._enabled(reason=reason)
        return True

    @event("Enabled")
    def _enabled(self, reason: str | None) -> None:
        self.enabled = True
        self.disabled = False
        self.disabled_reason = None

    def disable(self, reason: str | None = None) -> bool:
        """Record Disabled (the global kill switch); False when already disabled."""
        self.check_installed()
        if self.disabled:
            return False
        self._disabled(reason=reason or None)
        return True

    @event("Disabled")
    def _disabled(self, reason: str | None) -> None:
        self.enabled = False
        self.disabled = True
        self.disabled_reason = reason

    def restart(self, reason: str | None = None) -> None:
        self.check_installed()
        self._restarted(reason=reason)

    @event("Restarted")
    def _restarted(self, reason: str | None) -> None:
        self.restarts += 1

    def reload(self, reason: str | None = None) -> None:
        self.check_installed()
        self._reloaded(reason=reason)

    @event("Reloaded")
    def _reloaded(self, reason: str | None) -> None:
        self.reloads += 1

    def configure(self, config: dict[str, Any], changed: list[str]) -> bool:
        """Record ConfigurationChanged with an already validated and sealed config; False when nothing changed."""
        self.check_installed()
        if not changed:
            return False
        self._configuration_changed(config=config, changed_keys=changed)
        return True

    @event("ConfigurationChanged")
    def _configuration_changed(self, config: dict, changed_keys: list[str]) -> None:
        self._set_config(config)

    def classified_at(self, fields: list[str]) -> list[Location]:
        """The classified locations named by `fields` (dotted paths, as listed under `sealed`)."""
        self.check_installed()
        by_path = {path_of(loc): loc for loc in self.classified}
        for index, name in enumerate(fields):
            if name.removeprefix("config.") not in by_path:
                raise FieldNotSealed(
                    f"fields.{index}: {name!r} is not a sealed field of plugin {self.plugin_id}",
                    field=f"fields.{index}",
                    sealed=sorted(by_path),
                )
        return [by_path[name.removeprefix("config.")] for name in fields]

    def declassify(self, fields: list[str], reason: str, config: dict) -> None:
        """Record Declassified: `config` holds the fields named in clear (the caller checked that no
        schema marks them secret any more)."""
        self.check_installed()
        self._declassified(fields=sorted(set(fields)), reason=reason, config=config)

    @event("Declassified")
    def _declassified(self, fields: list[str], reason: str, config: dict) -> None:
        self.classified -= {loc for loc in self.classified if path_of(loc) in {f.removeprefix("config.") for f in fields}}
        self.config = config

    def uninstall(self, reason: str | None, forced: bool, cleanup_data: bool) -> None:
        self.check_installed()
        self._uninstalled(reason=reason or None, forced=forced, cleanup_data=cleanup_data)

    @event("Uninstalled")
    def _uninstalled(self, reason: str | None, forced: bool, cleanup_data: bool) -> None:
        self.installed = False
        self.enabled = False
        if cleanup_data:
            self.config = {}
