"""The commit protocol: a write's staged rows meet what is stored *now*, under the store's lock.

Runs overlap (schedules, sensors, the UI, backfills, `sync`) and any of them may have read the
API long before it commits. So nothing is decided while fetching: a write stages the records it
received, each stamped `seen_at`, and names what it can speak for (its `Scope`). `commit` then,
holding the store's lock from the first read to the last rename:

1. rolls forward any commit a killed process left half-done (never after a newer one), and
   withholds clients erased meanwhile (`erasure_log`) from the staged rows;
2. re-bases the write on what is stored now, record by record, the newest observation winning:
   - a staged record that another commit saw more recently (a later `seen_at`, or a deletion
     proven after we read it) is not written: the stored version or the deletion stands;
   - a stored record the write did not receive stays as it is unless the write proves it gone:
     it must be in scope, have been seen before the write's listing began, not be quarantined
     by this write, and (where the caller checked one by one) be confirmed gone by the API;
   - a record that moved partition (its `created_at` changed, or the start date moved) is
     taken out of the partition it was stored in, in the same commit;
3. refuses a write that would delete more than `max_delete_share` of the stored table;
4. records history (versions and the proven deletions) against the history stored now;
5. replaces `rejected_records` rows of the records this write quarantined or stored cleanly;
6. puts every staged file in place as one set (`StagedWrite.commit_locked`, the store's `land`).

The store is either backend behind one interface (`storage.store.Store`): the local Parquet
folder, or a DuckLake (`storage.lake`), where the last step is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from plannr_pipeline.erasure.withhold import withhold_erased
from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import StagedWrite, spill_folder
from plannr_pipeline.storage.sql import read_parquet
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import REJECTED_RECORDS, Table

EARLIEST = datetime.min.replace(tzinfo=UTC)  # `seen_at` of rows stored before it existed


@dataclass(frozen=True)
class Scope:
    """Which stored records a write speaks for: those it may find deleted.

    `test` is called under the lock with the stored root rows (the columns named) and returns
    a boolean mask; it may read other tables through the store (goals: clients now stored)."""

    everything: bool = False
    columns: tuple[str, ...] = ()
    test: Callable[[pa.Table, Store], pa.Array] | None = None

    @classmethod
    def whole_table(cls) -> Scope:
        return cls(everything=True)

    @classmethod
    def nothing(cls) -> Scope:
        return cls()

    @classmethod
    def where(cls, columns: Sequence[str], test: Callable[[pa.Table, Store], pa.Array]) -> Scope:
        return cls(columns=tuple(columns), test=test)

    def mask(self, stored: pa.Table, store: Store) -> pa.Array | pa.ChunkedArray:
        if self.everything or self.test is None or stored.num_rows == 0:
            return pa.repeat(pa.scalar(self.everything), stored.num_rows)
        return pc.fill_null(self.test(stored, store), False)


@dataclass
class CommitRequest:
    tables: Sequence[Table]  # the collection's own table first, then its child tables
    partitions: Collection[str]  # partitions of a partitioned table whose files this write replaces
    scope: Scope
    listing_started: datetime  # stored records seen after this were not in reach of the listing
    proof_time: datetime  # when the listing that proves deletions ended
    proven_gone: Collection[str] | None = None  # if given, only these may be marked deleted
    quarantined: Collection[str] = ()
    rejected: list[dict[str, Any]] = field(default_factory=list)
    max_delete_share: float | None = 0.5


@dataclass
class Outcome:
    replaced: dict[str, int]  # rows each replaced partition held before
    versions: int = 0
    deletions: int = 0
    stale: int = 0  # staged records an overlapping commit had seen more recently
    kept: int = 0  # stored records this write did not receive and could not prove gone
    moved: int = 0  # records taken out of the partition they were stored in
    folded: int = 0  # history files folded into one after this commit
    erased_still_sent: int = 0  # erased clients this write received, withheld (erasure/withhold.py)
    recovered: list[str] = field(default_factory=list)


class DeletionRefused(ValueError):
    """A write would delete more of a table than a plausible listing would."""


def _staged_root_sql(write: StagedWrite, root: Table) -> str | None:
    """SQL reading the staged root rows' `uuid` and `seen_at` where DuckDB finds them, so the
    write's records never sit in this process as objects or arrays (None: nothing staged)."""
    files = write.staged_files_of(root)
    return f"SELECT uuid, seen_at FROM {read_parquet(files)}" if files else None


