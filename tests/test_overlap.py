"""Runs that overlap, settings that change, answers that lie: no row lost, no history invented.

Each test is one case of the issue that asked for this (numbered as there). Runs are real
processes (`plannr-pipeline sync`, `dagster asset materialize`) against a sandbox behind the
lying proxy (tests/lying_api.py), which can also hold an answer it has already fetched: a run
that has read the API and not yet committed, for as long as the test needs.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import uuid as uuids
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from plannr_pipeline.storage.convert import to_utc, uk_day
from tests.cli import run_cli, run_dagster, sandbox_env, start_cli
from tests.lying_api import LyingApi

ACCOUNTS = "/api/v1/account"
TASKS = "/api/v1/task"


def query(data_dir: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
        return db.execute(sql, params or []).fetchall()


def uuids_of(data_dir: Path, table: str) -> set[str]:
    return {row[0] for row in query(data_dir, f"select uuid from {table}")}


def deletions(data_dir: Path, table: str) -> set[str]:
    return {
        row[0] for row in query(data_dir, f"select uuid from {table}_history where deleted_at is not null")
    }


def month_of(created_at: str) -> str:
    return uk_day(to_utc(created_at))[:7]


class Firm:
    """A sandbox behind the lying proxy, and the settings a run against it needs."""

    def __init__(self, sandbox, proxy: LyingApi, tmp_path: Path) -> None:
        self.sandbox, self.proxy, self.tmp_path = sandbox, proxy, tmp_path
        self.data_dir = tmp_path / "data"

    def env(self, home: str = "home", **settings: str) -> dict[str, str]:
        (self.tmp_path / home).mkdir(exist_ok=True)  # Dagster's own commands want it made
        return sandbox_env(
            self.sandbox,
            self.tmp_path,
            PLANNR_BASE_URL=self.proxy.url,
            DAGSTER_HOME=str(self.tmp_path / home),
            **settings,
        )

    def sync(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return run_cli("sync", *args, env=self.env(**settings), cwd=self.tmp_path)

    def materialize(self, asset: str, partition: str | None = None, **settings: str):
        """`dagster asset materialize`: a run of its own, on an instance of its own."""
        where = ["--partition", partition] if partition else []
        return run_dagster(
            "asset",
            "materialize",
            "-m",
            "plannr_pipeline.definitions",
            "--select",
            asset,
            *where,
            env=self.env(home=f"home-{uuids.uuid4().hex[:6]}", **settings),
            cwd=self.tmp_path,
        )

    def drop_client(self, index: int = 0) -> dict:
        """Delete a client from the sandbox (by its place in created order)."""
        client = sorted(self.sandbox.firm.clients, key=lambda c: to_utc(c["created_at"]))[index]
        self.sandbox.firm.clients.remove(client)
        self.sandbox._reindex()
        return client

    def add_client_like(self, model: dict) -> dict:
        """A new client (no goals), created now: listed last in created order."""
        client = copy.deepcopy(model)
        client["uuid"] = str(uuids.uuid4())
        client["created_at"] = client["updated_at"] = datetime.now(UTC).isoformat()
        firm = self.sandbox.firm
        firm.assignments[client["uuid"]] = firm.assignments[model["uuid"]]
        firm.goals_by_client[client["uuid"]] = []
        firm.clients.append(client)
        self.sandbox._reindex()
        return client


def synced_firm(make_sandbox, tmp_path: Path, clients: int = 120, **settings: str) -> Firm:
    sandbox = make_sandbox(clients=clients)
    firm = Firm(sandbox, LyingApi(sandbox.url), tmp_path)
    done = firm.sync(**settings)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return firm


@pytest.fixture
def firm(make_sandbox, tmp_path):
    firm = synced_firm(make_sandbox, tmp_path)
    yield firm
    firm.proxy.close()


# -- case 2: an empty or short listing is not the truth -----------------------------------------


def empty(path, query, body):
    return {**body, "data": [], "meta": {**body["meta"], "total": 0, "last_page": 1}}


def cut_without_meta(path, query, body):
    return {"data": body["data"][:37]}


@pytest.mark.parametrize("lie", [empty, cut_without_meta])
def test_an_empty_or_short_listing_replaces_nothing_and_marks_nothing_deleted(firm, lie):
    stored = uuids_of(firm.data_dir, "tasks")
    firm.proxy.lies[TASKS] = lie
    done = firm.sync("--select", "tasks")
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert f"of the {len(stored):,} stored tasks deleted" in said
    assert "PLANNR_MAX_DELETE_SHARE=1" in said and "plannr/accept_deletions=true" in said
    assert uuids_of(firm.data_dir, "tasks") == stored
    assert deletions(firm.data_dir, "tasks") == set()


def test_a_listing_that_really_lost_most_records_lands_once_accepted(firm):
    stored = uuids_of(firm.data_dir, "tasks")
    firm.proxy.lies[TASKS] = cut_without_meta
    done = firm.sync("--select", "tasks", PLANNR_MAX_DELETE_SHARE="1")
    assert done.returncode == 0, done.stdout[-2000:]
    # Each missing task is still confirmed one by one: the sandbox still has them, so none goes.
    assert uuids_of(firm.data_dir, "tasks") == stored


# -- case 3: overlapping runs, the stale one committing last ------------------------------------


def test_a_stale_range_run_committing_after_a_newer_one_loses_no_client(firm):
    firm.proxy.hold = lambda path, q: (
        path == ACCOUNTS and q.get("filter[type]") == "client" and "filter[created_after]" not in q
    )
    stale = start_cli(
        "sync", "--select", "clients", env=firm.env(), cwd=firm.tmp_path, stdout=subprocess.DEVNULL
    )
    try:
        assert firm.proxy.holding.wait(120), "the range run never asked for its listing"
        model = firm.sandbox.firm.clients[0]
        created = [firm.add_client_like(model)["uuid"] for _ in range(2)]
        newer = firm.materialize("clients", month_of(firm.sandbox.firm.clients[-1]["created_at"]))
        assert newer.returncode == 0, newer.stderr[-3000:]
        assert set(created) <= uuids_of(firm.data_dir, "clients")
    finally:
        firm.proxy.release()
    assert stale.wait(180) == 0, stale.stderr.read()[-3000:]
    assert set(created) <= uuids_of(firm.data_dir, "clients")
    assert deletions(firm.data_dir, "clients") & set(created) == set()


def test_an_incremental_run_that_read_before_a_deletion_does_not_bring_the_task_back(firm):
    newest = max(firm.sandbox.firm.tasks, key=lambda t: to_utc(t["updated_at"]))
    firm.proxy.hold = lambda path, q: path == TASKS and q.get("sort") == "-updated_at"
    incremental = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "plannr_pipeline.definitions",
            "--select",
            "tasks",
            "--config-json",
            json.dumps({"ops": {"tasks": {"config": {"incremental": True}}}}),
        ],
        env=firm.env(home="home-incremental"),
        cwd=firm.tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert firm.proxy.holding.wait(120), "the incremental run never asked for its listing"
        firm.sandbox.firm.tasks.remove(newest)
        firm.sandbox._reindex()
        sweep = firm.sync("--select", "tasks")
        assert sweep.returncode == 0, sweep.stdout[-3000:]
        assert newest["uuid"] in deletions(firm.data_dir, "tasks")
    finally:
        firm.proxy.release()
    assert incremental.wait(180) == 0, incremental.stderr.read()[-3000:]
    assert newest["uuid"] not in uuids_of(firm.data_dir, "tasks")
    current = query(
        firm.data_dir,
        "select count(*) from tasks_history where uuid = ? and valid_to is null",
        [newest["uuid"]],
    )
    assert current == [(0,)], "a version after the deletion: the deleted task came back"


# -- case 4: quarantined records are not deletions ------------------------------------------------


def test_a_quarantined_client_keeps_its_last_version_and_its_goals(firm):
    with_goals = [c for c in firm.sandbox.firm.clients if firm.sandbox.firm.goals_by_client[c["uuid"]]]
    malformed, future = with_goals[0]["uuid"], with_goals[1]["uuid"]
    goals_before = uuids_of(firm.data_dir, "goals")

    def quarantine_two(path, query, body):
        for record in body["data"]:
            if record["uuid"] == malformed:
                record["created_at"] = "31/02/2025"
            if record["uuid"] == future:
                record["created_at"] = "2099-01-01T00:00:00Z"
        return body

    firm.proxy.lies[ACCOUNTS] = quarantine_two
    for _ in range(2):
        done = firm.sync()
        assert done.returncode == 0, done.stdout[-3000:]
    assert {malformed, future} <= uuids_of(firm.data_dir, "clients")
    assert uuids_of(firm.data_dir, "goals") == goals_before
    assert deletions(firm.data_dir, "clients") == set()
    assert deletions(firm.data_dir, "goals") == set()
    rejected = query(firm.data_dir, "select uuid, reason from rejected_records order by reason")
    assert sorted(uuid for uuid, _ in rejected) == sorted([malformed, future])  # once each, after two runs
    assert any("after the last partition" in reason for _, reason in rejected)
    # Once the API serves them well again, they are stored cleanly and leave the quarantine.
    del firm.proxy.lies[ACCOUNTS]
    done = firm.sync()
    assert done.returncode == 0, done.stdout[-3000:]
    assert query(firm.data_dir, "select uuid from rejected_records") == []


def test_a_goal_the_api_shows_under_two_clients_fails_the_key_check_and_replaces_nothing(firm):
    """Each client's goals are a listing of their own, so only the write sees one goal come twice."""
    goals = firm.sandbox.firm.goals_by_client
    first, second = [c["uuid"] for c in firm.sandbox.firm.clients if goals[c["uuid"]]][:2]
    shared = goals[first][0]
    stored_before = query(firm.data_dir, "select * exclude (seen_at) from goals order by uuid")

    def also_show_the_shared_goal(path, query, body):
        meta = {**body["meta"], "total": body["meta"]["total"] + 1}
        return {**body, "data": [*body["data"], {**shared, "client_uuid": second}], "meta": meta}

    firm.proxy.lies[f"/api/v1/client/{second}/goal"] = also_show_the_shared_goal
    done = firm.sync("--select", "goals")
    assert done.returncode != 0
    assert "1 uuid(s) staged twice" in done.stdout + done.stderr
    assert query(firm.data_dir, "select * exclude (seen_at) from goals order by uuid") == stored_before


