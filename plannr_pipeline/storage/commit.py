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

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plannr_pipeline.erasure.withhold import withhold_erased
from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import StagedWrite
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

    def mask(self, stored: pa.Table, store: Store) -> list[bool]:
        if self.everything:
            return [True] * stored.num_rows
        if self.test is None or stored.num_rows == 0:
            return [False] * stored.num_rows
        return pc.fill_null(self.test(stored, store), False).to_pylist()


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


@dataclass
class _Stored:
    partition: str | None
    seen_at: datetime


def _seen(value: datetime | None) -> datetime:
    return value or EARLIEST


def _read_staged_root(write: StagedWrite, root: Table) -> dict[str, datetime]:
    files = write.staged_files_of(root)
    seen: dict[str, datetime] = {}
    for file in files:
        rows = pq.read_table(file, columns=["uuid", "seen_at"])
        for uuid, seen_at in zip(
            rows.column("uuid").to_pylist(), rows.column("seen_at").to_pylist(), strict=True
        ):
            seen[uuid] = _seen(seen_at)
    return seen


def _is_in(column: pa.ChunkedArray, values: Collection[str]) -> pa.Array:
    return pc.fill_null(pc.is_in(column, value_set=pa.array(sorted(values), pa.string())), False)


def _carry(
    store: Store, write: StagedWrite, table: Table, partitions: Collection[str], keys: set[str]
) -> None:
    """Write stored rows of records `keys` (in `partitions`, for a partitioned table) into the
    staged files that replace them: records this write keeps as they are."""
    if not keys:
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
        staged = _read_staged_root(write, root)
        part = root.partition_column
        stored_rows = store.read(
            root, columns=["uuid", "seen_at", *([part] if part else []), *request.scope.columns]
        )
        parts = stored_rows.column(part).to_pylist() if part else [None] * stored_rows.num_rows
        stored = {
            uuid: _Stored(partition, _seen(seen_at))
            for uuid, partition, seen_at in zip(
                stored_rows.column("uuid").to_pylist(),
                parts,
                stored_rows.column("seen_at").to_pylist(),
                strict=True,
            )
        }
        for partition in partitions or [None]:
            outcome.replaced[partition or ""] = (
                sum(1 for p in parts if p == partition) if partition else stored_rows.num_rows
            )
        in_scope = [
            uuid
            for uuid, inside in zip(
                stored_rows.column("uuid").to_pylist(), request.scope.mask(stored_rows, store), strict=True
            )
            if inside
        ]
        log_table = history.history_table(root) if root.name in history.HISTORY_OF else None
        log = store.source_sql(log_table) if log_table and store.has(log_table) else None
        gone_since = history.tombstones(log, store.scratch)

        # A staged record another commit has seen more recently (or proved gone after we read it).
        stale = {
            uuid
            for uuid, seen_at in staged.items()
            if (uuid in stored and stored[uuid].seen_at > seen_at)
            or (uuid in gone_since and _seen(gone_since[uuid]) > seen_at)
        }
        live = staged.keys() - stale
        moved = {
            uuid for uuid in live if part and uuid in stored and stored[uuid].partition not in partitions
        }
        quarantined = set(request.quarantined)
        proven = set(request.proven_gone) if request.proven_gone is not None else None
        deleted = {
            uuid
            for uuid in in_scope
            if uuid not in staged
            and uuid not in quarantined
            and stored[uuid].seen_at <= request.listing_started
            and (proven is None or uuid in proven)
        }
        if request.max_delete_share is not None and len(deleted) > request.max_delete_share * len(stored):
            raise DeletionRefused(
                f"this write would mark {len(deleted):,} of the {len(stored):,} stored {root.name} deleted "
                f"(more than {request.max_delete_share:.0%}); an API answer that short is more likely wrong "
                "than true, so nothing was replaced"
            )
        replaced_here = {uuid for uuid, s in stored.items() if not part or s.partition in partitions}
        carried = replaced_here - live - deleted
        outcome.stale, outcome.moved = len(stale), len(moved)
        outcome.kept = len(carried - stale)

        if stale:
            for table in request.tables:
                write.drop_rows(table, table.record_key, stale)
        for table in request.tables:
            _carry(store, write, table, partitions, carried)
        # Partitions this write does not replace but must change: a record moved out of one, or
        # proven deleted from one the settings no longer place anything in.
        leaving = moved | deleted
        for partition in sorted({stored[uuid].partition for uuid in leaving} - partitions - {None}):
            for table in request.tables:
                if table.partition_column:
                    rest = store.read(table, partitions=[partition])
                    rest = rest.filter(pc.invert(_is_in(rest.column(table.record_key), leaving)))
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
                deleted,
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
        _replace_rejections(store, write, root, request.rejected, live)
        write.commit_locked()
        if log_table is not None:
            outcome.folded = store.compact_log(log_table)
    return outcome


def _replace_rejections(
    store: Store,
    write: StagedWrite,
    root: Table,
    rejected: list[dict[str, Any]],
    stored_cleanly: Collection[str],
) -> None:
    """`rejected_records` holds one row per record still quarantined: this write's rejections
    replace earlier ones of the same record, and records it stored cleanly leave the table."""

    def key(table_name: str, uuid: str | None, raw_json: str) -> tuple[str, str]:
        return table_name, uuid if uuid is not None else raw_json

    new_keys = {key(root.name, r["uuid"], r["raw_json"]) for r in rejected}
    leaving = {key(root.name, uuid, "") for uuid in stored_cleanly}
    if not new_keys and not store.has(REJECTED_RECORDS):
        return
    existing = store.read(REJECTED_RECORDS)
    if not rejected and existing.num_rows == 0:
        return
    keep = [
        key(t, u, j) not in new_keys and key(t, u, j) not in leaving
        for t, u, j in zip(
            existing.column("table_name").to_pylist(),
            existing.column("uuid").to_pylist(),
            existing.column("raw_json").to_pylist(),
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
