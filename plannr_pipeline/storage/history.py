"""Type-2 history: every version of every record the pipeline has seen, and every deletion.

The API shows only the present, so each validated write compares what it staged with the
latest version on record and appends, in the same commit as the table itself:

- a version (`change = 'upsert'`) for each record that is new or whose stored columns changed;
- a deletion (`change = 'delete'`) for each record in the write's scope (the whole table for a
  full sweep, the replaced partitions for a partitioned write) that is no longer there.

The log is append-only: one Parquet file per write under `<table>_history/batch=<id>/`. The
`<table>_history` view derives `valid_to` (the next event's time) and `deleted_at` from it, so
`valid_from` of a version always equals `valid_to` of the one it closes, and nothing ever has
to be rewritten.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from plannr_pipeline.storage.sql import quote, read_parquet
from plannr_pipeline.storage.tables import TS, Column, Table, filled

# Which tables keep history (DESIGN: clients, goals, circles, tasks).
HISTORY_OF = ("clients", "goals", "circles", "tasks")
EVENT_COLUMNS = (
    filled("valid_from", "When this version was first seen (UTC): the commit that recorded it.", TS),
    filled("change", "`upsert` (a new or changed record) or `delete` (a full sweep no longer found it)."),
    filled("row_hash", "Hash of the record's modelled columns, to tell a change from a rerun."),
    filled(
        "children_hash", "Hash of the record's child rows (custom fields, members, ...); NULL if it has none."
    ),
    filled("batch", "The write that recorded this event."),
)


# What `<table>_history` adds to the table's columns.
VALIDITY_COLUMNS = {
    "valid_from": "From when this version held (UTC): the sync that first saw it.",
    "valid_to": "Until when it held; NULL on the current version. Equals valid_from of the next version.",
    "deleted_at": "Set on the last version of a record a full sweep no longer found: when it was found deleted.",
}


def history_table(table: Table) -> Table:
    """The append-only event log behind `<table>_history`."""
    return Table(
        f"{table.name}_history",
        f"Every version of each `{table.name}` record since the first sync, and its deletion.",
        (*table.columns, *EVENT_COLUMNS),
        key=("uuid", "valid_from"),
        partition_column="batch",
    )


# Not part of what a record says: where the settings file it (the partition), when we last read
# it, and fields the table does not model (a new field the API starts sending is drift, reported
# and kept, not a new version of every record).
NOT_COMPARED = frozenset({"seen_at", "extra_json"})


def compared_columns(table: Table) -> list[Column]:
    """What counts as a change: the record's modelled columns."""
    return [c for c in table.columns if c.name != table.partition_column and c.name not in NOT_COMPARED]


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMPTZ {quote(value.isoformat())}"


def _hash_sql(table: Table, alias: str = "") -> str:
    fields = ", ".join(f'"{c.name}" := {alias}"{c.name}"' for c in compared_columns(table))
    return f"md5(to_json(struct_pack({fields})))"


# A record's child rows as one hash: their `child:hash` strings sorted, joined by commas. The
# same value as `md5(string_agg(child || ':' || h, ',' ORDER BY child, h))`, which logs hold
# (table names and hex digits sort the same either way, ':' before any letter), at half the
# memory: DuckDB 1.5 keeps a sort state for every group of an ordered aggregate (+82 MB against
# +41 MB for the 150,000 child rows of 50,000 tasks).
CHILDREN_HASH = "md5(array_to_string(list_sort(list(child || ':' || h)), ','))"


