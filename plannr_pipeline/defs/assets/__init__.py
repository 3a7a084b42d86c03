"""One asset per Plannr collection; each writes its table and child tables in one validated commit."""

from plannr_pipeline.defs.assets.analyst_views import VIEW_ASSETS
from plannr_pipeline.defs.assets.circles import circles
from plannr_pipeline.defs.assets.clients import clients
from plannr_pipeline.defs.assets.goals import goals
from plannr_pipeline.defs.assets.imports import imports
from plannr_pipeline.defs.assets.staff import staff
from plannr_pipeline.defs.assets.tasks import tasks

# In dependency order: sync runs them in this order within each partitioning.
COLLECTION_ASSETS = [clients, goals, staff, circles, tasks, imports]
ASSETS = [*COLLECTION_ASSETS, *VIEW_ASSETS]

__all__ = ["ASSETS", "COLLECTION_ASSETS"]
