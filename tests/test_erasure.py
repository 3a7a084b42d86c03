"""The right to erasure and retention, end to end: a sandbox over HTTP on 127.0.0.1 synced twice
by the real command (so the client has two history versions, goals, a task, a circle and failed
import rows), erased by the real command, synced again; every file of the data folder and of
DAGSTER_HOME is then read column by column and byte by byte for the client's personal values."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.instance.ref import InstanceRef

from plannr_pipeline.cli import main
from plannr_pipeline.defs.erasure import erase_client_job
from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.erasure.retention import Period, apply_retention
from plannr_pipeline.local_servers import Lake
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.formats import iso_london
from plannr_pipeline.sandbox.people import account_summary
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer
from plannr_pipeline.storage.commit import CommitRequest, Scope, commit
from plannr_pipeline.storage.erasure import append_log, erased_uuids
from plannr_pipeline.storage.parquet_store import ParquetStore, StagedWrite
from plannr_pipeline.storage.tables import CLIENTS, REJECTED_RECORDS
from plannr_pipeline.storage.warehouse import Warehouse
from tests.cli import run_cli, sandbox_env, start_cli
from tests.stored import StoredData

ROOT = Path(__file__).resolve().parents[1]
REASON = "article 17 request 2026-12-01"


def sync(env: dict) -> subprocess.CompletedProcess:
    done = run_cli("sync", env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def query(data: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data / "plannr.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def found_in(folders: list[Path], values: list[str]) -> list[str]:
    """Where any of `values` is found: each Parquet file's columns read as text (Parquet
    compresses, so its bytes alone prove little), and every file's raw bytes."""
    hits = []
    lowered = [v.lower() for v in values]
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            raw = path.read_bytes().lower()
            hits += [f"{path} (bytes): {v}" for v in lowered if v.encode() in raw]
            if path.name.endswith(".parquet") or ".data.parquet." in path.name:
                table = pq.read_table(path)
                for name in table.column_names:
                    text = "\n".join(str(x) for x in table.column(name).cast(pa.string()).to_pylist()).lower()
                    hits += [f"{path} [{name}]: {v}" for v in lowered if v in text]
    return hits


def pick_client(sandbox: SandboxServer) -> dict:
    """A client with goals, named in the failed rows of imports (the first 50 are), whose last
    name no other account shares (so its absence can be proven byte by byte)."""
    firm = sandbox.firm
    last_names = [a["last_name"] for a in firm.accounts]
    return next(
        c
        for c in firm.clients[:50]
        if len(firm.goals_by_client.get(c["uuid"], [])) >= 2 and last_names.count(c["last_name"]) == 1
    )


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    scenario = erasure_scenario(tmp_path_factory.mktemp("erasure"))
    yield scenario
    scenario["sandbox"].stop()


def erasure_scenario(tmp: Path, lake: Lake | None = None, look=None) -> dict:
    """A sandbox synced twice (the client renamed in between: two versions), the client erased by
        the command, then a third sync; with `lake`, all of it on that lake. What was seen on the way;
    `look(values)` says where the values are stored (default: the data folder's files)."""
    sandbox = SandboxServer(
        SandboxOptions(size=FirmSize(clients=60), token="erasure-token", rate_limit_per_minute=100_000)
    ).start()
    env = sandbox_env(sandbox, tmp, **(lake.env if lake else {}))
    data, home = tmp / "data", tmp / "home"
    stored = StoredData(data, lake)

    def query(_data: Path, sql: str) -> list[tuple]:
        return stored.query(sql)

    firm = sandbox.firm
    for i, client in enumerate(firm.clients):  # unmodelled personal fields: kept in extra_json
        client["date_of_birth"] = (date(1940, 1, 1) + timedelta(days=97 * i)).isoformat()
        client["mobile_phone"] = f"+44 7700 9{i:05d}"
    target = pick_client(sandbox)
    # A circle and a task that name it.
    circle = firm.circles[0]
    if target["uuid"] not in {a["uuid"] for a in circle["accounts"]}:
        circle["accounts"].append(account_summary(target))
    task = firm.tasks[0]
    task["assigned_to"] = account_summary(target)
    sync(env)
    old_name = target["name"]
    # A second version: renamed in Plannr (both names must go).
    target["first_name"] = "Philippa"
    target["name"] = f"Philippa {target['last_name']}"
    target["updated_at"] = iso_london(datetime.now(UTC).replace(microsecond=0))
    sandbox.advance(1)  # the rest of the firm moves on too
    assert any(c["uuid"] == target["uuid"] for c in firm.clients), "the step deleted the chosen client"
    second = sync(env)
    values = [
        old_name,
        target["name"],
        target["email"],
        target["last_name"],
        target["mobile_phone"],
        target["date_of_birth"],
    ]
    before = {
        "hits": look(values) if look else found_in([data], values),
        "versions": query(data, f"select count(*) from clients_history where uuid = '{target['uuid']}'")[0][
            0
        ],
        "goals": query(data, f"select count(*) from goals where client_uuid = '{target['uuid']}'")[0][0],
        "others": query(
            data,
            f"select * exclude (seen_at) from clients where uuid <> '{target['uuid']}' order by uuid",
        ),
        "task_refs": query(data, f"select count(*) from tasks where assigned_to_uuid = '{target['uuid']}'")[
            0
        ][0],
        "other_versions": query(
            data, f"select count(*) from clients_history where uuid <> '{target['uuid']}'"
        )[0][0],
    }
    started = time.monotonic()
    erase = run_cli("erase", "--client", target["uuid"], "--reason", REASON, env=env, cwd=ROOT)
    erase_seconds = time.monotonic() - started
    assert erase.returncode == 0, erase.stderr
    after_erase = found_in([data, home], values)
    third = sync(env)
    return {
        "sandbox": sandbox,
        "env": env,
        "data": data,
        "home": home,
        "target": target,
        "values": values,
        "before": before,
        "erase": erase,
        "erase_seconds": erase_seconds,
        "after_erase": after_erase,
        "second": second,
        "third": third,
    }


