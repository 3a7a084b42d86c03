"""The data of record in DuckLake: a Postgres catalog, Parquet on S3-compatible storage.

One machine's folder cannot serve workers on several machines, and object storage has no atomic
rename for a home-made journal. DuckLake gives real transactions instead: a commit's tables and
its history land in one catalog transaction or not at all, so a process killed mid-commit leaves
the previous snapshot readable and nothing to roll forward (the Parquet it had uploaded is an
orphan that `maintain` deletes).

The commit protocol is the same as on the local store (commit.py): a write stages local Parquet
files, then, holding the lake's commit lock (a Postgres advisory lock, so it spans machines),
re-bases them on what the lake holds now and lands them in one transaction. Commits are short
and one at a time per lake, which is how DuckLake's known write-conflict bugs are avoided
(duckdb/ducklake#1094, #1248, #1283, #1404); a conflict that still happens is retried.

Relation names are the local store's: the tables by their names, `<table>_history` a view over
the event log `<table>_history_events`, the analyst views as views in the lake itself.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
from filelock import FileLock
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import LOCK_TIMEOUT_SECONDS, file_path, remove_dead_staged_files
from plannr_pipeline.storage.sql import quote
from plannr_pipeline.storage.tables import Table

if TYPE_CHECKING:
    from plannr_pipeline.storage.parquet_store import StagedWrite

ALIAS = "plannr"  # what the lake is attached as, here and in the SQL `lake-sql` prints
EVENTS_SUFFIX = "_events"  # the history log behind the `<table>_history` view
# Rows per Parquet row group the lake writes (DuckLake's default: 122,880). DuckDB's writer holds
# a row group uncompressed until it is full, so a commit of 50,000 tasks held all of them: at
# 10,000 clients the sync peaked at 408-429 MB with the default, 369-380 MB with this (bench/LAKE.md).
ROW_GROUP_ROWS = 8192
# The extensions come from PyPI wheels (DuckDB cannot download them here); each wheel holds one.
EXTENSIONS = {"ducklake": "duckdb_extension_ducklake", "httpfs": "duckdb_extension_httpfs"}
POSTGRES_EXTENSION = ("postgres_scanner", "duckdb_extension_postgres_scanner")


class LakeSettingsError(ValueError):
    """The lake variables are set wrongly; the message names the variable and the fix."""


@dataclass(frozen=True)
class LakeSettings:
    catalog: str  # a DuckLake catalog: `postgres:dbname=... host=...`, or a local file
    data: str  # where its Parquet goes: `s3://bucket/prefix/`, or a local folder
    # A firm's own DuckLake in the catalog's database: its metadata in this Postgres schema
    # (DuckLake's METADATA_SCHEMA), its data under `<data><slug>/` (`for_firm`). None: the one lake.
    schema: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LakeSettings | None:
        """PLANNR_LAKE_CATALOG with PLANNR_LAKE_DATA, or None (the local store) when neither is set."""
        env = os.environ if env is None else env
        catalog, data = env.get("PLANNR_LAKE_CATALOG", ""), env.get("PLANNR_LAKE_DATA", "")
        if not catalog and not data:
            return None
        if not catalog or not data:
            missing, given = (
                ("PLANNR_LAKE_CATALOG", "PLANNR_LAKE_DATA")
                if data
                else ("PLANNR_LAKE_DATA", "PLANNR_LAKE_CATALOG")
            )
            raise LakeSettingsError(
                f"{given} is set but {missing} is not: set both to keep the data in DuckLake, or neither "
                "for the local store"
            )
        if re.search(r"\bpassword\s*=", catalog, re.IGNORECASE):
            raise LakeSettingsError(
                "PLANNR_LAKE_CATALOG holds a password: set it in PGPASSWORD (or ~/.pgpass) instead, so it "
                "never shows in a log, the UI or the SQL `lake-sql` prints"
            )
        if not data.endswith("/"):
            data += "/"
        return cls(catalog, data)

    def for_firm(self, slug: str) -> LakeSettings:
        """The firm's own lake beside the others': one catalog database and bucket for the
        deployment, each firm's metadata in its own schema and its files under its own prefix, so
        firms' relations, snapshots and commits never mix (a firm's slug is a safe identifier)."""
        return replace(self, data=f"{self.data}{slug}/", schema=slug)

    @property
    def postgres_conninfo(self) -> str | None:
        """The libpq connection string of a Postgres catalog, or None for another kind."""
        return self.catalog.removeprefix("postgres:") if self.catalog.startswith("postgres:") else None

    def attach_sql(self, read_only: bool = False) -> str:
        options = [f"DATA_PATH {quote(self.data)}", "DATA_INLINING_ROW_LIMIT 0"]  # every row in Parquet
        if self.schema:
            options.append(f"METADATA_SCHEMA {quote(self.schema)}")
        if read_only:
            options.append("READ_ONLY")
        return f"ATTACH {quote('ducklake:' + self.catalog)} AS {ALIAS} ({', '.join(options)})"


def extension_file(name: str, package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LakeSettingsError(f"the DuckDB extension {name} is not installed: pip install {package}")
    [folder] = spec.submodule_search_locations
    [path] = Path(folder).glob(f"extensions/*/{name}.duckdb_extension")
    return path


def s3_secret_sql(env: Mapping[str, str], for_cli: bool = False) -> str | None:
    """CREATE SECRET for the standard AWS_* variables; None when the data is not on S3.

    For the command-line client the values stay `getenv(...)` calls, so the SQL `lake-sql` prints
    holds no credential and is safe to paste, share or keep."""

    def value(name: str, default: str | None = None) -> str | None:
        if for_cli:
            return f"getenv('{name}')" if env.get(name) or default is None else quote(default)
        found = env.get(name) or default
        return quote(found) if found is not None else None

    parts = ["TYPE s3"]
    for option, name, default in (
        ("KEY_ID", "AWS_ACCESS_KEY_ID", None),
        ("SECRET", "AWS_SECRET_ACCESS_KEY", None),
        ("SESSION_TOKEN", "AWS_SESSION_TOKEN", None),
        ("REGION", "AWS_REGION", "us-east-1"),
    ):
        if env.get(name) or default is not None:
            parts.append(f"{option} {value(name, default)}")
    if endpoint := env.get("AWS_ENDPOINT_URL"):
        # A store that is not AWS (SeaweedFS, MinIO, moto): its host, path-style URLs.
        url = urlparse(endpoint)
        parts += [f"ENDPOINT {quote(url.netloc)}", "URL_STYLE 'path'", f"USE_SSL {url.scheme == 'https'}"]
    return f"CREATE OR REPLACE SECRET plannr_lake_s3 ({', '.join(parts)})"


def is_event_log(table: Table) -> bool:
    return table.name in {f"{name}_history" for name in history.HISTORY_OF}


def is_appended(table: Table) -> bool:
    """A log whose every write adds a batch of its own (history events, import progress): not
    partitioned in the lake, or each write would make a partition of one small file."""
    return table.partition_column == "batch"


def lake_name(table: Table) -> str:
    return table.name + EVENTS_SUFFIX if is_event_log(table) else table.name


def _is_conflict(error: BaseException) -> bool:
    """DuckLake's write conflict (another writer committed to the same table meanwhile): worth a
    retry. Nothing else is: a lost connection or a full bucket is said as it is."""
    return isinstance(error, duckdb.Error) and "conflict" in str(error).lower()


@contextmanager
def transaction(db: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT; on an error, ROLLBACK and raise that error (not the ROLLBACK's own
    complaint when the failed COMMIT had already ended the transaction)."""
    db.execute("BEGIN TRANSACTION")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # already rolled back by the statement that failed
        raise


