"""The data of record in DuckLake: Postgres as the catalog, moto's S3 server as the bucket, both real
servers on loopback (plannr_pipeline/local_servers.py). The same sandbox is synced into the local store and
into a lake, by the command-line program, and the two must hold the same rows."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest import mock

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plannr_pipeline.defs.resources import PlannrDuckDB
from plannr_pipeline.erasure.retention import Period, apply_retention
from plannr_pipeline.local_servers import BUCKET, POSTGRES_BIN, LocalServers
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer
from plannr_pipeline.storage.commit import CommitRequest, Scope, commit
from plannr_pipeline.storage.erasure import Rewrite, rewrite_relations
from plannr_pipeline.storage.history import HISTORY_OF, history_table
from plannr_pipeline.storage.lake import LakeSettings, LakeStore, open_lake
from plannr_pipeline.storage.lake_maintenance import maintain, retention_from_env
from plannr_pipeline.storage.normalise import arrow
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.tables import ALL_TABLES, CLIENTS
from tests.cli import run_cli, run_dagster, sandbox_env, start_cli, stop_group
from tests.firms import two_sandbox_firms
from tests.stored import StoredData
from tests.test_erasure import erasure_scenario, found_in

DUCKDB_CLI = str(Path(sys.executable).with_name("duckdb"))
# Every relation an analyst reads, with what differs between two syncs at different times left out:
# when a record was seen, and the sandbox's imports, which progress on its clock between syncs.
COMPARED = {
    **{
        t.name: f"select * exclude (seen_at) from {t.name}"
        if "seen_at" in t.schema.names
        else f"select * from {t.name}"
        for t in ALL_TABLES
        if not t.name.startswith("import")
    },
    # (the sandbox starts an import every 20 minutes of its clock: one may start between two syncs)
    "imports": "select uuid, type, created_at from imports where created_at < now() - interval 30 minute",
    **{
        f"{t}_history": f"select uuid, valid_to is null, deleted_at is null from {t}_history"
        for t in HISTORY_OF
    },
}


def cli_rows(attach: list[str], sql: str) -> str:
    """What the DuckDB command-line client prints for `sql` (CSV, rows sorted), after `attach`."""
    script = "\n".join(
        [".output /dev/null", *attach, ".output", ".mode csv", f"select * from ({sql}) order by all;"]
    )
    done = subprocess.run([DUCKDB_CLI], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def synced(lake_servers, tmp_path_factory):
    """One sandbox synced by `plannr-pipeline sync` into the local store and into a lake. Its
    clock stands still, so its imports do not progress between the two syncs (one that failed in
    between gained error rows in the lake's sync alone: import_errors 362 against 355 in CI)."""
    frozen = datetime.now(UTC)
    sandbox = SandboxServer(
        SandboxOptions(
            size=FirmSize(clients=80),
            token="lake-token",
            rate_limit_per_minute=100_000,
            clock=lambda: frozen,
        )
    ).start()
    local_dir, lake_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("lake")
    lake = lake_servers.new_lake()
    local = run_cli("sync", env=sandbox_env(sandbox, local_dir), cwd=local_dir)
    assert local.returncode == 0, local.stderr[-2000:]
    lake_env = sandbox_env(sandbox, lake_dir, **lake.env)
    lake_run = run_cli("sync", env=lake_env, cwd=lake_dir)
    assert lake_run.returncode == 0, lake_run.stderr[-2000:]
    yield sandbox, StoredData(local_dir / "data"), StoredData(lake_dir / "data", lake), lake_env, lake_run
    sandbox.stop()


def test_every_relation_lands_in_the_bucket_and_the_catalog(synced, lake_servers):
    _, local, lake, _, run = synced
    assert "the lake at s3://" in run.stdout and "lake-sql" in run.stdout
    objects = lake_servers.objects(lake.lake)
    for table in ALL_TABLES:
        [(rows,)] = lake.query(f"select count(*) from {table.name}")
        assert rows == local.query(f"select count(*) from {table.name}")[0][0], table.name
        files = lake.query(f"select data_file from ducklake_list_files('plannr', '{table.name}')")
        if rows:  # every row in a Parquet object in the bucket, none inlined in the catalog
            assert files and all(f.removeprefix("s3://plannr-lake/") in objects for (f,) in files), table.name
    # the local store's own files are not there: only staging, which a landed write leaves empty
    assert not (lake.data_dir / "parquet").exists()
    assert not [p for p in (lake.data_dir / "lake-staging").rglob("*.tmp")]


def test_the_duckdb_cli_attaches_with_the_printed_sql_and_reads_the_same_rows(synced, tmp_path):
    _, local, lake, lake_env, _ = synced
    printed = run_cli("lake-sql", env=lake_env, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert lake_env["AWS_SECRET_ACCESS_KEY"] not in printed.stdout  # the credential stays getenv(...)
    assert lake_env["AWS_ACCESS_KEY_ID"] not in printed.stdout
    attach_lake = printed.stdout.splitlines()
    attach_local = [f"ATTACH '{local.data_dir / 'plannr.duckdb'}' AS plannr (READ_ONLY);", "USE plannr;"]
    cli_env_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    os.environ.update({k: lake_env[k] for k in cli_env_keys})  # the analyst's shell has them set
    try:
        for name, sql in COMPARED.items():
            assert cli_rows(attach_lake, sql) == cli_rows(attach_local, sql), name
    finally:
        for key in cli_env_keys:
            os.environ.pop(key, None)


def _commit_lock_held(lake) -> bool:
    """Whether some process holds the lake's commit lock (an advisory lock in its catalog)."""
    connection = psycopg2.connect(lake.catalog.removeprefix("postgres:"))
    try:
        cursor = connection.cursor()
        cursor.execute("select count(*) from pg_locks where locktype = 'advisory' and granted")
        return cursor.fetchone()[0] > 0
    finally:
        connection.close()


@pytest.fixture(scope="module")
def killed(synced, lake_servers, tmp_path_factory):
    """A lake synced, then (after the sandbox moved on) three syncs killed -9 while each held the
    commit lock, then a rerun with an analyst attached; and a local store synced the same two times."""
    sandbox, _, _, _, _ = synced
    lake = lake_servers.new_lake()
    folder = tmp_path_factory.mktemp("killed")
    stored = StoredData(folder / "data", lake)
    env = sandbox_env(sandbox, folder, **lake.env)
    local_dir = folder / "local"
    local_dir.mkdir()
    local = StoredData(local_dir / "data")
    for stage in ("before", "after"):  # the same two syncs on both: the same history
        assert run_cli("sync", env=sandbox_env(sandbox, local_dir), cwd=local_dir).returncode == 0
        if stage == "before":
            assert run_cli("sync", env=env, cwd=folder).returncode == 0
            sandbox.advance(1)  # so the killed commits below had changes and history to write
    killed_in_commit, readable_after_kill = 0, []
    for delay in (0.0, 0.3, 0.8):  # into the re-base, the history, the transaction and upload
        process = start_cli("sync", env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if _commit_lock_held(lake):
                time.sleep(delay)
                if _commit_lock_held(lake):  # still committing: killed mid-commit
                    os.killpg(process.pid, signal.SIGKILL)
                    killed_in_commit += 1
                    break
            time.sleep(0.01)
        if process.poll() is None and not killed_in_commit:
            stop_group(process)  # never caught committing: the test below fails on the count
        process.wait(30)
        readable_after_kill.append(stored.query("select count(*) from clients")[0][0])
    # An analyst holds the lake open, in a transaction, through the whole rerun.
    with StoredData.analyst(lake) as analyst:
        analyst.execute("begin transaction")
        analyst.execute("select count(*) from clients").fetchall()
        rerun = run_cli("sync", env=env, cwd=folder)
        analyst.execute("commit")
    return lake, stored, local, killed_in_commit, readable_after_kill, rerun


def test_a_kill_9_mid_commit_leaves_the_lake_readable_and_the_rerun_exact(killed):
    _, stored, local, killed_in_commit, readable_after_kill, rerun = killed
    assert killed_in_commit == 3
    assert all(rows > 0 for rows in readable_after_kill)  # the last snapshot read fine each time
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for name, sql in COMPARED.items():
        assert sorted(stored.query(sql)) == sorted(local.query(sql)), name
    for table in HISTORY_OF:  # two versions where the step changed a record, never an event twice
        sql = f"select count(*), count(valid_to), count(deleted_at) from {table}_history"
        assert stored.query(sql) == local.query(sql), table


def test_maintenance_merges_expires_and_deletes_what_no_snapshot_needs(killed, lake_servers, monkeypatch):
    lake, stored, local, *_ = killed
    for name, value in lake.env.items():
        monkeypatch.setenv(name, value)
    store = LakeStore(LakeSettings(lake.catalog, lake.data), stored.data_dir / "lake-staging")
    logs = [f"{t}_history_events" for t in HISTORY_OF]

    def log_files() -> dict[str, int]:
        return {
            t: stored.query(f"select count(*) from ducklake_list_files('plannr', '{t}')")[0][0] for t in logs
        }

    assert max(log_files().values()) > 1  # a file per commit that recorded events
    kept = maintain(store, retention_from_env({}))  # 7 days: every snapshot here is younger
    assert kept.files_merged > kept.files_written and set(log_files().values()) == {1}
    assert kept.snapshots_expired == 0
    # An object a commit uploaded before it was killed, which no snapshot names.
    stray = lake.data.removeprefix("s3://plannr-lake/") + "main/clients/ducklake-stray.parquet"
    lake_servers.bucket().put_object(Bucket="plannr-lake", Key=stray, Body=b"PAR1")
    before = set(lake_servers.objects(lake))
    done = maintain(store, timedelta(0))  # now every snapshot but the newest has expired
    after = set(lake_servers.objects(lake))
    assert done.snapshots_expired > 0 and done.objects_deleted > 0 and done.orphans_deleted == 1
    assert stray not in after and len(after) < len(before)
    for name, sql in COMPARED.items():  # what analysts read is untouched
        assert sorted(stored.query(sql)) == sorted(local.query(sql)), name


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PLANNR_LAKE_CATALOG": "postgres:dbname=x host=127.0.0.1"}, "PLANNR_LAKE_DATA"),
        ({"PLANNR_LAKE_DATA": "s3://bucket/x/"}, "PLANNR_LAKE_CATALOG"),
        (
            {
                "PLANNR_LAKE_CATALOG": "postgres:dbname=x password=hunter2-secret",
                "PLANNR_LAKE_DATA": "s3://b/x/",
            },
            "PGPASSWORD",
        ),
    ],
    ids=["catalog-alone", "data-alone", "password-in-catalog"],
)
def test_bad_lake_settings_are_one_line_and_exit_2(synced, tmp_path, settings, named):
    sandbox, *_ = synced
    done = run_cli("sync", env=sandbox_env(sandbox, tmp_path, **settings), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and named in done.stderr, done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def found_in_bucket(lake_servers, lake, values: list[str]) -> list[str]:
    """Where any of `values` is in the lake's objects: raw bytes, and each Parquet column as text."""
    hits, lowered = [], [v.lower() for v in values]
    for key in lake_servers.objects(lake):
        body = lake_servers.bucket().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        hits += [f"{key} (bytes): {v}" for v in lowered if v.encode() in body.lower()]
        if key.endswith(".parquet") and not key.endswith("-delete.parquet"):
            table = pq.read_table(io.BytesIO(body))
            for name in table.column_names:
                text = "\n".join(str(x) for x in table.column(name).cast(pa.string()).to_pylist()).lower()
                hits += [f"{key} [{name}]: {v}" for v in lowered if v in text]
    return hits


def found_in_catalog(lake, values: list[str]) -> list[str]:
    """Where any of `values` is in the catalog database: a dump of every table of it (DuckLake
    keeps per-file column statistics there, minimum and maximum values included)."""
    conninfo = dict(part.split("=", 1) for part in lake.catalog.removeprefix("postgres:").split())
    dump = subprocess.run(
        [
            str(POSTGRES_BIN / "pg_dump"),
            "-h",
            conninfo["host"],
            "-p",
            conninfo["port"],
            "-U",
            conninfo["user"],
            conninfo["dbname"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    return [v for v in (v.lower() for v in values) if v in dump]


def test_an_erased_client_is_gone_from_every_object_the_catalog_and_the_folders(lake_servers, tmp_path):
    lake = lake_servers.new_lake()
    erased = erasure_scenario(tmp_path, lake, look=lambda values: found_in_bucket(lake_servers, lake, values))
    try:
        values, uuid = erased["values"], erased["target"]["uuid"]
        assert erased["erase"].returncode == 0, erased["erase"].stderr
        tables = {hit.split("/main/")[1].split("/")[0] for hit in erased["before"]["hits"]}
        assert {"clients", "clients_history_events", "circle_accounts", "import_errors"} <= tables
        assert erased["before"]["versions"] == 2
        assert found_in_bucket(lake_servers, lake, values) == []  # after the erasure and the later sync
        assert found_in_catalog(lake, values) == []
        assert found_in([erased["data"], erased["home"]], values) == []
        stored = StoredData(erased["data"], lake)
        assert stored.query(f"select count(*) from clients where uuid = '{uuid}'") == [(0,)]
        assert stored.query(f"select count(*) from goals_history where client_uuid = '{uuid}'") == [(0,)]
        assert stored.query("select uuid, action from erasure_log") == [(uuid, "erase")]
        assert "the API still sends 1 client(s) erased here" in erased["third"].stdout
        others = f"select * exclude (seen_at) from clients where uuid <> '{uuid}' order by uuid"
        assert stored.query(others) == erased["before"]["others"]
    finally:
        erased["sandbox"].stop()


def test_the_duckdb_resource_reads_the_lake_read_only(synced, monkeypatch):
    """A user's own asset gets the lake through the `duckdb` resource: the same rows, no writes."""
    _, _, lake, _, _ = synced
    for name, value in lake.lake.env.items():
        monkeypatch.setenv(name, value)
    resource = PlannrDuckDB(
        database=str(lake.data_dir / "plannr.duckdb"),
        data_dir=str(lake.data_dir),
        lake_catalog=lake.lake.catalog,
        lake_data=lake.lake.data,
    )
    with resource.get_connection() as connection:
        assert connection.execute("select count(*) from goal_progress").fetchone() == tuple(
            lake.query("select count(*) from goal_progress")[0]
        )
        with pytest.raises(duckdb.Error, match="read-only|read only"):
            connection.execute("delete from clients")
    assert not (lake.data_dir / "plannr.duckdb").exists()  # nothing written beside the lake


def test_a_rewrite_leaves_no_erased_value_in_the_catalogs_statistics(lake_servers, tmp_path, monkeypatch):
    """DuckLake keeps each column's smallest and largest value in its catalog: a removed row whose
    name sorted first (or last) must not stay there, nor in any object of the bucket. The erased
    rows share a file with a kept one (that file is rewritten) and have a month to themselves
    (that file is dropped whole)."""
    lake = lake_servers.new_lake()
    for name, value in lake.env.items():
        monkeypatch.setenv(name, value)
    store = LakeStore(LakeSettings(lake.catalog, lake.data), tmp_path / "staging")
    now = datetime.now(UTC)
    people = [
        ("Aaron", "Aardvark-Erased", "2026-11", date(1903, 4, 5)),
        ("Zoe", "Zzyzx-Erased", "2026-11", None),
        ("Abe", "Aaberg-Erased", "2026-12", None),
        ("Mina", "Middleton", "2026-12", date(2020, 1, 1)),
    ]
    rows = [
        {
            "uuid": f"c{i}",
            "first_name": first,
            "last_name": last,
            "name": f"{first} {last}",
            "seen_at": now,
            "created_at": now,
            "created_month": month,
            "inactive_at": inactive,
        }
        for i, (first, last, month, inactive) in enumerate(people)
    ]
    # The kept client lands first, the erased ones in a later commit: the catalog's table-wide
    # minimum and maximum then widen to them, and the rewrite alone leaves them there (in one
    # commit it did not: without `_narrow_table_stats` this test failed only this way).
    for landing, months in (([rows[3]], ("2026-12",)), (rows[:3], ("2026-11", "2026-12"))):
        write = StagedWrite(store)
        write.write(CLIENTS, pa.Table.from_pylist(landing, schema=CLIENTS.schema), months)
        commit(store, write, CommitRequest((CLIENTS,), months, Scope.nothing(), now, now))
    erased = ["aardvark-erased", "zzyzx-erased", "aaberg-erased", "1903-04-05"]
    assert found_in_catalog(lake, erased)  # the statistics do hold them: the test can fail
    with store.lock():
        gone = Rewrite(delete_where="last_name LIKE '%-Erased'")
        rewrite_relations(store, {CLIENTS: gone, history_table(CLIENTS): gone})
    assert StoredData(tmp_path, lake).query("select name from clients") == [("Mina Middleton",)]
    assert found_in_catalog(lake, erased) == []
    assert found_in_bucket(lake_servers, lake, erased) == []
    # The retention schedule's usual run: nothing past its period, nothing rewritten, no failure.
    assert apply_retention(store, Period(6, "y"), None) == {}
    # The statistics still cover what is stored once a later write lands beside it: DuckDB answers
    # a filter outside them with no rows.
    later = [
        {
            **rows[3],
            "uuid": "c9",
            "name": "Zed Zulu",
            "created_month": "2026-10",
            "created_at": now - timedelta(days=30),
            "inactive_at": date(2025, 1, 1),
        }
    ]
    write = StagedWrite(store)
    write.write(CLIENTS, pa.Table.from_pylist(later, schema=CLIENTS.schema), ["2026-10"])
    commit(store, write, CommitRequest((CLIENTS,), ("2026-10",), Scope.nothing(), now, now))
    stored = StoredData(tmp_path, lake)
    assert stored.query("select name from clients where name < 'N'") == [("Mina Middleton",)]
    assert stored.query("select name from clients where inactive_at < '2021-01-01'") == [("Mina Middleton",)]
    # A time zone's column too: its narrowed figures read back as the same instants.
    assert stored.query("select name from clients where created_at < ?", [now - timedelta(days=10)]) == [
        ("Zed Zulu",)
    ]
    assert stored.query("select name from clients where created_at >= ?", [now]) == [("Mina Middleton",)]


def test_two_firms_each_land_in_their_own_lake_within_the_deployments(lake_servers, tmp_path):
    """Firm files on the lake: one catalog database and bucket, each firm its own DuckLake (its
    metadata schema, its prefix), exact and apart (LakeSettings.for_firm)."""
    lake = lake_servers.new_lake()
    with two_sandbox_firms(tmp_path) as firms:
        env = {**firms.env, **lake.env}
        done = run_cli("sync", env=env, cwd=firms.root, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

        def read_firm_lake(slug: str, sql: str) -> list[tuple]:
            with mock.patch.dict(os.environ, lake.env):
                reader = open_lake(
                    LakeSettings(lake.catalog, lake.data).for_firm(slug), os.environ, read_only=True
                )
            try:
                return reader.execute(sql).fetchall()
            finally:
                reader.close()

        for slug, sandbox in (("acme", firms.acme), ("beta", firms.beta)):
            stored = {uuid for (uuid,) in read_firm_lake(slug, "select uuid from plannr.clients")}
            assert stored == {c["uuid"] for c in sandbox.firm.clients}, slug

        # Each firm's lake is kept small by its own job: acme's upkeep expires acme's snapshots only.
        snapshots = "select count(*) from ducklake_snapshots('plannr')"
        beta_before = read_firm_lake("beta", snapshots)[0][0]
        assert read_firm_lake("acme", snapshots)[0][0] > 1 and beta_before > 1
        upkeep = run_dagster(
            "job",
            "execute",
            "-m",
            "plannr_pipeline.definitions",
            "-j",
            "acme_lake_maintenance_job",
            env={**env, "PLANNR_LAKE_SNAPSHOT_RETENTION": "0h"},
            cwd=firms.root,
        )
        assert upkeep.returncode == 0, (upkeep.stdout + upkeep.stderr)[-3000:]
        assert read_firm_lake("acme", snapshots)[0][0] == 1
        assert read_firm_lake("beta", snapshots)[0][0] == beta_before
        prefix = lake.data.removeprefix(f"s3://{BUCKET}/")
        objects = lake_servers.objects(lake)
        assert {key.removeprefix(prefix).split("/")[0] for key in objects} == {"acme", "beta"}
        printed = run_cli("lake-sql", "--firm", "beta", env=env, cwd=firms.root)
        assert printed.returncode == 0 and "METADATA_SCHEMA 'beta'" in printed.stdout
        assert f"{lake.data}beta/" in printed.stdout


def test_a_long_lived_process_keeps_committing_after_the_catalogs_postgres_restarts(tmp_path):
    """The code server (whose import sensor writes) keeps one lake connection for its life: a
    restart of the catalog's Postgres must not wedge it. Its own servers: a restart ends every
    session, and other tests' connections are theirs."""
    servers = LocalServers(tmp_path / "servers", s3=False)
    try:
        catalog = f"postgres:{servers.conninfo(servers.create_database('lake_restarted'))}"
        store = LakeStore(LakeSettings(catalog, f"{tmp_path / 'bucket'}/"), tmp_path / "staging")

        def put(uuid: str) -> None:
            write = StagedWrite(store)
            write.write(CLIENTS, arrow(CLIENTS, [{"uuid": uuid, "created_month": "2024-01"}]), ["2024-01"])
            write.commit()

        put("before")
        servers.restart_postgres()
        put("after")
        assert store.read(CLIENTS).column("uuid").to_pylist() == ["after"]
        assert store.rows_of(CLIENTS) == 1
    finally:
        servers.stop()
