"""Validate, then commit: an API answer that looks wrong never replaces stored data.

A loopback proxy (tests/lying_api.py) sits in front of a sandbox and lies the way APIs do:
a missing `meta.last_page`, a page one record short of `meta.total`, `data` as an object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage.history import history_table
from plannr_pipeline.storage.normalise import arrow
from plannr_pipeline.storage.parquet_store import ParquetStore, StagedWrite
from plannr_pipeline.storage.tables import CLIENTS, TASK_CUSTOM_FIELDS, TASKS
from plannr_pipeline.sync import range_tags
from tests.cli import clean_env, sandbox_env, start_cli
from tests.lying_api import LyingApi
from tests.stored import StoredData

ACCOUNTS = "/api/v1/account"


def resources_for(url: str, token: str, data_dir: Path | StoredData) -> dict:
    stored = data_dir if isinstance(data_dir, StoredData) else StoredData(data_dir)
    return {
        "plannr": PlannrApi(base_url=url, token=token, rate_limit_per_minute=100_000, max_concurrency=8),
        "storage": stored.storage(),
    }


def stored_clients(stored: StoredData) -> list[tuple]:
    return stored.query("select * exclude (seen_at) from clients order by uuid")


@pytest.fixture(params=["local", "lake"])
def lying(request, make_sandbox, tmp_path, monkeypatch):
    """A sandbox of 1,200 clients (three pages), synced once, behind a proxy with no lies yet;
    stored locally or in a lake: validate-then-commit is the same on both."""
    lake = request.getfixturevalue("lake_servers").new_lake() if request.param == "lake" else None
    for name, value in (lake.env if lake else {}).items():
        monkeypatch.setenv(name, value)
    sandbox = make_sandbox(clients=1200)
    proxy = LyingApi(sandbox.url)
    stored = StoredData(tmp_path / "data", lake)
    resources = resources_for(proxy.url, sandbox.options.token, stored)
    assert materialise_clients(resources).success
    assert len(stored_clients(stored)) == 1200
    yield sandbox, proxy, stored, resources
    proxy.close()


def materialise_clients(resources) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        selection=["clients"],
        resources=resources,
        raise_on_error=False,
        tags=range_tags(client_months),
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.user_failure_data.description


def without_last_page(path, query, body):
    body["meta"].pop("last_page")
    return body


def without_last_page_or_total(path, query, body):
    body.pop("meta")
    return body


@pytest.mark.parametrize("lie", [without_last_page, without_last_page_or_total])
def test_a_listing_without_last_page_is_still_read_to_the_end(lying, lie):
    _, proxy, data_dir, resources = lying
    before = stored_clients(data_dir)
    proxy.lies[ACCOUNTS] = lie
    assert materialise_clients(resources).success
    assert stored_clients(data_dir) == before  # all three pages, not just the first


def test_a_listing_one_record_short_replaces_nothing(lying):
    _, proxy, data_dir, resources = lying
    before = stored_clients(data_dir)

    def one_short(path, query, body):
        if query.get("page") == "2":
            body["data"] = body["data"][:-1]
        return body

    proxy.lies[ACCOUNTS] = one_short
    result = materialise_clients(resources)
    assert not result.success
    assert failure_message(result) == (
        "clients: 1,199 records received from /api/v1/account but the API reported 1,200; nothing replaced."
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"clients_complete": False, "clients_uuid_unique_and_present": True}
    assert stored_clients(data_dir) == before
    assert not list(data_dir.data_dir.rglob("*.tmp"))  # the staged files are gone too

    proxy.lies.clear()  # a clean run afterwards is exact
    assert materialise_clients(resources).success
    assert stored_clients(data_dir) == before


@pytest.mark.parametrize("data", [{"uuid": "x"}, None, "oops"])
def test_data_that_is_not_a_list_is_an_error_naming_the_endpoint_and_page(lying, data):
    _, proxy, data_dir, resources = lying
    before = stored_clients(data_dir)

    def not_a_list(path, query, body):
        if query.get("page") == "3":
            body["data"] = data
        return body

    proxy.lies[ACCOUNTS] = not_a_list
    result = materialise_clients(resources)
    assert not result.success
    message = failure_message(result)
    assert "GET /api/v1/account page 3" in message and "not a list" in message
    assert stored_clients(data_dir) == before


def test_a_record_that_cannot_be_stored_is_quarantined_and_the_rest_lands(lying):
    sandbox, proxy, data_dir, resources = lying

    def two_bad_records(path, query, body):
        if query.get("page") == "1":
            body["data"][0].pop("uuid")
            body["data"][1]["created_at"] = "01/03/2025"
        return body

    proxy.lies[ACCOUNTS] = two_bad_records
    result = materialise_clients(resources)
    assert result.success
    [materialisation] = {e.step_key: e for e in result.get_asset_materialization_events()}.values()
    assert materialisation.materialization.metadata["rejected_records"].value == 2
    # Neither is taken for deleted: the quarantined one and the one without a uuid (which the API's
    # show route still finds) keep their last good versions.
    assert len(stored_clients(data_dir)) == 1200
    rejected = data_dir.query("select reason, table_name, raw_json from rejected_records")
    assert sorted(reason for reason, _, _ in rejected) == ["malformed created_at '01/03/2025'", "no uuid"]
    assert all(table == "clients" and json.loads(raw) for _, table, raw in rejected)


def test_a_commit_killed_half_way_is_rolled_forward(tmp_path, monkeypatch):
    """A commit killed after its first rename is completed by the next writer or reader."""
    store = ParquetStore(tmp_path / "parquet")

    def client(uuid, month):
        return {"uuid": uuid, "created_month": month}

    first = StagedWrite(store)
    first.write(CLIENTS, arrow(CLIENTS, [client("a", "2024-01")]), ["2024-01", "2024-02"])
    first.commit()
    second = StagedWrite(store)
    second.write(
        CLIENTS, arrow(CLIENTS, [client("b", "2024-01"), client("c", "2024-02")]), ["2024-01", "2024-02"]
    )
    renamed = _killed_after_first_rename(second, monkeypatch)
    [journal] = store.root.glob(".commit-*.json")
    assert len(renamed) == 1  # one partition new, the other old: what a reader must never see
    assert store.recover() == [f"rolled forward an interrupted commit ({journal.name})"]
    assert sorted(store.read(CLIENTS).column("uuid").to_pylist()) == ["b", "c"]
    assert not journal.exists()


def test_staged_files_of_a_dead_run_are_removed(tmp_path):
    store = ParquetStore(tmp_path / "parquet")
    folder = store.root / "clients" / "created_month=2024-01"
    folder.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = folder / f".data.parquet.{dead}-abc123.tmp"
    stale.write_bytes(b"half a file")
    live = folder / f".data.parquet.{os.getpid()}-def456.tmp"
    live.write_bytes(b"being written")
    dead_spill = store.root / f".commit-spill-{dead}-x1y2"
    (dead_spill / "duckdb_temp_storage").mkdir(parents=True)
    live_spill = store.root / f".commit-spill-{os.getpid()}-z3w4"
    live_spill.mkdir()
    store.recover()
    assert not stale.exists() and live.exists()
    assert not dead_spill.exists() and live_spill.exists()


def test_recovery_walks_on_while_other_runs_make_and_remove_folders(tmp_path):
    """Other runs make and remove spill and partition folders while a reader recovers: a folder
    gone mid-walk is no error (CI saw a sync fail on a spill folder another run had removed)."""
    store = ParquetStore(tmp_path / "parquet")
    (store.root / "clients").mkdir(parents=True)
    churn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "root = sys.argv[1]\n"
            "while True:\n"
            "    for n in range(50):\n"
            "        os.makedirs(f'{root}/.commit-spill-{os.getpid()}-{n}/deep', exist_ok=True)\n"
            "        os.makedirs(f'{root}/clients/created_month=2024-{n}/deep', exist_ok=True)\n"
            "    for n in range(50):\n"
            "        os.rmdir(f'{root}/.commit-spill-{os.getpid()}-{n}/deep')\n"
            "        os.rmdir(f'{root}/.commit-spill-{os.getpid()}-{n}')\n"
            "        os.rmdir(f'{root}/clients/created_month=2024-{n}/deep')\n"
            "        os.rmdir(f'{root}/clients/created_month=2024-{n}')\n",
            str(store.root),
        ]
    )
    try:
        for _ in range(300):
            assert store.recover() == []
    finally:
        churn.kill()
        churn.wait()


def test_a_fan_out_that_outlasts_its_retries_resumes_where_it_stopped(make_sandbox, tmp_path, monkeypatch):
    """One client's goals fail every retry (503); the fan-out pauses and resumes with the clients
    not yet fetched: none fetched before the trouble is asked for again."""
    from collections import Counter

    from plannr_pipeline.api import client as client_module
    from plannr_pipeline.defs.assets import common

    monkeypatch.setattr(common, "RESUME_PAUSE_SECONDS", 0.0)
    monkeypatch.setattr(client_module, "wait_exponential_jitter", lambda **_: lambda state: 0.0)
    sandbox = make_sandbox(clients=30)
    proxy = LyingApi(sandbox.url)
    goal_requests: Counter[str] = Counter()
    troubled: list[str] = []

    def eleventh_client_in_trouble(path, query):
        if not path.endswith("/goal"):
            return None
        goal_requests[path] += 1
        if len(goal_requests) == 11 and not troubled:
            troubled.append(path)
        return 503 if troubled and path == troubled[0] and goal_requests[path] <= 6 else None

    proxy.trouble = eleventh_client_in_trouble
    resources = {
        "plannr": PlannrApi(
            base_url=proxy.url, token=sandbox.options.token, rate_limit_per_minute=100_000, max_concurrency=1
        ),
        "storage": PlannrStorage(data_dir=str(tmp_path / "data")),
    }
    try:
        result = dg.materialize(
            ASSETS, selection=["clients", "goals"], resources=resources, tags=range_tags(client_months)
        )
    finally:
        proxy.close()
    assert result.success
    assert len(goal_requests) == 30
    assert goal_requests.pop(troubled[0]) == 7  # six failures, then the resumption
    assert set(goal_requests.values()) == {1}
    files = str(tmp_path / "data" / "parquet" / "goals" / "*" / "data.parquet")
    with duckdb.connect() as connection:
        stored = connection.execute(f"select count(*) from read_parquet('{files}')").fetchone()[0]
    assert stored == sum(len(goals) for goals in sandbox.firm.goals_by_client.values())


def test_taking_back_a_record_takes_back_its_child_rows_too(tmp_path):
    """A newer copy of a task replaces the older copy's custom fields, not only its own row."""
    store = ParquetStore(tmp_path / "parquet")
    write = StagedWrite(store)
    rows = [
        {"task_uuid": task, "custom_field_uuid": f"{task}-{n}", "value": str(n)}
        for task in ("older", "other")
        for n in range(3)
    ]
    write.write(TASK_CUSTOM_FIELDS, arrow(TASK_CUSTOM_FIELDS, rows))
    taken_back = write.drop_rows(TASK_CUSTOM_FIELDS, TASK_CUSTOM_FIELDS.record_key, {"older"})
    write.write(TASK_CUSTOM_FIELDS, arrow(TASK_CUSTOM_FIELDS, [{**rows[0], "value": "newer"}]))
    write.commit()
    assert taken_back.num_rows == 3
    stored = pq.read_table(store.path_of(TASK_CUSTOM_FIELDS)).to_pylist()
    assert sorted((r["task_uuid"], r["value"]) for r in stored) == [
        ("older", "newer"),
        ("other", "0"),
        ("other", "1"),
        ("other", "2"),
    ]


