"""The dependents of one plugin, kept from the log: one stream per plugin that others depend on.

Installing, updating, rolling back or uninstalling a plugin appends, in the same transaction as to its
own stream, to the streams of the plugins it starts or stops depending on; uninstalling a plugin
appends to its own. So an uninstall refuses from this stream alone, with no read model to wait for, and
an uninstall of `P` and an install of a plugin that needs `P` cannot both pass: both append to `P`'s
stream, and whichever comes second finds it moved on and is decided again (see `application.bus`).
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.plugins.policies import check_no_dependents

STREAM_TYPE = "plugin-dependents"


def dependents_uuid(plugin_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:plugin-dependents:{plugin_id}")


class Dependents(Aggregate):
    """The installed plugins that depend on `plugin_id`."""

    @staticmethod
    def create_id(plugin_id: str) -> UUID:
        return dependents_uuid(plugin_id)

    @event("Opened")
    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self.dependents: list[str] = []

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

    def uninstall(self, force: bool) -> None:
        """Record that the plugin itself is uninstalled: refused while installed plugins depend on it,
        unless forced (they stay listed: they still depend on it)."""
        check_no_dependents(self.plugin_id, self.dependents, force)
        self._uninstalled(remaining=list(self.dependents))

    @event("Uninstalled")
    def _uninstalled(self, remaining: list[str]) -> None:
        pass
