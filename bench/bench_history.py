"""History over a simulated year of hourly writes: write and query time, with and without folding.

A year of hourly syncs of a 5,000-client firm leaves one `clients_history` file per write that
changed something (8,760 of them). Every write reads the log to decide what changed, and every
`clients_history` query reads it too. This builds such a log in a temporary folder (the first
sync's 5,000 versions, then a few changed clients an hour), as the commit writes it, once
without folding and once folding as commits do (`history.files_to_fold` after each write), and
prints at checkpoints: log files, the history step of one more 5,000-client write
(`history.events_for`), and a query of the `clients_history` view.

    .venv/bin/python bench/bench_history.py [--clients 5000] [--hours 8760] [--changed 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from plannr_pipeline.storage import history
from plannr_pipeline.storage.parquet_store import ParquetStore
from plannr_pipeline.storage.tables import CLIENTS

LOG = history.history_table(CLIENTS)
START = datetime(2025, 1, 1, tzinfo=UTC)


def versions(uuids: list[str], at: datetime, batch: str, rng: random.Random) -> pa.Table:
    rows = [
        {
            "uuid": uuid,
            "type": "client",
            "name": f"Client {uuid[:6]} v{rng.randint(0, 10**6)}",
            "created_at": START,
            "updated_at": at,
            "created_month": "2025-01",
            "seen_at": at,
            "valid_from": at,
            "change": "upsert",
            "row_hash": f"{rng.getrandbits(64):x}",
            "batch": batch,
        }
        for uuid in uuids
    ]
    return pa.Table.from_pylist(rows, schema=LOG.schema)


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure(store: ParquetStore, uuids: list[str], now: datetime, scratch: Path) -> tuple[float, float]:
    """(seconds for one 5,000-client write's history step, seconds for a clients_history query)."""
    staged = scratch / "staged.parquet"
    pq.write_table(versions(uuids, now, "staged", random.Random(1)).select(CLIENTS.schema.names), staged)
    glob = store.glob_of(LOG)
    write = timed(
        lambda: history.events_for(CLIENTS, [staged], glob, [], now, now, "b", scratch / "out.parquet")
    )
    with duckdb.connect() as db:
        db.execute(history.view_sql(CLIENTS, glob))
        query = timed(lambda: db.execute('SELECT count(*), max(valid_to) FROM "clients_history"').fetchall())
    return write, query


def simulate(root: Path, clients: int, hours: int, changed: int, fold: bool, checkpoints: set[int]) -> None:
    store = ParquetStore(root / "parquet")
    rng = random.Random(42)
    uuids = [f"{rng.getrandbits(128):032x}" for _ in range(clients)]
    for hour in range(hours + 1):
        at = START + timedelta(hours=hour)
        batch = f"hour-{hour:05d}"
        target = store.path_of(LOG, batch)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(versions(uuids if hour == 0 else rng.sample(uuids, changed), at, batch, rng), target)
        if fold and (files := history.files_to_fold(store.files_of(LOG))):
            out = store.path_of(LOG, f"folded-{hour:05d}")
            out.parent.mkdir(parents=True, exist_ok=True)
            history.fold(files, out.with_suffix(".tmp"))
            for file in files:
                file.unlink()
                file.parent.rmdir()
            out.with_suffix(".tmp").rename(out)
        if hour in checkpoints:
            write, query = measure(store, uuids, at + timedelta(minutes=30), root)
            events = sum(pq.ParquetFile(f).metadata.num_rows for f in store.files_of(LOG))
            print(
                f"{'folded' if fold else 'one file per write':>19} | hour {hour:>5,} | {len(store.files_of(LOG)):>5,} files "
                f"| {events:>7,} events | write's history step {write:6.2f} s | clients_history query {query:6.2f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--hours", type=int, default=8_760)
    parser.add_argument("--changed", type=int, default=5, help="clients changed per hourly write")
    args = parser.parse_args()
    checkpoints = {h for h in (24, 720, 2_190, 4_380, args.hours) if h <= args.hours}
    for fold in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            simulate(Path(folder), args.clients, args.hours, args.changed, fold, checkpoints)


if __name__ == "__main__":
    main()