def test_the_client_had_personal_data_everywhere_before(erased):
    before = erased["before"]
    assert before["versions"] == 2 and before["goals"] >= 2
    hit_tables = {hit.split("/parquet/")[1].split("/")[0] for hit in before["hits"] if "/parquet/" in hit}
    assert {"clients", "clients_history", "circle_accounts", "import_errors"} <= hit_tables
    assert any(erased["target"]["mobile_phone"].lower() in h and "extra_json" in h for h in before["hits"])
    assert before["task_refs"] >= 1  # the task assigned to it


def test_no_byte_of_it_is_left_in_the_data_folder_or_the_instance(erased):
    assert erased["after_erase"] == []
    assert found_in([erased["data"], erased["home"]], erased["values"]) == []  # after the later sync too
    uuid = erased["target"]["uuid"]
    for relation in ("clients", "clients_history", "circle_accounts", "task_assignees"):
        column = "account_uuid" if relation in ("circle_accounts", "task_assignees") else "uuid"
        assert query(erased["data"], f"select count(*) from {relation} where {column} = '{uuid}'") == [(0,)]
    for relation in ("goals", "goals_history"):
        assert query(erased["data"], f"select count(*) from {relation} where client_uuid = '{uuid}'") == [
            (0,)
        ]
    for relation in ("tasks", "tasks_history"):
        assert query(
            erased["data"], f"select count(*) from {relation} where assigned_to_uuid = '{uuid}'"
        ) == [(0,)]


def test_every_other_client_is_intact(erased):
    data, uuid = erased["data"], erased["target"]["uuid"]
    others = query(data, f"select * exclude (seen_at) from clients where uuid <> '{uuid}' order by uuid")
    assert others == erased["before"]["others"]
    assert query(data, "select count(*) from clients_history")[0][0] == erased["before"]["other_versions"]


def test_a_later_sync_does_not_bring_it_back_and_says_the_api_still_sends_it(erased):
    assert "the API still sends 1 client(s) erased here" in erased["third"].stdout
    assert "erased here" not in erased["second"].stdout


def test_erasure_log_says_who_when_why_and_what_in_the_database(erased):
    [(uuid, action, reason, removed)] = query(
        erased["data"], "select uuid, action, reason, rows_removed from erasure_log"
    )
    assert (uuid, action, reason) == (erased["target"]["uuid"], "erase", REASON)
    removed = json.loads(removed)
    assert removed["clients"] == 1 and removed["clients_history"] == 2 and removed["goals"] >= 2
    assert (
        removed["circle_accounts"] >= 1 and removed["task_assignees"] >= 1 and removed["import_errors"] >= 1
    )
    assert "clients_history: 2 row(s) removed" in erased["erase"].stdout
    print(f"erase took {erased['erase_seconds']:.1f}s (process start included)")