def test_a_file_written_before_a_column_existed_reads_with_it_null(tmp_path):
    """A file from an older version lacks columns added since (`seen_at`, say), and one another
    writer made may type a column its own way: both read as today's schema, and take new rows."""
    store = ParquetStore(tmp_path / "parquet")
    old = arrow(TASKS, [{"uuid": "t1", "position": 7}]).drop_columns(["seen_at"])
    old = old.set_column(old.schema.get_field_index("position"), "position", old["position"].cast(pa.int16()))
    path = store.path_of(TASKS)
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)

    stored = store.read(TASKS)
    assert stored.schema == TASKS.schema
    assert store.read(TASKS, columns=["seen_at", "position"]).to_pylist() == [
        {"seen_at": None, "position": 7}
    ]
    write = StagedWrite(store)
    write.write(TASKS, stored)
    write.write(TASKS, arrow(TASKS, [{"uuid": "t2", "position": 8}]))
    write.commit()
    assert sorted(r["position"] for r in store.read(TASKS).to_pylist()) == [7, 8]


def test_an_aborted_or_discarded_staged_file_leaves_no_folder_but_keeps_stored_ones(tmp_path):
    """A write that stages a history batch (DuckDB fills it) and then aborts, or finds it changed
    nothing, leaves no trace; a folder holding a committed file stays."""
    store = ParquetStore(tmp_path / "parquet")
    log = history_table(CLIENTS)
    aborted = StagedWrite(store)
    made = aborted.file_for(log, aborted.id).parent
    aborted.abort()
    unchanged = StagedWrite(store)
    unchanged.file_for(log, unchanged.id)
    unchanged.discard(log, unchanged.id)
    unchanged.commit()
    assert not made.exists() and not list((tmp_path / "parquet").rglob("batch=*"))

    stored = StagedWrite(store)
    stored.write(log, log.schema.empty_table(), ["kept"])
    stored.commit()
    again = StagedWrite(store)
    again.file_for(log, "kept")
    again.discard(log, "kept")
    again.abort()
    assert store.path_of(log, "kept").exists()


