"""Where a plugin is active: one stream per plugin, appended in the same transaction as the site's
activation or deactivation (and as the plugin's uninstall), so "is it active anywhere?" is answered
from the event log, and an uninstall racing an activation makes one of the two fail and decide again.

Events appended with an activation or a deactivation (SiteAdded, SiteRemoved, and Opened when the first
activation opens the stream) are saved with that site's id, site-scoped like the site's own events;
Opened and Closed appended by an uninstall name no site.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.sites.errors import PluginActiveAtSites

STREAM_TYPE = "plugin-sites"


def activations_uuid(plugin_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:plugin-sites:{plugin_id}")


class PluginActivations(Aggregate):
    @staticmethod
    def create_id(plugin_id: str) -> UUID:
        return activations_uuid(plugin_id)

    @event("Opened")
    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self.sites: list[str] = []

    def add(self, site_id: str) -> None:
        if site_id not in self.sites:
            self._site_added(site_id=site_id)

    @event("SiteAdded")
    def _site_added(self, site_id: str) -> None:
        self.sites = sorted({*self.sites, site_id})

    def remove(self, site_id: str) -> None:
        if site_id in self.sites:
            self._site_removed(site_id=site_id)

    @event("SiteRemoved")
    def _site_removed(self, site_id: str) -> None:
        self.sites = [s for s in self.sites if s != site_id]

    def close(self, reason: str | None = None) -> None:
        """Record Closed (the plugin is uninstalled); refused while any site has it active."""
        if self.sites:
            raise PluginActiveAtSites(
                f"plugin {self.plugin_id} is active at {len(self.sites)} site(s): deactivate it there first",
                plugin_id=self.plugin_id, sites=list(self.sites),
            )
        self._closed(reason=reason or "")

    @event("Closed")
    def _closed(self, reason: str) -> None:
        pass