def _is_in(column: pa.ChunkedArray, values: Collection[str] | pa.Array) -> pa.Array:
    value_set = values if isinstance(values, pa.Array) else pa.array(sorted(values), pa.string())
    return pc.fill_null(pc.is_in(column, value_set=value_set), False)


# Each record the write staged or the store holds, re-based (the module's step 2), worked out by
# DuckDB. A missing `seen_at` (rows stored before it existed) is EARLIEST. Only the records the
# commit must act on come back (usually few): a record simply written, the great majority, never
# leaves DuckDB, so the commit's memory does not grow with the write.
_REBASE = """
WITH s AS (SELECT uuid, max(coalesce(seen_at, $earliest)) AS seen_at FROM staged GROUP BY uuid),
t AS (
    SELECT uuid, partition, coalesce(seen_at, $earliest) AS seen_at, in_scope,
           NOT $partitioned OR list_contains($partitions::VARCHAR[], partition) AS replaced_here
    FROM stored
),
r AS (
    SELECT coalesce(s.uuid, t.uuid) AS uuid, t.partition, t.replaced_here,
           s.uuid IS NOT NULL AS received, t.uuid IS NOT NULL AS was_stored,
           s.uuid IS NOT NULL AND t.uuid IS NOT NULL AND t.seen_at > s.seen_at
               OR s.uuid IS NOT NULL AND coalesce(g.gone_at, $earliest) > s.seen_at AS stale,
           s.uuid IS NULL AND t.in_scope AND q.uuid IS NULL
               AND t.seen_at <= $listing_started
               AND ($proven_any OR p.uuid IS NOT NULL) AS deleted
    FROM s
    FULL OUTER JOIN t ON s.uuid = t.uuid
    LEFT JOIN gone g ON g.uuid = s.uuid
    LEFT JOIN quarantined q ON q.uuid = t.uuid
    LEFT JOIN proven p ON p.uuid = t.uuid
)
SELECT * FROM (
    SELECT uuid, partition, stale, deleted,
           received AND NOT stale AND $partitioned AND was_stored
               AND coalesce(NOT list_contains($partitions::VARCHAR[], partition), true) AS moved,
           coalesce(replaced_here, false) AND NOT (received AND NOT stale) AND NOT deleted AS carried,
           received AND NOT stale AND uuid IN (SELECT uuid FROM rejected) AS cleared
    FROM r
) WHERE stale OR deleted OR moved OR carried OR cleared
"""


# DuckDB's memory for the joins over every staged record (re-basing, duplicates, deletion
# candidates): past it, they spill to a private folder in the store's own (the re-basing of
# 500,000 records measured alone: +69 MB without a limit, +44 MB with it, 0.4 s slower).
BOUNDED_MEMORY_LIMIT = "32MB"


