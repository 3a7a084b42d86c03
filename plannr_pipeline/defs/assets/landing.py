"""One materialisation's write, the part every Plannr asset shares: stage, validate, commit, report.

An asset fetches pages and hands their records to a `Landing`; the landing quarantines records
that cannot be stored, stages typed rows for the asset's tables (Parquet beside the targets),
and at `finish` validates what it staged before anything is replaced:

- each listing delivered as many records as its `meta.total` said (per client for goals);
- keys are present and unique across the whole table, stored partitions included;
- every row sits in a partition this write replaces (the staged write enforces it).

Only then does the storage layer's commit protocol (`storage/commit.py`) re-base the write on
what is stored at that moment and commit it, history included; the DuckDB views are refreshed and
the asset's checks reported from the same numbers, so a check never spends a request of its own.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from plannr_pipeline.api import RequestStats
from plannr_pipeline.api.config import share_from_env
from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.progress import Progress
from plannr_pipeline.storage.commit import (
    CommitRequest,
    DeletionRefused,
    Outcome,
    Scope,
    commit,
    duplicate_uuids,
    not_staged,
)
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.history import HISTORY_OF
from plannr_pipeline.storage.normalise import Drift, arrow
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.tables import Table


def complete_check_name(table: Table) -> str:
    return f"{table.name}_complete"


def keys_check_name(table: Table) -> str:
    return f"{table.name}_uuid_unique_and_present"


def check_specs(table: Table, listing: str, key: dg.AssetKey | None = None) -> list[dg.AssetCheckSpec]:
    """The checks every collection asset reports from its own write (no extra request); `key`
    is the asset's (a firm's is prefixed), by default the table's name."""
    key = key or dg.AssetKey(table.name)
    return [
        dg.AssetCheckSpec(
            complete_check_name(table),
            asset=key,
            blocking=True,
            description=f"Every record {listing} reported (meta.total) was received and staged before commit.",
        ),
        dg.AssetCheckSpec(
            keys_check_name(table),
            asset=key,
            blocking=True,
            description=f"Every {table.name} row has a uuid, and no uuid appears twice in the whole table.",
        ),
    ]


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.duckdb_type, description=c.description) for c in table.columns]
    )


def rejection(table: Table, record: Any) -> str | None:
    """Why a record cannot be stored in `table`, or None if it can."""
    if not isinstance(record, dict):
        return f"not an object ({type(record).__name__})"
    uuid = record.get("uuid")
    if not isinstance(uuid, str) or not uuid.strip():
        return "no uuid"
    if table.partition_column or "created_at" in {c.name for c in table.columns}:
        try:
            if to_utc(record.get("created_at")) is None:
                return "no created_at"
        except (ValueError, TypeError):
            return f"malformed created_at {str(record.get('created_at'))[:40]!r}"
    return None


# Rows held before they are written: memory stays flat (a few MB) however large the firm, and
# the Parquet files get a few large row groups instead of one per page or per client. Rows wait
# as Python dicts only until a chunk is full, then as Arrow, which holds them far more compactly
# (a 10,000-client sync peaks ~10 MB lower while it reads tasks).
STAGE_BATCH_ROWS = 5_000
CHUNK_ROWS = 500


class ValidationFailed(dg.Failure):
    """Staged data did not pass validation; nothing was replaced."""


# A sweep that would mark more than this share of a stored table deleted is not committed: an
# empty or cut-short answer is far likelier than half a firm's records vanishing between syncs.
DEFAULT_MAX_DELETE_SHARE = 0.5
ACCEPT_DELETIONS_TAG = "plannr/accept_deletions"


def delete_share_from_env(env: Mapping[str, str] = os.environ) -> float | None:
    """PLANNR_MAX_DELETE_SHARE (0-1; 1, or None returned, for no limit)."""
    share = share_from_env(env, "PLANNR_MAX_DELETE_SHARE", DEFAULT_MAX_DELETE_SHARE, 1, "0.5 = half a table")
    return None if share == 1 else share


