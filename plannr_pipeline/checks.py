"""Blocking asset checks on what landed: keys unique and present, goals point at real clients.

They query the Parquet of record with an in-memory DuckDB, so they never need the shared
database file.
"""

import duckdb

import dagster as dg

from plannr_pipeline.resources import PlannrStorage
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


CHECKS = [*(key_check(table) for table in KEYED_TABLES), goals_reference_clients]