def _children_hash_sql(
    children: Collection[tuple[Table, Collection[Path]]], mine: str = "true"
) -> tuple[str, str]:
    """(a query of each record_key's child rows' hash, the expression naming it) or ('', NULL).
    `mine`: which parents' rows to read, a condition on `{key}` (the parent's key)."""
    if not children:
        return "", "CAST(NULL AS VARCHAR)"
    parts = []
    for child, files in children:
        columns = [c for c in child.columns if c.name != child.record_key and c.name not in NOT_COMPARED]
        fields = ", ".join(f'"{c.name}" := "{c.name}"' for c in columns)
        parts.append(
            f'SELECT {quote(child.name)} AS child, "{child.record_key}" AS parent, '
            f"md5(to_json(struct_pack({fields}))) AS h "
            f"FROM {read_parquet(files)} "
            f"WHERE {mine.format(key=chr(34) + child.record_key + chr(34))}"
        )
    query = (
        f"SELECT parent, {CHILDREN_HASH} AS children_hash FROM ({' UNION ALL '.join(parts)}) GROUP BY parent"
    )
    # '' for a record with no child rows: NULL is kept for "not known" (events logged before
    # child rows were hashed), which never counts as a change.
    return query, "coalesce(c.children_hash, '')"


@dataclass
class HistoryEvents:
    versions: int
    deletions: int


# Row groups of the event files DuckDB writes: a few MB each, so the writer never holds a
# whole write's versions (50,000 tasks, say) before it flushes.
EVENT_ROW_GROUP_ROWS = 4_096

# Records whose events are worked out in one pass. The pass joins each staged record with its
# latest logged version and its child rows' hash, and DuckDB holds that join, the aggregate and the
# Parquet writer's buffers for the whole pass, so a pass's memory grows with its records. A larger
# write goes in slices of records by a hash of the uuid, each written to a file of its own, then
# copied into the write's one file. A 10,000-client sync (50,000 tasks) peaked at 372 MB in one
# pass, 354 MB in slices of 20,000 and 347 MB in slices of 10,000 (one run each, this machine
# shared); the slices cost each pass a read of the staged files.
RECORDS_PER_PASS = 10_000


def _passes(staged_files: Collection[Path]) -> int:
    """By the staged records only: a small write (an hourly month of goals) against a long log
    stays one pass, not one read of the whole log per slice."""
    staged = sum(pq.ParquetFile(f).metadata.num_rows for f in staged_files)
    return max(1, math.ceil(staged / RECORDS_PER_PASS))


