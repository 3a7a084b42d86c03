"""`clients`: every client account, partitioned by created month."""

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
from plannr_pipeline.partitions import client_months, created_filters, partition_key_of
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.tables import CLIENTS

ACCOUNTS_PATH = "/api/v1/account"


def client_month(record: dict) -> str:
    return partition_key_of(to_utc(record["created_at"]), client_months)


@dg.multi_asset(
    name="clients_asset",
    specs=[table_spec(CLIENTS, HOURLY_FRESHNESS)],
    partitions_def=client_months,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=API_POOL,
)
def clients(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    """One filtered listing for the whole partition range; rows are split by month locally,
    so a backfill of every month costs what one unpartitioned sweep costs."""
    keys = set(context.partition_keys)
    filters = created_filters(context.partition_time_window, client_months, "filter[created_after]", "filter[created_before]")
    params = {"filter[type]": "client", **filters}
    warehouse = storage.warehouse()
    drift = normalise.Drift()
    counts: dict[str, int] = {}

    async def fetch(api: PlannrClient) -> None:
        with warehouse.store.staged() as write:
            pages = api.iter_pages(ACCOUNTS_PATH, params)
            counts.update(await land_pages(context, write, pages, (CLIENTS,), lambda records: normalise.clients(records, drift, client_month), keys))

    context.log.info(f"clients: {len(keys)} partition(s) from {plannr.source()} with {filters or 'no date filter'}")
    stats = call_api(context, plannr, fetch)
    warehouse.refresh_views((CLIENTS,))
    report_drift(context, drift)
    yield result(CLIENTS, counts["clients"], stats, plannr.source(), drift, partitions=len(keys))
