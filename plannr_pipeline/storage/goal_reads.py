"""`goal_reads`: when each client's goals were last listed in full, and whose to read next.

Goals have no firm-wide listing, so keeping them fresh means re-reading them client by client;
the rolling refresh reads first the clients whose goals were never read or read longest ago.
A goal row's `seen_at` cannot say that for a client without goals, so every complete goals
listing (a sync's or the refresh's) is recorded here, one row per client.

The table is bookkeeping beside the goals commit, not part of it: a process killed between the
two leaves the goals committed and their reads unrecorded, which only makes those clients come
round again a little early. Each record is a merge under the store's lock, the later read of a
client winning, so overlapping writers never set a client's read back in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import CLIENTS, GOAL_READS

NEVER = datetime.min.replace(tzinfo=UTC)  # the read of a client whose goals were never read


def record_goal_reads(store: Store, reads: Mapping[str, datetime]) -> None:
    """Merge `reads` (client uuid -> when its goals listing was asked for) into `goal_reads`;
    rows of clients no longer stored leave it."""
    if not reads:
        return
    seen_at_type = GOAL_READS.schema.field("seen_at").type
    read = pa.table(
        {
            "client_uuid": pa.array(list(reads.keys()), pa.string()),
            "seen_at": pa.array(list(reads.values()), seen_at_type),
        },
        schema=GOAL_READS.schema,
    )
    with store.lock():
        store.recover_locked()
        # In Arrow, not a Python object per client: the later read of each client wins (a stored
        # read without a time loses to any), and clients no longer stored leave.
        stored = store.read(GOAL_READS).select(GOAL_READS.schema.names).cast(GOAL_READS.schema)
        latest = (
            pa.concat_tables([read, stored])
            .group_by("client_uuid", use_threads=False)
            .aggregate([("seen_at", "max")])
        )
        current = store.read(CLIENTS, columns=["uuid"]).column("uuid").combine_chunks()
        rows = pa.table(
            {"client_uuid": latest["client_uuid"], "seen_at": latest["seen_at_max"]}, schema=GOAL_READS.schema
        ).filter(pc.is_in(latest["client_uuid"], value_set=current))
        write = StagedWrite(store)
        try:
            write.write(GOAL_READS, rows)
            write.commit_locked()
        except BaseException:
            write.abort()
            raise


def goals_read_order(store: Store) -> pa.Table:
    """Every stored client (`client_uuid`, `created_month`, `seen_at` of its last goals read,
    null if never), the never-read first, then the longest ago first."""
    clients = store.read(CLIENTS, columns=["uuid", "created_month"]).rename_columns(
        ["client_uuid", "created_month"]
    )
    reads = store.read(GOAL_READS)
    joined = clients.join(reads, "client_uuid", join_type="left outer")
    never = pa.scalar(NEVER, joined.schema.field("seen_at").type)
    ordered = joined.append_column("_order", pc.fill_null(joined.column("seen_at"), never))
    return ordered.sort_by([("_order", "ascending"), ("client_uuid", "ascending")]).drop_columns(["_order"])


def oldest_goal_read(store: Store) -> datetime | None:
    """The oldest last read among stored clients (None when a client was never read, or none stored)."""
    order = goals_read_order(store)
    if order.num_rows == 0:
        return None
    return pc.min(order.column("seen_at")).as_py() if order.column("seen_at").null_count == 0 else None
