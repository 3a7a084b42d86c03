"""`goals`: each client's goals. Plannr has no firm-wide goals list, so this fans out one
request per client, concurrently under the shared budget."""

import dagster as dg

from plannr_pipeline.api import PlannrClient
from plannr_pipeline.assets.common import (
    API_POOL,
    HOURLY_FRESHNESS,
    call_api,
    report_drift,
    result,
    table_spec,
)
from plannr_pipeline.partitions import client_months
from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import CLIENTS, GOALS


def goals_path(client_uuid: str) -> str:
    return f"/api/v1/client/{client_uuid}/goal"


@dg.multi_asset(
    name="goals_asset",
    specs=[table_spec(GOALS, HOURLY_FRESHNESS, deps=["clients"])],
    partitions_def=client_months,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=API_POOL,
)
def goals(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    """Goals of the clients stored for these partitions; a goal sits in its client's partition."""
    keys = set(context.partition_keys)
    warehouse = storage.warehouse()
    stored = warehouse.store.read(CLIENTS, partitions=keys, columns=["uuid", "created_month"]).to_pylist()
    month_of_client = {row["uuid"]: row["created_month"] for row in stored}
    drift = normalise.Drift()
    written = done = 0

    async def fetch(api: PlannrClient) -> None:
        nonlocal written, done
        with warehouse.store.staged() as write:
            write.write(GOALS, normalise.arrow(GOALS, []), keys)
            async for client_uuid, records in api.fan_out(month_of_client, goals_path):
                rows = normalise.goals(client_uuid, records, drift, month_of_client[client_uuid])
                write.write(GOALS, normalise.arrow(GOALS, rows), keys)
                written += len(rows)
                done += 1
                if done % 100 == 0 or done == len(month_of_client):
                    context.log.info(f"goals: {done}/{len(month_of_client)} clients, {written} goals so far")

    context.log.info(f"goals: fanning out over {len(month_of_client)} clients in {len(keys)} partition(s)")
    stats = call_api(context, plannr, fetch)
    warehouse.refresh_views((GOALS,))
    report_drift(context, drift)
    yield result(GOALS, written, stats, plannr.source(), drift, partitions=len(keys), clients=len(month_of_client))
