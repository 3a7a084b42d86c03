"""The deployment past one machine, on this one: `scripts/cluster.sh up` (Postgres storage, Redis,
an S3 server, two Celery workers, the daemon and the UI; deploy/), two firms on the lake, a full
sync of both launched by the daemon's schedules, and a worker's step process killed mid-step.

Each firm's sandbox allows 120 requests a minute for its token and the firm's budget 100, so the
two workers (each with its own budget folder, as on two hosts: only PLANNR_BUDGET_URL is shared)
must keep under 100 together. Firms of 150 clients keep the module to a few minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest

from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer
from plannr_pipeline.storage.lake import LakeSettings, open_lake
from tests.cli import clean_env
from tests.firms import REPO, firm_project, project_env

SERVER_LIMIT, BUDGET = 120, 100  # per minute, per token
CLIENTS = 150
FIRMS = {"acme": 7, "beta": 8}  # slug -> sandbox seed
TABLES = ("clients", "goals", "staff", "circles", "tasks", "imports")


def _tick_cron(seconds_from_now: float) -> str:
    """A cron that fires once, at the first whole minute at least `seconds_from_now` away (UK time)."""
    at = datetime.now(ZoneInfo("Europe/London")) + timedelta(seconds=seconds_from_now + 60)
    return f"{at.minute} {at.hour} {at.day} {at.month} *"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("cluster")
    sandboxes = {
        slug: SandboxServer(
            SandboxOptions(
                seed=seed,
                size=FirmSize(clients=CLIENTS),
                token=f"cluster-{slug}-token",
                rate_limit_per_minute=SERVER_LIMIT,
            )
        ).start()
        for slug, seed in FIRMS.items()
    }
    tick = _tick_cron(50)  # after the cluster is up; both firms' nightly schedules fire then
    root = firm_project(
        tmp,
        {
            slug: {
                "token_env": f"{slug.upper()}_TOKEN",
                "base_url": sandbox.url,
                "rate_limit_per_minute": BUDGET,
                "concurrency_share": 2,
                "nightly_cron": tick,
                "hourly_cron": "0 0 1 1 *",  # not during the test
            }
            for slug, sandbox in sandboxes.items()
        },
    )
    env = project_env(
        root,
        clean_env(
            {f"{slug.upper()}_TOKEN": sandbox.options.token for slug, sandbox in sandboxes.items()}
            | {"PLANNR_CLUSTER_DIR": str(tmp / "cluster")}
        ),
    )
    state = {"processes": {}}
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        state = json.loads((tmp / "cluster" / "state.json").read_text())
        cluster_env = {
            line.split("=", 1)[0].removeprefix("export "): line.split("=", 1)[1].strip("'")
            for line in (tmp / "cluster" / "env").read_text().splitlines()
        }
        yield {
            "up": up.stdout,
            "state": state,
            "env": {**env, **cluster_env},
            "cluster_env": cluster_env,
            "sandboxes": sandboxes,
            "root": root,
        }
    finally:
        down = subprocess.run(
            ["bash", str(REPO / "scripts" / "cluster.sh"), "down"], env=env, capture_output=True, text=True
        )
        for sandbox in sandboxes.values():
            sandbox.stop()
        assert down.returncode == 0, down.stderr
        for pid in state["processes"].values():  # `down` stopped every process group `up` started
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)


def _instance(cluster: dict):
    with mock.patch.dict(os.environ, cluster["cluster_env"]):
        return dg.DagsterInstance.from_config(cluster["cluster_env"]["DAGSTER_HOME"])


def _wait_for_runs(instance, done, seconds: float) -> list:
    """Poll the instance until `done(runs)` holds; the runs at that moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if done(runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"timed out: {[(r.job_name, r.status.value) for r in instance.get_runs()]}")