def test_bad_input_is_one_line_and_exit_2(erased, tmp_path, monkeypatch, capsys):
    # The command as its own process once; the other mistakes through the same `main`, in-process
    # (each process costs seconds of imports).
    env = {**erased["env"], "PLANNR_DATA_DIR": str(tmp_path / "none")}
    done = run_cli("retention", env={**env, "PLANNR_HISTORY_RETENTION": "6 years"}, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: PLANNR_HISTORY_RETENTION='6 years' is not a period: write a whole number (1 or more) and a unit, "
        "e.g. 6y, 18m, 8w, 90d (or 'forever')"
    ]
    monkeypatch.setenv("PLANNR_DATA_DIR", str(tmp_path / "none"))
    for args, said in [
        (("erase", "--client", "Ann Smith", "--reason", "x"), "is not a uuid"),
        (("erase", "--client", erased["target"]["uuid"], "--reason", " "), "--reason is empty"),
        (("erase", "--client", erased["target"]["uuid"]), "required: --reason"),
        (
            ("erase", "--client", erased["target"]["uuid"], "--reason", "x", "--firm", "nosuch"),
            "no firm file",
        ),
        (
            ("unerase", "--client", "0" * 8 + "-0000-0000-0000-" + "0" * 12, "--reason", "x"),
            "not erased here",
        ),
    ]:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err


def test_retention_drops_exactly_the_versions_past_the_period(erased, tmp_path):
    data = copy_of(erased["data"], tmp_path)
    store = ParquetStore(data / "parquet")
    glob = str(data / "parquet" / "clients_history" / "*" / "data.parquet")
    events = f"read_parquet('{glob}', union_by_name = true, hive_partitioning = false)"
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        # The second sync's events: what closes a first version, or a deletion.
        [(second,)] = db.execute(f"select max(valid_from) from {events}").fetchall()
        expected = set(
            db.execute(
                f"""select uuid, valid_from from (
                      select uuid, valid_from, change, lead(valid_from) over (partition by uuid order by valid_from) next_at
                      from {events})
                    where next_at <= $second or (change = 'delete' and valid_from <= $second)""",
                {"second": second},
            ).fetchall()
        )
        everything = set(db.execute(f"select uuid, valid_from from {events}").fetchall())
    assert expected and expected < everything
    period = Period(6, "y")
    # Cutoff just before the latest sync: nothing has been superseded that long.
    early = apply_retention(store, period, None, now=period_later(second - timedelta(seconds=1)))
    assert all(changed.removed == 0 for changed in early.values())
    done = apply_retention(store, period, None, now=period_later(second + timedelta(microseconds=1)))
    with duckdb.connect() as db:
        kept = set(db.execute(f"select uuid, valid_from from {events}").fetchall())
    assert kept == everything - expected and done["clients_history"].removed == len(expected)


def test_deleted_records_lose_their_personal_fields_after_their_own_period(erased, tmp_path):
    data = copy_of(erased["data"], tmp_path)
    store = ParquetStore(data / "parquet")
    names = "select uuid, count(name), count(email), count(extra_json), count(role) from clients_history group by uuid order by uuid"
    before = query(data, names)
    [(deleted_at,)] = query(data, "select max(deleted_at) from clients_history")
    deleted = {u for (u,) in query(data, "select uuid from clients_history where deleted_at is not null")}
    assert deleted
    one_year = Period(1, "y")
    done = apply_retention(
        store, None, one_year, now=deleted_at.replace(year=deleted_at.year + 1) + timedelta(seconds=1)
    )
    after = query(data, names)
    assert [r for r in after if r[0] not in deleted] == [r for r in before if r[0] not in deleted]
    for uuid, name, email, extra, role in after:
        if uuid in deleted:  # what changed and when stays; who it was does not
            assert (name, email, extra) == (0, 0, 0) and role > 0
    assert done["clients_history"].cleared == sum(r[1] + 0 for r in before if r[0] in deleted) + len(deleted)
    assert done["clients_history"].removed == 0