# -- case 5: a listing that shifts while it is paged ---------------------------------------------


def test_a_listing_that_shifts_while_paged_loses_no_live_client(make_sandbox, tmp_path):
    firm = synced_firm(make_sandbox, tmp_path, clients=1200)  # three pages
    shifted = []

    def delete_one_and_create_one(query):
        if query.get("page") == "2" and not shifted:  # page 1 is read; the rest move up by one
            shifted.append(firm.drop_client(0))
            firm.add_client_like(firm.sandbox.firm.clients[0])

    firm.proxy.before[ACCOUNTS] = delete_one_and_create_one
    try:
        done = firm.sync()
        assert done.returncode == 0, done.stdout[-3000:]
        assert shifted
        # The first live client of page 2 moved onto page 1, already read: the listing never showed
        # it, and the API's show route says it still exists, so it is kept, goals and all.
        assert "missing from the listing still exist" in done.stdout + done.stderr
        live = {c["uuid"] for c in firm.sandbox.firm.clients}
        assert live <= uuids_of(firm.data_dir, "clients")
        assert deletions(firm.data_dir, "clients") == set()
        goals_of_live = {g["uuid"] for c in live for g in firm.sandbox.firm.goals_by_client[c]}
        assert goals_of_live <= uuids_of(firm.data_dir, "goals")
        assert deletions(firm.data_dir, "goals") == set()
        # The deleted one was on page 1 when it was read: the next sweep proves it gone.
        done = firm.sync()
        assert done.returncode == 0, done.stdout[-3000:]
        assert uuids_of(firm.data_dir, "clients") == live
        assert deletions(firm.data_dir, "clients") == {shifted[0]["uuid"]}
    finally:
        firm.proxy.close()


