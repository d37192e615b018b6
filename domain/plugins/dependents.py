"""The dependents of one plugin, kept from the log: one stream per plugin that others may depend on.

Every command that changes which plugins depend on `P` (installing, updating, rolling back or
uninstalling a dependent) or whether `P` is installed (installing, updating, rolling back or
uninstalling `P`) appends to `P`'s stream in the same transaction as to its own. So an uninstall of `P`
and an install of a plugin that needs it cannot both pass: whichever appends second finds the stream
moved on and decides again (see `application.bus`), and an uninstall refuses from this stream alone,
with no read model to wait for.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.plugins.policies import check_no_dependents

STREAM_TYPE = "plugin-dependents"


def dependents_uuid(plugin_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:plugin-dependents:{plugin_id}")


class Dependents(Aggregate):
    """The installed plugins that depend on `plugin_id`, and the version of it installed (None: none)."""

    @staticmethod
    def create_id(plugin_id: str) -> UUID:
        return dependents_uuid(plugin_id)

    @event("Opened")
    def __init__(self, plugin_id: str, installed_version: str | None) -> None:
        self.plugin_id = plugin_id
        self.installed_version = installed_version
        self.dependents: list[str] = []

    def follow(self, version: str | None, force: bool = False) -> bool:
        """Bring the stream in line with the plugin's installed version (None: uninstalled). Refuses
        to let the plugin go while installed plugins depend on it, unless forced."""
        if version == self.installed_version:
            return False
        if version is None:
            check_no_dependents(self.plugin_id, self.dependents, force)
        self._version_changed(installed_version=version)
        return True

    @event("VersionChanged")
    def _version_changed(self, installed_version: str | None) -> None:
        self.installed_version = installed_version

    def add(self, dependent: str) -> bool:
        """Record that the installed plugin `dependent` depends on this one; False when known already."""
        if dependent in self.dependents:
            return False
        self._dependent_added(dependent=dependent)
        return True

    @event("DependentAdded")
    def _dependent_added(self, dependent: str) -> None:
        self.dependents = sorted({*self.dependents, dependent})

    def remove(self, dependent: str) -> bool:
        """Record that `dependent` no longer depends on this one (uninstalled, or updated without it)."""
        if dependent not in self.dependents:
            return False
        self._dependent_removed(dependent=dependent)
        return True

    @event("DependentRemoved")
    def _dependent_removed(self, dependent: str) -> None:
        self.dependents = [d for d in self.dependents if d != dependent]
