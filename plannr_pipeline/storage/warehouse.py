"""DuckDB for queries: views over the Parquet of record.

Views read the Parquet files at query time, so a materialisation never has to write to the
database: it only renames Parquet files. An analyst holding `plannr.duckdb` open (even
read-write) therefore cannot make a run fail; the views are (re)created when the database is
free, and only their definitions live in it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import ALL_TABLES, TABLES, Table

log = logging.getLogger(__name__)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(table: Table, store: ParquetStore) -> str:
    if store.files_of(table):
        source = f"read_parquet({_quote(store.glob_of(table))}, union_by_name = true, hive_partitioning = false)"
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} FROM {source}'
    # Not materialised yet: an empty view of the right shape, so queries and joins still work.
    columns = ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns)
    return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} WHERE false'


class Warehouse:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "plannr.duckdb"
        self.store = ParquetStore(self.data_dir / "parquet")

    def view_statements(self) -> list[str]:
        """Every relation an analyst queries: the tables, their history, in dependency order."""
        statements = [view_sql(table, self.store) for table in ALL_TABLES]
        for name in history.HISTORY_OF:
            log_table = history.history_table(TABLES[name])
            glob = self.store.glob_of(log_table) if self.store.files_of(log_table) else None
            statements.append(history.view_sql(TABLES[name], glob))
        return statements

    def refresh_views(self) -> str | None:
        """Create or replace every view (a few statements, cheap); return why not, if the
        database is busy elsewhere."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.recover()  # a reader never sees a half-done commit
        try:
            with FileLock(str(self.data_dir / ".duckdb.lock"), timeout=60):
                with duckdb.connect(str(self.db_path)) as connection:
                    for statement in self.view_statements():
                        connection.execute(statement)
        except (duckdb.Error, Timeout) as error:
            reason = f"views in {self.db_path} not refreshed (database in use: {str(error).splitlines()[0]}); the data is in Parquet and existing views read it"
            log.warning(reason)
            return reason
        return None

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.db_path), read_only=read_only)
