"""`imports` and their row errors, partitioned by the day the import was created."""

import dagster as dg

from plannr_pipeline.api import PlannrClient
from plannr_pipeline.assets.common import (
    API_POOL,
    HOURLY_FRESHNESS,
    call_api,
    land_pages,
    report_drift,
    result,
    table_spec,
)
from plannr_pipeline.partitions import created_filters, import_days, partition_key_of
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.tables import IMPORT_ERRORS, IMPORTS

IMPORTS_PATH = "/api/v1/import"
IMPORT_TABLES = (IMPORTS, IMPORT_ERRORS)


def import_day(record: dict) -> str:
    return partition_key_of(to_utc(record["created_at"]), import_days)


@dg.multi_asset(
    name="imports_asset",
    specs=[
        table_spec(IMPORTS, HOURLY_FRESHNESS),
        table_spec(IMPORT_ERRORS, HOURLY_FRESHNESS, deps=["imports"]),
    ],
    partitions_def=import_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=API_POOL,
)
def imports(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    """One listing filtered by created date (`filter[date_from/date_to]`) for the day range."""
    keys = set(context.partition_keys)
    filters = created_filters(context.partition_time_window, import_days, "filter[date_from]", "filter[date_to]")
    warehouse = storage.warehouse()
    drift = normalise.Drift()
    counts: dict[str, int] = {}

    async def fetch(api: PlannrClient) -> None:
        with warehouse.store.staged() as write:
            pages = api.iter_pages(IMPORTS_PATH, filters)
            counts.update(await land_pages(context, write, pages, IMPORT_TABLES, lambda records: normalise.imports(records, drift, import_day), keys))

    context.log.info(f"imports: {len(keys)} day(s) from {plannr.source()} with {filters}")
    stats = call_api(context, plannr, fetch)
    warehouse.refresh_views(IMPORT_TABLES)
    report_drift(context, drift)
    for table in IMPORT_TABLES:
        yield result(table, counts[table.name], stats, plannr.source(), drift, partitions=len(keys))
