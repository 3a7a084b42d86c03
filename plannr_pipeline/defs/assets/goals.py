"""`goals`: each client's goals. Plannr has no firm-wide goals list, so this fans out one
request per client, concurrently under the shared budget."""

from datetime import datetime

import dagster as dg
import pyarrow as pa

from plannr_pipeline.api import PlannrClient, endpoints
from plannr_pipeline.defs.assets.common import HOURLY_FRESHNESS, collection_asset, fetch
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.commit import Scope
from plannr_pipeline.storage.goal_reads import record_goal_reads
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import CLIENTS, GOALS


def goals_of(listed_clients: set[str]) -> Scope:
    """The stored goals this write speaks for: those of the clients whose goals it listed (each
    listing complete), and those of clients no longer stored at all (deleted with their client)."""

    def test(stored: pa.Table, store: ParquetStore) -> pa.Array:
        current = set(store.read(CLIENTS, columns=["uuid"]).column("uuid").to_pylist())
        return pa.array(
            [c in listed_clients or c not in current for c in stored.column("client_uuid").to_pylist()],
            pa.bool_(),
        )

    return Scope.where(["client_uuid"], test)


@collection_asset(
    (GOALS,),
    "GET /api/v1/client/{uuid}/goal for each client",
    HOURLY_FRESHNESS,
    deps=["clients"],
    partitions_def=client_months,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def goals(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    """Goals of the clients stored for these partitions; a goal sits in its client's partition."""
    store = storage.warehouse().store
    stored = store.read(CLIENTS, partitions=context.partition_keys, columns=["uuid", "created_month"])
    # Straight from the columns, each month one string: not a row dict per client held through
    # the whole fan-out.
    months: dict[str, str] = {}
    month_of_client = {
        uuid: months.setdefault(month, month)
        for uuid, month in zip(
            stored.column("uuid").to_pylist(), stored.column("created_month").to_pylist(), strict=True
        )
    }
    del stored
    pending = dict(month_of_client)  # clients whose goals are not staged yet: a resumption starts here
    reads: dict[str, datetime] = {}  # when each client's goals listing was asked for (goal_reads)
    landing = Landing(
        context,
        storage,
        (GOALS,),
        context.partition_keys,
        client_months.get_partition_keys(),
        scope=goals_of(set(month_of_client)),
    )

    async def work(api: PlannrClient) -> None:
        async for client_uuid, records, total, requested_at in api.fan_out(
            list(pending), lambda uuid: endpoints.goals_of(uuid).path, endpoints.GOALS_INCLUDE
        ):
            landing.count_listing(f"goals of client {client_uuid}", total, len(records))
            landing.stage(
                {
                    "goals": normalise.goals(
                        client_uuid, landing.accept(records), landing.drift, month_of_client[client_uuid]
                    )
                },
                requested_at,
            )
            del pending[client_uuid]
            reads[client_uuid] = requested_at
            landing.progress(len(month_of_client) - len(pending), len(month_of_client), "clients")

    context.log.info(
        f"goals: fanning out over {len(month_of_client)} clients in {len(landing.partitions)} partition(s)"
    )
    fetch(context, plannr, work, landing, left_to_do=lambda: len(pending))
    yield from landing.finish(plannr.source(), clients=len(month_of_client))
    record_goal_reads(store, reads)
