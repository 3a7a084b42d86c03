"""History from the first sync: the sandbox moves on between syncs, and the history says exactly
what changed, no more; the analyst views give hand-checked answers."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.resources import PlannrApi
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer
from plannr_pipeline.sync import run_sync
from tests.lying_api import LyingApi
from tests.stored import StoredData

HISTORIED = ("clients", "goals", "tasks", "circles")


def query(stored: StoredData, sql: str, params: list | None = None) -> list[tuple]:
    return stored.query(sql, params)


def counts(data_dir: StoredData) -> dict[str, tuple]:
    return {
        t: query(data_dir, f"select count(*), count(valid_to), count(deleted_at) from {t}_history")[0]
        for t in HISTORIED
    }


@pytest.fixture(scope="module", params=["local", "lake"])
def moved(request, tmp_path_factory):
    """Synced, then the firm moves one step and is synced again; the counts after each sync.
    Once on each backend: the same history, whether stored locally or in the lake."""
    lake = request.getfixturevalue("lake_servers").new_lake() if request.param == "lake" else None
    with pytest.MonkeyPatch.context() as env:
        for name, value in (lake.env if lake else {}).items():
            env.setenv(name, value)  # the S3 credentials a lake run reads from its environment
        sandbox = SandboxServer(
            SandboxOptions(size=FirmSize(clients=60), token="history-token", rate_limit_per_minute=100_000)
        ).start()
        stored = StoredData(tmp_path_factory.mktemp("history") / "data", lake)
        resources = {
            "plannr": PlannrApi(
                base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000
            ),
            "storage": stored.storage(),
        }
        assert run_sync(resources_by_key=resources, echo=lambda _: None).ok
        first = counts(stored)
        sandbox.advance(1)
        assert run_sync(resources_by_key=resources, echo=lambda _: None).ok
        second = counts(stored)
        yield sandbox, stored, resources, first, second
        sandbox.stop()


def test_the_first_sync_records_one_version_of_everything(moved):
    sandbox, _, _, first, _ = moved
    firm_goals = sum(len(g) for g in sandbox.firm.goals_by_client.values())
    step = sandbox.changes[0]["counts"]
    assert first["clients"] == (
        len(sandbox.firm.clients) - step["clients"]["created"] + step["clients"]["deleted"],
        0,
        0,
    )
    assert (
        first["goals"][1:] == (0, 0)
        and first["goals"][0] == firm_goals - step["goals"]["created"] + step["goals"]["deleted"]
    )


def test_one_new_version_per_changed_record_and_deletions_marked(moved):
    sandbox, data_dir, _, first, second = moved
    change = sandbox.changes[0]
    for table in ("clients", "goals", "tasks"):
        created, updated, deleted = (change[table][k] for k in ("created", "updated", "deleted"))
        total, closed, gone = second[table]
        assert total == first[table][0] + len(created) + len(updated), table  # nothing else versioned
        assert closed == len(updated) + len(deleted), table
        assert gone == len(deleted), table
        for uuid in updated:  # exactly two versions, the second starting where the first ended
            versions = query(
                data_dir,
                f"select valid_from, valid_to, deleted_at from {table}_history where uuid = ? order by valid_from",
                [uuid],
            )
            assert len(versions) == 2 and versions[0][1] == versions[1][0] and versions[1][1] is None, (
                table,
                uuid,
            )
        for uuid in deleted:
            [(valid_to, deleted_at)] = query(
                data_dir,
                f"select valid_to, deleted_at from {table}_history where uuid = ? and valid_to is not null and deleted_at is not null",
                [uuid],
            )
            assert valid_to == deleted_at
            assert query(data_dir, f"select count(*) from {table} where uuid = ?", [uuid]) == [(0,)]
    assert second["circles"] == first["circles"]  # the step left circles alone


def test_the_new_version_has_the_new_values_and_current_tables_equal_the_api(moved):
    sandbox, data_dir, _, _, _ = moved
    change = sandbox.changes[0]
    goals = {g["uuid"]: g for gs in sandbox.firm.goals_by_client.values() for g in gs}
    for uuid in change["goals"]["updated"]:
        assert query(
            data_dir, "select progress from goals_history where uuid = ? and valid_to is null", [uuid]
        ) == [(int(goals[uuid]["progress"]),)]
    assigned = sandbox.firm.assignments
    for uuid in change["clients"]["updated"]:
        [(adviser,)] = query(
            data_dir,
            "select assigned_adviser_uuid from clients_history where uuid = ? and valid_to is null",
            [uuid],
        )
        assert adviser == assigned[uuid]["assigned_adviser"]
    assert {r[0] for r in query(data_dir, "select uuid from clients")} == {
        c["uuid"] for c in sandbox.firm.clients
    }
    assert {r[0] for r in query(data_dir, "select uuid from goals")} == set(goals)
    assert {r[0] for r in query(data_dir, "select uuid from tasks")} == {
        t["uuid"] for t in sandbox.firm.tasks
    }


def test_a_sync_with_no_change_adds_nothing(moved):
    _, data_dir, resources, _, second = moved

    def log_folder() -> dict[str, list]:
        if data_dir.lake:  # the event logs' data files, as the lake's catalog lists them
            return {
                t: data_dir.query(
                    f"select data_file from ducklake_list_files('plannr', '{t}_history_events')"
                )
                for t in HISTORIED
            }
        return {
            t: sorted(
                str(p.relative_to(data_dir.data_dir))
                for p in (data_dir.data_dir / "parquet" / f"{t}_history").rglob("*")
            )
            for t in HISTORIED
        }

    files = log_folder()
    assert run_sync(resources_by_key=resources, echo=lambda _: None).ok
    assert counts(data_dir) == second
    assert log_folder() == files  # not even an empty file or folder for the write that changed nothing


def test_a_run_that_fails_validation_records_no_version(moved, tmp_path):
    sandbox, data_dir, resources, _, _ = moved
    before = counts(data_dir)
    sandbox.advance(1)  # there is something new to record...
    proxy = LyingApi(sandbox.url)
    proxy.lies["/api/v1/task"] = lambda path, query, body: {
        **body,
        "data": body["data"][:-1],
    }  # one task short
    try:
        lied_to = {
            **resources,
            "plannr": PlannrApi(
                base_url=proxy.url, token=sandbox.options.token, rate_limit_per_minute=100_000
            ),
        }
        result = dg.materialize(ASSETS, selection=["tasks"], resources=lied_to, raise_on_error=False)
    finally:
        proxy.close()
    assert not result.success
    assert counts(data_dir) == before  # ...but a run that failed validation records none of it


def test_goal_progress_history_and_goal_progress_agree_with_a_hand_checked_goal(moved):
    sandbox, data_dir, _, _, _ = moved
    goal_uuid = sandbox.changes[0]["goals"]["updated"][0]
    rows = query(
        data_dir,
        "select progress, progress_change, valid_to is null from goal_progress_history where goal_uuid = ? order by valid_from",
        [goal_uuid],
    )
    assert len(rows) >= 2
    assert rows[1][1] == rows[1][0] - rows[0][0]  # the change is the difference of the two versions
    client_uuid = next(
        c for c, goals in sandbox.firm.goals_by_client.items() if any(g["uuid"] == goal_uuid for g in goals)
    )
    client = next(c for c in sandbox.firm.clients if c["uuid"] == client_uuid)
    adviser = next(
        s
        for s in sandbox.firm.staff
        if s["uuid"] == sandbox.firm.assignments[client_uuid]["assigned_adviser"]
    )
    [(client_name, adviser_name, progress)] = query(
        data_dir,
        "select client_name, adviser_name, progress from goal_progress where goal_uuid = ?",
        [goal_uuid],
    )
    assert (client_name, adviser_name) == (client["name"], adviser["name"])
    assert progress == rows[-1][0]


def test_on_track_follows_the_documented_rule(tmp_path):
    """goal_progress.on_track on hand-made goals: the rule in storage/views.py, case by case."""
    from plannr_pipeline.storage.views import GOAL_PROGRESS

    with duckdb.connect() as db:
        db.execute("create table staff (uuid varchar, name varchar)")
        db.execute("create table clients (uuid varchar, name varchar, assigned_adviser_uuid varchar)")
        db.execute("insert into clients values ('c', 'Client', null)")
        db.execute("""create table goals as select * from (values
            ('halfway-ahead', 60, now() - interval 100 day, now() + interval 100 day),
            ('halfway-behind', 40, now() - interval 100 day, now() + interval 100 day),
            ('done', 100, now() - interval 400 day, now() - interval 1 day),
            ('late', 99, now() - interval 400 day, now() - interval 1 day),
            ('no-date', 10, now() - interval 10 day, null)
        ) t(uuid, progress, created_at, complete_goal_by)""")
        db.execute("""create or replace table goals as select uuid, 'n' as name, 'c' as client_uuid, 100 as target_amount_minor,
                      'GBP' as target_currency, progress, created_at, complete_goal_by from goals""")
        verdicts = dict(db.execute(f"select goal_uuid, on_track from ({GOAL_PROGRESS.sql})").fetchall())
    assert verdicts == {
        "halfway-ahead": True,
        "halfway-behind": False,
        "done": True,
        "late": False,
        "no-date": None,
    }


def test_two_runs_of_the_same_partition_at_once_record_a_change_once(moved, monkeypatch):
    import threading
    import time

    from plannr_pipeline.storage import history
    from plannr_pipeline.storage.convert import to_utc, uk_day

    def slow_events_for(*args, **kwargs):  # widen the window between reading history and committing
        found = events_for(*args, **kwargs)
        time.sleep(1.0)
        return found

    events_for = history.events_for
    monkeypatch.setattr(history, "events_for", slow_events_for)

    sandbox, data_dir, resources, _, _ = moved
    sandbox.advance(1)
    changed = sandbox.changes[-1]["clients"]["updated"][0]
    month = uk_day(to_utc(next(c for c in sandbox.firm.clients if c["uuid"] == changed)["created_at"]))[:7]
    before = query(data_dir, "select count(*) from clients_history where uuid = ?", [changed])[0][0]
    outcomes = []

    def run():
        outcomes.append(
            dg.materialize(
                ASSETS, selection=["clients"], partition_key=month, resources=resources, raise_on_error=False
            ).success
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcomes == [True, True]
    assert (
        query(data_dir, "select count(*) from clients_history where uuid = ?", [changed])[0][0] == before + 1
    )


def test_a_long_history_is_folded_into_few_files_with_every_event_kept(tmp_path):
    """Forty writes, each a new version: the log is folded once past its file limit, and the
    `circles_history` events are exactly the forty."""
    from datetime import UTC, datetime

    from plannr_pipeline.storage import history
    from plannr_pipeline.storage.commit import CommitRequest, Scope, commit
    from plannr_pipeline.storage.normalise import arrow
    from plannr_pipeline.storage.parquet_store import ParquetStore, StagedWrite
    from plannr_pipeline.storage.tables import CIRCLES

    store = ParquetStore(tmp_path / "parquet")
    log = history.history_table(CIRCLES)
    writes = 40  # past the fold's limit of 32 files
    for number in range(writes):
        now = datetime.now(UTC)
        write = StagedWrite(store)
        write.write(CIRCLES, arrow(CIRCLES, [{"uuid": "c1", "name": f"version {number}", "seen_at": now}]))
        commit(store, write, CommitRequest((CIRCLES,), (), Scope.whole_table(), now, now))
    assert len(store.files_of(log)) <= 32
    events = store.read(log, columns=["name", "change"])
    assert sorted(events.column("name").to_pylist()) == sorted(f"version {n}" for n in range(writes))
    assert set(events.column("change").to_pylist()) == {"upsert"}
