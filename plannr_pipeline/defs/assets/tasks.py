"""`tasks` (subtasks included), their custom fields and assignees.

A full sweep by default. With `incremental: true` it walks `sort=-updated_at` newest first
and stops at the stored watermark (Plannr has no updated-since filter), merging by uuid.
An incremental walk cannot see deletions; the nightly full sweep does.
"""

from datetime import timedelta

import dagster as dg
import pyarrow.compute as pc

from plannr_pipeline.api import PlannrClient, endpoints
from plannr_pipeline.defs.assets.common import (
    HOURLY_FRESHNESS,
    collection_asset,
    confirm_deletions,
    fetch,
    land_listing,
)
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.commit import Scope
from plannr_pipeline.storage.tables import TASK_ASSIGNEES, TASK_CUSTOM_FIELDS, TASKS

TASK_TABLES = (TASKS, TASK_CUSTOM_FIELDS, TASK_ASSIGNEES)
# Re-read a little before the watermark: updates landing while we read are not missed.
WATERMARK_OVERLAP = timedelta(hours=1)


class TasksConfig(dg.Config):
    incremental: bool = False


@collection_asset(TASK_TABLES, "GET /api/v1/task", HOURLY_FRESHNESS)
def tasks(context: dg.AssetExecutionContext, config: TasksConfig, plannr: PlannrApi, storage: PlannrStorage):
    store = storage.warehouse().store
    # The watermark is derived from the stored data, so there is no separate state to lose.
    stored_updated_at = store.read(TASKS, columns=["updated_at"]).column("updated_at")
    watermark = pc.max(stored_updated_at).as_py() if config.incremental and len(stored_updated_at) else None
    # An incremental walk sees only what changed: it can record versions, never deletions, and
    # the commit keeps every stored task it did not re-read.
    landing = Landing(context, storage, TASK_TABLES, scope=Scope.nothing() if watermark else None)
    if watermark is None:

        async def sweep(api: PlannrClient) -> None:
            await land_listing(api, landing, endpoints.TASKS, normalise.tasks)
            await confirm_deletions(api, landing, endpoints.task)

        fetch(context, plannr, sweep, landing)
        yield from landing.finish(plannr.source(), mode="full sweep")
        return

    fetched = 0

    async def walk(api: PlannrClient) -> None:
        nonlocal fetched
        listing = endpoints.TASKS.with_params(**endpoints.NEWEST_UPDATED_FIRST)
        async for page in api.walk_pages(listing.path, listing.params):
            rows_by_table = normalise.tasks(landing.accept(page.records), landing.drift)
            landing.stage(rows_by_table, page.requested_at)
            fetched += len(rows_by_table["tasks"])
            if page.newer_copies:
                landing.stage_newer_copies(
                    normalise.tasks(landing.accept(page.newer_copies), landing.drift), page.requested_at
                )
            landing.progress(fetched, None, "changed tasks")
            page_oldest = min(
                (row["updated_at"] for row in rows_by_table["tasks"] if row["updated_at"]), default=None
            )
            if page_oldest is not None and page_oldest < watermark - WATERMARK_OVERLAP:
                break  # newest first: everything after this page is older still

    fetch(context, plannr, walk, landing)
    yield from landing.finish(
        plannr.source(), mode=f"incremental from {watermark.isoformat()}", fetched_rows=fetched
    )
