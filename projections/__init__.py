"""Read models, each named after the question it answers."""

from projections.identity.projection import AccessProjection
from projections.plugins.projection import PluginsProjection
from projections.sites.projection import SitesProjection
from projections.tasks.runs import RunsProjection
from projections.tasks.tasks import TasksProjection

PROJECTIONS = [PluginsProjection(), AccessProjection(), SitesProjection(), TasksProjection(), RunsProjection()]