def test_an_unreachable_api_fails_the_sync_within_a_minute_in_one_clear_line(tmp_path):
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    env = clean_env(
        {
            "PLANNR_BASE_URL": closed,
            "PLANNR_API_TOKEN": "t",
            "DAGSTER_HOME": str(tmp_path / "home"),
            "PLANNR_DATA_DIR": str(tmp_path / "data"),
        }
    )
    sync = start_cli("sync", env=env, cwd=tmp_path)
    out, err = sync.communicate(timeout=120)
    assert sync.returncode == 1
    assert time.monotonic() - started < 60
    assert f"could not connect to {closed} (connection refused). Check PLANNR_BASE_URL" in err
    assert "remaining steps skipped: the API is unreachable" in err
    summary = err.split("sync FAILED:")[-1]
    assert "not tried" not in summary  # the steps skipped after it are not failures of their own
    assert "Traceback" not in err


def test_sigterm_stops_the_sync_with_143_and_leaves_stored_data_as_it_was(make_sandbox, tmp_path):
    import signal
    import time

    sandbox = make_sandbox(clients=300, latency_ms=100)
    env = sandbox_env(sandbox, tmp_path, PLANNR_MAX_CONCURRENCY="2")
    sync = start_cli("sync", "--select", "clients,goals", env=env, cwd=tmp_path)
    deadline = time.monotonic() + 90
    while (
        sandbox.requests["/api/v1/account"] == 0 or sum(sandbox.requests.values()) < 20
    ):  # into the goals fan-out
        assert time.monotonic() < deadline and sync.poll() is None, "sync never got going"
        time.sleep(0.1)
    os.killpg(sync.pid, signal.SIGTERM)
    out, err = sync.communicate(timeout=120)
    assert sync.returncode == 143, err[-2000:]
    assert "sync stopped by SIGTERM" in err
    assert not list((tmp_path / "data" / "parquet").glob("**/*.tmp"))  # the interrupted step cleaned up
    assert not list(
        (tmp_path / "data" / "parquet").glob("goals/*/data.parquet")
    )  # goals never landed half-way


