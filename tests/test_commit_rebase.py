"""The commit's re-basing on what is stored now, two writes of one store staged side by side:
the newest observation of a record wins whichever write commits last (storage/commit.py, step 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from plannr_pipeline.storage.commit import CommitRequest, Scope, commit
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import TASKS

EARLY = datetime(2026, 1, 1, tzinfo=UTC)
LATER = EARLY + timedelta(hours=1)


def _staged(store: ParquetStore, name: str, seen_at: datetime):
    write = store.staged().__enter__()
    rows = [
        {"uuid": "task-1", "name": name, "seen_at": seen_at},
        {"uuid": "task-2", "name": name, "seen_at": seen_at},
    ]
    write.write(TASKS, pa.Table.from_pylist(rows, schema=TASKS.schema))
    return write


def _commit(store: ParquetStore, write, seen_at: datetime):
    request = CommitRequest(
        tables=[TASKS],
        partitions=(),
        scope=Scope.whole_table(),
        listing_started=seen_at - timedelta(minutes=1),
        proof_time=seen_at,
    )
    return commit(store, write, request)


def test_a_write_that_read_earlier_but_commits_last_keeps_the_newer_version(tmp_path):
    store = ParquetStore(tmp_path)
    earlier = _staged(store, "as read first", EARLY)
    later = _staged(store, "as read later", LATER)
    assert _commit(store, later, LATER).stale == 0
    outcome = _commit(store, earlier, EARLY)
    assert outcome.stale == 2 and outcome.kept == 0 and outcome.deletions == 0
    stored = store.read(TASKS, columns=["uuid", "name", "seen_at"]).sort_by("uuid").to_pylist()
    assert stored == [
        {"uuid": "task-1", "name": "as read later", "seen_at": LATER},
        {"uuid": "task-2", "name": "as read later", "seen_at": LATER},
    ]
