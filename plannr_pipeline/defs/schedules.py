"""Schedules, in UK time: a nightly full refresh and an hourly refresh of recent data.

Nightly (02:00): every month of clients and goals as one run over the whole range (one
filtered listing), and full sweeps of the unpartitioned collections, which also catch
deletions. Hourly (:15): the current month of clients and goals, every import (a request or
two), and tasks changed since the stored watermark.
"""

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from plannr_pipeline.defs.jobs import clients_job, imports_job, sweeps_job, tasks_incremental_job
from plannr_pipeline.defs.partitions import client_months

TIMEZONE = "Europe/London"
NIGHTLY = "0 2 * * *"
HOURLY = "15 * * * *"


def whole_range(
    partitions_def: dg.TimeWindowPartitionsDefinition, context: dg.ScheduleEvaluationContext, name: str
) -> dg.RunRequest:
    keys = partitions_def.get_partition_keys(current_time=context.scheduled_execution_time)
    return dg.RunRequest(
        run_key=f"{name}:{context.scheduled_execution_time.isoformat()}",
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
    )


def current_partition(
    partitions_def: dg.TimeWindowPartitionsDefinition, context: dg.ScheduleEvaluationContext
) -> dg.RunRequest:
    key = partitions_def.get_partition_keys(current_time=context.scheduled_execution_time)[-1]
    return dg.RunRequest(run_key=f"{key}:{context.scheduled_execution_time.isoformat()}", partition_key=key)


@dg.schedule(
    default_status=dg.DefaultScheduleStatus.RUNNING,
    job=clients_job,
    cron_schedule=NIGHTLY,
    execution_timezone=TIMEZONE,
    description="Nightly: every month of clients and their goals, in one run.",
)
def nightly_clients(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return whole_range(client_months, context, "nightly-clients")


nightly_sweeps = dg.ScheduleDefinition(
    name="nightly_sweeps",
    job=sweeps_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    cron_schedule=NIGHTLY,
    execution_timezone=TIMEZONE,
    description="Nightly: full sweeps of the unpartitioned collections (these also drop deleted records).",
)


@dg.schedule(
    default_status=dg.DefaultScheduleStatus.RUNNING,
    job=clients_job,
    cron_schedule=HOURLY,
    execution_timezone=TIMEZONE,
    description="Hourly: this month's clients and their goals.",
)
def hourly_current_clients(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return current_partition(client_months, context)


hourly_imports = dg.ScheduleDefinition(
    name="hourly_imports",
    job=imports_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    cron_schedule=HOURLY,
    execution_timezone=TIMEZONE,
    description="Hourly: every import and its row errors (a request or two).",
)


hourly_tasks = dg.ScheduleDefinition(
    name="hourly_tasks",
    job=tasks_incremental_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    cron_schedule=HOURLY,
    execution_timezone=TIMEZONE,
    description="Hourly: tasks changed since the stored watermark (incremental, usually one request).",
)

SCHEDULES = [nightly_clients, nightly_sweeps, hourly_current_clients, hourly_imports, hourly_tasks]