@contextmanager
def bounded_connection(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection of its own for work over every staged record, in bounded memory:
    one thread, a memory limit spilling to a private folder, the files read not kept cached."""
    with (
        spill_folder(store.root) as spill,
        duckdb.connect(
            config={
                "threads": 1,
                "memory_limit": BOUNDED_MEMORY_LIMIT,
                "temp_directory": spill,
                "enable_external_file_cache": False,
            }
        ) as db,
    ):
        db.execute("SET TimeZone = 'UTC'")
        yield db


def staged_uuids_sql(write: StagedWrite, root: Table) -> str:
    """SQL reading the uuids staged so far, where DuckDB finds them (never held in Python)."""
    files = write.staged_files_of(root)
    return (
        f"SELECT uuid FROM {read_parquet(files)}"
        if files
        else "SELECT CAST(NULL AS VARCHAR) AS uuid WHERE false"
    )


def duplicate_uuids(store: Store, write: StagedWrite, root: Table) -> int:
    """Staged rows beyond the first of their uuid."""
    with bounded_connection(store) as db:
        [(extra,)] = db.execute(
            f"SELECT count(*) - count(DISTINCT uuid) FROM ({staged_uuids_sql(write, root)})"
        ).fetchall()
    return extra


def not_staged(store: Store, write: StagedWrite, root: Table, stored: pa.Table) -> pa.Table:
    """The rows of `stored` (with a `uuid` column) whose record the write has not staged."""
    with bounded_connection(store) as db:
        db.register("stored", stored)
        return db.execute(
            f"SELECT * FROM stored WHERE uuid NOT IN "
            f"(SELECT uuid FROM ({staged_uuids_sql(write, root)}) WHERE uuid IS NOT NULL)"
        ).to_arrow_table()


def _rebase(
    store: Store,
    staged_sql: str | None,
    stored_rows: pa.Table,
    in_scope: pa.Array | pa.ChunkedArray,
    gone_since: dict[str, datetime | None],
    rejected: pa.Array,
    root: Table,
    partitions: Collection[str],
    request: CommitRequest,
) -> pa.Table:
    """The records this write must act on, flagged: stale (a newer observation stands), deleted
    (proven gone), moved (out of its stored partition), carried (kept as stored in a partition
    this write replaces), cleared (stored cleanly, once quarantined: one of `rejected`)."""
    part = root.partition_column
    stored = pa.table(
        {
            "uuid": stored_rows.column("uuid"),
            "partition": stored_rows.column(part) if part else pa.nulls(stored_rows.num_rows, pa.string()),
            "seen_at": stored_rows.column("seen_at"),
            "in_scope": in_scope,
        }
    )
    arrays = {
        "stored": stored,
        "gone": pa.table(
            {
                "uuid": pa.array(list(gone_since), pa.string()),
                "gone_at": pa.array(list(gone_since.values()), pa.timestamp("us", tz="UTC")),
            }
        ),
        "quarantined": pa.table({"uuid": pa.array(list(request.quarantined), pa.string())}),
        "proven": pa.table({"uuid": pa.array(list(request.proven_gone or ()), pa.string())}),
        "rejected": pa.table({"uuid": rejected}),
    }
    if staged_sql is None:
        arrays["staged"] = pa.schema([root.schema.field("uuid"), root.schema.field("seen_at")]).empty_table()
    with bounded_connection(store) as db:
        for name, rows in arrays.items():
            db.register(name, rows)
        if staged_sql is not None:
            db.execute(f"CREATE TEMP VIEW staged AS {staged_sql}")
        return db.execute(
            _REBASE,
            {
                "earliest": EARLIEST,
                "partitioned": part is not None,
                "partitions": sorted(partitions),
                "listing_started": request.listing_started,
                "proven_any": request.proven_gone is None,
            },
        ).to_arrow_table()


def _rejected_uuids(store: Store, root: Table) -> pa.Array:
    """The uuids of this table's records `rejected_records` holds now (few, usually none)."""
    if not store.has(REJECTED_RECORDS):
        return pa.array([], pa.string())
    rejected = store.read(REJECTED_RECORDS, columns=["table_name", "uuid"])
    mine = rejected.filter(pc.equal(rejected.column("table_name"), root.name)).column("uuid")
    return mine.combine_chunks().drop_null()


def _carry(
    store: Store, write: StagedWrite, table: Table, partitions: Collection[str], keys: pa.Array
) -> None:
    """Write stored rows of records `keys` (in `partitions`, for a partitioned table) into the
    staged files that replace them: records this write keeps as they are."""
    if len(keys) == 0:
        return
    stored = store.read(table, partitions=partitions if table.partition_column else None)
    kept = stored.filter(_is_in(stored.column(table.record_key), keys))
    if kept.num_rows:
        write.write(table, kept, partitions)


def commit(store: Store, write: StagedWrite, request: CommitRequest) -> Outcome:
    root = request.tables[0]
    partitions = set(request.partitions)
    with store.lock():
        outcome = Outcome(replaced={}, recovered=store.recover_locked())
        # Erased clients never land, whenever this write fetched them: their staged rows and
        # rejections are rewritten away here, under the lock an erasure also takes.
        outcome.erased_still_sent = withhold_erased(store, write, request)
        part = root.partition_column
        stored_rows = store.read(
            root, columns=["uuid", "seen_at", *([part] if part else []), *request.scope.columns]
        )
        stored_count = stored_rows.num_rows
        for partition in partitions or [None]:
            outcome.replaced[partition or ""] = (
                pc.sum(pc.equal(stored_rows.column(part), partition)).as_py() or 0
                if partition
                else stored_count
            )
        log_table = history.history_table(root) if root.name in history.HISTORY_OF else None
        log = store.source_sql(log_table) if log_table and store.has(log_table) else None
        records = _rebase(
            store,
            _staged_root_sql(write, root),
            stored_rows,
            request.scope.mask(stored_rows, store),
            history.tombstones(log, store.scratch),
            _rejected_uuids(store, root),
            root,
            partitions,
            request,
        )
        del stored_rows  # the history's step below needs the memory more

        def uuids(where: str) -> pa.Array:
            return records.filter(records.column(where)).column("uuid").combine_chunks()

        stale, deleted, carried = uuids("stale"), uuids("deleted"), uuids("carried")
        if request.max_delete_share is not None and len(deleted) > request.max_delete_share * stored_count:
            raise DeletionRefused(
                f"this write would mark {len(deleted):,} of the {stored_count:,} stored {root.name} "
                f"deleted (more than {request.max_delete_share:.0%}); an API answer that short is more likely "
                "wrong than true, so nothing was replaced"
            )
        outcome.stale, outcome.moved = len(stale), pc.sum(records.column("moved")).as_py() or 0
        outcome.kept = len(records.filter(pc.and_not(records.column("carried"), records.column("stale"))))

        if len(stale):
            for table in request.tables:
                write.drop_rows(table, table.record_key, stale.to_pylist())
        for table in request.tables:
            _carry(store, write, table, partitions, carried)
        # Partitions this write does not replace but must change: a record moved out of one, or
        # proven deleted from one the settings no longer place anything in.
        leaving = records.filter(pc.or_(records.column("moved"), records.column("deleted")))
        leaving_uuids = leaving.column("uuid").combine_chunks()
        for partition in sorted(set(leaving.column("partition").to_pylist()) - partitions - {None}):
            for table in request.tables:
                if table.partition_column:
                    rest = store.read(table, partitions=[partition])
                    rest = rest.filter(pc.invert(_is_in(rest.column(table.record_key), leaving_uuids)))
                    if rest.num_rows:
                        write.write(table, rest, [partition])
                    else:
                        write.remove(table, partition)

        if log_table is not None:
            now = datetime.now(UTC)
            out = write.file_for(log_table, write.id)
            found = history.events_for(
                root,
                write.staged_files_of(root),
                log,
                deleted.to_pylist(),
                now,
                request.proof_time,
                write.id,
                out,
                children=[(child, write.staged_files_of(child)) for child in request.tables[1:]],
                connect=store.scratch,
            )
            if not found.versions and not found.deletions:
                write.discard(log_table, write.id)  # a write that changed nothing leaves no file
            outcome.versions, outcome.deletions = found.versions, found.deletions
        else:
            outcome.deletions = len(deleted)
        _replace_rejections(store, write, root, request.rejected, uuids("cleared"))
        write.commit_locked()
        if log_table is not None:
            outcome.folded = store.compact_log(log_table)
    return outcome


def _replace_rejections(
    store: Store,
    write: StagedWrite,
    root: Table,
    rejected: list[dict[str, Any]],
    stored_cleanly: pa.Array,
) -> None:
    """`rejected_records` holds one row per record still quarantined: this write's rejections
    replace earlier ones of the same record, and records it stored cleanly leave the table."""

    def key(table_name: str, uuid: str | None, raw_json: str) -> tuple[str, str]:
        return table_name, uuid if uuid is not None else raw_json

    new_keys = {key(root.name, r["uuid"], r["raw_json"]) for r in rejected}
    if not new_keys and not store.has(REJECTED_RECORDS):
        return
    existing = store.read(REJECTED_RECORDS)
    if not rejected and existing.num_rows == 0:
        return
    leaving = pc.and_(
        pc.equal(existing.column("table_name"), root.name), _is_in(existing.column("uuid"), stored_cleanly)
    )
    keep = [
        key(t, u, j) not in new_keys and not left
        for t, u, j, left in zip(
            existing.column("table_name").to_pylist(),
            existing.column("uuid").to_pylist(),
            existing.column("raw_json").to_pylist(),
            leaving.to_pylist(),
            strict=True,
        )
    ]
    if all(keep) and not rejected:
        return  # nothing changes: leave the file as it is
    rows = pa.concat_tables(
        [
            existing.filter(pa.array(keep, pa.bool_())),
            pa.Table.from_pylist(
                [{**r, "batch": write.id} for r in rejected], schema=REJECTED_RECORDS.schema
            ),
        ]
    )
    write.write(REJECTED_RECORDS, rows)
