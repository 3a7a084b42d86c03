"""A sync's wait for a slot in the API pool: asleep, bounded, and said in one line if it gives up.

Dagster 1.13's in-process executor waits for a pool slot in a loop that never sleeps
(`InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns `min(0, ...)`, so
`ActiveExecution.sleep_til_ready` has nothing to sleep): a whole core for as long as the slot is
held, with no end. So a sync launches a run only once the pool has a free slot, looking once a
second, ending dead runs and freeing slots of ended ones as it goes, and gives up at the bound.
Between the steps of its run another run can still take the slot; while a step of ours waits
inside Dagster's loop, `reaping_while_waiting` ends a holder that died meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from plannr_pipeline import dead_runs


def _holders(instance: dg.DagsterInstance, run_ids: set[str]) -> str:
    described = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        status = run.status.value if run else "unknown"
        where = f", pid {run.tags[dead_runs.PID_TAG]}" if run and dead_runs.PID_TAG in run.tags else ""
        described.append(f"run {run_id} ({run.job_name if run else '?'}, {status}{where})")
    return ", ".join(described) or "no run"


def wait_for_slot(
    instance: dg.DagsterInstance,
    pool: str,
    bound: float,
    say: Callable[[str], None],
    poll: float = 1.0,
) -> str | None:
    """Return once `pool` has a free slot (None), or after `bound` seconds the line saying why not."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    started = time.monotonic()
    said = False
    while True:
        info = storage.get_concurrency_info(pool)
        if info.limit is None or len(info.claimed_slots) < info.limit:
            if said:
                say(f"{pool} pool: a slot is free after {time.monotonic() - started:.0f}s")
            return None
        holders = _holders(instance, {slot.run_id for slot in info.claimed_slots})
        if not said:
            said = True
            say(
                f"waiting for a slot in the {pool} pool (limit {info.limit}), held by {holders}; "
                f"giving up after {bound:.0f}s"
            )
        if time.monotonic() - started >= bound:
            return (
                f"gave up after {bound:.0f}s waiting for a slot in the {pool} pool (limit {info.limit}), "
                f"held by {holders}: let it finish, terminate it in the UI, or raise the limit "
                f"(dagster instance concurrency set {pool} N); --pool-wait sets how long a sync waits"
            )
        dead_runs.reap(instance, pool, by="a sync waiting for its slot", say=say)
        time.sleep(poll)


@contextmanager
def reaping_while_waiting(
    instance: dg.DagsterInstance, pool: str, say: Callable[[str], None], every: float = 5.0
) -> Iterator[None]:
    """While the block executes a run: whenever a step waits for a slot in `pool`, end the dead
    runs of this host, so a holder killed during our run does not keep us spinning forever."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            try:
                if storage.get_concurrency_info(pool).pending_step_count:
                    dead_runs.reap(instance, pool, by="a sync whose step waited for its slot", say=say)
            except Exception:  # the watch must never be what fails a sync
                logging.getLogger(__name__).warning("looking for dead runs failed", exc_info=True)

    watcher = threading.Thread(target=watch, name="plannr-dead-runs", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
