"""Read models, each named after the question it answers."""

from projections.identity.projection import AccessProjection
from projections.plugins.projection import PluginsProjection

PROJECTIONS = [PluginsProjection(), AccessProjection()]
