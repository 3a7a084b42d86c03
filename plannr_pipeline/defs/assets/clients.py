"""`clients`: every client account, partitioned by created month."""

import dagster as dg

from plannr_pipeline.api import endpoints
from plannr_pipeline.defs.assets.common import HOURLY_FRESHNESS, collection_asset, fetch, land_listing
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.partitions import client_months, created_filters, partition_key_of
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.tables import CLIENTS


def client_month(record: dict) -> str:
    return partition_key_of(to_utc(record["created_at"]), client_months)


@collection_asset(
    (CLIENTS,),
    "GET /api/v1/account?filter[type]=client",
    HOURLY_FRESHNESS,
    partitions_def=client_months,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def clients(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    """One filtered listing for the whole partition range; rows are split by month locally,
    so a backfill of every month costs what one unpartitioned sweep costs."""
    landing = Landing(
        context, storage, (CLIENTS,), context.partition_keys, client_months.get_partition_keys()
    )
    filters = created_filters(
        context.partition_time_window,
        client_months,
        endpoints.CLIENTS_CREATED_AFTER,
        endpoints.CLIENTS_CREATED_BEFORE,
    )
    listing = endpoints.CLIENTS.with_params(**filters)

    def rows_of(records: list[dict], drift: normalise.Drift) -> dict[str, list[dict]]:
        return normalise.clients(records, drift, client_month)

    context.log.info(
        f"clients: {len(landing.partitions)} partition(s) from {plannr.source()} with {filters or 'no date filter'}"
    )
    fetch(context, plannr, lambda api: land_listing(api, landing, listing, rows_of), landing)
    yield from landing.finish(plannr.source())