class LakeStore:
    """The data of record in DuckLake, behind the same interface as `ParquetStore`."""

    def __init__(self, settings: LakeSettings, staging: Path) -> None:
        self.settings = settings
        self.root = Path(staging)  # a write's files are staged here before they land

    # -- connection ----------------------------------------------------------------------------

    def _state(self) -> _OpenLake:
        """This process's connection to the lake, opened once (loading the extensions and
        attaching the catalog costs ~0.6 s) and shared by every store of the same lake."""
        with _OPEN_LOCK:
            if self.settings not in _OPEN:
                _OPEN[self.settings] = _OpenLake(open_lake(self.settings, os.environ))
            return _OPEN[self.settings]

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A cursor of this process's lake connection (the lake attached as `plannr`)."""
        return self._state().db.cursor()

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """A cursor of a second, read-only lake connection for work bounded in memory (history:
        one thread, insertion order not kept), whose settings must not slow everything else."""
        state = self._state()
        with _OPEN_LOCK:
            if state.scratch is None:
                state.scratch = open_lake(self.settings, os.environ, read_only=True)
        return state.scratch.cursor()

    # -- layout of staged files ----------------------------------------------------------------

    def path_of(self, table: Table, partition: str | None = None) -> Path:
        """Where a staged file waits until it lands (the local store's layout)."""
        return file_path(self.root, table, partition)

    # -- the commit lock -----------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One commit at a time per lake, across processes and machines: a Postgres advisory
        lock in the catalog's database, let go when the holder's connection ends (a killed
        process included). A catalog that is a local file takes a file lock beside the staging."""
        conninfo = self.settings.postgres_conninfo
        if conninfo is None:
            self.root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.root / ".lake-write.lock"), timeout=LOCK_TIMEOUT_SECONDS):
                yield
            return
        import psycopg2  # only a Postgres catalog needs it

        # Advisory locks belong to a database: one key per lake the database holds (one per firm).
        key = "plannr-lake-commit" + (f":{self.settings.schema}" if self.settings.schema else "")
        # A dead holder's session (and so its lock) ends when its TCP connection is found dead.
        connection = psycopg2.connect(
            conninfo,
            connect_timeout=30,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            connection.autocommit = True  # the lock is the session's, outside any transaction
            cursor = connection.cursor()
            deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key])
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has held the lake's commit lock for {LOCK_TIMEOUT_SECONDS} s; "
                        "nothing was written. It is let go when its process ends: find the sync or "
                        "Dagster run still committing and let it finish or stop it."
                    )
                time.sleep(0.2)
            yield  # closing the connection below lets the lock go, whatever happened meanwhile
        finally:
            connection.close()

    def recover(self) -> list[str]:
        return self.recover_locked()

    def recover_locked(self) -> list[str]:
        """Nothing to roll forward (a transaction lands whole or not at all): only the staged
        files of runs that died are removed."""
        return remove_dead_staged_files(self.root)

    # -- tables ------------------------------------------------------------------------------

    def _exists(self, table: Table) -> bool:
        known = self._state().tables
        if lake_name(table) in known:
            return True  # a table is never dropped: once seen, it stays
        found = self.connect().execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
            [ALIAS, lake_name(table)],
        )
        if found.fetchone()[0]:
            known.add(lake_name(table))
            return True
        return False

    def ensure(self, tables: Iterable[Table]) -> None:
        """Create the tables not there yet, and add the columns a newer release models, in one
        transaction (each DDL statement on its own would be a catalog commit of its own)."""
        state = self._state()
        wanted = list({lake_name(t): t for t in tables if lake_name(t) not in state.ensured}.values())
        if not wanted:
            return
        db = self.connect()
        with transaction(db):
            # Kept in the catalog (no snapshot of its own): every process writing the lake uses it.
            db.execute(f"CALL {ALIAS}.set_option('parquet_row_group_size', {ROW_GROUP_ROWS})")
            for table in wanted:
                self._create_or_evolve(db, table)
        state.ensured.update(lake_name(t) for t in wanted)

    def _create_or_evolve(self, db: duckdb.DuckDBPyConnection, table: Table) -> None:
        name = f'{ALIAS}."{lake_name(table)}"'
        if not self._exists(table):
            columns = ", ".join(f'"{c.name}" {c.duckdb_type}' for c in table.columns)
            db.execute(f"CREATE TABLE {name} ({columns})")
            db.execute(f"COMMENT ON TABLE {name} IS {quote(table.description)}")
            for column in table.columns:
                db.execute(f'COMMENT ON COLUMN {name}."{column.name}" IS {quote(column.description)}')
            if table.partition_column and not is_appended(table):
                # One partition's rows in files of their own: replacing a partition drops whole files.
                db.execute(f'ALTER TABLE {name} SET PARTITIONED BY ("{table.partition_column}")')
            return
        stored = {
            row[0]
            for row in db.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
                [ALIAS, lake_name(table)],
            ).fetchall()
        }
        for column in table.columns:
            if column.name not in stored:
                db.execute(f'ALTER TABLE {name} ADD COLUMN "{column.name}" {column.duckdb_type}')

    def _columns(self, table: Table) -> set[str]:
        if lake_name(table) in self._state().ensured:
            return {c.name for c in table.columns}
        rows = self.connect().execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
            [ALIAS, lake_name(table)],
        )
        return {name for (name,) in rows.fetchall()}

    def source_sql(self, table: Table) -> str:
        return f'{ALIAS}."{lake_name(table)}"'

    def has(self, table: Table) -> bool:
        return self._exists(table)

    def _where(self, table: Table, partitions: Iterable[str] | None) -> tuple[str, list[str]]:
        if not table.partition_column or partitions is None:
            return "", []
        values = list(partitions)
        if not values:
            return " WHERE false", []
        marks = ", ".join("?" for _ in values)
        return f' WHERE "{table.partition_column}" IN ({marks})', values

    def read(
        self, table: Table, partitions: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        schema = pa.schema([table.schema.field(c) for c in columns]) if columns else table.schema
        if not self._exists(table):
            return schema.empty_table()
        where, values = self._where(table, partitions)
        # A column this release models that the lake's table does not have yet (it is added by the
        # next write) reads as NULL, as a local file written before it existed does.
        stored = self._columns(table)
        types = {c.name: c.duckdb_type for c in table.columns}
        listed = ", ".join(
            f'"{name}"' if name in stored else f'CAST(NULL AS {types[name]}) AS "{name}"'
            for name in schema.names
        )
        rows = self.connect().execute(f"SELECT {listed} FROM {self.source_sql(table)}{where}", values)
        return rows.fetch_arrow_table().cast(schema)

    def _count(self, table: Table, partitions: Iterable[str] | None = None) -> int:
        if not self._exists(table):
            return 0
        where, values = self._where(table, partitions)
        return int(
            self.connect()
            .execute(f"SELECT count(*) FROM {self.source_sql(table)}{where}", values)
            .fetchone()[0]
        )

    def rows_of(self, table: Table) -> int:
        return self._count(table)

    def rows_in_partition(self, table: Table, partition: str | None) -> int:
        return self._count(table, [partition] if partition is not None else None)

    def partitions_of(self, table: Table) -> list[str]:
        if not self._exists(table) or not table.partition_column:
            return []
        rows = self.connect().execute(
            f'SELECT DISTINCT "{table.partition_column}" FROM {self.source_sql(table)} ORDER BY 1'
        )
        return [value for (value,) in rows.fetchall()]

    # -- landing a write ---------------------------------------------------------------------

    def land(self, write: StagedWrite) -> None:
        """One transaction: each staged partition replaces the stored one (event logs are only
        appended to), and removed partitions are deleted. Then the staged files go."""
        staged, removals = write.staged_files(), write.removals()
        self.ensure(table for table, *_ in staged)
        self._transaction(self.connect(), staged, removals)
        for *_, temp in staged:
            temp.unlink(missing_ok=True)
            _remove_empty_folders(temp.parent, self.root)

    @retry(
        retry=retry_if_exception(_is_conflict),
        wait=wait_random_exponential(multiplier=0.2, max=5),
        stop=stop_after_attempt(6),
        reraise=True,
    )
    def _transaction(self, db: duckdb.DuckDBPyConnection, staged: list, removals: list) -> None:
        # Each staged file replaces its partition: for an event log, the partition is the write's
        # own batch, so a retried transaction (its reply lost, say) never appends events twice.
        with transaction(db):
            for table, partition, _target, temp in staged:
                target = self.source_sql(table)
                where, values = self._where(table, [partition] if partition is not None else None)
                db.execute(f"DELETE FROM {target}{where}", values)
                db.execute(f"INSERT INTO {target} BY NAME SELECT * FROM read_parquet({quote(str(temp))})")
            for table, partition, _target in removals:
                if self._exists(table) and not is_event_log(table):
                    where, values = self._where(table, [partition] if partition is not None else None)
                    db.execute(f"DELETE FROM {self.source_sql(table)}{where}", values)

    def purge_old_versions(self, tables: Iterable[Table]) -> None:
        """Make what was deleted or overwritten in `tables` unrecoverable (the lock held): their
        files with deleted rows are rewritten without them, every snapshot before now expires,
        and the objects only those snapshots named are deleted from the bucket. For erasure and
        retention, which must remove data, not just hide it from the newest snapshot."""
        tables = list(tables)
        with self.connect() as db:
            for table in tables:
                db.execute(
                    f"CALL ducklake_rewrite_data_files('{ALIAS}', {quote(lake_name(table))}, delete_threshold => 0)"
                ).fetchall()
            db.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now())").fetchall()
            db.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)").fetchall()
            if tables:
                _narrow_table_stats(db, [lake_name(table) for table in tables])

    def compact_log(self, log_table: Table) -> int:
        """Nothing per commit: `maintain` merges the lake's small files on a schedule."""
        return 0


