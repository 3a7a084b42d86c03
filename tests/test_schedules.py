"""Schedules produce the intended run requests (evaluated at fixed UK times)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from plannr_pipeline.definitions import defs
from plannr_pipeline.defs.jobs import sweeps_job
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.defs.schedules import (
    hourly_current_clients,
    hourly_imports,
    hourly_tasks,
    nightly_clients,
    nightly_sweeps,
)

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
NIGHT = datetime(2026, 7, 15, 2, 0, tzinfo=ZoneInfo("Europe/London"))
HOUR = datetime(2026, 7, 15, 14, 15, tzinfo=ZoneInfo("Europe/London"))


def evaluate(schedule, when):
    context = dg.build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context).run_requests


def test_nightly_refreshes_every_partition_in_one_run_and_sweeps_the_rest():
    [clients] = evaluate(nightly_clients, NIGHT)
    assert (clients.tags[RANGE_START], clients.tags[RANGE_END]) == (
        client_months.get_first_partition_key(),
        "2026-07",
    )
    assert len(evaluate(nightly_sweeps, NIGHT)) == 1
    swept = {key.to_user_string() for key in sweeps_job.selection.resolve(defs.resolve_asset_graph())}
    assert swept == {
        "staff",
        "circles",
        "tasks",
        "imports",
    }  # derived from the assets: every unpartitioned one
    assert all(
        s.execution_timezone == "Europe/London" and s.cron_schedule == "0 2 * * *"
        for s in (nightly_clients, nightly_sweeps)
    )


def test_hourly_refreshes_only_recent_data():
    [clients] = evaluate(hourly_current_clients, HOUR)
    assert clients.partition_key == "2026-07"
    assert len(evaluate(hourly_imports, HOUR)) == 1
    assert hourly_tasks.job_name == "tasks_incremental_job"
    assert hourly_tasks.job.config["ops"]["tasks"]["config"]["incremental"] is True
