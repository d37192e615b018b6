"""Read models, each named after the question it answers."""

from projections.access import AccessProjection
from projections.plugins import PluginsProjection

PROJECTIONS = [PluginsProjection(), AccessProjection()]
