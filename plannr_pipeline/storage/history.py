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

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from plannr_pipeline.storage.tables import TS, Column, Table, filled

# Which tables keep history (DESIGN: clients, goals, circles, tasks).
HISTORY_OF = ("clients", "goals", "circles", "tasks")
EVENT_COLUMNS = (
    filled("valid_from", "When this version was first seen (UTC): the commit that recorded it.", TS),
    filled("change", "`upsert` (a new or changed record) or `delete` (a full sweep no longer found it)."),
    filled("row_hash", "Hash of the record's stored columns, to tell a change from a rerun."),
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


def compared_columns(table: Table) -> list[Column]:
    """What counts as a change: every stored column but the partition (a settings artefact)."""
    return [c for c in table.columns if c.name != table.partition_column]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _hash_sql(table: Table) -> str:
    fields = ", ".join(f'"{c.name}" := "{c.name}"' for c in compared_columns(table))
    return f"md5(to_json(struct_pack({fields})))"


@dataclass
class HistoryEvents:
    versions: int
    deletions: int


# Row groups of the event files DuckDB writes: a few MB each, so the writer never holds a
# whole write's versions (50,000 tasks, say) before it flushes.
EVENT_ROW_GROUP_ROWS = 4_096


def events_for(
    table: Table,
    staged_files: Collection[Path],
    history_glob: str | None,
    scope_partitions: Collection[str] | None,
    now: datetime,
    batch: str,
    out: Path,
) -> HistoryEvents:
    """Write to `out` (Parquet, in the log's schema) the events a write adds: versions for new
    or changed records, deletions for records in scope that are gone. `scope_partitions` None
    means the write covers the whole table; an empty collection means it covers nothing (an
    incremental merge: no deletions)."""
    log_table = history_table(table)
    part = f'"{table.partition_column}"' if table.partition_column else "NULL"
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        # Memory, not speed, bounds this step: one thread, no ordering to keep (the log is read by
        # uuid and time), the staged rows read through a view, never copied into a table, and the
        # events written by DuckDB itself, never handed to Python. For 50,000 tasks: +38 MB at the
        # peak, against +59 MB when the events came back as Arrow batches.
        db.execute("SET threads = 1")
        db.execute("SET preserve_insertion_order = false")
        files = ", ".join(_quote(str(f)) for f in staged_files)
        db.execute(
            f"CREATE TEMP VIEW staged AS SELECT {columns}, {_hash_sql(table)} AS row_hash "
            f"FROM read_parquet([{files}], union_by_name = true, hive_partitioning = false)"
        )
        if history_glob:
            db.execute(f"""CREATE TEMP TABLE latest AS
                SELECT uuid, arg_max(row_hash, valid_from) AS row_hash, arg_max(change, valid_from) AS change,
                       arg_max({part}, valid_from) AS part
                FROM read_parquet({_quote(history_glob)}, union_by_name = true, hive_partitioning = false)
                GROUP BY uuid""")
        else:
            db.execute(
                "CREATE TEMP TABLE latest (uuid VARCHAR, row_hash VARCHAR, change VARCHAR, part VARCHAR)"
            )
        in_log_order = ", ".join(f'"{name}"' for name in log_table.schema.names)
        events = f"""
            SELECT {in_log_order} FROM (
                SELECT s.*, $now::TIMESTAMPTZ AS valid_from, 'upsert' AS change, $batch::VARCHAR AS batch
                FROM staged s LEFT JOIN latest l ON l.uuid = s.uuid
                WHERE l.uuid IS NULL OR l.change = 'delete' OR l.row_hash <> s.row_hash)"""
        if history_glob and (scope_partitions is None or bool(scope_partitions)):
            in_scope = ""
            if scope_partitions is not None:
                in_scope = "AND l.part IN (" + ", ".join(_quote(p) for p in scope_partitions) + ")"
            # A deletion keeps the record's identity; its other columns stay as the last version had them.
            events += f"""
            UNION ALL
            SELECT {in_log_order} FROM (
                SELECT h.* EXCLUDE (valid_from, change, batch), $now::TIMESTAMPTZ AS valid_from,
                       'delete' AS change, $batch::VARCHAR AS batch
                FROM latest l
                JOIN read_parquet({_quote(history_glob)}, union_by_name = true, hive_partitioning = false) h
                  ON h.uuid = l.uuid AND h.row_hash = l.row_hash AND h.change = 'upsert'
                WHERE l.change = 'upsert' {in_scope} AND l.uuid NOT IN (SELECT uuid FROM staged)
                QUALIFY row_number() OVER (PARTITION BY h.uuid ORDER BY h.valid_from DESC) = 1)"""
        db.execute(
            f"COPY ({events}) TO {_quote(str(out))} "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {EVENT_ROW_GROUP_ROWS})",
            {"now": now, "batch": batch},
        )
        counts = dict(
            db.execute(
                f"SELECT change, count(*) FROM read_parquet({_quote(str(out))}) GROUP BY change"
            ).fetchall()
        )
    return HistoryEvents(counts.get("upsert", 0), counts.get("delete", 0))


def view_sql(table: Table, history_glob: str | None) -> str:
    """`<table>_history`: every column of the table plus valid_from, valid_to, deleted_at."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    name = f"{table.name}_history"
    if history_glob is None:
        nulls = ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns)
        return (
            f'CREATE OR REPLACE VIEW "{name}" AS SELECT {nulls}, CAST(NULL AS TIMESTAMPTZ) AS valid_from, '
            f"CAST(NULL AS TIMESTAMPTZ) AS valid_to, CAST(NULL AS TIMESTAMPTZ) AS deleted_at WHERE false"
        )
    return f"""CREATE OR REPLACE VIEW "{name}" AS
        WITH events AS (
            SELECT *, lead(valid_from) OVER w AS next_at, lead(change) OVER w AS next_change
            FROM read_parquet({_quote(history_glob)}, union_by_name = true, hive_partitioning = false)
            WINDOW w AS (PARTITION BY uuid ORDER BY valid_from)
        )
        SELECT {columns}, valid_from, next_at AS valid_to,
               CASE WHEN next_change = 'delete' THEN next_at END AS deleted_at
        FROM events WHERE change = 'upsert'"""
