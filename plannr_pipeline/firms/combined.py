"""Across firms, read-only: one DuckDB file of views where every relation carries `firm`.

The views read each firm's Parquet of record directly (never the firms' own database files,
which a running sync may hold), so the combined file is always current and costs nothing to
keep: rebuild it only when a firm is added or a table first appears.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from plannr_pipeline.firms.settings import FirmSettings
from plannr_pipeline.storage.history import HISTORY_OF, history_table
from plannr_pipeline.storage.tables import TABLES
from plannr_pipeline.storage.warehouse import Warehouse

COMBINED_FILE = "firms.duckdb"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_combined(firms: list[FirmSettings], path: Path) -> list[str]:
    """(Re)write `path` with one view per table any firm has stored; returns the view names."""
    tables = [*TABLES.values(), *(history_table(TABLES[name]) for name in HISTORY_OF)]
    written = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as db:
        for table in tables:
            parts = []
            for firm in firms:
                store = Warehouse(str(Path(firm.folder()).absolute())).store
                if store.files_of(table):
                    parts.append(
                        f"select {_quote(firm.slug)} as firm, * from read_parquet({_quote(store.glob_of(table))}, "
                        "union_by_name = true, hive_partitioning = false)"
                    )
            db.execute(f'drop view if exists "{table.name}"')
            if parts:
                db.execute(f'create view "{table.name}" as ' + " union all by name ".join(parts))
                written.append(table.name)
    return written
