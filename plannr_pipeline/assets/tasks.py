"""`tasks` (subtasks included), their custom fields and assignees.

A full sweep by default. With `incremental: true` it walks `sort=-updated_at` newest first
and stops at the stored watermark (Plannr has no updated-since filter), merging by uuid.
An incremental walk cannot see deletions; the nightly full sweep does.
"""

from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from plannr_pipeline.api import PlannrClient
from plannr_pipeline.assets.common import (
    API_POOL,
    HOURLY_FRESHNESS,
    call_api,
    report_drift,
    result,
    table_spec,
)
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import TASK_ASSIGNEES, TASK_CUSTOM_FIELDS, TASKS

TASKS_PATH = "/api/v1/task"
TASK_TABLES = (TASKS, TASK_CUSTOM_FIELDS, TASK_ASSIGNEES)
# Subtasks are hidden from the list unless asked for; this is the documented (older) filter.
WITH_SUBTASKS = {"filter[show_child_tasks]": "true"}
# Re-read a little before the watermark: updates landing while we read are not missed.
WATERMARK_OVERLAP = timedelta(hours=1)


class TasksConfig(dg.Config):
    incremental: bool = False


@dg.multi_asset(
    name="tasks_asset",
    specs=[table_spec(TASKS, HOURLY_FRESHNESS), table_spec(TASK_CUSTOM_FIELDS, HOURLY_FRESHNESS, deps=["tasks"]), table_spec(TASK_ASSIGNEES, HOURLY_FRESHNESS, deps=["tasks"])],
    pool=API_POOL,
)
def tasks(context: dg.AssetExecutionContext, config: TasksConfig, plannr: PlannrApi, storage: PlannrStorage):
    warehouse = storage.warehouse()
    store = warehouse.store
    drift = normalise.Drift()
    fetched: dict[str, list[dict]] = {t.name: [] for t in TASK_TABLES}
    # The watermark is derived from the stored data, so there is no separate state to lose.
    stored_updated_at = store.read(TASKS, columns=["updated_at"]).column("updated_at")
    watermark = pc.max(stored_updated_at).as_py() if config.incremental and len(stored_updated_at) else None
    mode = f"incremental from {watermark.isoformat()}" if watermark else "full sweep"

    async def fetch(api: PlannrClient) -> None:
        if watermark is None:
            pages = api.iter_pages(TASKS_PATH, WITH_SUBTASKS)
        else:
            pages = api.walk_pages(TASKS_PATH, {**WITH_SUBTASKS, "sort": "-updated_at"})
        async for page in pages:
            rows_by_table = normalise.tasks(page.records, drift)
            for name, rows in rows_by_table.items():
                fetched[name].extend(rows)
            context.log.info(f"tasks ({mode}): page {page.number}/{page.last_page}, {len(fetched['tasks'])} tasks so far")
            page_oldest = min((row["updated_at"] for row in rows_by_table["tasks"] if row["updated_at"]), default=None)
            if watermark is not None and page_oldest is not None and page_oldest < watermark - WATERMARK_OVERLAP:
                break  # newest first: everything after this page is older still

    stats = call_api(context, plannr, fetch)
    stored_rows: dict[str, int] = {}
    with store.merge_lock(TASKS), store.staged() as write:
        refreshed = pa.array({row["uuid"] for row in fetched["tasks"]}, pa.string())
        for table in TASK_TABLES:
            new = normalise.arrow(table, fetched[table.name])
            if watermark is not None:  # keep stored rows of tasks this walk did not reach
                key = "uuid" if table is TASKS else "task_uuid"
                kept = store.read(table)
                kept = kept.filter(pc.invert(pc.is_in(kept.column(key), value_set=refreshed)))
                new = pa.concat_tables([kept, new])
            write.write(table, new)
            stored_rows[table.name] = new.num_rows
    warehouse.refresh_views(TASK_TABLES)
    report_drift(context, drift)
    for table in TASK_TABLES:
        yield result(table, stored_rows[table.name], stats, plannr.source(), drift, mode=mode, fetched_rows=len(fetched[table.name]))
