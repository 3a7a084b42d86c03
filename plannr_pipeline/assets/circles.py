"""`circles` and their members and groups: a small collection, swept in full each time."""

import dagster as dg

from plannr_pipeline.api import PlannrClient
from plannr_pipeline.assets.common import (
    API_POOL,
    NIGHTLY_FRESHNESS,
    call_api,
    land_pages,
    report_drift,
    result,
    table_spec,
)
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import CIRCLE_ACCOUNTS, CIRCLE_GROUPS, CIRCLES

CIRCLES_PATH = "/api/v1/circles"
CIRCLE_TABLES = (CIRCLES, CIRCLE_ACCOUNTS, CIRCLE_GROUPS)


@dg.multi_asset(
    name="circles_asset",
    specs=[table_spec(CIRCLES, NIGHTLY_FRESHNESS), table_spec(CIRCLE_ACCOUNTS, NIGHTLY_FRESHNESS, deps=["circles"]), table_spec(CIRCLE_GROUPS, NIGHTLY_FRESHNESS, deps=["circles"])],
    pool=API_POOL,
)
def circles(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    warehouse = storage.warehouse()
    drift = normalise.Drift()
    counts: dict[str, int] = {}

    async def fetch(api: PlannrClient) -> None:
        with warehouse.store.staged() as write:
            pages = api.iter_pages(CIRCLES_PATH, {"include": "accounts,groups"})
            counts.update(await land_pages(context, write, pages, CIRCLE_TABLES, lambda records: normalise.circles(records, drift)))

    stats = call_api(context, plannr, fetch)
    warehouse.refresh_views(CIRCLE_TABLES)
    report_drift(context, drift)
    for table in CIRCLE_TABLES:
        yield result(table, counts[table.name], stats, plannr.source(), drift)
