"""One asset per Plannr collection; each writes its table and child tables in one validated commit."""

from plannr_pipeline.assets.circles import circles
from plannr_pipeline.assets.clients import clients
from plannr_pipeline.assets.goals import goals
from plannr_pipeline.assets.imports import imports
from plannr_pipeline.assets.staff import staff
from plannr_pipeline.assets.tasks import tasks

# In dependency order: sync runs them in this order within each partitioning.
COLLECTION_ASSETS = [clients, goals, staff, circles, tasks, imports]

__all__ = ["COLLECTION_ASSETS"]
