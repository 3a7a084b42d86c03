"""Blocking asset checks on what landed: keys unique and present, goals point at real clients,
and as many rows stored as the API says it has.

They query the Parquet of record with an in-memory DuckDB, so they never need the shared
database file.
"""

import asyncio

import dagster as dg
import duckdb

from plannr_pipeline.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage.tables import CIRCLES, CLIENTS, GOALS, IMPORTS, TASKS, Table
from plannr_pipeline.storage.warehouse import Warehouse

KEYED_TABLES = (CLIENTS, GOALS, CIRCLES, TASKS, IMPORTS)


def _count(warehouse: Warehouse, sql: str, *tables: Table) -> int:
    """Run `sql` with each `{name}` replaced by that table's Parquet files."""
    sources = {t.name: f"read_parquet('{warehouse.store.glob_of(t)}', union_by_name = true, hive_partitioning = false)" for t in tables}
    if not all(warehouse.store.files_of(t) for t in tables):
        return 0
    with duckdb.connect() as connection:
        return int(connection.execute(sql.format(**sources)).fetchone()[0])


def key_check(table: Table) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=table.name, name=f"{table.name}_uuid_unique_and_present", blocking=True,
                    description=f"Every {table.name} row has a uuid and no uuid appears twice.")
    def check(storage: PlannrStorage) -> dg.AssetCheckResult:
        warehouse = storage.warehouse()
        missing = _count(warehouse, f"select count(*) from {{{table.name}}} where uuid is null or created_at is null", table)
        duplicated = _count(warehouse, f"select count(*) - count(distinct uuid) from {{{table.name}}}", table)
        return dg.AssetCheckResult(passed=missing == 0 and duplicated == 0,
                                   metadata={"rows_missing_uuid_or_created_at": missing, "duplicate_uuids": duplicated})

    return check


@dg.asset_check(asset="goals", blocking=True, description="Every goal belongs to a client that is stored.")
def goals_reference_clients(storage: PlannrStorage) -> dg.AssetCheckResult:
    orphans = _count(storage.warehouse(), "select count(*) from {goals} g anti join {clients} c on c.uuid = g.client_uuid", GOALS, CLIENTS)
    return dg.AssetCheckResult(passed=orphans == 0, metadata={"orphan_goals": orphans})


# The listing each table is a full copy of. Goals have no firm-wide total (one listing per
# client), so goals_reference_clients stands in for them.
API_LISTINGS = {
    CLIENTS: ("/api/v1/account", {"filter[type]": "client"}),
    CIRCLES: ("/api/v1/circles", {}),
    TASKS: ("/api/v1/task", {"filter[show_child_tasks]": "true"}),
    IMPORTS: ("/api/v1/import", {}),
}


async def _api_total(plannr: PlannrApi, path: str, params: dict[str, str]) -> int:
    async with plannr.client() as api:
        body = await api.get(path, {**params, "per_page": 1})  # one request: only meta.total is read
    return int(body["meta"]["total"])


def completeness_check(table: Table, path: str, params: dict[str, str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=table.name, name=f"{table.name}_complete", blocking=True,
                    description=f"Rows stored in {table.name} equal the API's meta.total for GET {path} (one request).")
    def check(plannr: PlannrApi, storage: PlannrStorage) -> dg.AssetCheckResult:
        api_total = asyncio.run(_api_total(plannr, path, params))
        stored = _count(storage.warehouse(), f"select count(*) from {{{table.name}}}", table)
        return dg.AssetCheckResult(passed=stored == api_total, metadata={"rows_stored": stored, "api_total": api_total, "requests": 1})

    return check


CHECKS = [
    *(key_check(table) for table in KEYED_TABLES),
    goals_reference_clients,
    *(completeness_check(table, path, params) for table, (path, params) in API_LISTINGS.items()),
]
