"""`circles` and their members and groups: a small collection, swept in full each time."""

import dagster as dg

from plannr_pipeline.api import PlannrClient
from plannr_pipeline.assets.common import API_POOL, call_api, report_drift, result, table_spec
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import CIRCLE_ACCOUNTS, CIRCLE_GROUPS, CIRCLES

CIRCLES_PATH = "/api/v1/circles"
CIRCLE_TABLES = (CIRCLES, CIRCLE_ACCOUNTS, CIRCLE_GROUPS)


@dg.multi_asset(
    name="circles_asset",
    specs=[table_spec(CIRCLES), table_spec(CIRCLE_ACCOUNTS, deps=["circles"]), table_spec(CIRCLE_GROUPS, deps=["circles"])],
    pool=API_POOL,
)
def circles(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    warehouse = storage.warehouse()
    drift = normalise.Drift()
    counts = dict.fromkeys((t.name for t in CIRCLE_TABLES), 0)

    async def fetch(api: PlannrClient) -> None:
        with warehouse.store.staged() as write:
            for table in CIRCLE_TABLES:
                write.write(table, normalise.arrow(table, []))
            async for page in api.iter_pages(CIRCLES_PATH, {"include": "accounts,groups"}):
                rows_by_table = normalise.circles(page.records, drift)
                for table in CIRCLE_TABLES:
                    rows = rows_by_table[table.name]
                    write.write(table, normalise.arrow(table, rows))
                    counts[table.name] += len(rows)
                context.log.info(f"circles: page {page.number}/{page.last_page}, {counts['circles']} circles so far")

    stats = call_api(context, plannr, fetch)
    warehouse.refresh_views(CIRCLE_TABLES)
    report_drift(context, drift)
    for table in CIRCLE_TABLES:
        yield result(table, counts[table.name], stats, plannr.source(), drift)
