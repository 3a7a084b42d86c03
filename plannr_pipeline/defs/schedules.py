"""Schedules, in UK time: a nightly full refresh and an hourly refresh of recent data.

Nightly (02:00): every month of clients and goals as one run over the whole range (one
filtered listing), and full sweeps of the unpartitioned collections, which also catch
deletions. Hourly (:15): the current month of clients and goals, every import (a request or
two), and tasks changed since the stored watermark.
"""

from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from plannr_pipeline.defs.jobs import JOBS
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.firms import DEFAULT_FIRM, Firm

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


def schedules_for(
    firm: Firm,
    jobs: Sequence[Any],
    *,
    running: bool = True,
    nightly: str = NIGHTLY,
    hourly: str = HOURLY,
) -> list[dg.ScheduleDefinition]:
    """One firm's schedules over its own jobs (`jobs_for`), named `<slug>_...` for a firm; a firm
    may turn them off or move them (its defs.yaml)."""
    clients_job, imports_job, sweeps_job, tasks_incremental_job = jobs
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED

    def schedule(
        name: str,
        job: Any,
        cron: str,
        description: str,
        request: Callable[[dg.ScheduleEvaluationContext], dg.RunRequest] | None = None,
    ) -> dg.ScheduleDefinition:
        """One of the firm's schedules; `request` says which months a monthly one asks for."""
        return dg.ScheduleDefinition(
            name=firm.name(name),
            job=job,
            default_status=status,
            cron_schedule=cron,
            execution_timezone=TIMEZONE,
            description=description,
            execution_fn=request,
        )

    return [
        schedule(
            "nightly_clients",
            clients_job,
            nightly,
            "Nightly: every month of clients and their goals, in one run.",
            lambda context: whole_range(client_months, context, firm.name("nightly-clients")),
        ),
        schedule(
            "nightly_sweeps",
            sweeps_job,
            nightly,
            "Nightly: full sweeps of the unpartitioned collections (these also drop deleted records).",
        ),
        schedule(
            "hourly_current_clients",
            clients_job,
            hourly,
            "Hourly: this month's clients and their goals.",
            lambda context: current_partition(client_months, context),
        ),
        schedule(
            "hourly_imports",
            imports_job,
            hourly,
            "Hourly: every import and its row errors (a request or two).",
        ),
        schedule(
            "hourly_tasks",
            tasks_incremental_job,
            hourly,
            "Hourly: tasks changed since the stored watermark (incremental, usually one request).",
        ),
    ]


SCHEDULES = schedules_for(DEFAULT_FIRM, JOBS)
nightly_clients, nightly_sweeps, hourly_current_clients, hourly_imports, hourly_tasks = SCHEDULES