# -- case 6: PLANNR_START_DATE moves ---------------------------------------------------------------


def test_moving_the_start_date_earlier_moves_rows_and_deletes_none(make_sandbox, tmp_path):
    this_month = datetime.now(UTC).strftime("%Y-%m-01")
    firm = synced_firm(make_sandbox, tmp_path, PLANNR_START_DATE=this_month)
    try:
        clients, goals = uuids_of(firm.data_dir, "clients"), uuids_of(firm.data_dir, "goals")
        current = month_of(datetime.now(UTC).isoformat())
        for asset in ("clients", "goals"):  # the hourly refresh of this month, under the new setting
            done = firm.materialize(asset, current, PLANNR_START_DATE="2023-01-01")
            assert done.returncode == 0, done.stderr[-3000:]
            assert uuids_of(firm.data_dir, "clients") == clients
            assert uuids_of(firm.data_dir, "goals") == goals
        done = firm.sync(PLANNR_START_DATE="2023-01-01")
        assert done.returncode == 0, done.stdout[-3000:]
        assert uuids_of(firm.data_dir, "clients") == clients and uuids_of(firm.data_dir, "goals") == goals
        assert deletions(firm.data_dir, "clients") == deletions(firm.data_dir, "goals") == set()
        by_month = query(firm.data_dir, "select count(distinct created_month) from clients")[0][0]
        assert by_month > 1  # each client now in its own month
    finally:
        firm.proxy.close()


