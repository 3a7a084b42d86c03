"""A sync killed mid-run does not wedge the next one (issue 21, case 1), and a sync waiting for a
slot another run holds gives up after its bound, asleep, in one clear line. Real processes."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from plannr_pipeline.dead_runs import PID_TAG
from tests.cli import run_cli, sandbox_env, start_cli

POOL = "plannr_api"


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_slot_holder(home: Path, sync: subprocess.Popen, timeout: float = 90) -> str:
    """The run that holds the pool's slot once `sync` (a child) has taken it: its run id."""
    deadline = time.monotonic() + timeout
    # Opened only once the child has created a run: opening it while the child creates the
    # instance's tables would race it.
    while not [db for db in (home / "history" / "runs").glob("*.db") if db.name != "index.db"]:
        assert time.monotonic() < deadline and sync.poll() is None, "sync never created its run"
        time.sleep(0.2)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            assert time.monotonic() < deadline and sync.poll() is None, "sync never took the slot"
            claimed = instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
            if claimed:
                run = instance.get_run_by_id(claimed[0].run_id)
                if run and run.status == dg.DagsterRunStatus.STARTED:
                    assert run.tags[PID_TAG] == str(sync.pid)
                    return run.run_id
            time.sleep(0.2)


@pytest.fixture
def slow_sync(make_sandbox, tmp_path):
    """A sync of goals (one step: a request per stored client, ~25 s against this sandbox)
    started as a child once it holds the pool's slot; killed at the end if still running."""
    fast = make_sandbox(clients=120)
    assert (
        run_cli("sync", "--select", "clients", cwd=tmp_path, env=sandbox_env(fast, tmp_path)).returncode == 0
    )
    slow = make_sandbox(clients=120, latency_ms=200, token=fast.options.token)  # the same firm, slowly
    env = sandbox_env(slow, tmp_path, PLANNR_MAX_CONCURRENCY="1")
    sync = start_cli(
        "sync",
        "--select",
        "goals",
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield fast, sync, wait_for_slot_holder(tmp_path / "home", sync)
    if sync.poll() is None:
        os.killpg(sync.pid, signal.SIGKILL)
        sync.wait()


def test_a_sync_after_one_killed_with_sigkill_ends_its_run_and_finishes(slow_sync, make_sandbox, tmp_path):
    fast, killed, run_id = slow_sync
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    home = tmp_path / "home"
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what the kill left
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots

    cpu, started = child_cpu_seconds(), time.monotonic()
    # --pool-wait bounds the wait were the dead run not found: the sync would exit 1, not hang.
    second = run_cli(
        "sync",
        "--select",
        "clients,goals",
        "--pool-wait",
        "30",
        cwd=tmp_path,
        env=sandbox_env(fast, tmp_path),
        timeout=180,
    )
    seconds, cpu = time.monotonic() - started, child_cpu_seconds() - cpu
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert f"ended run {run_id}" in second.stdout
    assert seconds < 60, f"the second sync took {seconds:.0f}s"
    assert "waiting for a slot" not in second.stdout  # the slot was freed before it was needed
    print(f"second sync: {seconds:.1f}s wall, {cpu:.1f}s CPU")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        old = instance.get_run_by_id(run_id)
        assert old.status == dg.DagsterRunStatus.FAILURE
        [failure] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"pid {killed.pid}" in failure.message and "is gone" in failure.message
        assert run_id not in instance.event_log_storage.get_concurrency_run_ids()
    assert not list((tmp_path / "data" / "parquet").glob("**/*.tmp"))  # its staged files removed


def test_a_sync_waiting_for_a_held_slot_gives_up_after_its_bound_without_spinning(
    slow_sync, make_sandbox, tmp_path
):
    fast, holder, run_id = slow_sync
    cpu, started = child_cpu_seconds(), time.monotonic()
    waiting = run_cli(
        "sync",
        "--select",
        "circles",
        "--pool-wait",
        "8",
        cwd=tmp_path,
        env=sandbox_env(fast, tmp_path),
        timeout=60,
    )
    seconds, cpu = time.monotonic() - started, child_cpu_seconds() - cpu
    print(f"waiting sync: {seconds:.1f}s wall, {cpu:.1f}s CPU, exit {waiting.returncode}")
    assert holder.poll() is None, "the holding sync ended before the test could see the wait"
    assert waiting.returncode == 1, (waiting.stdout + waiting.stderr)[-3000:]
    [line] = [line for line in waiting.stderr.splitlines() if "gave up after 8s" in line]
    assert f"held by run {run_id}" in line and f"pid {holder.pid}" in line
    assert "STARTED" in line and "--pool-wait" in line
    assert "Traceback" not in waiting.stderr
    # Asleep while it waited: its CPU is the start-up's (~3 s), not 8 s of spinning.
    assert cpu < seconds / 2, f"{cpu:.1f}s CPU in {seconds:.1f}s"
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert (
            instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        )  # a live run is left alone


def test_the_sensor_ends_a_killed_syncs_run_and_frees_its_slot(slow_sync, tmp_path):
    """In a deployment no sync may come: dead_runs_sensor, under the daemon, does the same."""
    from plannr_pipeline.defs.sensors.dead_runs import dead_runs_sensor

    _, killed, run_id = slow_sync
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        quiet = dead_runs_sensor(dg.build_sensor_context(instance=instance))
        assert quiet.skip_message == "no run of a dead process"  # the live sync is left alone
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        said = dead_runs_sensor(dg.build_sensor_context(instance=instance))
        assert f"ended run {run_id}" in said.skip_message
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info(POOL).claimed_slots


def test_a_step_waiting_inside_dagster_is_freed_when_the_holder_dies_meanwhile(
    slow_sync, tmp_path, monkeypatch
):
    """The race the wait before a run cannot close: the slot looked free, another run took it,
    and our step waits in Dagster's own loop. That holder is then killed: the sync must go on."""
    import threading

    import plannr_pipeline.sync as sync_module
    from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage

    fast, holder, run_id = slow_sync
    monkeypatch.setattr(sync_module, "wait_for_slot", lambda *args, **kwargs: None)  # "it was free"
    resources = {
        "plannr": PlannrApi(base_url=fast.url, token=fast.options.token, rate_limit_per_minute=100_000),
        "storage": PlannrStorage(data_dir=str(tmp_path / "data")),
    }
    said: list[str] = []
    outcome: list[sync_module.SyncReport] = []
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        ours = threading.Thread(
            target=lambda: outcome.append(
                sync_module.run_sync(
                    {"clients"}, instance=instance, resources_by_key=resources, echo=said.append
                )
            ),
            daemon=True,
        )
        ours.start()
        deadline = time.monotonic() + 60
        while not instance.event_log_storage.get_concurrency_info(POOL).pending_step_count:
            assert time.monotonic() < deadline, "our step never waited for the slot"
            time.sleep(0.2)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        ours.join(timeout=180)  # generous: on a loaded machine (two test workers) it took over 60 s
        assert not ours.is_alive(), "the sync still waits for the slot of a run whose process died"
        assert outcome[0].ok, outcome[0].failures
        assert any(f"ended run {run_id}" in line for line in said)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
