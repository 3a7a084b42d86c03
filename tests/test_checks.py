"""Checks come from the write each asset validated, and judge what that run wrote."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.checks import CHECKS
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.sync import run_sync


def resources_for(sandbox, data_dir):
    return {
        "plannr": PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000),
        "storage": PlannrStorage(data_dir=str(data_dir)),
    }


def test_every_asset_reports_its_checks_without_a_request_of_its_own(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=30)
    report = run_sync(resources_by_key=resources_for(sandbox, tmp_path / "data"), echo=lambda _: None)
    assert report.ok, report.failures
    names = {name.split(": ")[1] for name in report.checks}
    for table in ("clients", "goals", "staff", "circles", "tasks", "imports"):
        assert {f"{table}_complete", f"{table}_uuid_unique_and_present"} <= names
    assert "goals_reference_clients" in names and all(report.checks.values())
    assert sum(sandbox.requests.values()) == report.requests


def test_goals_reference_clients_fails_on_orphans(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=30)
    data_dir = tmp_path / "data"
    assert run_sync(resources_by_key=resources_for(sandbox, data_dir), echo=lambda _: None).ok
    goals_file = next(
        f for f in (data_dir / "parquet" / "goals").glob("*/data.parquet") if pq.read_metadata(f).num_rows
    )
    goals = pq.read_table(goals_file)
    orphans = goals.set_column(
        goals.schema.get_field_index("client_uuid"),
        "client_uuid",
        pa.array(["no-such-client"] * goals.num_rows, pa.string()),
    )
    pq.write_table(orphans, goals_file)
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        selection=dg.AssetSelection.checks(*CHECKS),
        resources=resources_for(sandbox, data_dir),
        raise_on_error=False,
    )
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "goals_reference_clients": False
    }
