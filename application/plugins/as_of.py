"""A plugin as it was at a point of the log (`GET /plugins/{id}?as_of=`): its stream and its dependents'
stream replayed up to the point (application/as_of.py), answered in the shape of the `plugins` read
model's row so the HTTP layer shows it exactly as it shows the current one."""

from __future__ import annotations

from typing import Any

from application.as_of import AsOf, History
from domain.plugins.dependents import STREAM_TYPE as DEPENDENTS_STREAM
from domain.plugins.dependents import Dependents, dependents_uuid
from domain.plugins.errors import PluginNotFound
from domain.plugins.plugin import STREAM_TYPE, Plugin, plugin_uuid

INSTALLS = frozenset({"Plugin.Installed", "Plugin.Reinstalled"})
NEW_VERSIONS = INSTALLS | {"Plugin.Updated"}


async def plugin_as_of(history: History, plugin_id: str, as_of: AsOf) -> dict[str, Any]:
    """The plugin's row as of `as_of`; PluginNotFound when it was not installed yet."""
    replayed = await history.replay(Plugin, STREAM_TYPE, plugin_id, plugin_uuid(plugin_id), as_of)
    plugin, events = replayed.aggregate, replayed.events
    if plugin is None:
        raise PluginNotFound(f"plugin {plugin_id} was not known as of {as_of.text()}", plugin_id=plugin_id,
                             as_of=as_of.text())
    dependents = await history.replay(Dependents, DEPENDENTS_STREAM, plugin_id, dependents_uuid(plugin_id), as_of)
    manifest = plugin.manifest_data
    installed_at = [e.recorded_at for e in events if e.event_type in INSTALLS][-1]
    versions = [{"version": e.payload["manifest"]["version"], "source": e.payload["source"], "installed_at": e.recorded_at}
                for e in events if e.event_type in NEW_VERSIONS]
    return {
        "plugin_id": plugin_id,
        "name": manifest["name"],
        "version": manifest["version"],
        "description": manifest.get("description", ""),
        "author": manifest.get("author", ""),
        "category": manifest.get("category", "general"),
        "tags": list(manifest.get("tags", [])),
        "capabilities": list(manifest.get("capabilities", [])),
        "status": plugin.status,
        "enabled": plugin.enabled,
        "disabled_reason": plugin.disabled_reason,
        "dependents": list(dependents.aggregate.dependents) if dependents.aggregate is not None else [],
        "installed_at": installed_at,
        "updated_at": events[-1].recorded_at,
        "stream_version": events[-1].stream_version,
        "manifest": manifest,
        "dependencies": [{"plugin_id": dep, "requirement": spec}
                         for dep, spec in sorted(manifest.get("dependencies", {}).items())] if plugin.installed else [],
        "versions": versions,
        "config": plugin.config,
        "source": plugin.source,
        "restarts": plugin.restarts,
        "reloads": plugin.reloads,
    }