def test_a_record_shown_on_two_pages_is_stored_once(lying):
    """Page-number paging over a list that shifts can show a record twice."""
    _, proxy, data_dir, resources = lying
    before = stored_clients(data_dir)
    first_page: list[dict] = []
    shifted: list[bool] = []

    def repeat_a_record(path, query, body):
        if query.get("page") == "1":
            first_page[:] = body["data"][:1]
        elif query.get("page") == "2" and first_page and not shifted:  # once: a transient shift
            shifted.append(True)
            body["data"] = first_page + body["data"][:-1]  # one from page 1 again, one pushed off
        return body

    proxy.lies[ACCOUNTS] = repeat_a_record
    result = materialise_clients(resources)
    assert shifted and result.success  # the re-read found the record the shift pushed off
    stored = stored_clients(data_dir)
    assert len(stored) == len({row[0] for row in stored}) == 1200
    assert stored == before


@pytest.mark.parametrize("shift", [timedelta(days=1), -timedelta(days=1)], ids=["newer", "older"])
def test_a_record_shown_twice_keeps_its_newest_copy(lying, shift):
    """Page 1 is always read first; the last page shows one of its records again, changed, with
    an updated_at a day later (it must replace page 1's copy) or a day earlier (it must not).
    The lie holds on the re-read too, so neither "first wins" nor "last wins" passes."""
    _, proxy, data_dir, resources = lying
    shown: dict = {}

    def show_again(path, query, body):
        if query.get("page") == "1" and "record" not in shown:
            record = shown["record"] = json.loads(json.dumps(body["data"][0]))
            updated = datetime.fromisoformat(record["updated_at"]) + shift
            shown["copy"] = {**record, "first_name": "Shown-Again", "updated_at": updated.isoformat()}
        elif query.get("page") == "3" and "copy" in shown:
            body["data"].append(shown["copy"])
        return body

    proxy.lies[ACCOUNTS] = show_again
    result = materialise_clients(resources)
    assert "copy" in shown and result.success
    rows = data_dir.query("select first_name from clients where uuid = ?", [shown["record"]["uuid"]])
    [(total, distinct)] = data_dir.query("select count(*), count(distinct uuid) from clients")
    assert total == distinct == 1200
    expected = "Shown-Again" if shift > timedelta(0) else shown["record"]["first_name"]
    assert rows == [(expected,)]