def copy_of(data: Path, tmp_path: Path) -> Path:
    """A copy of the synced data folder, its views pointed at the copy."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    Warehouse(str(copy)).follow_a_move()
    return copy


def period_later(moment: datetime) -> datetime:
    """`now` such that now minus six years is `moment`."""
    return moment.replace(year=moment.year + 6)


def test_the_dagster_job_and_the_lifted_erasure(erased, tmp_path):
    data = copy_of(erased["data"], tmp_path)
    other = query(data, "select uuid from clients order by uuid limit 1")[0][0]
    result = erase_client_job.execute_in_process(
        run_config={"ops": {"erase_client_op": {"config": {"client_uuid": other, "reason": "from the UI"}}}},
        resources={"storage": PlannrStorage(data_dir=str(data))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    store = ParquetStore(data / "parquet")
    assert erased_uuids(store) == {other, erased["target"]["uuid"]}
    done = run_cli(
        "unerase",
        "--client",
        other,
        "--reason",
        "made in error",
        env={**erased["env"], "PLANNR_DATA_DIR": str(data)},
        cwd=ROOT,
    )
    assert done.returncode == 0 and "stored again if the API still sends it" in done.stdout
    assert "what was erased is not restored" in done.stdout
    assert erased_uuids(store) == {erased["target"]["uuid"]}


def test_an_erasure_waits_for_a_commit_in_progress(erased, tmp_path):
    data = copy_of(erased["data"], tmp_path)
    store = ParquetStore(data / "parquet")
    victim = query(data, "select uuid from clients order by uuid limit 1")[0][0]
    env = {**erased["env"], "PLANNR_DATA_DIR": str(data)}
    with store.lock():  # a commit under way (another process's, as far as the erasure can tell)
        erase = start_cli("erase", "--client", victim, "--reason", "waits", env=env, cwd=ROOT)
        time.sleep(3)
        assert erase.poll() is None, erase.communicate()
        assert victim not in erased_uuids(store)
    out, err = erase.communicate(timeout=60)
    assert erase.returncode == 0, err
    assert victim in erased_uuids(store)


def goal_requests(sandbox: SandboxServer) -> int:
    return sum(n for endpoint, n in sandbox.stats()["by_endpoint"].items() if endpoint.endswith("/goal"))


def test_a_sync_that_fetched_the_client_before_the_erasure_does_not_bring_it_back(make_sandbox, tmp_path):
    """Real processes: the goals fan-out is slowed, and the client is erased while it runs; the
    goals it fetched are committed after the erasure, and the commit withholds them."""
    sandbox = make_sandbox(clients=30, seed=7)
    env = sandbox_env(sandbox, tmp_path)
    data = tmp_path / "data"
    sync(env)
    target = next(c for c in sandbox.firm.clients if len(sandbox.firm.goals_by_client[c["uuid"]]) >= 2)
    for goal in sandbox.firm.goals_by_client[target["uuid"]]:
        goal["progress"] = "99"  # something new to commit for it
        goal["updated_at"] = iso_london(datetime.now(UTC).replace(microsecond=0))
    # Four requests at a time, each slowed once the fan-out has begun: ~10 s in which to erase.
    running = start_cli(
        "sync",
        env={**env, "PLANNR_MAX_CONCURRENCY": "4"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while goal_requests(sandbox) <= 30:  # the first sync's 30; then the running sync's first
            assert time.monotonic() < deadline and running.poll() is None
            time.sleep(0.01)
        sandbox.options.latency_ms = 1500  # the rest of the fan-out is slow: the erasure lands first
        erase = run_cli("erase", "--client", target["uuid"], "--reason", REASON, env=env, cwd=ROOT)
        assert erase.returncode == 0, erase.stderr
        [(erased_at,)] = query(data, "select recorded_at from erasure_log")
        out, _ = running.communicate(timeout=180)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 0, out[-2000:]
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "home"))) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("goals"))
    assert datetime.fromtimestamp(event.timestamp, UTC) > erased_at, (
        "the goals commit came before the erasure"
    )
    assert query(data, f"select count(*) from goals where client_uuid = '{target['uuid']}'") == [(0,)]
    assert query(data, f"select count(*) from goals_history where client_uuid = '{target['uuid']}'") == [(0,)]
    assert found_in([data], [target["email"], target["name"]]) == []


def test_a_quarantined_record_of_an_erased_client_is_not_kept_either(tmp_path):
    """A write whose only news is the erased client, rejected (its raw JSON holds its name): the
    commit counts it as still sent and keeps nothing of it in rejected_records."""
    store = ParquetStore(tmp_path / "parquet")
    uuid = "0b0c0d0e-1111-2222-3333-444455556666"
    with store.lock():
        append_log(store, {"uuid": uuid, "action": "erase", "reason": REASON})
    write = StagedWrite(store)
    write.write(CLIENTS, CLIENTS.schema.empty_table(), ["2026-11"])
    now = datetime.now(UTC)
    record = {"uuid": uuid, "name": "Rosalind Quarantine", "created_at": "not a date"}
    outcome = commit(
        store,
        write,
        CommitRequest(
            tables=[CLIENTS],
            partitions=["2026-11"],
            scope=Scope.nothing(),
            listing_started=now,
            proof_time=now,
            rejected=[
                {
                    "table_name": "clients",
                    "uuid": uuid,
                    "reason": "malformed created_at",
                    "raw_json": json.dumps(record),
                    "rejected_at": now,
                }
            ],
        ),
    )
    assert outcome.erased_still_sent == 1
    assert store.read(REJECTED_RECORDS).num_rows == 0
    assert found_in([tmp_path], ["Rosalind Quarantine"]) == []
