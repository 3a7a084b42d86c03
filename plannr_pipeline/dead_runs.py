"""Runs whose process died: found by the tags their process left, ended, their pool slots freed.

A `sync` killed with SIGKILL (or by the OOM killer) ends nothing: its run stays STARTED in the
instance and keeps its `plannr_api` slot, and every later run of the pool waits for it forever.
Dagster's run monitoring cannot see it: the default run launcher has no worker health check,
and it frees only the slots of runs that ended. So each sync tags its runs with the process
that executes them (pid, host, and the process's start, which tells a dead pid from a reused
one), and `end_dead_runs`, called by every sync before it starts and by `dead_runs_sensor` in a
deployment, ends the runs of this host whose process is gone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg

PID_TAG = "plannr/pid"
HOST_TAG = "plannr/host"
PROCESS_START_TAG = "plannr/process_start"

# Runs that hold or wait for slots and can still be running. (QUEUED runs have no process yet.)
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """When process `pid` started (boot and clock ticks since it), or None where /proc cannot
    say (not Linux, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 is the start time; the command name (field 2) may hold spaces, so count after it.
    fields = stat.rsplit(")", 1)[1].split()
    return f"{_boot_id()}:{fields[19]}"


def process_tags() -> dict[str, str]:
    """Tags naming this process as the one that executes a run."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if started := process_start(os.getpid()):
        tags[PROCESS_START_TAG] = started
    return tags


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def process_gone(tags: dict[str, str]) -> bool:
    """Whether the process the tags name has died. Only a process of this host can be judged:
    another host's run is left to that host's syncs and sensor."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    if not _alive(pid):
        return True
    recorded, now = tags.get(PROCESS_START_TAG), process_start(pid)
    return bool(recorded and now and recorded != now)  # the pid now belongs to another process


def end_dead_runs(instance: dg.DagsterInstance, by: str) -> list[str]:
    """Mark failed every unfinished run of this host whose process is gone, with an event that
    says why, and free its pool slots; return a line per run ended. `by` names the caller."""
    ended = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()})
    )
    for run in runs:
        if not process_gone(run.tags):
            continue
        reason = (
            f"The process that executed this run (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
            f"gone (killed?) while the run was {run.status.value}; marked failed by {by} and its "
            "pool slots freed."
        )
        instance.report_run_failed(run, reason)
        free_slots(instance, run.run_id)
        ended.append(f"ended run {run.run_id} ({run.job_name}): its process {run.tags[PID_TAG]} is gone")
    return ended


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def free_slots_of_ended_runs(instance: dg.DagsterInstance, pool: str) -> list[str]:
    """Free the slots that runs which have ended still hold in `pool`. Run monitoring does this
    after `free_slots_after_run_end_seconds`, but only where the daemon runs; a sync has none."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    freed = []
    for run_id in {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            free_slots(instance, run_id)
            freed.append(f"freed the {pool} slot held by run {run_id}, which has ended")
    return freed


def reap(instance: dg.DagsterInstance, pool: str, by: str, say: Callable[[str], None]) -> None:
    """End the dead runs, then free what ended runs still hold; say each."""
    for line in [*end_dead_runs(instance, by), *free_slots_of_ended_runs(instance, pool)]:
        say(line)