def test_moving_the_start_date_later_still_records_deletions_of_older_records(firm):
    gone = [firm.drop_client(0)["uuid"] for _ in range(7)]  # the oldest seven
    later = datetime.now(UTC).strftime("%Y-01-01")
    assert all(month_of(c) < later[:7] for c in [firm.sandbox.firm.clients[0]["created_at"]])
    done = firm.sync(PLANNR_START_DATE=later)
    assert done.returncode == 0, done.stdout[-3000:]
    assert deletions(firm.data_dir, "clients") == set(gone)
    assert uuids_of(firm.data_dir, "clients") == {c["uuid"] for c in firm.sandbox.firm.clients}
    months = {m for (m,) in query(firm.data_dir, "select distinct created_month from clients")}
    assert min(months) >= later[:7]


# -- case 7: a record's created_at moves to another month -----------------------------------------


def test_a_client_whose_created_at_moves_month_moves_partition_and_is_never_deleted(firm):
    client = next(c for c in firm.sandbox.firm.clients if firm.sandbox.firm.goals_by_client[c["uuid"]])
    old_month = month_of(client["created_at"])
    other = next(c for c in firm.sandbox.firm.clients if month_of(c["created_at"]) != old_month)
    client["created_at"] = other["created_at"]
    new_month = month_of(client["created_at"])
    for month in (new_month, old_month):
        for asset in ("clients", "goals"):
            done = firm.materialize(asset, month)
            assert done.returncode == 0, done.stderr[-3000:]
    assert query(firm.data_dir, "select created_month from clients where uuid = ?", [client["uuid"]]) == [
        (new_month,)
    ]
    assert client["uuid"] not in deletions(firm.data_dir, "clients")
    goals = {g["uuid"] for g in firm.sandbox.firm.goals_by_client[client["uuid"]]}
    assert goals <= uuids_of(firm.data_dir, "goals") and not goals & deletions(firm.data_dir, "goals")
    assert {
        m
        for (m,) in query(
            firm.data_dir,
            "select distinct created_month from goals where uuid in (select unnest(?))",
            [list(goals)],
        )
    } == {new_month}


# -- case 9: drift at every depth, history of what the table models ------------------------------


def test_drift_is_seen_at_every_depth_and_never_re_versions_a_record(firm):
    versions = query(firm.data_dir, "select count(*) from tasks_history")[0][0]

    def new_fields(path, query, body):
        for task in body["data"]:
            task["status"]["is_blocked"] = False
            if isinstance(task.get("taskable"), dict):
                task["taskable"]["client_uuid"] = "c-1"
            task["sla_hours"] = 48
        return body

    firm.proxy.lies[TASKS] = new_fields
    done = firm.sync("--select", "tasks")
    assert done.returncode == 0, done.stdout[-3000:]
    said = done.stdout + done.stderr
    tasks = len(firm.sandbox.firm.tasks)
    with_taskable = sum(isinstance(t.get("taskable"), dict) for t in firm.sandbox.firm.tasks)
    assert f"new field tasks.status.is_blocked in {tasks} rows" in said
    assert f"new field tasks.taskable.client_uuid in {with_taskable} rows" in said
    assert f"new field tasks.sla_hours in {tasks} rows" in said
    kept = query(
        firm.data_dir,
        "select count(*) from tasks where json_extract(extra_json, '$.status.is_blocked') is not null "
        "and json_extract(extra_json, '$.sla_hours') is not null",
    )
    assert kept == [(tasks,)]
    assert query(firm.data_dir, "select count(*) from tasks_history")[0][0] == versions


