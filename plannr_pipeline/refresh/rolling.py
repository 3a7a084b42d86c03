"""The rolling refresh: spend the token's budget, continuously, re-reading what was read longest ago.

Plannr has no "changed since" filter and goals exist only per client, so the freshest a firm's
copy can be is one goals request per client, as fast as the budget allows. Each round of the
loop, while time is left:

1. new and changed clients: the `sort=-updated_at` listing down to the newest `updated_at`
   stored (usually one request), landed as an incremental merge (no deletion is inferred from
   a listing cut short on purpose), their goals put first in line;
2. one batch of goals, about `BATCH_SECONDS` of the refresh's share of the budget: the changed
   clients', then those whose goals were never read or read longest ago (`goal_reads`). Each
   client's listing is complete, so its goals missing from it are proven deleted;
3. once every client's goals were read since the last sweep of the unpartitioned collections
   (circles, tasks, staff, imports) and of the whole client listing (which proves client
   deletions), that sweep, run as the sync runs it.

Every write goes through the same validate-then-commit and history as a sync (`Landing`), so a
refresh killed at any point leaves what it committed and nothing half-done, and one that
overlaps a sync is re-based by the commit like any other write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from plannr_pipeline.api import PlannrClient, PlannrError, RequestStats, endpoints
from plannr_pipeline.defs.assets.clients import client_month
from plannr_pipeline.defs.assets.goals import goals_of
from plannr_pipeline.defs.assets.landing import Landing, ValidationFailed, rejection
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.defs.sensors.clients import changed_since
from plannr_pipeline.refresh.pace import Pace
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.commit import Scope
from plannr_pipeline.storage.convert import to_utc
from plannr_pipeline.storage.goal_reads import goals_read_order, record_goal_reads
from plannr_pipeline.storage.tables import CLIENTS, GOALS

# A goals batch is about this many seconds of the refresh's budget: long enough that a commit
# (which rewrites the months it touches) is a small part of it, short enough that a refresh
# stopped at its deadline or killed loses little.
BATCH_SECONDS = 30.0
MIN_BATCH = 10


@dataclass
class RefreshReport:
    changed_clients: int = 0
    goals_clients: int = 0
    batches: int = 0
    sweeps: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    progress: str = ""


@dataclass(frozen=True)
class RefreshTargets:
    """Where the refresh writes: the asset keys of the firm's clients and goals, and how it
    sweeps the unpartitioned collections (`sweep(seconds_left)` -> whether all landed)."""

    clients: dg.AssetKey
    goals: dg.AssetKey
    sweep: Callable[[float], bool]
    last_sweep: Callable[[], datetime | None]


class RollingRefresh:
    def __init__(
        self,
        context: dg.OpExecutionContext,
        plannr: PlannrApi,
        storage: PlannrStorage,
        targets: RefreshTargets,
        share: float,
    ) -> None:
        self.context = context
        self.plannr = plannr
        self.storage = storage
        self.store = storage.warehouse().store
        self.targets = targets
        self.share = share
        self.report = RefreshReport()
        self.pace = Pace()
        self._first: dict[str, str] = {}  # changed clients (uuid -> month) whose goals go first
        # Clients whose goals listing failed validation this run: left as stored until the next
        # run, so one client the API answers wrongly for cannot hold up every other client's.
        self._passed_over: set[str] = set()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, seconds: float) -> RefreshReport:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 1:
            if self.store.rows_of(CLIENTS) == 0 or self._sweep_due():
                self._sweep(left)
                continue
            self._changed_clients()
            self._goals_batch(deadline)
        self.context.log.info(f"rolling refresh stopped at its deadline: {self.report.progress}")
        return self.report

    def _sweep_due(self) -> bool:
        """Every client's goals were read since the last sweep ended (or there was none)."""
        return self.targets.last_sweep() is None or self._behind(goals_read_order(self.store)).num_rows == 0

    def _sweep(self, left: float) -> None:
        self.context.log.info("every client's goals were re-read since the last sweep: sweeping the rest")
        self.report.sweeps += 1
        if not self.targets.sweep(left):
            self.report.failures.append("the sweep of clients, circles, tasks, staff and imports failed")
            raise dg.Failure(description="rolling refresh: the sweep did not land (see its run); stopped")

    # -- 1. new and changed clients ---------------------------------------------------------

    def _changed_clients(self) -> None:
        stored = self.store.read(CLIENTS, columns=["uuid", "updated_at"])
        watermark = pc.max(stored.column("updated_at")).as_py()
        records = self._api(lambda api: changed_since(api, watermark))
        if watermark is not None and records:
            # Those at exactly the watermark are news only if stored older (or not at all).
            at_mark = [r for r in records if _updated(r) == watermark]
            known = stored.filter(pc.is_in(stored.column("uuid"), value_set=_uuids(at_mark)))
            unchanged = {
                uuid
                for uuid, updated_at in zip(
                    known.column("uuid").to_pylist(), known.column("updated_at").to_pylist(), strict=True
                )
                if updated_at == watermark
            }
            records = [r for r in records if r.get("uuid") not in unchanged]
        if not records:
            return
        requested_at = datetime.now(UTC)
        months = {client_month(r) for r in records if rejection(CLIENTS, r) is None}
        landing = Landing(
            self.context,
            self.storage,
            (CLIENTS,),
            months,
            client_months.get_partition_keys(),
            scope=Scope.nothing(),  # a listing stopped at the watermark proves no deletion
            place=client_month,
            asset_key=self.targets.clients,
        )
        rows = normalise.clients(landing.accept(records), landing.drift, client_month)
        landing.stage(rows, requested_at)
        if self._land(landing, "changed clients"):
            changed = {row["uuid"]: row["created_month"] for row in rows.get(CLIENTS.name, [])}
            self._first.update(changed)
            self.report.changed_clients += len(changed)
            self.context.log.info(f"{len(changed)} new or changed client(s) landed; their goals go first")

    # -- 2. goals, oldest read first ---------------------------------------------------------

    def _batch_size(self) -> int:
        budget = self.plannr.client(share=self.share).budget
        return max(MIN_BATCH, int(budget.limit * self.share * BATCH_SECONDS / budget.window_seconds))

    def _next_batch(self, size: int) -> dict[str, str]:
        """The changed clients, then those read longest ago, up to `size`; only clients not read
        since the last sweep, so a pass ends exactly when the last of them is read (then the sweep)."""
        first = [(uuid, month) for uuid, month in self._first.items() if uuid not in self._passed_over]
        batch = dict(first[:size])
        behind = self._behind(goals_read_order(self.store)).slice(0, size)
        for uuid, month in zip(
            behind.column("client_uuid").to_pylist(), behind.column("created_month").to_pylist(), strict=True
        ):
            if len(batch) == size:
                break
            batch.setdefault(uuid, month)
        return batch

    def _behind(self, order: pa.Table) -> pa.Table:
        """The clients (of `goals_read_order`) whose goals were last read before the last sweep,
        less those passed over this run."""
        if self._passed_over:
            order = order.filter(
                pc.invert(
                    pc.is_in(order.column("client_uuid"), value_set=pa.array(sorted(self._passed_over)))
                )
            )
        last = self.targets.last_sweep()
        if last is None:
            return order
        seen = order.column("seen_at")
        return order.filter(pc.fill_null(pc.less(seen, pa.scalar(last, seen.type)), True))

    def _goals_batch(self, deadline: float) -> None:
        batch = self._next_batch(self._batch_size())
        if not batch:
            return
        read: dict[str, datetime] = {}
        short: set[str] = set()  # clients whose listing did not deliver its meta.total
        landing = Landing(
            self.context,
            self.storage,
            (GOALS,),
            set(batch.values()),
            client_months.get_partition_keys(),
            scope=goals_of(read.keys()),  # only clients whose listing arrived whole
            asset_key=self.targets.goals,
        )

        async def work(api: PlannrClient) -> None:
            # At the deadline what arrived is committed; the rest stays first in line.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    async for client_uuid, records, total, requested_at in api.fan_out(
                        list(batch), lambda uuid: endpoints.goals_of(uuid).path, endpoints.GOALS_INCLUDE
                    ):
                        landing.count_listing(f"goals of client {client_uuid}", total, len(records))
                        if total is not None and total != len(records):
                            short.add(client_uuid)
                        accepted = landing.accept(records)
                        rows = normalise.goals(client_uuid, accepted, landing.drift, batch[client_uuid])
                        landing.stage({GOALS.name: rows}, requested_at)
                        read[client_uuid] = requested_at

        started = time.monotonic()
        self._api(work, landing)
        if self._land(landing, "goals"):
            record_goal_reads(self.store, read)
            for uuid in read:
                self._first.pop(uuid, None)
            self.report.goals_clients += len(read)
            self.report.batches += 1
            self.pace.add(len(read), time.monotonic() - started)
            self._say_progress()
        else:
            # Nothing of the batch replaced: the clients the API answered wrongly for wait for the
            # next run, the rest go again (the whole batch, when the fault is not one client's).
            self._passed_over |= short or set(batch)
            self.context.log.warning(
                f"rolling refresh: goals of {len(short or batch)} client(s) left as stored until the next run"
            )

    def _say_progress(self) -> None:
        order = goals_read_order(self.store)
        seen = order.column("seen_at")
        oldest = pc.min(seen).as_py() if seen.null_count == 0 else None
        behind = self._behind(order).num_rows
        self.report.progress = self.pace.describe(oldest, behind, order.num_rows)
        self.context.log.info(f"rolling refresh: {self.report.progress}")
        self.context.log_event(
            dg.AssetObservation(
                asset_key=self.targets.goals,
                metadata={
                    "refresh_progress": self.report.progress,
                    **({"oldest_goals_read_at": dg.MetadataValue.timestamp(oldest)} if oldest else {}),
                    "clients_behind_last_sweep": behind,
                    "clients_per_minute": round(self.pace.per_minute(), 1),
                },
            )
        )

    # -- shared -----------------------------------------------------------------------------

    def _api(self, work: Callable[[PlannrClient], Any], landing: Landing | None = None) -> Any:
        stats = landing.stats if landing is not None else RequestStats()
        try:
            return self.plannr.run(work, on_warning=self.context.log.warning, stats=stats, share=self.share)
        except BaseException as error:
            if landing is not None:
                landing.abort()
            if isinstance(error, PlannrError):
                raise dg.Failure(description=f"rolling refresh: {error}") from error
            raise
        finally:
            self.report.requests += stats.requests

    def _land(self, landing: Landing, what: str) -> bool:
        """Validate and commit; report it as the asset's materialisation. A write that fails
        validation replaces nothing and the refresh goes on (the records stay first in line)."""
        try:
            for event in _materialisations(
                landing.finish(self.plannr.source(), refreshed_by="rolling refresh")
            ):
                self.context.log_event(event)
        except ValidationFailed as failed:
            self.report.failures.append(f"{what}: {failed.description}")
            self.context.log.warning(f"rolling refresh: {failed.description}")
            return False
        return True


def _materialisations(results: Iterator[Any]) -> Iterator[dg.AssetMaterialization]:
    """The landing's MaterializeResult as an event an op can log (its checks belong to the
    asset's own runs)."""
    for result in results:
        if isinstance(result, dg.MaterializeResult):
            yield dg.AssetMaterialization(asset_key=result.asset_key, metadata=result.metadata)


def _updated(record: dict) -> datetime | None:
    try:
        return to_utc(record.get("updated_at"))
    except (TypeError, ValueError):
        return None


def _uuids(records: list[dict]) -> pa.Array:
    return pa.array([r.get("uuid") for r in records if isinstance(r.get("uuid"), str)], pa.string())
