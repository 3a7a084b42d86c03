"""What a user selects runs, and partitions, checks and counts tell the truth."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage.convert import to_utc, uk_day
from plannr_pipeline.sync import range_tags
from tests.cli import run_cli, run_dagster, sandbox_env


def resources_for(sandbox, data_dir: Path) -> dict:
    return {
        "plannr": PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000),
        "storage": PlannrStorage(data_dir=str(data_dir)),
    }


def uk_month(created_at: str) -> str:
    return uk_day(to_utc(created_at))[:7]


def test_each_asset_alone_from_the_command_line_on_a_fresh_instance(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=40)
    home = tmp_path / "home"
    home.mkdir()
    env = sandbox_env(sandbox, tmp_path)
    month = client_months.get_last_partition_key()
    for asset, partition in (
        ("clients", month),
        ("goals", month),
        ("staff", None),
        ("circles", None),
        ("tasks", None),
        ("imports", None),
    ):
        command = ["asset", "materialize", "-m", "plannr_pipeline.definitions", "--select", asset]
        if partition:
            command += ["--partition", partition]
        done = run_dagster(*command, env=env, cwd=tmp_path)
        assert done.returncode == 0, f"{asset}: {done.stderr[-2000:]}"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in ("clients", "goals", "staff", "circles", "tasks", "imports"):
            checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey(asset), f"{asset}_complete")]
            )
            [execution] = checks.values()
            assert execution.status.value == "SUCCEEDED", asset
            assert execution.event.dagster_event.event_specific_data.passed, asset


def test_each_partition_carries_its_own_row_count_after_a_range_run(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=60)
    data_dir = tmp_path / "data"
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(
            ASSETS,
            selection=["clients"],
            resources=resources_for(sandbox, data_dir),
            instance=instance,
            tags=range_tags(client_months),
        ).success
        with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
            stored = dict(db.execute("select created_month, count(*) from clients group by 1").fetchall())
        for month in client_months.get_partition_keys():
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("clients"), asset_partitions=[month]), limit=1
            ).records
            assert record.asset_materialization.metadata["dagster/row_count"].value == stored.get(month, 0), (
                month
            )
    assert 0 in [stored.get(m, 0) for m in client_months.get_partition_keys()]  # the empty months say 0


def test_moving_the_start_date_never_creates_duplicates(make_sandbox, tmp_path):
    """Clients stored under one PLANNR_START_DATE, then synced under a later and an earlier one."""
    sandbox = make_sandbox(clients=80)
    data_dir = tmp_path / "data"
    for start in ("2023-01-01", "2025-06-01", "2024-01-01"):
        env = sandbox_env(sandbox, tmp_path, PLANNR_START_DATE=start)
        done = run_cli("sync", "--select", "clients,goals", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
            rows, distinct, first = db.execute(
                "select count(*), count(distinct uuid), min(created_month) from clients"
            ).fetchone()
            goals, distinct_goals = db.execute("select count(*), count(distinct uuid) from goals").fetchone()
        assert rows == distinct == len(sandbox.firm.clients), start
        assert goals == distinct_goals, start
        assert first >= start[:7], start
        if start == "2025-06-01":
            assert first == "2025-06"  # older clients sit in the first configured month


def test_one_old_month_run_after_the_start_moved_earlier_moves_its_clients_and_loses_none(
    make_sandbox, tmp_path
):
    sandbox = make_sandbox(clients=80)
    data_dir = tmp_path / "data"
    done = run_cli(
        "sync",
        "--select",
        "clients",
        env=sandbox_env(sandbox, tmp_path, PLANNR_START_DATE="2025-06-01"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
        before = {uuid for (uuid,) in db.execute("select uuid from clients").fetchall()}
    month = min(uk_month(c["created_at"]) for c in sandbox.firm.clients)
    assert month < "2025-06"
    # Now the start is earlier, and only one old month is run: its clients were filed under 2025-06.
    done = run_dagster(
        "asset",
        "materialize",
        "-m",
        "plannr_pipeline.definitions",
        "--select",
        "clients",
        "--partition",
        month,
        env=sandbox_env(sandbox, tmp_path, PLANNR_START_DATE="2023-01-01"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    moved = {c["uuid"] for c in sandbox.firm.clients if uk_month(c["created_at"]) == month}
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
        assert {uuid for (uuid,) in db.execute("select uuid from clients").fetchall()} == before
        assert db.execute("select count(*) from clients where created_month = ?", [month]).fetchone()[
            0
        ] == len(moved)
        assert (
            db.execute("select count(*) from clients_history where deleted_at is not null").fetchone()[0] == 0
        )