@dataclass
class _OpenLake:
    db: duckdb.DuckDBPyConnection
    scratch: duckdb.DuckDBPyConnection | None = None
    tables: set[str] = field(default_factory=set)  # lake tables known to exist
    ensured: set[str] = field(default_factory=set)  # ... and to have every column of this release


_OPEN: dict[LakeSettings, _OpenLake] = {}
_OPEN_LOCK = threading.Lock()


def _remove_empty_folders(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# DuckLake's names of column types that DuckDB spells otherwise (the rest are DuckDB's own).
_DUCKDB_TYPE = {"int8": "TINYINT", "float32": "FLOAT", "float64": "DOUBLE"}


def _narrow_table_stats(db: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Set each column's table-wide minimum and maximum in the catalog to those of the table's
    live files. DuckLake only ever widens them, so a purged value that was a column's extreme
    would stay there; and they must still cover every stored value, or DuckDB answers a filter
    outside them with no rows (clearing them did that: the next insert set them to its own
    file's range). A column whose statistics do not read as its type keeps them as they are."""
    metadata = f"__ducklake_metadata_{ALIAS}"
    columns = db.execute(
        f"""SELECT s.table_id, s.column_id, c.column_type
            FROM {metadata}.ducklake_table_column_stats s
            JOIN {metadata}.ducklake_table t ON t.table_id = s.table_id AND t.end_snapshot IS NULL
            JOIN {metadata}.ducklake_column c
              ON c.table_id = s.table_id AND c.column_id = s.column_id AND c.end_snapshot IS NULL
            WHERE t.table_name IN ({", ".join(quote(name) for name in names)})"""
    ).fetchall()
    for table_id, column_id, column_type in columns:
        as_type = _DUCKDB_TYPE.get(column_type, column_type)
        try:
            low, high = db.execute(
                f"""SELECT CAST(min(CAST(s.min_value AS {as_type})) AS VARCHAR),
                           CAST(max(CAST(s.max_value AS {as_type})) AS VARCHAR)
                    FROM {metadata}.ducklake_file_column_stats s
                    JOIN {metadata}.ducklake_data_file f
                      ON f.data_file_id = s.data_file_id AND f.end_snapshot IS NULL
                    WHERE s.table_id = $table AND s.column_id = $column""",
                {"table": table_id, "column": column_id},
            ).fetchone()
        except duckdb.Error:
            continue  # a nested or unfamiliar type: wide is safe, narrow is not
        db.execute(
            f"UPDATE {metadata}.ducklake_table_column_stats SET min_value = $low, max_value = $high "
            "WHERE table_id = $table AND column_id = $column",
            {"low": low, "high": high, "table": table_id, "column": column_id},
        )


def open_lake(
    settings: LakeSettings, env: Mapping[str, str], read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the extensions loaded from their wheels, the S3 secret made from
    the AWS_* variables, and the lake attached as `plannr`. Errors never repeat the secret."""
    db = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    db.execute("SET TimeZone = 'UTC'")
    # What the commits read of the bucket is read once: DuckDB's cache of remote files would keep it
    # for the process's life (at 10,000 clients ~30 MB held through the goals fan-out).
    db.execute("SET enable_external_file_cache = false")
    wanted = dict(EXTENSIONS)
    if settings.postgres_conninfo is not None:
        wanted[POSTGRES_EXTENSION[0]] = POSTGRES_EXTENSION[1]
    for name, package in wanted.items():
        db.execute(f"LOAD {quote(str(extension_file(name, package)))}")
    if settings.data.startswith("s3://"):
        try:
            db.execute(s3_secret_sql(env))
        except duckdb.Error as error:
            raise LakeSettingsError(
                f"the S3 credentials in AWS_* could not be used ({type(error).__name__}); check "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL"
            ) from None
    try:
        db.execute(settings.attach_sql(read_only))
    except duckdb.Error as error:
        raise LakeSettingsError(
            f"could not open the lake (PLANNR_LAKE_CATALOG, PLANNR_LAKE_DATA): {str(error).splitlines()[0]}"
        ) from None
    return db


def analyst_sql(settings: LakeSettings, env: Mapping[str, str]) -> str:
    """The SQL to paste into the DuckDB command-line client (duckdb-cli 1.5.5) to query the lake
    read-only: the extensions from this install's wheels, the S3 secret read from the client's own
    AWS_* variables (no credential is printed), the ATTACH and USE."""
    wanted = dict(EXTENSIONS)
    if settings.postgres_conninfo is not None:
        wanted[POSTGRES_EXTENSION[0]] = POSTGRES_EXTENSION[1]
    lines = ["-- In the DuckDB command-line client 1.5.5 started with the same AWS_* variables set:"]
    lines += [f"LOAD {quote(str(extension_file(name, package)))};" for name, package in wanted.items()]
    if settings.data.startswith("s3://"):
        lines.append(s3_secret_sql(env, for_cli=True) + ";")
    lines += [settings.attach_sql(read_only=True) + ";", f"USE {ALIAS};"]
    return "\n".join(lines)
