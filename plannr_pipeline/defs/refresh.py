"""The rolling refresh as a Dagster job and its schedule: what `plannr-pipeline refresh --for
SECONDS` runs in the foreground.

The job is one op that loops until its deadline (plannr_pipeline/refresh/rolling.py). It is in
no pool: it leaves a share of the token's budget to everything else (PLANNR_REFRESH_RESERVE)
instead of holding the API pool, so the sensors and the nightly sync run beside it; when it
sweeps the unpartitioned collections it runs them as the sync does, waiting for the pool then.
The schedule starts one every quarter of an hour, each running just under that long, and skips
a tick while the previous run is still going, so the budget is spent without a gap or an overlap.
"""

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import dagster as dg

from plannr_pipeline.api.config import share_from_env
from plannr_pipeline.api.errors import ConfigurationError
from plannr_pipeline.defs.jobs import FIRM_TAG
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.refresh.rolling import RefreshTargets, RollingRefresh

# What the sweep re-reads in full: every collection but goals, which the refresh reads itself.
SWEPT = ("clients", "staff", "circles", "tasks", "imports")
DEFAULT_RESERVE = 0.02
RESERVE_VARIABLE = "PLANNR_REFRESH_RESERVE"
SCHEDULE_MINUTES = 15
# Each scheduled run stops this long before the next tick, so its last commit lands first.
SCHEDULE_SLACK_SECONDS = 60


def reserve_from_env(env: Mapping[str, str] = os.environ) -> float:
    """PLANNR_REFRESH_RESERVE: the share of the token's budget the refresh leaves to syncs and
    sensors (0-0.9; default 0.02, ten requests a minute at 500: many times what the sensors ask)."""
    return share_from_env(
        env, RESERVE_VARIABLE, DEFAULT_RESERVE, 0.9, "0.02 leaves 2% of the budget to others"
    )


class RefreshConfig(dg.Config):
    seconds: float = SCHEDULE_MINUTES * 60 - SCHEDULE_SLACK_SECONDS


def refresh_defs_for(firm: Firm, sweep_parts: Callable[[], dict] = dict, running: bool = False) -> list:
    """One firm's `rolling_refresh_job` and its schedule (`<slug>_...` for a firm).
    `sweep_parts`: what `run_sync` needs to sync this firm's collections (its assets, checks,
    resources and pool; nothing for the single firm)."""

    def last_sweep(instance: dg.DagsterInstance) -> datetime | None:
        """When the run that last swept circles (a sync, the nightly sweep, a refresh's) ended:
        a sync reads every client's goals in that run too, so its goals count as swept with it."""
        event = instance.get_latest_materialization_event(firm.key("circles"))
        if event is None:
            return None
        run = instance.get_run_record_by_id(event.run_id)
        ended = run.end_time if run is not None and run.end_time else None
        return datetime.fromtimestamp(ended or time.time(), UTC)  # a run under way: sweeping now

    def rolling_refresh(
        context: dg.OpExecutionContext, config: RefreshConfig, plannr: PlannrApi, storage: PlannrStorage
    ) -> dict:
        from plannr_pipeline.sync import run_sync  # the sync imports the definitions, this among them

        def sweep(seconds_left: float) -> bool:
            report = run_sync(
                {firm.key(name).to_user_string() for name in SWEPT},
                instance=context.instance,
                echo=context.log.info,
                pool_wait=seconds_left,
                **sweep_parts(),
            )
            for line in report.failures:
                context.log.warning(line)
            return report.ok

        try:
            reserve = reserve_from_env()
        except ConfigurationError as error:
            raise dg.Failure(description=str(error)) from None
        targets = RefreshTargets(
            clients=firm.key("clients"),
            goals=firm.key("goals"),
            sweep=sweep,
            last_sweep=lambda: last_sweep(context.instance),
        )
        report = RollingRefresh(context, plannr, storage, targets, share=1 - reserve).run(config.seconds)
        summary = {
            "changed_clients": report.changed_clients,
            "clients_goals_read": report.goals_clients,
            "sweeps": report.sweeps,
            "requests": report.requests,
            "progress": report.progress,
        }
        context.add_output_metadata(summary)
        return summary

    op = dg.op(
        name=firm.name("rolling_refresh"),
        description="Re-read new and changed clients, then goals oldest-read first, then sweep the rest, "
        "until the configured seconds are up.",
    )(rename_resources(rolling_refresh, firm.resource_keys()))

    @dg.job(
        name=firm.name("rolling_refresh_job"),
        description="The rolling refresh: every record re-read as soon as the token's budget allows, the "
        "stalest first. Same as `plannr-pipeline refresh --for SECONDS`.",
        tags={FIRM_TAG: firm.slug or "default"},  # the run queue's per-firm limit counts it
    )
    def rolling_refresh_job():
        op()

    @dg.schedule(
        name=firm.name("rolling_refresh_schedule"),
        job=rolling_refresh_job,
        cron_schedule=f"*/{SCHEDULE_MINUTES} * * * *",
        execution_timezone="Europe/London",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description=f"Every {SCHEDULE_MINUTES} minutes, a rolling refresh of just under that long; a tick "
        "is skipped while the last one still runs.",
    )
    def rolling_refresh_schedule(context: dg.ScheduleEvaluationContext):
        under_way = context.instance.get_runs(
            filters=dg.RunsFilter(
                job_name=rolling_refresh_job.name,
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            ),
            limit=1,
        )
        if under_way:
            return dg.SkipReason(f"run {under_way[0].run_id} is still refreshing")
        return dg.RunRequest(run_key=f"refresh:{context.scheduled_execution_time.isoformat()}")

    return [rolling_refresh_job, rolling_refresh_schedule]


REFRESH_DEFS = refresh_defs_for(DEFAULT_FIRM)
rolling_refresh_job, rolling_refresh_schedule = REFRESH_DEFS
