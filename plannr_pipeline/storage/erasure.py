"""The store-level operations erasure and retention are made of, and the `erasure_log` relation.

Erasure must *remove* personal data, not hide it: every file that holds a matching row is
written again without it and renamed over the old one, in one journalled commit. Everything
above this module (what is personal in which table, `plannr_pipeline/erasure/`) speaks only
through `Rewrite` and `rewrite_relations`, so another backend implements the same two names:
on a table format, one transaction of `DELETE FROM t WHERE <delete_where>` and
`UPDATE t SET c = NULL WHERE <clear[c]>` per relation, then expiring the snapshots and removing
the files that still hold the old rows (`_rewrite_lake`, for DuckLake).

The conditions are DuckDB SQL over the relation's own columns, with `$name` parameters: the
same text runs on Parquet (here, through `read_parquet`) and on a DuckDB-managed lake.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from plannr_pipeline.storage.lake import LakeStore, transaction
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.sql import quote
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import ERASURE_LOG, Table


@dataclass(frozen=True)
class Rewrite:
    """What to change in one relation: rows to remove, and cells to clear (set NULL)."""

    delete_where: str | None = None  # SQL boolean over the row; NULL counts as false
    clear: Mapping[str, str] = field(default_factory=dict)  # column -> SQL boolean: NULL it where true
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Rewritten:
    removed: int = 0  # rows taken out
    cleared: int = 0  # rows kept with one or more cells set NULL


class _Files:
    """One DuckDB connection applying a `Rewrite` to a relation's files."""

    def __init__(self, table: Table, rewrite: Rewrite) -> None:
        self.table, self.spec = table, rewrite
        self.names = [c.name for c in table.columns if c.name in rewrite.clear]
        self.delete = f"coalesce(({rewrite.delete_where}), false)" if rewrite.delete_where else "false"
        self.touched = " OR ".join(f"coalesce(({rewrite.clear[n]}), false)" for n in self.names) or "false"
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self.db.execute("SET threads = 1")
        self.params = dict(rewrite.params) or None

    def matching(self, files: list[Path]) -> dict[Path, Rewritten]:
        """The files holding a row to remove or clear, with the counts: one scan of them all."""
        if not files:
            return {}
        listed = ", ".join(quote(str(f)) for f in files)
        rows = self.db.execute(
            f"SELECT filename, count(*) FILTER (WHERE {self.delete}), "
            f"count(*) FILTER (WHERE NOT {self.delete} AND ({self.touched})) "
            f"FROM read_parquet([{listed}], filename = true, union_by_name = true, hive_partitioning = false) "
            f"WHERE {self.delete} OR ({self.touched}) GROUP BY filename",
            self.params,
        ).fetchall()
        return {Path(name): Rewritten(removed, cleared) for name, removed, cleared in rows}

    def rewrite(self, source: Path, out: Path) -> None:
        replace = ", ".join(
            f'CASE WHEN coalesce(({self.spec.clear[n]}), false) THEN NULL ELSE "{n}" END AS "{n}"'
            for n in self.names
        )
        select = f"SELECT * REPLACE ({replace})" if replace else "SELECT *"
        self.db.execute(
            f"COPY ({select} FROM read_parquet({quote(str(source))}, hive_partitioning = false) "
            f"WHERE NOT {self.delete}) TO {quote(str(out))} (FORMAT parquet, COMPRESSION zstd)",
            self.params,
        )

    def close(self) -> None:
        self.db.close()


def rewrite_relations(store: Store, rewrites: Mapping[Table, Rewrite]) -> dict[str, Rewritten]:
    """Apply each relation's `Rewrite` to every file of it that holds a matching row, in one
    commit. The caller holds `store.lock()` (erasure and retention decide under it). Returns
    what changed per relation; a file with nothing to change is left byte for byte alone."""
    if isinstance(store, LakeStore):
        return _rewrite_lake(store, rewrites)
    write = StagedWrite(store)
    done: dict[str, Rewritten] = {}
    try:
        for table, rewrite in rewrites.items():
            total = done[table.name] = Rewritten()
            files = _Files(table, rewrite)
            try:
                for path, found in files.matching(store.files_of(table)).items():
                    partition = path.parent.name.split("=", 1)[1] if table.partition_column else None
                    files.rewrite(path, write.file_for(table, partition))
                    total.removed += found.removed
                    total.cleared += found.cleared
            finally:
                files.close()
        if write.targets():
            write.commit_locked()
        else:
            write.abort()
    except BaseException:
        write.abort()
        raise
    return done


