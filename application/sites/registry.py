"""The per-plugin activation registry (domain/sites/activations.py), as the application loads it."""

from __future__ import annotations

from application.unit import Loaded, Repository
from domain.sites.activations import STREAM_TYPE, PluginActivations, activations_uuid


async def load_activations(repository: Repository, plugin_id: str) -> Loaded[PluginActivations]:
    """Where the plugin is active, from its registry stream (opened, pending, on first use)."""
    loaded = await repository.load(PluginActivations, STREAM_TYPE, plugin_id, activations_uuid(plugin_id))
    if loaded.aggregate is None:
        loaded.aggregate = PluginActivations(plugin_id=plugin_id)
    return loaded