def test_a_listing_that_grows_while_it_is_read_is_read_to_its_new_end(make_sandbox, tmp_path):
    """Clients created while the listing is read (oldest first) land on pages that did not exist
    when page 1 was read; they are fetched too, and the completeness check holds."""
    import uuid as uuids
    from datetime import UTC, datetime

    sandbox = make_sandbox(clients=990)  # two pages; twenty new clients make a third
    proxy = LyingApi(sandbox.url)
    grown = []

    def grow_once(query):
        if query.get("page") == "2" and query.get("filter[type]") == "client" and not grown:
            now = datetime.now(UTC).replace(microsecond=0).isoformat()
            for template in sandbox.firm.clients[:20]:
                new = {**template, "uuid": str(uuids.uuid4()), "created_at": now, "updated_at": now}
                sandbox.firm.clients.append(new)
                sandbox.firm.goals_by_client[new["uuid"]] = []
            grown.append(True)

    proxy.before[ACCOUNTS] = grow_once
    try:
        resources = resources_for(proxy.url, sandbox.options.token, tmp_path / "data")
        result = materialise_clients(resources)
    finally:
        proxy.close()
    assert grown
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]
    stored = {row[0] for row in stored_clients(StoredData(tmp_path / "data"))}
    assert stored == {c["uuid"] for c in sandbox.firm.clients}


def _task_write(store: ParquetStore, name: str) -> StagedWrite:
    """A task and its custom field, named alike: two files one commit replaces together."""
    write = StagedWrite(store)
    write.write(TASKS, arrow(TASKS, [{"uuid": "t1", "name": name}]))
    write.write(
        TASK_CUSTOM_FIELDS,
        arrow(TASK_CUSTOM_FIELDS, [{"task_uuid": "t1", "custom_field_uuid": "f1", "value": name}]),
    )
    return write