def _used(params: Mapping[str, Any], *sql: str) -> dict[str, Any] | None:
    """The parameters a statement names (DuckDB refuses any it does not)."""
    return {k: v for k, v in params.items() if any(f"${k}" in text for text in sql)} or None


def _rewrite_lake(store: LakeStore, rewrites: Mapping[Table, Rewrite]) -> dict[str, Rewritten]:
    """On the lake: DELETE and UPDATE in one transaction, then every file that still holds an old
    row is rewritten and removed, and every older snapshot expired: time travel cannot bring an
    erased value back, and no object in the bucket holds it (the caller holds the lock)."""
    done: dict[str, Rewritten] = {}
    store.ensure(rewrites)
    with store.connect() as db, transaction(db):
        for table, rewrite in rewrites.items():
            source = store.source_sql(table)
            names = [c.name for c in table.columns if c.name in rewrite.clear]
            delete = f"coalesce(({rewrite.delete_where}), false)" if rewrite.delete_where else "false"
            touched = " OR ".join(f"coalesce(({rewrite.clear[n]}), false)" for n in names) or "false"
            count = (
                f"SELECT count(*) FILTER (WHERE {delete}), "
                f"count(*) FILTER (WHERE NOT {delete} AND ({touched})) FROM {source}"
            )
            removed, cleared = db.execute(count, _used(rewrite.params, count)).fetchone()
            if removed:
                statement = f"DELETE FROM {source} WHERE {delete}"
                db.execute(statement, _used(rewrite.params, statement))
            if cleared:
                cells = ", ".join(
                    f'"{n}" = CASE WHEN coalesce(({rewrite.clear[n]}), false) THEN NULL ELSE "{n}" END'
                    for n in names
                )
                statement = f"UPDATE {source} SET {cells} WHERE {touched}"
                db.execute(statement, _used(rewrite.params, statement))
            done[table.name] = Rewritten(removed, cleared)
    # Every time, even when nothing matched now: an erasure run again after one killed between
    # its DELETE and this purge finishes the purge.
    store.purge_old_versions(rewrites)
    return done


def rewrite_staged(write: StagedWrite, table: Table, rewrite: Rewrite) -> Rewritten:
    """The same rewrite on a write's staged (not yet committed) files of `table`, in place: what
    a sync fetched before an erasure never reaches the store after it."""
    total = Rewritten()
    files = _Files(table, rewrite)
    try:
        for temp, found in files.matching(write.staged_files_of(table)).items():
            # Named like a staged file of this process, so a crash here leaves nothing recovery misses.
            out = temp.with_name(f".data.parquet.{os.getpid()}-erasing{uuid.uuid4().hex[:8]}.tmp")
            files.rewrite(temp, out)
            os.replace(out, temp)
            total.removed += found.removed
            total.cleared += found.cleared
    finally:
        files.close()
    return total


# erasure_log: one row per erasure and per lifting of one; read by every commit (it is small).


def read_log(store: Store) -> pa.Table:
    return store.read(ERASURE_LOG)


def erased_uuids(store: Store) -> set[str]:
    """Clients erased and not since lifted: the latest event of each uuid decides."""
    log = read_log(store)
    latest: dict[str, tuple[datetime, str]] = {}
    for uuid_, at, action in zip(
        log.column("uuid").to_pylist(),
        log.column("recorded_at").to_pylist(),
        log.column("action").to_pylist(),
        strict=True,
    ):
        if uuid_ not in latest or at >= latest[uuid_][0]:
            latest[uuid_] = (at, action)
    return {u for u, (_, action) in latest.items() if action == "erase"}


def append_log(store: Store, row: dict[str, Any]) -> None:
    """Add one event to `erasure_log` (its own commit; the caller holds the lock)."""
    row = {
        "recorded_at": datetime.now(UTC),
        **row,
        "rows_removed": json.dumps(row.get("rows_removed") or {}, sort_keys=True),
        "rows_cleared": json.dumps(row.get("rows_cleared") or {}, sort_keys=True),
        "import_error_keys": json.dumps(sorted(row.get("import_error_keys") or [])),
    }
    rows = pa.concat_tables([read_log(store), pa.Table.from_pylist([row], schema=ERASURE_LOG.schema)])
    write = StagedWrite(store)
    write.write(ERASURE_LOG, rows)
    write.commit_locked()