def events_for(
    table: Table,
    staged_files: Collection[Path],
    log: str | None,
    deleted: Collection[str],
    now: datetime,
    proof_time: datetime,
    batch: str,
    out: Path,
    children: Collection[tuple[Table, Collection[Path]]] = (),
    connect: Callable[[], duckdb.DuckDBPyConnection] = duckdb.connect,
) -> HistoryEvents:
    """Write to `out` (Parquet, in the log's schema) the events a write adds: versions for new
    or changed records (their modelled columns or their child rows), and a deletion for each of
    `deleted` (decided by the commit against what is stored now), stamped `seen_at = proof_time`.
    `log`: SQL reading the stored log in a connection from `connect` (None: nothing logged yet)."""
    log_table = history_table(table)
    part = f'"{table.partition_column}"' if table.partition_column else "NULL"
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    with connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        # Memory, not speed, bounds this step: one thread, no ordering to keep (the log is read by
        # uuid and time), the staged rows read through a view, never copied into a table, the
        # events written by DuckDB itself, never handed to Python, and a large write in slices.
        db.execute("SET threads = 1")
        db.execute("SET preserve_insertion_order = false")
        # Each pass reads the staged files again; DuckDB would keep what it read of them in its
        # buffer pool for the next pass (30,000 clients' tasks: +40 MB, against one read per pass).
        db.execute("SET enable_external_file_cache = false")
        db.execute("CREATE OR REPLACE TEMP TABLE deleted (uuid VARCHAR)")
        if deleted:
            db.executemany("INSERT INTO deleted VALUES (?)", [(u,) for u in deleted])
        logged = _log_columns(db, log) if log else set()
        # With no log to join and no child rows to gather, a pass streams (read, hash, write) and
        # its memory does not grow with its records: one pass, not one read of every staged file
        # per slice (the first 300,000 goals: 1.3 s and +41 MB in one pass, 25.5 s and +48 MB in
        # slices of 10,000).
        passes = _passes(staged_files) if log or any(files for _, files in children) else 1
        logged_children = (
            "children_hash" if "children_hash" in logged else "CAST(NULL AS VARCHAR) AS children_hash"
        )
        in_log_order = ", ".join(f'"{name}"' for name in log_table.schema.names)
        # Literals, not parameters: DuckDB 1.5 holds ~45 MB more for a COPY with parameters.
        at_now, at_proof = _timestamp(now), _timestamp(proof_time)
        this_batch = quote(batch)
        parts = (
            [out] if passes == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(passes)]
        )
        try:
            for index, part_out in enumerate(parts):
                # The records of this pass: a slice of the uuids (all of them in one pass).
                mine = "true" if passes == 1 else f"hash({{key}}) % {passes} = {index}"
                children_query, children_hash = _children_hash_sql(
                    [(child, files) for child, files in children if files], mine
                )
                with_children = f"WITH children AS ({children_query}) " if children_query else ""
                join_children = "LEFT JOIN children c ON c.parent = s.uuid" if children_query else ""
                db.execute(
                    f"CREATE OR REPLACE TEMP VIEW staged AS {with_children}SELECT s.*, "
                    f"{_hash_sql(table, 's.')} AS row_hash, {children_hash} AS children_hash FROM "
                    f"(SELECT {columns} FROM {read_parquet(staged_files)} "
                    f"WHERE {mine.format(key='uuid')}) s {join_children}"
                )
                if log:
                    # The latest event of each record, its hash worked out again under today's
                    # definition (so a change of what is compared never reads as a change of every record).
                    log_columns = ", ".join(f'"{c.name}"' for c in compared_columns(table))
                    db.execute(f"""CREATE OR REPLACE TEMP TABLE latest AS
                        SELECT uuid, change, part, {_hash_sql(table)} AS row_hash, children_hash FROM (
                            SELECT uuid, change, {part} AS part, {log_columns}, {logged_children} FROM {log}
                            WHERE {mine.format(key="uuid")}
                            QUALIFY row_number() OVER (PARTITION BY uuid ORDER BY valid_from DESC) = 1)""")
                else:
                    db.execute(
                        "CREATE OR REPLACE TEMP TABLE latest (uuid VARCHAR, change VARCHAR, part VARCHAR, "
                        "row_hash VARCHAR, children_hash VARCHAR)"
                    )
                events = f"""
                    SELECT {in_log_order} FROM (
                        SELECT s.*, {at_now} AS valid_from, 'upsert' AS change, {this_batch} AS batch
                        FROM staged s LEFT JOIN latest l ON l.uuid = s.uuid
                        WHERE l.uuid IS NULL OR l.change = 'delete' OR l.row_hash <> s.row_hash
                           OR l.children_hash <> s.children_hash)"""
                if log and deleted:
                    # A deletion keeps the record's identity; its other columns stay as the last version had them.
                    events += f"""
                    UNION ALL
                    SELECT {in_log_order} FROM (
                        SELECT h.* EXCLUDE (valid_from, change, batch{", seen_at" if "seen_at" in logged else ""}),
                               {at_proof} AS seen_at,{"" if "children_hash" in logged else " CAST(NULL AS VARCHAR) AS children_hash,"}
                               {at_now} AS valid_from, 'delete' AS change, {this_batch} AS batch
                        FROM {log} h JOIN latest l ON l.uuid = h.uuid
                        WHERE l.change = 'upsert' AND h.change = 'upsert' AND h.uuid IN (SELECT uuid FROM deleted)
                        QUALIFY row_number() OVER (PARTITION BY h.uuid ORDER BY h.valid_from DESC) = 1)"""
                db.execute(
                    f"COPY ({events}) TO {quote(str(part_out))} "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {EVENT_ROW_GROUP_ROWS})"
                )
            if passes > 1:  # one file per write, as the log's folding expects
                listed = ", ".join(quote(str(p)) for p in parts)
                db.execute(
                    f"COPY (SELECT * FROM read_parquet([{listed}])) TO {quote(str(out))} "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {EVENT_ROW_GROUP_ROWS})"
                )
            counts = dict(
                db.execute(
                    f"SELECT change, count(*) FROM read_parquet({quote(str(out))}) GROUP BY change"
                ).fetchall()
            )
        finally:
            for part_out in parts:
                if part_out != out:
                    part_out.unlink(missing_ok=True)
    return HistoryEvents(counts.get("upsert", 0), counts.get("delete", 0))


