"""Read models, each named after the question it answers."""

from projections.plugins import PluginsProjection

PROJECTIONS = [PluginsProjection()]