def test_a_changed_custom_field_is_a_new_version_of_its_task(firm):
    task = next(t for t in firm.sandbox.firm.tasks if t.get("custom_fields"))
    task["custom_fields"][0]["value"] = "changed by the adviser"
    done = firm.sync("--select", "tasks")
    assert done.returncode == 0, done.stdout[-3000:]
    versions = query(firm.data_dir, "select count(*) from tasks_history where uuid = ?", [task["uuid"]])
    assert versions == [(2,)]
    assert (
        query(firm.data_dir, "select count(*) from tasks_history")[0][0] == len(firm.sandbox.firm.tasks) + 1
    )


def test_a_run_tagged_to_accept_deletions_lands_a_short_listing(firm):
    """The UI's way to accept a sweep the share limit refused: the run tag."""
    import dagster as dg

    from plannr_pipeline.definitions import ASSETS
    from plannr_pipeline.defs.assets.landing import ACCEPT_DELETIONS_TAG
    from tests.test_write_path import resources_for

    stored = uuids_of(firm.data_dir, "tasks")
    firm.proxy.lies[TASKS] = cut_without_meta
    resources = resources_for(firm.proxy.url, firm.sandbox.options.token, firm.data_dir)

    def run(tags: dict[str, str]) -> bool:
        return dg.materialize(
            ASSETS, selection=["tasks"], resources=resources, tags=tags, raise_on_error=False
        ).success

    assert not run({})
    assert run({ACCEPT_DELETIONS_TAG: "true"})
    assert uuids_of(firm.data_dir, "tasks") == stored  # each missing task confirmed alive, so kept


def test_a_stale_sweep_without_show_route_checks_loses_no_newer_record(firm):
    """Circles have no show route: only `seen_at` against the listing's start keeps a circle
    another sweep stored meanwhile from being taken for deleted by the stale one."""
    held = []

    def hold_the_first(path, query):
        if path == "/api/v1/circles" and not held:
            held.append(query)
            return True
        return False

    firm.proxy.hold = hold_the_first
    stale = start_cli(
        "sync", "--select", "circles", env=firm.env(), cwd=firm.tmp_path, stdout=subprocess.DEVNULL
    )
    try:
        assert firm.proxy.holding.wait(120), "the stale sweep never asked for its listing"
        circle = copy.deepcopy(firm.sandbox.firm.circles[0])
        circle["uuid"] = str(uuids.uuid4())
        firm.sandbox.firm.circles.append(circle)
        newer = firm.materialize("circles")
        assert newer.returncode == 0, newer.stderr[-3000:]
        assert circle["uuid"] in uuids_of(firm.data_dir, "circles")
    finally:
        firm.proxy.release()
    assert stale.wait(180) == 0, stale.stderr.read()[-3000:]
    assert circle["uuid"] in uuids_of(firm.data_dir, "circles")
    assert circle["uuid"] not in deletions(firm.data_dir, "circles")


PREPARE_AT_THE_SIGNAL = """
import sys, time
from pathlib import Path
import dagster as dg
from plannr_pipeline.instance import prepare_instance
home, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
prepare_instance({"DAGSTER_HOME": home})
with dg.DagsterInstance.from_config(home) as instance:
    instance.get_runs(limit=1)
"""


def test_processes_preparing_a_fresh_dagster_home_at_once_all_succeed(tmp_path):
    """A scheduled sync and one by hand, say, both the first on a new machine, create the
    instance's databases at the same moment: one at a time, or one fails ("table ... already
    exists"). Each process has imported Dagster before the signal, so they race in earnest."""
    home, go = tmp_path / "home", tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(4)]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_AT_THE_SIGNAL, str(home), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    for racer in racers:
        _, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-2000:]
