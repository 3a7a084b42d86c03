"""`clients`: every client account, partitioned by created month."""

import dagster as dg
import pyarrow as pa

from plannr_pipeline.api import PlannrClient, endpoints
from plannr_pipeline.defs.assets.common import (
    HOURLY_FRESHNESS,
    collection_asset,
    confirm_deletions,
    fetch,
    land_listing,
)
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.partitions import client_months, created_filters, partition_key_of
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.commit import Scope
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.tables import CLIENTS


def client_month(record: dict) -> str:
    return partition_key_of(to_utc(record["created_at"]), client_months)


def placed_in(partitions: set[str]) -> Scope:
    """The stored clients the current settings place in `partitions` (by their created_at, not
    by the partition they were filed under when stored: PLANNR_START_DATE may have moved)."""

    def test(stored: pa.Table, _store: object) -> pa.Array:
        return pa.array(
            [
                at is not None and partition_key_of(at, client_months) in partitions
                for at in stored.column("created_at").to_pylist()
            ],
            pa.bool_(),
        )

    return Scope.where(["created_at"], test)


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
    partitions = set(context.partition_keys)
    landing = Landing(
        context,
        storage,
        (CLIENTS,),
        partitions,
        client_months.get_partition_keys(),
        scope=placed_in(partitions),
        place=client_month,
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

    async def work(api: PlannrClient) -> None:
        await land_listing(api, landing, listing, rows_of)
        await confirm_deletions(api, landing, endpoints.client)

    fetch(context, plannr, work, landing)
    yield from landing.finish(plannr.source())
