"""Memory and time of the commit protocol alone, at the size of a 100,000-client firm's tasks.

A full sync's peak RSS grows with the firm (bench/SCALE.md: 351 MB at 10,000 clients, 575 MB at
100,000, the peak in the tasks commit). This isolates the commit (`storage/commit.py`): it stages
`--rows` synthetic tasks into a fresh local store and commits them (the first sync), then stages
them again with a share changed and commits that (a later sync: re-basing against what is stored,
history versions). Each commit runs in a fresh process of its own, which reports its RSS before
the commit, its peak during it (VmHWM, reset when the commit starts), and the commit's wall time.

    .venv/bin/python bench/bench_commit.py [--rows 500000] [--changed 0.05]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from plannr_pipeline.storage.commit import CommitRequest, Scope, commit
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import TASKS

START = datetime(2026, 1, 1, tzinfo=UTC)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    """Start the peak (VmHWM) afresh from here: the rows' making is not the commit's cost."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def tasks(rows: int, changed: float, seen_at: datetime) -> pa.Table:
    """`rows` tasks with every column filled; the first `changed` share renamed (new versions)."""
    renamed = int(rows * changed)
    columns = {}
    for field in TASKS.schema:
        if field.name == "uuid":
            columns[field.name] = pa.array([f"{i:08d}-0000-4000-8000-000000000000" for i in range(rows)])
        elif field.name == "name":
            columns[field.name] = pa.array([f"Task {i}{' v2' if i < renamed else ''}" for i in range(rows)])
        elif field.name == "seen_at":
            columns[field.name] = pa.array([seen_at] * rows, field.type)
        elif pa.types.is_string(field.type):
            columns[field.name] = pa.array([f"{field.name} {i % 97}" for i in range(rows)])
        elif pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array(
                [START + timedelta(minutes=i % 9973) for i in range(rows)], field.type
            )
        elif pa.types.is_boolean(field.type):
            columns[field.name] = pa.array([i % 3 == 0 for i in range(rows)])
        elif pa.types.is_integer(field.type):
            columns[field.name] = pa.array([i % 1000 for i in range(rows)], field.type)
        else:
            columns[field.name] = pa.nulls(rows, field.type)
    return pa.table(columns, schema=TASKS.schema)


def one_commit(root: Path, rows: int, changed: float, seen_at: datetime) -> dict:
    store = ParquetStore(root)
    staged = tasks(rows, changed, seen_at)
    write = store.staged().__enter__()
    write.write(TASKS, staged)
    del staged
    _reset_peak()
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    outcome = commit(
        store,
        write,
        CommitRequest(
            tables=[TASKS],
            partitions=(),
            scope=Scope.whole_table(),
            listing_started=seen_at - timedelta(minutes=1),
            proof_time=seen_at,
        ),
    )
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "rss_before_mb": round(before),
        "peak_mb": round(_status_mb("VmHWM")),
        "versions": outcome.versions,
        "deletions": outcome.deletions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # root, changed, seen_at: one commit
    args = parser.parse_args()
    if args.child:
        root, changed, seen_at = args.child
        print(json.dumps(one_commit(Path(root), args.rows, float(changed), datetime.fromisoformat(seen_at))))
        return
    with tempfile.TemporaryDirectory() as folder:
        print(
            f"commit of {args.rows:,} tasks into a local store ({args.changed:.0%} changed the second time)"
        )
        for label, changed, seen_at in (
            ("first sync", 0.0, START),
            ("second sync", args.changed, START + timedelta(hours=1)),
        ):
            child = [sys.executable, __file__, "--rows", str(args.rows), "--child", folder, str(changed)]
            done = subprocess.run([*child, seen_at.isoformat()], capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"  {label}: {figures['seconds']} s, RSS {figures['rss_before_mb']} MB before the commit, "
                f"peak {figures['peak_mb']} MB (+{figures['peak_mb'] - figures['rss_before_mb']} MB); "
                f"{figures['versions']:,} versions, {figures['deletions']:,} deletions"
            )


if __name__ == "__main__":
    main()