def max_delete_share(context: dg.AssetExecutionContext) -> float | None:
    """The share a run's commits accept: none for a run tagged to accept deletions."""
    if context.run.tags.get(ACCEPT_DELETIONS_TAG, "").lower() in ("1", "true", "yes"):
        return None
    return delete_share_from_env()


class Landing:
    def __init__(
        self,
        context: dg.AssetExecutionContext,
        storage: PlannrStorage,
        tables: Sequence[Table],
        partitions: Collection[str] = (),
        configured_partitions: Collection[str] | None = None,
        scope: Scope | None = None,
        place: Callable[[dict[str, Any]], str] | None = None,
        asset_key: dg.AssetKey | None = None,
    ) -> None:
        """`scope`: the stored records this write speaks for, which it may find deleted (by
        default the whole table: a full sweep); an incremental merge passes `Scope.nothing()`.
        `place`: the partition a record belongs in, to quarantine one that no configured
        partition holds (created in a month still to come). `asset_key`: the asset written, for
        a caller that is not that asset's own step (the rolling refresh, an op)."""
        self.place = place
        self.context = context
        self.in_asset_step = asset_key is None
        self.asset_key = asset_key or context.asset_key
        self.listing_started = datetime.now(UTC)
        self.warehouse = storage.warehouse()
        self.store = self.warehouse.store
        for line in self.store.recover():
            context.log.warning(line)
        self.tables = tuple(tables)
        self.root = self.tables[0]
        self.partitions = set(partitions)
        self.configured_partitions = set(configured_partitions) if configured_partitions is not None else None
        self.scope = scope or Scope.whole_table()
        self.proven_gone: set[str] | None = None  # set where deletions were confirmed one by one
        self.seen_alive: set[str] = set()  # received but not staged here: never deleted
        self.stats = RequestStats()  # the fetch's request counts, read by progress as it goes
        self._progress = Progress(self.root.name, "records", context.log.info)
        self.drift = Drift()
        self.outcome: Outcome | None = None
        self.write = StagedWrite(self.store)
        self.rows: Counter[str] = Counter()
        self.rows_by_partition: Counter[str] = Counter()
        # What the listings promised and delivered: totals, and by name only those that fell
        # short (a goals fan-out is a listing per client, 100,000 of them in a large firm).
        self.listings = 0
        self.api_total = 0
        self.received = 0
        self.short_listings: list[tuple[str, int, int]] = []
        self.rejected: list[dict[str, Any]] = []
        self.duplicates = 0  # staged rows beyond the first of their uuid, counted by `problems`
        # uuid -> rows per table of a record that came again with a newer updated_at
        self._newer_copies: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._buffers: dict[str, list[dict[str, Any]]] = {table.name: [] for table in self.tables}
        self._chunks: dict[str, list[pa.Table]] = {table.name: [] for table in self.tables}
        # Every named partition (or unpartitioned table) is replaced, even one that gets no rows.
        for table in self.tables:
            self.write.write(table, arrow(table, []), self.partitions)

    # -- staging ------------------------------------------------------------------------------

    def accept(self, records: Iterable[Any]) -> list[dict[str, Any]]:
        """The records that can be stored; the rest are quarantined in `rejected_records` (and
        their stored versions kept)."""
        good = []
        now = datetime.now(UTC)
        for record in records:
            reason = rejection(self.root, record)
            if reason is None and self.place is not None and self.configured_partitions is not None:
                if (partition := self.place(record)) not in self.configured_partitions:
                    reason = f"created_at {record.get('created_at')!r} falls in {partition}, after the last partition"
            if reason is None:
                good.append(record)
                continue
            uuid = record.get("uuid") if isinstance(record, dict) else None
            if isinstance(uuid, str):
                self.seen_alive.add(uuid)
            self.rejected.append(
                {
                    "table_name": self.root.name,
                    "uuid": uuid if isinstance(uuid, str) else None,
                    "reason": reason,
                    "raw_json": json.dumps(record, sort_keys=True, default=str),
                    "rejected_at": now,
                }
            )
        return good

    def stage(
        self,
        rows_by_table: dict[str, list[dict[str, Any]]],
        seen_at: datetime | None = None,
    ) -> None:
        """Stage normalised rows; rows of a partitioned table outside this write's partitions are
        left alone (the listing's date filter is deliberately a little wide). `seen_at`: when
        the answer they came in was asked for (now if not given)."""
        now = seen_at or datetime.now(UTC)
        for table in self.tables:
            rows = rows_by_table.get(table.name, [])
            if table.partition_column:
                elsewhere = [row for row in rows if row[table.partition_column] not in self.partitions]
                if elsewhere and table is self.root:
                    self.seen_alive.update(row["uuid"] for row in elsewhere)
                rows = [row for row in rows if row[table.partition_column] in self.partitions]
            if "seen_at" in table.schema.names:
                for row in rows:
                    if row.get("seen_at") is None:
                        row["seen_at"] = now
            if table is self.root and table.partition_column:
                self.rows_by_partition.update(row[table.partition_column] for row in rows)
            buffer = self._buffers[table.name]
            buffer.extend(rows)
            if len(buffer) >= CHUNK_ROWS:
                self._to_chunk(table)
                if sum(chunk.num_rows for chunk in self._chunks[table.name]) >= STAGE_BATCH_ROWS:
                    self._flush(table)
            self.rows[table.name] += len(rows)

    def stage_newer_copies(
        self, rows_by_table: dict[str, list[dict[str, Any]]], seen_at: datetime | None = None
    ) -> None:
        """Rows of records the listing showed again with a newer `updated_at`: at `finish` they
        replace every row staged for the earlier copy, in each table (by the record's uuid)."""
        for row in rows_by_table.get(self.root.name, []):
            row["seen_at"] = seen_at or datetime.now(UTC)
        for uuid in {row["uuid"] for row in rows_by_table.get(self.root.name, [])}:
            self._newer_copies[uuid] = {
                table.name: [
                    row for row in rows_by_table.get(table.name, []) if row[table.record_key] == uuid
                ]
                for table in self.tables
            }

    def _replace_older_copies(self) -> None:
        if not self._newer_copies:
            return
        uuids = set(self._newer_copies)
        for table in self.tables:
            dropped = self.write.drop_rows(table, table.record_key, uuids)
            self.rows[table.name] -= dropped.num_rows
            if table is self.root and table.partition_column:
                self.rows_by_partition.subtract(dropped.column(table.partition_column).to_pylist())
        for rows_by_table in self._newer_copies.values():
            self.stage(rows_by_table)
        for table in self.tables:
            self._flush(table)
        self.context.log.info(
            f"{self.root.name}: {len(uuids)} record(s) shown twice by the API; kept the copy with the newest updated_at"
        )

    def _to_chunk(self, table: Table) -> None:
        buffer = self._buffers[table.name]
        if buffer:
            self._chunks[table.name].append(arrow(table, buffer))
            buffer.clear()

    def _flush(self, table: Table) -> None:
        """Write a table's held rows: a few large row groups, not one per page or per client."""
        self._to_chunk(table)
        if chunks := self._chunks[table.name]:
            self.write.write(table, pa.concat_tables(chunks), self.partitions)
            chunks.clear()

    def abort(self) -> None:
        """Remove everything staged; stored data stays as it was."""
        self.write.abort()

    def count_listing(self, label: str, api_total: int | None, received: int) -> None:
        """What one listing promised (`meta.total`) and what arrived, for validation."""
        self.listings += 1
        self.received += received
        if api_total is not None:
            self.api_total += api_total
            if received != api_total:
                self.short_listings.append((label, api_total, received))

    def progress(self, done: int, total: int | None, unit: str = "records") -> None:
        """Report how far the fetch is: a run-log line at a steady cadence, a bar on a terminal."""
        if self._progress.unit != unit:
            self._progress.unit = unit
        self._progress.update(done, total, self.stats.requests, self.stats.budget_per_minute)

    # -- validate, commit, report ------------------------------------------------------------

    def deletion_candidates(self) -> list[str]:
        """Stored records in this write's scope that it did not receive: what it would mark
        deleted as things stand (the commit decides again, under its lock, against what is
        stored then). For a caller that confirms them one by one first."""
        scope_columns = list(self.scope.columns)
        stored = self.store.read(self.root, columns=["uuid", "seen_at", *scope_columns])
        inside = stored.filter(pc.fill_null(self.scope.mask(stored, self.store), False))
        self._flush(self.root)
        missing = not_staged(self.store, self.write, self.root, inside.select(["uuid", "seen_at"]))
        return [
            row["uuid"]
            for row in missing.to_pylist()
            if row["uuid"] not in self.seen_alive
            and (row["seen_at"] is None or row["seen_at"] <= self.listing_started)
        ]

    def deletions_plausible(self, deletions: int) -> bool:
        """Whether deleting this many records stays within the share a commit accepts."""
        share = max_delete_share(self.context)
        return share is None or deletions <= share * self.store.rows_of(self.root)

    def problems(self) -> tuple[list[str], list[str]]:
        """(completeness problems, key problems), each a phrase with the numbers."""
        complete = [
            f"{received:,} records received from {label} but the API reported {api_total:,}"
            for label, api_total, received in self.short_listings
        ]
        keys = []
        self.duplicates = duplicate_uuids(self.store, self.write, self.root)
        if self.duplicates:
            keys.append(f"{self.duplicates:,} uuid(s) staged twice")
        return complete, keys

    def _check_results(self, complete: list[str], keys: list[str]) -> list[dg.AssetCheckResult]:
        return [
            dg.AssetCheckResult(
                asset_key=self.asset_key,
                check_name=complete_check_name(self.root),
                passed=not complete,
                metadata={
                    "api_total": self.api_total,
                    "records_received": self.received,
                    "listings": self.listings,
                    "rows_staged": self.rows[self.root.name],
                    "rejected": len(self.rejected),
                    "problems": dg.MetadataValue.json(complete[:20]),
                    "requests": 0,
                },
            ),
            dg.AssetCheckResult(
                asset_key=self.asset_key,
                check_name=keys_check_name(self.root),
                passed=not keys,
                metadata={"duplicate_uuids": self.duplicates, "problems": dg.MetadataValue.json(keys)},
            ),
        ]

    def finish(self, source: str, **extra: Any) -> Iterator[Any]:
        """Validate; on success commit and yield the materialisation with its check results."""
        for table in self.tables:
            self._flush(table)
        self._replace_older_copies()
        complete, keys = self.problems()
        checks = self._check_results(complete, keys)
        if complete or keys:
            self.abort()
            yield from checks
            first = (complete + keys)[0]
            more = f" (and {len(complete + keys) - 1} more problem(s))" if len(complete + keys) > 1 else ""
            raise ValidationFailed(description=f"{self.root.name}: {first}{more}; nothing replaced.")
        try:
            self.outcome = self._commit()
        except DeletionRefused as refused:
            self.abort()
            checks[0] = dg.AssetCheckResult(
                asset_key=self.asset_key,
                check_name=complete_check_name(self.root),
                passed=False,
                metadata={**checks[0].metadata, "problems": dg.MetadataValue.json([str(refused)])},
            )
            yield from checks
            raise ValidationFailed(
                description=f"{self.root.name}: {refused}. If the records really are gone, accept it once: "
                f"PLANNR_MAX_DELETE_SHARE=1, or launch the run with the tag {ACCEPT_DELETIONS_TAG}=true."
            ) from None
        for line in self.outcome.recovered:
            self.context.log.warning(line)
        self._report_outcome(self.outcome)
        problem = self.warehouse.refresh_views()  # writes the database only if a view changed
        for line in self.drift.summary():
            self.context.log.warning(f"schema drift: {line} (kept in extra_json)")
        if self.rejected:
            self.context.log.warning(
                f"{self.root.name}: {len(self.rejected)} record(s) could not be stored and are in rejected_records"
            )
        if problem:
            self.context.log.warning(problem)
        if self.in_asset_step:
            self._partition_metadata(self.outcome.replaced)
        yield dg.MaterializeResult(
            asset_key=self.asset_key,
            metadata=self._metadata(self.stats, source, self.outcome, problem, extra),
            check_results=checks,
        )

    def _commit(self) -> Outcome:
        return commit(
            self.store,
            self.write,
            CommitRequest(
                tables=self.tables,
                partitions=self.partitions,
                scope=self.scope,
                listing_started=self.listing_started,
                proof_time=datetime.now(UTC),
                proven_gone=self.proven_gone,
                quarantined=self.seen_alive,
                rejected=self.rejected,
                max_delete_share=max_delete_share(self.context),
            ),
        )

    def _report_outcome(self, outcome: Outcome) -> None:
        name = self.root.name
        if name in HISTORY_OF:
            self.context.log.info(
                f"{name}: history records {outcome.versions} new version(s) and {outcome.deletions} deletion(s)"
            )
        if outcome.stale:
            self.context.log.warning(
                f"{name}: {outcome.stale} record(s) were read more recently by a run that committed first; "
                "their newer copies are kept"
            )
        if outcome.moved:
            self.context.log.info(
                f"{name}: {outcome.moved} record(s) moved to the partition they now belong in"
            )
        if outcome.erased_still_sent:
            self.context.log.warning(
                f"{name}: the API still sends {outcome.erased_still_sent} client(s) erased here; withheld "
                "(erase them in Plannr too: select uuid from erasure_log)"
            )
        if outcome.kept:
            self.context.log.info(
                f"{name}: {outcome.kept} stored record(s) not in this answer and not proven gone are kept as stored"
            )

    def _partition_metadata(self, replaced: dict[str, int]) -> None:
        """Each partition's own row count: a range run would otherwise stamp the whole run's."""
        if not self.root.partition_column:
            return
        for partition in self.partitions:
            self.context.add_asset_metadata(
                {
                    "dagster/row_count": self.rows_by_partition[partition],
                    "rows_replaced": replaced.get(partition, 0),
                },
                asset_key=self.asset_key,
                partition_key=partition,
            )

    def _oldest_seen(self) -> dict[str, Any]:
        """When the stalest stored record was last received: how old the oldest number is."""
        if "seen_at" not in self.root.schema.names:
            return {}
        seen = self.store.read(self.root, columns=["seen_at"]).column("seen_at")
        oldest = pc.min(seen).as_py() if len(seen) else None
        if oldest is None:
            return {}
        return {"oldest_seen_at": dg.MetadataValue.timestamp(oldest)}

    def _metadata(
        self,
        stats: RequestStats,
        source: str,
        outcome: Outcome,
        views_problem: str | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "dagster/row_count": self.rows[self.root.name],
            "dagster/column_schema": column_schema(self.root),
            "tables_written": dg.MetadataValue.json({t.name: self.rows[t.name] for t in self.tables}),
            **{f"schema {t.name}": column_schema(t) for t in self.tables[1:]},
            "rows_replaced": sum(outcome.replaced.values()),
            "rejected_records": len(self.rejected),
            **(
                {"history_versions": outcome.versions, "history_deletions": outcome.deletions}
                if self.root.name in HISTORY_OF
                else {}
            ),
            "records_kept_unproven": outcome.kept,
            "records_read_later_elsewhere": outcome.stale,
            "records_moved": outcome.moved,
            "erased_clients_still_sent": outcome.erased_still_sent,
            "source": source,
            "requests": stats.requests,
            "request_stats": dg.MetadataValue.json(stats.as_metadata()),
            "schema_drift": dg.MetadataValue.json(self.drift.summary()),
            "views_refreshed": views_problem is None,
            **self._oldest_seen(),
            **extra,
        }
        if self.partitions:
            metadata["partitions_in_run"] = len(self.partitions)
        if views_problem:
            metadata["views_problem"] = views_problem
        if stats.warnings:
            metadata["api_warnings"] = dg.MetadataValue.json(stats.warnings[:50])
        return metadata
