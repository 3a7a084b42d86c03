"""The rolling refresh (`plannr-pipeline refresh --for SECONDS`) as real processes against the
sandbox over HTTP: after the firm moves on it brings every change in, with history; killed
half-way it leaves data exact; beside a sync it keeps the token under its limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.compute as pc
import pytest

from plannr_pipeline.api.budget import RequestBudget
from plannr_pipeline.api.budget_share import BudgetShare
from plannr_pipeline.refresh.pace import Pace
from plannr_pipeline.storage.goal_reads import goals_read_order, record_goal_reads
from plannr_pipeline.storage.parquet_store import ParquetStore, StagedWrite
from plannr_pipeline.storage.tables import ALL_TABLES, GOAL_READS
from tests.cli import run_cli, sandbox_env, start_cli, stop_group
from tests.lying_api import LyingApi

# Every current table, less when a record was seen, and imports (they progress on the sandbox's clock).
COMPARED = {
    t.name: f"select * exclude (seen_at) from {t.name}"
    if "seen_at" in t.schema.names
    else f"select * from {t.name}"
    for t in ALL_TABLES
    if not t.name.startswith("import") and t.name not in ("rejected_records", "erasure_log")
}


def rows(data: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(data / "plannr.duckdb"), read_only=True) as connection:
        return sorted(connection.execute(sql, params or []).fetchall(), key=repr)


def assert_same_as_a_fresh_sync(sandbox, tmp_path: Path, data: Path) -> None:
    fresh = tmp_path / "fresh"
    result = run_cli("sync", env=sandbox_env(sandbox, fresh), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for table, sql in COMPARED.items():
        assert rows(data, sql) == rows(fresh / "data", sql), table


@pytest.fixture
def synced(make_sandbox, tmp_path):
    """A 60-client firm synced, then moved on three steps (goals progressed, clients reassigned,
    records created and deleted)."""
    sandbox = make_sandbox(60)
    env = sandbox_env(sandbox, tmp_path)
    result = run_cli("sync", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    changes = sandbox.advance(3)
    return sandbox, env, tmp_path / "data", changes


def test_refresh_brings_every_change_in_with_history_and_seen_at(synced, tmp_path):
    sandbox, env, data, changes = synced
    started = datetime.now(UTC)
    result = run_cli("refresh", "--for", "25", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refresh finished" in result.stdout

    updated = {u for c in changes for u in c["goals"]["updated"]} - {
        u for c in changes for u in c["goals"]["deleted"]
    }
    assert updated
    for uuid in updated:  # a second version, the current one
        assert rows(
            data,
            "select count(*), count(*) filter (valid_to is null) from goals_history where uuid = ?",
            [uuid],
        ) == [(2, 1)]
    deleted = {u for c in changes for u in c["goals"]["deleted"]}
    for uuid in deleted:
        assert rows(data, "select count(*) from goals where uuid = ?", [uuid]) == [(0,)]
        assert rows(
            data, "select count(*) from goals_history where uuid = ? and deleted_at is not null", [uuid]
        ) == [(1,)]
    for uuid in {u for c in changes for u in c["clients"]["updated"]} - {
        u for c in changes for u in c["clients"]["deleted"]
    }:
        assert rows(data, "select count(*) from clients_history where uuid = ?", [uuid]) == [(2,)]
    for uuid in {u for c in changes for u in c["clients"]["deleted"]}:
        assert rows(
            data, "select count(*) from clients_history where uuid = ? and deleted_at is not null", [uuid]
        ) == [(1,)]

    # Every record it re-read was seen again: every client's goals, and (its sweep) every client.
    for table in ("goals", "clients", "goal_reads", "tasks", "circles"):
        [(stale,)] = rows(data, f"select count(*) from {table} where seen_at < ?", [started])
        assert stale == 0, table
    # The UI shows how fresh each asset is, and the refresh's progress on goals.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for name in ("clients", "goals", "tasks", "circles"):
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            assert event.asset_materialization.metadata["oldest_seen_at"].value >= started.timestamp(), name
        [observation] = instance.fetch_observations(dg.AssetKey("goals"), limit=1).records
        progress = observation.asset_observation.metadata["refresh_progress"].value
        assert progress.startswith("oldest goals read "), progress
    assert_same_as_a_fresh_sync(sandbox, tmp_path, data)


def test_a_refresh_killed_half_way_leaves_data_exact(synced, tmp_path):
    sandbox, env, data, changes = synced
    log = tmp_path / "refresh.log"
    for delay in (0.0, 0.4):
        with open(log, "w") as out:
            process = start_cli(
                "refresh", "--for", "60", env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while "rolling refresh:" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(delay)  # after a batch landed, or in the middle of the next one
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert rows(data, "select count(*) from goals")[0][0] > 0  # what is stored still reads

    result = run_cli("refresh", "--for", "20", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each change recorded once, however many runs died on the way.
    [(duplicated,)] = rows(
        data,
        "select count(*) from (select uuid, valid_from from goals_history group by all having count(*) > 1)",
    )
    assert duplicated == 0
    for uuid in {u for c in changes for u in c["goals"]["updated"]} - {
        u for c in changes for u in c["goals"]["deleted"]
    }:
        assert rows(data, "select count(*) from goals_history where uuid = ?", [uuid]) == [(2,)]
    # The killed runs were ended, not left STARTED for the schedule to wait on.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="rolling_refresh_job"))
        assert [r.status for r in runs].count(dg.DagsterRunStatus.FAILURE) == 2
        assert all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) for r in runs)
    assert_same_as_a_fresh_sync(sandbox, tmp_path, data)


def test_a_refresh_and_a_sync_of_one_token_stay_under_its_limit(make_sandbox, tmp_path):
    """Two processes of one token at once, against a sandbox that answers 429 past 240 requests in
    any minute: the sync (300 clients: more than a minute's worth) and a refresh beside it."""
    limit = 240
    sandbox = make_sandbox(300, rate_limit_per_minute=limit)
    env = sandbox_env(sandbox, tmp_path, PLANNR_RATE_LIMIT_PER_MINUTE=str(limit))
    started = time.monotonic()  # every request from here on is counted, the seeding sync's too
    seeded = run_cli("sync", "--select", "clients", env=env, cwd=tmp_path)  # something to refresh
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    seeding = sandbox.stats()["requests"]
    refresh = start_cli(
        "refresh", "--for", "75", env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sync = run_cli(
            "sync", env={**env, "DAGSTER_HOME": str(tmp_path / "home2")}, cwd=tmp_path, timeout=600
        )
        assert sync.returncode == 0, sync.stderr[-2000:]
        assert refresh.wait(timeout=300) == 0
    finally:
        if refresh.poll() is None:
            stop_group(refresh)
    minutes = (time.monotonic() - started) / 60
    served = sandbox.stats()
    assert served["by_status"].get("429", 0) == 0, served["by_status"]
    assert served["requests"] <= limit * (minutes + 1)
    assert served["requests"] - seeding > limit * 0.8  # both did work: the test exercised the limit


# A 6-second window: RequestBudget takes slots from its log in chunks of a quarter second's worth
# (here 5) and drops those not spent within 1/120 of the window; the share spends a twelfth
# of itself at a time (here 5). With a 2-second window the chunks were 15, two thirds of each
# dropped, and the budget ran dry after 40 grants: the count sat on the test's bound.
SHARE_WINDOW = 6.0


def _take_share(folder: Path, seconds: float) -> tuple[float, list[float], float]:
    """Half of a 120-per-6-seconds budget, asked as fast as it grants for `seconds`: when it
    started, when each slot was granted, and how late the event loop ran at worst meanwhile."""
    budget = RequestBudget(
        "share-test", 120, directory=folder, window_seconds=SHARE_WINDOW, follow_server_limit=False
    )
    share = BudgetShare(budget, 0.5)
    taken: list[float] = []
    worst_lag = 0.0

    async def take() -> None:
        while True:
            await share.acquire()
            taken.append(time.monotonic())

    async def watch_the_loop() -> None:
        nonlocal worst_lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.02)
            worst_lag = max(worst_lag, time.monotonic() - before - 0.02)

    async def both() -> None:
        watcher = asyncio.create_task(watch_the_loop())
        try:
            async with asyncio.timeout(seconds):
                await take()
        except TimeoutError:
            pass
        finally:
            watcher.cancel()

    started = time.monotonic()
    try:
        asyncio.run(both())
    finally:
        budget.close()
    return started, taken, worst_lag


def test_a_budget_share_leaves_the_rest_of_the_window_and_paces_itself(tmp_path):
    """Half of a 120-per-6-seconds budget: 60 in the window, five every half second, however fast
    it asks.

    At most 60, and spread out, whatever the machine does. At least 40 only means something when
    the machine let the process run: starved (its event loop late by a tenth of a second or more,
    as on a loaded CI machine), the slots it took age out before it spends them (RequestBudget
    drops them, by design) and it gets fewer. Such a run is tried again, three times at most."""
    lags = []
    for attempt in range(3):
        started, taken, lag = _take_share(tmp_path / str(attempt), SHARE_WINDOW - 0.1)
        assert len(taken) <= 60  # the share of the window, not the whole of it (120)
        assert sum(1 for t in taken if t - started < 1.4) <= 20  # spread out, not all 60 at once
        if lag < 0.1:
            assert len(taken) >= 40, f"{len(taken)} slots in a window, the loop never late by 0.1 s"
            return
        lags.append(f"{len(taken)} slots, loop late by up to {lag:.2f} s")
    pytest.fail("every run was starved, so the share's pace could not be judged: " + "; ".join(lags))


def test_a_bad_reserve_is_one_line_and_exit_2(make_sandbox, tmp_path):
    sandbox = make_sandbox(5)
    result = run_cli(
        "refresh",
        "--for",
        "5",
        env=sandbox_env(sandbox, tmp_path, PLANNR_REFRESH_RESERVE="most"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: PLANNR_REFRESH_RESERVE must be a share from 0 to 0.9 (0.02 leaves 2% of the budget to others), got 'most'."
    ]


def test_the_progress_line_says_how_old_and_how_long():
    pace = Pace()
    pace.add(clients=490, seconds=60)
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    line = pace.describe(now - timedelta(minutes=14), behind=9_310, total=10_000, now=now)
    assert (
        line == "oldest goals read 14 min ago; 9,310 of 10,000 clients to go, at this rate all within 19 min"
    )
    assert pace.describe(None, behind=0, total=10, now=now).startswith("some clients' goals never read yet")


def test_goals_are_read_never_read_first_then_longest_ago_and_a_later_read_wins(synced):
    _, _, data, _ = synced
    store = ParquetStore(data / "parquet")
    order = goals_read_order(store)
    first, second, *rest = order.column("client_uuid").to_pylist()
    assert order.column("seen_at").null_count == 0  # the sync recorded every client's goals read
    later = datetime.now(UTC)
    record_goal_reads(store, {first: later, second: later + timedelta(seconds=1)})
    assert goals_read_order(store).column("client_uuid").to_pylist()[-2:] == [first, second]
    record_goal_reads(store, {second: later - timedelta(days=1)})  # an older read, committed late
    assert goals_read_order(store).column("client_uuid").to_pylist()[-1] == second

    never = rest[0]
    kept = goals_read_order(store).filter(pc.not_equal(goals_read_order(store).column("client_uuid"), never))
    with store.lock():
        write = StagedWrite(store)
        write.write(GOAL_READS, kept.select(["client_uuid", "seen_at"]))
        write.commit_locked()
    assert goals_read_order(store).column("client_uuid").to_pylist()[0] == never


def test_one_client_the_api_answers_wrongly_for_holds_up_no_other(synced, tmp_path):
    """One client's goals listing promises a goal it does not deliver, every time: its goals stay
    as stored, and every other client's are re-read and the sweep still comes."""
    sandbox, env, data, _ = synced
    [(liar,)] = rows(data, "select client_uuid from goal_reads order by client_uuid limit 1")
    before = rows(data, "select * exclude (seen_at) from goals where client_uuid = ?", [liar])
    proxy = LyingApi(sandbox.url)

    def one_more_than_sent(path, query, body):
        body["meta"]["total"] += 1
        return body

    proxy.lies[f"/api/v1/client/{liar}/goal"] = one_more_than_sent
    started = datetime.now(UTC)
    try:
        result = run_cli("refresh", "--for", "20", env={**env, "PLANNR_BASE_URL": proxy.url}, cwd=tmp_path)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert rows(data, "select * exclude (seen_at) from goals where client_uuid = ?", [liar]) == before
    [(stale,)] = rows(
        data, "select count(*) from goal_reads where seen_at < ? and client_uuid <> ?", [started, liar]
    )
    assert stale == 0  # every other client's goals re-read
    [(swept,)] = rows(data, "select count(*) from tasks where seen_at < ?", [started])
    assert swept == 0  # and the sweep came
