"""DuckDB for queries: views over the Parquet of record.

Views read the Parquet files at query time, so a materialisation never has to write to the
database: it only renames Parquet files. An analyst holding `plannr.duckdb` open (even
read-write) therefore cannot make a run fail; the views are (re)created when the database is
free, and only their definitions live in it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import ALL_TABLES, TABLES, Table
from plannr_pipeline.storage.views import ANALYST_VIEWS

log = logging.getLogger(__name__)
# duckdb 2.0 writes a storage format the command-line client on PyPI (duckdb-cli 1.5.x) cannot
# open; a database created with this setting opens in both (docs/design.md, Dagster notes).
DATABASE_FILE = "plannr.duckdb"
CONNECT_CONFIG = {"storage_compatibility_version": "v1.5.0"}


def data_dir_from_env() -> str:
    """PLANNR_DATA_DIR, or `data` (relative to the working directory): where everything is kept."""
    return os.environ.get("PLANNR_DATA_DIR") or "data"


# The first file or glob a stored view reads (views name absolute paths; see `follow_a_move`).
_VIEW_SOURCE = re.compile(r"read_parquet\(\[?'([^']*)'")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(table: Table, store: ParquetStore) -> str:
    if store.files_of(table):
        source = (
            f"read_parquet({_quote(store.glob_of(table))}, union_by_name = true, hive_partitioning = false)"
        )
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} FROM {source}'
    # Not materialised yet: an empty view of the right shape, so queries and joins still work.
    columns = ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns)
    return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} WHERE false'


def _comments(relation: str, description: str, columns: dict[str, str]) -> list[str]:
    return [
        f'COMMENT ON VIEW "{relation}" IS {_quote(description)}',
        *(f'COMMENT ON COLUMN "{relation}"."{name}" IS {_quote(text)}' for name, text in columns.items()),
    ]


class Warehouse:
    def __init__(self, data_dir: Path, db_path: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = Path(db_path) if db_path else self.data_dir / DATABASE_FILE
        self.store = ParquetStore(self.data_dir / "parquet")

    def view_statements(self) -> dict[str, list[str]]:
        """Every relation an analyst queries (the tables, their history, the analyst views), in
        dependency order, each with its comments: the data dictionary lives in the database too."""
        statements = {}
        for table in ALL_TABLES:
            statements[table.name] = [
                view_sql(table, self.store),
                *_comments(table.name, table.description, {c.name: c.description for c in table.columns}),
            ]
        for name in history.HISTORY_OF:
            table = TABLES[name]
            log_table = history.history_table(table)
            glob = self.store.glob_of(log_table) if self.store.files_of(log_table) else None
            statements[log_table.name] = [
                history.view_sql(table, glob),
                *_comments(
                    log_table.name,
                    log_table.description,
                    {**{c.name: c.description for c in table.columns}, **history.VALIDITY_COLUMNS},
                ),
            ]
        for view in ANALYST_VIEWS:
            statements[view.name] = [
                view.create_sql,
                *_comments(view.name, view.description, {c.name: c.description for c in view.columns}),
            ]
        return statements

    def refresh_views(self, only: Collection[str] | None = None) -> str | None:
        """Create or replace every view, or those named (a few statements, cheap); return why
        not, if the database is busy elsewhere."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.store.recover()  # a reader never sees a half-done commit
        try:
            with FileLock(f"{self.db_path}.lock", timeout=60):
                with duckdb.connect(str(self.db_path), config=CONNECT_CONFIG) as connection:
                    for relation, statements in self.view_statements().items():
                        if only is None or relation in only:
                            for statement in statements:
                                connection.execute(statement)
        except (duckdb.Error, Timeout) as error:
            reason = f"views in {self.db_path} not refreshed (database in use: {str(error).splitlines()[0]}); the data is in Parquet and existing views read it"
            log.warning(reason)
            return reason
        return None

    def views_read_elsewhere(self) -> str | None:
        """A path the stored views read outside this data folder (it was moved or copied), or None.

        Views name absolute paths, so an analyst's DuckDB finds the Parquet from any working
        directory; the price is that a moved or copied folder's views still point at the old
        place, until they are rewritten here."""
        if not self.db_path.exists():
            return None
        try:
            with duckdb.connect(str(self.db_path), read_only=True) as connection:
                stored = connection.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
        except duckdb.Error:
            return None  # busy or unreadable: the next refresh deals with it
        here = str(self.store.root) + os.sep
        for (sql,) in stored:
            match = _VIEW_SOURCE.search(sql or "")
            if match and not match.group(1).startswith(here):
                return match.group(1)
        return None

    def follow_a_move(self) -> str | None:
        """Point the views at this folder if they read another; say what happened, or None."""
        elsewhere = self.views_read_elsewhere()
        if elsewhere is None:
            return None
        problem = self.refresh_views()
        return problem or (
            f"views in {self.db_path} read {elsewhere} (the data folder was moved or copied); "
            f"they now read {self.store.root}"
        )

    def counts(self, relations: list[str]) -> dict[str, int]:
        """Rows in each relation, read-only in one connection; none if the database is busy elsewhere."""
        try:
            with duckdb.connect(str(self.db_path), read_only=True) as connection:
                return {
                    name: int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                    for name in relations
                }
        except duckdb.Error:
            return {}
