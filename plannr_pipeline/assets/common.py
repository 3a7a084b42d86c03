"""What every Plannr asset shares: specs built from the table definitions, and results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from plannr_pipeline.api import Page, PlannrClient, RequestStats, RetriesExhaustedError
from plannr_pipeline.resources import PlannrApi
from plannr_pipeline.storage.normalise import Drift, arrow
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.tables import Table

GROUP = "plannr"
OWNERS = ["team:data-engineering"]
KINDS = {"python", "parquet", "duckdb"}
# One Plannr token: API-bound steps share a pool so concurrent runs queue instead of fighting
# over the same 500 requests a minute (the limiter in the API client is shared too).
API_POOL = "plannr_api"

# Matching the schedules (schedules.py): what the hourly refresh touches should be at most an
# hour and a bit old; what only the nightly refresh touches should have run since 02:00.
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=3), warn_window=timedelta(minutes=90))
NIGHTLY_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=2), timezone="Europe/London")


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, str(c.type), description=c.description) for c in table.columns]
    )


def table_spec(table: Table, freshness: dg.FreshnessPolicy, deps: Sequence[str] = ()) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=table.name,
        description=table.description,
        freshness_policy=freshness,
        group_name=GROUP,
        owners=OWNERS,
        kinds=KINDS,
        deps=list(deps),
        metadata={"dagster/column_schema": column_schema(table), "dagster/table_name": table.name},
    )


def result(
    table: Table,
    rows: int,
    stats: RequestStats,
    source: str,
    drift: Drift,
    partitions: int | None = None,
    **extra: Any,
) -> dg.MaterializeResult:
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        "dagster/column_schema": column_schema(table),
        "source": source,
        "requests": stats.requests,
        "request_stats": dg.MetadataValue.json(stats.as_metadata()),
        "schema_drift": dg.MetadataValue.json(drift.summary()),
        **extra,
    }
    if partitions is not None:
        metadata["partitions_in_run"] = partitions
    if stats.warnings:
        metadata["api_warnings"] = dg.MetadataValue.json(stats.warnings[:50])
    return dg.MaterializeResult(asset_key=table.name, metadata=metadata)


async def land_pages(
    context: dg.AssetExecutionContext,
    write: StagedWrite,
    pages: AsyncIterator[Page],
    tables: Sequence[Table],
    rows_of: Callable[[list[dict]], dict[str, list[dict]]],
    partitions: Collection[str] = (),
) -> dict[str, int]:
    """Normalise each page into rows per table and stage them, page by page (flat memory).

    Every named partition is replaced, even one that receives no rows, and rows outside the
    named partitions are left alone (the listing's date filter is deliberately a little wide).
    Returns the rows staged per table.
    """
    counts = dict.fromkeys((table.name for table in tables), 0)
    for table in tables:
        write.write(table, arrow(table, []), partitions)
    async for page in pages:
        rows_by_table = rows_of(page.records)
        for table in tables:
            rows = rows_by_table[table.name]
            if table.partition_column:
                rows = [row for row in rows if row[table.partition_column] in partitions]
            write.write(table, arrow(table, rows), partitions)
            counts[table.name] += len(rows)
        first = tables[0].name
        context.log.info(f"{first}: page {page.number}/{page.last_page}, {counts[first]} rows so far")
    return counts


def call_api(
    context: dg.AssetExecutionContext, plannr: PlannrApi, work: Callable[[PlannrClient], Awaitable[None]]
) -> RequestStats:
    """Run `work` with a connected client; return the request counts.

    Transient trouble that outlasted the client's own retries asks Dagster to retry the step
    later; errors that retrying cannot fix (401, 403, 404, 422) fail the step as they are.
    """
    api = plannr.client(context.log.warning)

    async def main() -> None:
        async with api:
            await work(api)

    try:
        asyncio.run(main())
    except RetriesExhaustedError as error:
        raise dg.RetryRequested(max_retries=2, seconds_to_wait=60) from error
    context.log.info(f"{api.stats.requests} requests, {api.stats.retries} retries, {api.stats.budget_wait_seconds:.1f}s waiting on the budget")
    return api.stats


def report_drift(context: dg.AssetExecutionContext, drift: Drift) -> None:
    for line in drift.summary():
        context.log.warning(f"schema drift: {line} (kept in extra_json)")
