"""Checks that look across tables. Each collection asset reports its own completeness and key
checks from the write it validated (assets/landing.py); what remains here needs two tables.

They query the store of record directly (the Parquet with an in-memory DuckDB, or the lake), so
they never need the shared database file.
"""

import dagster as dg

from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.tables import CLIENTS, GOALS, Table
from plannr_pipeline.storage.warehouse import Warehouse


def _count(warehouse: Warehouse, sql: str, *tables: Table) -> int:
    """Run `sql` with each `{name}` replaced by that table as stored."""
    store = warehouse.store
    if not all(store.has(t) for t in tables):
        return 0
    with store.connect() as connection:
        return int(
            connection.execute(sql.format(**{t.name: store.source_sql(t) for t in tables})).fetchone()[0]
        )


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