def _succeeded(runs, job: str) -> bool:
    return any(r.job_name == job and r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def _stored(cluster: dict, slug: str) -> dict[str, set[str]]:
    lake = LakeSettings.from_env(cluster["cluster_env"]).for_firm(slug)
    with mock.patch.dict(os.environ, cluster["cluster_env"]):
        reader = open_lake(lake, os.environ, read_only=True)
    try:
        return {t: {r[0] for r in reader.execute(f"select uuid from plannr.{t}").fetchall()} for t in TABLES}
    finally:
        reader.close()


def _served(sandbox: SandboxServer) -> dict[str, set[str]]:
    firm = sandbox.firm
    with httpx.Client(headers={"Authorization": f"Bearer {sandbox.options.token}"}) as http:
        imports = http.get(f"{sandbox.url}/api/v1/import", params={"per_page": 500}).json()["data"]
    return {
        "clients": {c["uuid"] for c in firm.clients},
        "goals": {g["uuid"] for goals in firm.goals_by_client.values() for g in goals},
        "staff": {s["uuid"] for s in firm.staff},
        "circles": {c["uuid"] for c in firm.circles},
        "tasks": {t["uuid"] for t in firm.tasks},
        "imports": {i["uuid"] for i in imports},
    }


def _workers_of(instance, runs) -> set[str]:
    """The Celery workers that executed the runs' steps, from their events."""
    workers = set()
    for run in runs:
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = entry.dagster_event.event_specific_data.metadata or {}
            if "Celery worker" in metadata:
                workers.add(metadata["Celery worker"].value.split("@")[0])
    return workers


def test_a_full_sync_of_two_firms_from_the_daemon_runs_on_both_workers_under_one_budget(cluster):
    assert "worker1" in cluster["up"] and "UI" in cluster["up"] and ".log" in cluster["up"]
    with _instance(cluster) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        jobs = [f"{slug}_{job}" for slug in FIRMS for job in ("clients_job", "sweeps_job")]
        runs = _wait_for_runs(instance, lambda runs: all(_succeeded(runs, job) for job in jobs), 600)
        ours = [r for r in runs if r.job_name in jobs]
        assert {r.tags.get("dagster/schedule_name", "").split("_")[0] for r in ours} == set(FIRMS)
        assert _workers_of(instance, ours) == {"worker1", "worker2"}
    for slug, sandbox in cluster["sandboxes"].items():
        assert _stored(cluster, slug) == _served(sandbox), slug
        stats = sandbox.stats()
        assert stats["by_status"].get("429", 0) == 0, (slug, stats["by_status"])
        assert stats["requests"] > BUDGET  # the budget bound: more than a minute's worth in all
        assert stats["peak_in_window"] <= BUDGET, (slug, stats["peak_in_window"])  # requests in any minute
    # The UI shows the runs, read from the same Postgres.
    query = json.dumps({"query": "{ runsOrError { ... on Runs { results { runId status } } } }"}).encode()
    ask = urllib.request.Request(
        f"{cluster['state']['ui']}/graphql", data=query, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(ask, timeout=60) as answer:
        shown = {r["runId"]: r["status"] for r in json.load(answer)["data"]["runsOrError"]["results"]}
    assert all(shown.get(r.run_id) == "SUCCESS" for r in ours)


def test_a_step_killed_on_its_worker_is_retried_and_the_data_is_exact(cluster):
    from plannr_pipeline.defs.partitions import client_months

    keys = client_months.get_partition_keys()
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    launched = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", cluster["state"]["workspace"]]
        + ["-j", "acme_clients_job", "--tags", json.dumps(tags)],
        env=cluster["env"],
        cwd=cluster["root"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    with _instance(cluster) as instance:
        # The newest acme_clients_job run is ours (the schedule's has finished).
        run = next(r for r in instance.get_runs() if r.job_name == "acme_clients_job")
        # Wait until the goals step (a request per client, paced by the budget) has started, then
        # kill the process executing it on its worker.
        deadline, pid = time.monotonic() + 300, None
        while pid is None and time.monotonic() < deadline:
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
                if entry.step_key.endswith("goals"):
                    pid = entry.dagster_event.pid
            time.sleep(0.5)
        assert pid, "the goals step never started"
        time.sleep(3)  # mid-step: it is fetching goals
        os.kill(pid, signal.SIGKILL)
        retried = _wait_for_runs(
            instance,
            lambda runs: [
                r
                for r in runs
                if r.tags.get("dagster/parent_run_id") == run.run_id
                and r.status == dg.DagsterRunStatus.SUCCESS
            ],
            600,
        )
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert any(r.tags.get("dagster/parent_run_id") == run.run_id for r in retried)
    sandbox = cluster["sandboxes"]["acme"]
    assert _stored(cluster, "acme") == _served(sandbox)
    assert sandbox.stats()["by_status"].get("429", 0) == 0
