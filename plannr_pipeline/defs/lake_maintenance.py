"""The lake's upkeep as a Dagster job and a nightly schedule (only when a lake is configured):
see storage/lake_maintenance.py for what it does and why."""

import os

import dagster as dg

from plannr_pipeline.storage.lake import LakeSettings, LakeStore
from plannr_pipeline.storage.lake_maintenance import maintain, retention_from_env
from plannr_pipeline.storage.warehouse import data_dir_from_env


@dg.op(
    description="Merge the lake's small files, expire old snapshots, delete the objects no snapshot needs."
)
def maintain_lake(context: dg.OpExecutionContext) -> dg.Output[None]:
    # Deployment facts, read at run time from the environment (never run config).
    lake = LakeSettings.from_env()
    if lake is None:
        raise dg.Failure("no lake is configured (PLANNR_LAKE_CATALOG, PLANNR_LAKE_DATA): nothing to maintain")
    store = LakeStore(lake, os.path.join(os.path.abspath(data_dir_from_env()), "lake-staging"))
    done = maintain(store, retention_from_env(os.environ))
    context.log.info(done.summary())
    return dg.Output(None, metadata={name: value for name, value in vars(done).items()})


if os.environ.get("PLANNR_LAKE_CATALOG"):

    @dg.job(description="The lake's upkeep: merged files, expired snapshots, deleted objects.")
    def lake_maintenance_job():
        maintain_lake()

    lake_maintenance_schedule = dg.ScheduleDefinition(
        name="lake_maintenance_schedule",
        job=lake_maintenance_job,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly, after the night's full sync: the lake kept small.",
    )