def _names(store: ParquetStore) -> tuple[list, list]:
    return (
        store.read(TASKS).column("name").to_pylist(),
        store.read(TASK_CUSTOM_FIELDS).column("value").to_pylist(),
    )


def _killed_after_first_rename(write: StagedWrite, monkeypatch) -> list:
    """Commit `write`, killed between its first and second rename; return what was renamed."""
    from plannr_pipeline.storage import parquet_store

    renamed = []

    def rename_once_then_die(source, target):
        if renamed:
            raise KeyboardInterrupt("killed between two renames")
        renamed.append(target)
        os.rename(source, target)

    monkeypatch.setattr(parquet_store.os, "replace", rename_once_then_die)
    with pytest.raises(KeyboardInterrupt):
        write.commit()
    monkeypatch.undo()
    return renamed


def test_a_killed_commit_is_finished_before_a_newer_one_never_over_it(tmp_path, monkeypatch):
    store = ParquetStore(tmp_path / "parquet")
    _task_write(store, "first").commit()
    _killed_after_first_rename(_task_write(store, "A"), monkeypatch)
    _task_write(store, "B").commit()
    assert _names(store) == (["B"], ["B"])
    assert store.recover() == []
    assert _names(store) == (["B"], ["B"])
    assert not list(store.root.glob(".commit-*.json"))


def test_a_journal_older_than_the_store_is_never_applied(tmp_path):
    store = ParquetStore(tmp_path / "parquet")
    _task_write(store, "first").commit()
    old = _task_write(store, "old")
    journal = store.root / ".commit-old.json"
    journal.write_text(
        json.dumps(
            {
                "base_version": store.version(),
                "renames": [
                    [str(temp.relative_to(store.root)), str(target.relative_to(store.root))]
                    for target, temp in zip(
                        old.targets(),
                        old.staged_files_of(TASKS) + old.staged_files_of(TASK_CUSTOM_FIELDS),
                        strict=True,
                    )
                ],
                "removals": [],
            }
        )
    )
    journal.rename(store.root / ".commit-old.json.held")  # held back while a newer commit lands
    _task_write(store, "newer").commit()
    (store.root / ".commit-old.json.held").rename(journal)
    [said] = store.recover()
    assert said.startswith("discarded a commit made against version 1, older than the store's 2")
    assert _names(store) == (["newer"], ["newer"])
    assert not journal.exists() and not list(store.root.glob("**/.data.parquet.*.tmp"))


@pytest.mark.parametrize("planted", ["absolute", "climbing", "through a link"])
def test_recovery_leaves_a_journal_it_did_not_write_alone(tmp_path, planted):
    """A journal planted in the data folder names files outside it: nothing is renamed or deleted."""
    store = ParquetStore(tmp_path / "parquet")
    _task_write(store, "mine").commit()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    precious = outside / "data.parquet"
    precious.write_text("not ours")
    (outside / ".data.parquet.1-x.tmp").write_text("the attacker's")
    if planted == "through a link":
        (store.root / "link").symlink_to(outside)
        target, temp = "link/data.parquet", "link/.data.parquet.1-x.tmp"
    elif planted == "climbing":
        up = Path("..") / outside.name
        target, temp = str(up / precious.name), str(up / ".data.parquet.1-x.tmp")
    else:
        target, temp = str(precious), str(outside / ".data.parquet.1-x.tmp")
    journal = store.root / ".commit-planted.json"
    journal.write_text(
        json.dumps({"base_version": store.version(), "renames": [[temp, target]], "removals": [target]})
    )
    [said] = store.recover()
    assert "left alone a commit journal recovery does not trust (.commit-planted.json" in said
    assert precious.read_text() == "not ours" and journal.exists()
    assert _names(store) == (["mine"], ["mine"])
