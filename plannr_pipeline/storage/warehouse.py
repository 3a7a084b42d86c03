"""DuckDB for queries: views over the Parquet of record.

Views read the Parquet files at query time through globs, so a materialisation that only adds
or replaces Parquet files leaves the database alone; it is written only when a relation's
definition changes (`catalog`), and then, if an analyst's read-only session holds it, replaced by
a new file. A reader therefore never makes a run fail. Only the views' definitions live in it.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from plannr_pipeline.storage import catalog, history
from plannr_pipeline.storage.catalog import Relation
from plannr_pipeline.storage.lake import ALIAS as LAKE_ALIAS
from plannr_pipeline.storage.lake import LakeSettings, LakeStore
from plannr_pipeline.storage.lake_views import refresh_lake_views
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.store import Store
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


def view_sql(table: Table, store: Store) -> str:
    if store.has(table):
        source = store.source_sql(table)
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} FROM {source}'
    # Not materialised yet: an empty view of the right shape, so queries and joins still work.
    columns = ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns)
    return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {columns} WHERE false'


def _execute_in_one_transaction(connection: duckdb.DuckDBPyConnection, relations: list[Relation]) -> None:
    """Each relation's view and comments, all or none: one commit instead of one per statement
    (~360 of them, most of them comments: 0.20 -> 0.14 s a new file, paid by each first landing)."""
    connection.execute("BEGIN")
    for relation in relations:
        for statement in relation.statements():
            connection.execute(statement)
    connection.execute("COMMIT")


class Warehouse:
    """The store of record and the relations analysts query over it.

    Local (the default): Parquet under `data_dir/parquet`, views in `plannr.duckdb`. With `lake`
    (PLANNR_LAKE_CATALOG and PLANNR_LAKE_DATA): the tables in DuckLake and the views in the lake
    too, so an analyst who attaches it (`plannr-pipeline lake-sql`) finds every relation there;
    `data_dir` then only stages writes."""

    def __init__(
        self, data_dir: Path, db_path: str | Path | None = None, lake: LakeSettings | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = Path(db_path) if db_path else self.data_dir / DATABASE_FILE
        self.lake = lake
        self.store: Store = (
            LakeStore(lake, self.data_dir / "lake-staging")
            if lake
            else ParquetStore(self.data_dir / "parquet")
        )

    @classmethod
    def from_env(cls, data_dir: str | Path) -> Warehouse:
        """The warehouse the environment names: the lake with PLANNR_LAKE_*, else the local store."""
        return cls(Path(data_dir), lake=LakeSettings.from_env())

    @property
    def where(self) -> str:
        """Where an analyst finds the relations, for a summary line (never a credential)."""
        if self.lake:
            return f"the lake at {self.lake.data} (attach it with `plannr-pipeline lake-sql`)"
        return f"DuckDB: {self.db_path}"

    def relations(self) -> list[Relation]:
        """Every relation an analyst queries (the tables, their history, the analyst views), in
        dependency order, each with its comments: the data dictionary lives in the database too."""
        relations = [
            Relation(
                table.name,
                view_sql(table, self.store),
                table.description,
                {c.name: c.description for c in table.columns},
            )
            for table in ALL_TABLES
        ]
        for name in history.HISTORY_OF:
            table = TABLES[name]
            log_table = history.history_table(table)
            log = self.store.source_sql(log_table) if self.store.has(log_table) else None
            relations.append(
                Relation(
                    log_table.name,
                    history.view_sql(table, log),
                    log_table.description,
                    {**{c.name: c.description for c in table.columns}, **history.VALIDITY_COLUMNS},
                )
            )
        relations += [
            Relation(
                view.name, view.create_sql, view.description, {c.name: c.description for c in view.columns}
            )
            for view in ANALYST_VIEWS
        ]
        return relations

    def refresh_views(self) -> str | None:
        """Bring the database's views in line with the stored Parquet; return why not, if another
        program's session stands in the way (the next refresh tries again).

        Nothing is written unless a relation's definition changed (see `catalog`): a run that
        only added files leaves the database alone, however many analysts have it open. When
        something changed and a reader holds the file, a new file replaces it by rename: open
        sessions keep the copy they opened, the next ones see the new one.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(self.store, LakeStore):
            return refresh_lake_views(self.store)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.store.recover()  # a reader never sees a half-done commit
        wanted = self.relations()
        try:
            with FileLock(f"{self.db_path}.lock", timeout=60):
                # Only the lock's holder builds a new file: any found now was left by a killed one.
                for leftover in self.db_path.parent.glob(f".{self.db_path.name}.*.tmp*"):
                    leftover.unlink(missing_ok=True)
                if not self.db_path.exists():
                    self._replace(wanted)
                    return None
                # Read-only, so an analyst's read-only session does not stand in the way.
                with duckdb.connect(str(self.db_path), read_only=True) as reading:
                    stored = catalog.read_stored(reading, {r.name for r in wanted})
                    stale = catalog.changed(reading, wanted, stored)
                    if not stale:
                        return None
                    if not stored.others and not self._wal_path.exists():
                        # Still open, so no program can take the old file's write lock meanwhile.
                        self._replace(wanted)
                        log.info(f"{self.db_path}: replaced to update {', '.join(r.name for r in stale)}")
                        return None
                # The file holds a user's own objects, which a new file would lose: write in place.
                with duckdb.connect(str(self.db_path), config=CONNECT_CONFIG) as connection:
                    _execute_in_one_transaction(connection, stale)
        except (duckdb.Error, Timeout) as error:
            reason = f"views in {self.db_path} not refreshed (database in use: {str(error).splitlines()[0]}); the data is in Parquet and existing views read it"
            log.warning(reason)
            return reason
        return None

    @property
    def _wal_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".wal")

    def _replace(self, wanted: list[Relation]) -> None:
        """Write every relation into a new file and rename it over the database."""
        temp = self.db_path.with_name(f".{self.db_path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            with duckdb.connect(str(temp), config=CONNECT_CONFIG) as connection:
                _execute_in_one_transaction(connection, wanted)
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, self.db_path)
        finally:
            for leftover in (temp, temp.with_name(temp.name + ".wal")):
                leftover.unlink(missing_ok=True)

    def views_read_elsewhere(self) -> str | None:
        """A path the stored views read outside this data folder (it was moved or copied), or None.

        Views name absolute paths, so an analyst's DuckDB finds the Parquet from any working
        directory; the price is that a moved or copied folder's views still point at the old
        place, until they are rewritten here."""
        if self.lake or not self.db_path.exists():
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
        if isinstance(self.store, LakeStore):
            with self.store.connect() as connection:
                connection.execute(f"USE {LAKE_ALIAS}")
                return {
                    name: int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                    for name in relations
                }
        try:
            # One thread: the views' joins over a 100,000-client firm peaked +86 MB with two, +69
            # MB with one (0.39 -> 0.54 s), at the end of a sync, its highest point.
            with duckdb.connect(str(self.db_path), read_only=True, config={"threads": 1}) as connection:
                return {
                    name: int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                    for name in relations
                }
        except duckdb.Error:
            return {}
