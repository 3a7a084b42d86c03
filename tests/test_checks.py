"""Checks pass on what a sync lands and fail on deliberately broken data."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from plannr_pipeline.checks import CHECKS
from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.resources import PlannrApi, PlannrStorage


def run_checks(sandbox, data_dir):
    resources = {
        "plannr": PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000),
        "storage": PlannrStorage(data_dir=str(data_dir)),
    }
    result = dg.materialize([*ASSETS, *CHECKS], selection=dg.AssetSelection.checks(*CHECKS), resources=resources, raise_on_error=False)
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}


def test_checks_pass_on_synced_data_and_fail_on_broken_data(make_sandbox, tmp_path):
    from plannr_pipeline.sync import run_sync

    sandbox = make_sandbox(clients=30)
    data_dir = tmp_path / "data"
    resources = {"plannr": PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000),
                 "storage": PlannrStorage(data_dir=str(data_dir))}
    assert run_sync(resources_by_key=resources, echo=lambda _: None).ok
    outcomes = run_checks(sandbox, data_dir)
    assert len(outcomes) == 10 and all(outcomes.values()), outcomes

    goals_file = next(f for f in (data_dir / "parquet" / "goals").glob("*/data.parquet") if pq.read_metadata(f).num_rows)
    goals = pq.read_table(goals_file)
    broken = pa.concat_tables([goals, goals.slice(0, 1)])  # a duplicate
    broken = broken.set_column(broken.schema.get_field_index("client_uuid"), "client_uuid",
                               pa.array(["no-such-client"] * broken.num_rows, pa.string()))  # orphans
    pq.write_table(broken, goals_file)
    clients_file = next(f for f in (data_dir / "parquet" / "clients").glob("*/data.parquet") if pq.read_metadata(f).num_rows)
    pq.write_table(pq.read_table(clients_file).slice(1), clients_file)  # one client lost
    outcomes = run_checks(sandbox, data_dir)
    assert outcomes["goals_uuid_unique_and_present"] is False
    assert outcomes["goals_reference_clients"] is False
    assert outcomes["clients_complete"] is False
    assert outcomes["clients_uuid_unique_and_present"] is True
    assert outcomes["circles_complete"] is True
