"""Checks that look across tables. Each collection asset reports its own completeness and key
checks from the write it validated (assets/landing.py); what remains here needs two tables.

They query the Parquet of record with an in-memory DuckDB, so they never need the shared
database file.
"""

import dagster as dg
import duckdb

from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.tables import CLIENTS, GOALS, Table
from plannr_pipeline.storage.warehouse import Warehouse


def _count(warehouse: Warehouse, sql: str, *tables: Table) -> int:
    """Run `sql` with each `{name}` replaced by that table's Parquet files."""
    sources = {
        t.name: f"read_parquet('{warehouse.store.glob_of(t)}', union_by_name = true, hive_partitioning = false)"
        for t in tables
    }
    if not all(warehouse.store.files_of(t) for t in tables):
        return 0
    with duckdb.connect() as connection:
        return int(connection.execute(sql.format(**sources)).fetchone()[0])


def checks_for(firm: Firm) -> list[dg.AssetChecksDefinition]:
    def goals_reference_clients(storage: PlannrStorage) -> dg.AssetCheckResult:
        orphans = _count(
            storage.warehouse(),
            "select count(*) from {goals} g anti join {clients} c on c.uuid = g.client_uuid",
            GOALS,
            CLIENTS,
        )
        return dg.AssetCheckResult(passed=orphans == 0, metadata={"orphan_goals": orphans})

    return [
        dg.asset_check(
            asset=firm.key("goals"),
            name="goals_reference_clients",
            blocking=True,
            description="Every goal belongs to a client that is stored.",
        )(rename_resources(goals_reference_clients, firm.resource_keys()))
    ]


CHECKS = checks_for(DEFAULT_FIRM)
(goals_reference_clients,) = CHECKS
