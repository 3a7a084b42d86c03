"""The assets end to end: sandbox over loopback HTTP -> Dagster -> Parquet -> DuckDB in tmp_path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer
from plannr_pipeline.storage.warehouse import Warehouse
from plannr_pipeline.sync import run_sync
from tests.cli import clean_env, run_cli, start_cli
from tests.lying_api import LyingApi

LONDON = ZoneInfo("Europe/London")


def resources_for(sandbox, data_dir: Path) -> dict:
    return {
        "plannr": PlannrApi(
            base_url=sandbox.url,
            token=sandbox.options.token,
            rate_limit_per_minute=100_000,
            max_concurrency=8,
        ),
        "storage": PlannrStorage(data_dir=str(data_dir)),
    }


def query(data_dir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as connection:
        return connection.sql(sql).fetchall()


@pytest.fixture(scope="module")
def synced_once(tmp_path_factory):
    """One full sync per module (it is the slow part); each test gets its own copy."""
    sandbox = SandboxServer(
        SandboxOptions(size=FirmSize(clients=120), token="assets-token", rate_limit_per_minute=100_000)
    ).start()
    data_dir = tmp_path_factory.mktemp("synced") / "data"
    report = run_sync(resources_by_key=resources_for(sandbox, data_dir), echo=lambda _: None)
    assert report.ok, report.failures
    yield sandbox, data_dir, report
    sandbox.stop()


@pytest.fixture
def synced(synced_once, tmp_path):
    sandbox, original, report = synced_once
    data_dir = tmp_path / "data"
    shutil.copytree(original / "parquet", data_dir / "parquet")
    assert Warehouse(data_dir).refresh_views() is None  # views point at this copy
    return sandbox, data_dir, report


def test_every_record_lands_exactly_once(synced):
    sandbox, data_dir, report = synced
    firm = sandbox.firm
    expected = {
        "clients": {c["uuid"] for c in firm.clients},
        "goals": {g["uuid"] for goals in firm.goals_by_client.values() for g in goals},
        "circles": {c["uuid"] for c in firm.circles},
        "tasks": {t["uuid"] for t in firm.tasks},
    }
    for table, uuids in expected.items():
        rows = query(data_dir, f"select uuid from {table}")
        assert len(rows) == len(uuids), table
        assert {r[0] for r in rows} == uuids, table
    assert query(data_dir, "select count(*) from circle_accounts")[0][0] == sum(
        len(c["accounts"]) for c in firm.circles
    )
    assert query(data_dir, "select count(*) from imports")[0][0] > 0


def test_request_count_is_the_minimum(synced):
    sandbox, _, report = synced
    # one page each for clients, staff, circles, tasks and imports, plus one goals request per client
    assert report.requests == 5 + len(sandbox.firm.clients)
    assert sum(sandbox.requests.values()) == report.requests  # the checks spend no request of their own


def test_goals_join_clients_without_orphans(synced):
    _, data_dir, _ = synced
    orphans = query(
        data_dir,
        "select count(*) from goals g left join clients c on c.uuid = g.client_uuid where c.uuid is null",
    )
    assert orphans == [(0,)]
    wrong_partition = query(
        data_dir,
        "select count(*) from goals g join clients c on c.uuid = g.client_uuid where g.created_month <> c.created_month",
    )
    assert wrong_partition == [(0,)]


def test_types_money_time_zones_and_casts(synced):
    sandbox, data_dir, _ = synced
    client_uuid, goals = next((k, v) for k, v in sandbox.firm.goals_by_client.items() if v)
    goal = goals[0]
    row = query(
        data_dir,
        f"select target_amount_minor, target_currency, priority, progress, created_at from goals where uuid = '{goal['uuid']}'",
    )[0]
    assert row[0] == int(goal["target_amount"]["amount"]) and row[1] == "GBP"
    assert row[2] == int(goal["priority"]) and row[3] == int(goal["progress"])
    assert row[4] == datetime.fromisoformat(goal["created_at"])  # same instant, whatever the offset

    task = next(t for t in sandbox.firm.tasks if t["completed_at"])
    due_at, completed_at = query(
        data_dir, f"select due_at, completed_at from tasks where uuid = '{task['uuid']}'"
    )[0]
    naive_due = datetime.strptime(task["due_at"], "%Y-%m-%d %H:%M:%S")
    assert due_at == naive_due.replace(tzinfo=LONDON)  # naive Plannr times are UK local
    assert completed_at.astimezone(UTC) == datetime.strptime(
        task["completed_at"], "%Y-%m-%d %H:%M:%S"
    ).replace(tzinfo=LONDON)

    client = sandbox.firm.clients[0]
    deletable, inactive = query(
        data_dir, f"select can_be_deleted, inactive_at from clients where uuid = '{client['uuid']}'"
    )[0]
    assert deletable is (client["can_be_deleted"] == "true")
    assert inactive == (
        datetime.fromisoformat(client["inactive_at"]).date() if client["inactive_at"] else None
    )
    types = dict(
        query(
            data_dir,
            "select column_name, data_type from information_schema.columns where table_name = 'goals'",
        )
    )
    assert types["target_amount_minor"] == "BIGINT" and types["created_at"] == "TIMESTAMP WITH TIME ZONE"


def test_placeholders_are_not_stored_as_data(synced):
    _, data_dir, _ = synced
    assert query(data_dir, "select count(*) from clients where extra_json like '%App\\\\Http%'") == [(0,)]


def table_snapshot(data_dir: Path, table: str) -> list[tuple]:
    return query(data_dir, f"select columns(lambda c: c <> 'seen_at') from {table} order by all")


def test_rerunning_a_partition_changes_nothing(synced):
    sandbox, data_dir, _ = synced
    month = query(data_dir, "select created_month from clients group by 1 order by count(*) desc limit 1")[0][
        0
    ]
    before = {t: table_snapshot(data_dir, t) for t in ("clients", "goals")}
    result = dg.materialize(
        ASSETS,
        selection=["clients", "goals"],
        partition_key=month,
        resources=resources_for(sandbox, data_dir),
    )
    assert result.success
    assert {t: table_snapshot(data_dir, t) for t in ("clients", "goals")} == before


def test_two_materialisations_at_once_both_succeed(synced):
    sandbox, data_dir, _ = synced
    months = [r[0] for r in query(data_dir, "select distinct created_month from clients order by 1 limit 2")]
    before = table_snapshot(data_dir, "clients")
    outcomes: list[bool] = []

    def materialise(selection, partition_key=None):
        result = dg.materialize(
            ASSETS,
            selection=selection,
            partition_key=partition_key,
            resources=resources_for(sandbox, data_dir),
            raise_on_error=False,
        )
        outcomes.append(result.success)

    threads = [threading.Thread(target=materialise, args=(["clients"], m)) for m in months]
    threads.append(threading.Thread(target=materialise, args=(["circles"],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == [True, True, True]
    assert table_snapshot(data_dir, "clients") == before


def test_a_read_only_analyst_session_does_not_fail_a_run(synced):
    sandbox, data_dir, _ = synced
    analyst = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print(c.execute('select count(*) from clients').fetchone()[0], flush=True); time.sleep(60)",
            str(data_dir / "plannr.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(analyst.stdout.readline()) == len(sandbox.firm.clients)
        result = dg.materialize(ASSETS, selection=["circles"], resources=resources_for(sandbox, data_dir))
        assert result.success
    finally:
        analyst.kill()
        analyst.wait()
    assert len(query(data_dir, "select * from circles")) == len(sandbox.firm.circles)


def test_a_killed_run_leaves_the_previous_tables_readable(make_sandbox, synced, tmp_path):
    sandbox, data_dir, _ = synced
    before = {t: table_snapshot(data_dir, t) for t in ("clients", "goals")}
    slow = make_sandbox(clients=120, latency_ms=150, token=sandbox.options.token)  # the same firm, slowly
    env = clean_env(
        {
            "PLANNR_BASE_URL": slow.url,
            "PLANNR_API_TOKEN": slow.options.token,
            "PLANNR_DATA_DIR": str(data_dir),
            "PLANNR_RATE_LIMIT_PER_MINUTE": "100000",
            "PLANNR_MAX_CONCURRENCY": "2",
        }
    )
    sync = start_cli(
        "sync",
        "--select",
        "clients,goals",
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list((data_dir / "parquet" / "goals").glob("*/.data.parquet.*.tmp")):  # mid-write
        assert time.monotonic() < deadline and sync.poll() is None, "sync never started writing goals"
        time.sleep(0.05)
    os.killpg(sync.pid, signal.SIGKILL)
    sync.wait()
    assert {t: table_snapshot(data_dir, t) for t in ("clients", "goals")} == before

    report = run_sync(
        {"clients", "goals"}, resources_by_key=resources_for(sandbox, data_dir), echo=lambda _: None
    )
    assert report.ok
    assert {t: table_snapshot(data_dir, t) for t in ("clients", "goals")} == before


def test_incremental_tasks_stop_at_the_watermark_and_merge(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=400)  # 600 tasks: two pages
    data_dir = tmp_path / "data"
    resources = resources_for(sandbox, data_dir)
    tables = ["tasks", "task_custom_fields", "task_assignees"]
    assert dg.materialize(ASSETS, selection=["tasks"], resources=resources).success
    full = {t: table_snapshot(data_dir, t) for t in tables}
    before = sandbox.requests["/api/v1/task"]
    config = dg.RunConfig(ops={"tasks": {"config": {"incremental": True}}})
    assert dg.materialize(ASSETS, selection=["tasks"], resources=resources, run_config=config).success
    assert sandbox.requests["/api/v1/task"] - before == 1  # stopped after the newest page
    assert {t: table_snapshot(data_dir, t) for t in tables} == full


def sync_circles(settings: dict, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`plannr-pipeline sync --select circles` into data_dir, with only these settings."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    env = clean_env({"PLANNR_DATA_DIR": str(data_dir), **settings})
    return run_cli("sync", "--select", "circles", env=env, cwd=data_dir.parent)


def test_sync_with_a_wrong_token_fails_clearly_without_the_token(make_sandbox, tmp_path):
    """The API answers 401 with a body that echoes the token it was sent: never shown."""
    sandbox = make_sandbox(clients=5)
    proxy = LyingApi(sandbox.url)
    proxy.echo_token_with = 401
    secret = "not-the-right-token-9f8e7d"
    try:
        done = sync_circles({"PLANNR_BASE_URL": proxy.url, "PLANNR_API_TOKEN": secret}, tmp_path / "data")
    finally:
        proxy.close()
    assert done.returncode == 1
    assert "sync FAILED" in done.stderr and "PLANNR_API_TOKEN" in done.stderr
    assert "[redacted]" in done.stdout + done.stderr  # the echo was there to leak
    assert secret not in done.stdout + done.stderr


def test_sync_without_a_token_for_a_base_url_says_what_to_set(tmp_path):
    done = sync_circles({"PLANNR_BASE_URL": "http://127.0.0.1:9"}, tmp_path / "data")
    assert done.returncode == 2
    assert "PLANNR_API_TOKEN" in done.stderr


def test_sync_against_the_embedded_sandbox_says_so(tmp_path):
    done = sync_circles({"PLANNR_SANDBOX_CLIENTS": "20"}, tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "embedded sandbox" in done.stdout and "sync finished" in done.stdout


@pytest.mark.parametrize(
    "variable, value",
    [
        ("PLANNR_START_DATE", "last year"),
        ("PLANNR_MAX_CONCURRENCY", "many"),
        ("PLANNR_RATE_WINDOW_SECONDS", "0"),
    ],
)
def test_sync_with_a_malformed_setting_names_it(tmp_path, variable, value):
    done = sync_circles({variable: value}, tmp_path / "data")
    assert done.returncode == 2
    assert variable in done.stderr and "Traceback" not in done.stderr


def test_two_incremental_merges_at_once_lose_neither_change(make_sandbox, tmp_path, monkeypatch):
    """Two incremental task runs at once, each seeing one task changed that the other does not:
    both changes are stored. Each merge reads the stored rows, so without the merge lock both
    read the same rows and the second commit drops the first's change."""
    import threading

    from plannr_pipeline.storage.parquet_store import ParquetStore

    sandbox = make_sandbox(clients=400)  # 600 tasks: the newest page holds 500
    data_dir = tmp_path / "data"
    assert dg.materialize(ASSETS, selection=["tasks"], resources=resources_for(sandbox, data_dir)).success
    oldest = sorted(sandbox.firm.tasks, key=lambda task: task["updated_at"])[:2]  # on no newest page

    def changing(task: dict, title: str):
        def lie(path, query, body):
            changed = {**task, "name": title, "updated_at": datetime.now(UTC).isoformat()}
            if query.get("page") == "1":
                body["data"] = [changed] + body["data"][:-1]
            return body

        return lie

    proxies = [LyingApi(sandbox.url), LyingApi(sandbox.url)]
    for proxy, task, title in zip(proxies, oldest, ["first change", "second change"], strict=True):
        proxy.lies["/api/v1/task"] = changing(task, title)
    # Both merges read the stored tasks at the same moment if nothing keeps them apart.
    both_reading = threading.Barrier(2, timeout=3)
    read = ParquetStore.read

    def read_together(self, table, *args, **kwargs):
        merging = kwargs.get("columns") is None  # the watermark is read by column first
        if table.name == "tasks" and merging and threading.current_thread().name.startswith("merge"):
            try:
                both_reading.wait()
            except threading.BrokenBarrierError:
                pass  # the other merge is held off (by the lock): go on alone
        return read(self, table, *args, **kwargs)

    monkeypatch.setattr(ParquetStore, "read", read_together)
    config = dg.RunConfig(ops={"tasks": {"config": {"incremental": True}}})
    results = []

    def merge(proxy):
        resources = {
            "plannr": PlannrApi(
                base_url=proxy.url, token=sandbox.options.token, rate_limit_per_minute=100_000
            ),
            "storage": PlannrStorage(data_dir=str(data_dir)),
        }
        results.append(
            dg.materialize(ASSETS, selection=["tasks"], resources=resources, run_config=config).success
        )

    threads = [threading.Thread(target=merge, args=(p,), name=f"merge-{i}") for i, p in enumerate(proxies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for proxy in proxies:
        proxy.close()
    assert results == [True, True]
    titles = dict(
        query(
            data_dir,
            "select uuid, name from read_parquet('" + str(data_dir) + "/parquet/tasks/data.parquet')",
        )
    )
    assert [titles[task["uuid"]] for task in oldest] == ["first change", "second change"]