def _log_columns(db: duckdb.DuckDBPyConnection, log: str) -> set[str]:
    """The columns the log's files hold between them (older logs lack later columns)."""
    return {row[0] for row in db.execute(f"DESCRIBE SELECT * FROM {log}").fetchall()}


def tombstones(
    log: str | None, connect: Callable[[], duckdb.DuckDBPyConnection] = duckdb.connect
) -> dict[str, datetime | None]:
    """Records whose latest event is a deletion, with when that deletion was proven."""
    if not log:
        return {}
    with connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        names = _log_columns(db, log)
        # Logs written before `seen_at` existed: the deletion's own time is the best proof time.
        proven = "coalesce(seen_at, valid_from)" if "seen_at" in names else "valid_from"
        rows = db.execute(
            f"SELECT uuid, arg_max({proven}, valid_from), arg_max(change, valid_from) AS last FROM {log} "
            "GROUP BY uuid HAVING last = 'delete'"
        ).fetchall()
    return {uuid: when for uuid, when, _ in rows}


def view_sql(table: Table, log: str | None) -> str:
    """`<table>_history`: every column of the table plus valid_from, valid_to, deleted_at, from
    `log` (SQL reading the stored event log; None: nothing logged yet)."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    name = f"{table.name}_history"
    if log is None:
        nulls = ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns)
        return (
            f'CREATE OR REPLACE VIEW "{name}" AS SELECT {nulls}, CAST(NULL AS TIMESTAMPTZ) AS valid_from, '
            f"CAST(NULL AS TIMESTAMPTZ) AS valid_to, CAST(NULL AS TIMESTAMPTZ) AS deleted_at WHERE false"
        )
    return f"""CREATE OR REPLACE VIEW "{name}" AS
        WITH events AS (
            SELECT *, lead(valid_from) OVER w AS next_at, lead(change) OVER w AS next_change
            FROM {log}
            WINDOW w AS (PARTITION BY uuid ORDER BY valid_from)
        )
        SELECT {columns}, valid_from, next_at AS valid_to,
               CASE WHEN next_change = 'delete' THEN next_at END AS deleted_at
        FROM events WHERE change = 'upsert'"""


# A log of one file per write would reach 8,760 files in a year of hourly writes, and every
# write and every `<table>_history` query reads them all (8.3 s and 2.6 s at that size). So a
# write whose log has passed this many files folds the small ones into one, in a commit of its
# own under the same lock; files already this large stay as they are, so a fold never rewrites
# the bulk of a long history.
MAX_LOG_FILES = 32
LARGE_LOG_FILE_BYTES = 64 * 1024 * 1024


def files_to_fold(files: Collection[Path]) -> list[Path]:
    """The log files a fold would merge: the small ones, once the log holds too many files."""
    if len(files) <= MAX_LOG_FILES:
        return []
    small = [f for f in files if f.stat().st_size < LARGE_LOG_FILE_BYTES]
    return small if len(small) > 1 else []


def fold(files: Collection[Path], out: Path) -> int:
    """Write the events of `files` into one file `out` (their own `batch` kept); return its rows."""
    with duckdb.connect() as db:
        db.execute("SET threads = 1")
        db.execute("SET preserve_insertion_order = false")
        db.execute(
            f"COPY (SELECT * FROM {read_parquet(files)}) "
            f"TO {quote(str(out))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {EVENT_ROW_GROUP_ROWS})"
        )
        return int(db.execute(f"SELECT count(*) FROM read_parquet({quote(str(out))})").fetchone()[0])
