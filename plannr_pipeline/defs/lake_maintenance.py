"""The lake's upkeep as a Dagster job and a nightly schedule per firm, only when a lake is
configured: see storage/lake_maintenance.py for what it does and why. Each firm's lake (its own
schema and prefix, LakeSettings.for_firm) is maintained by its own job, on its own `storage`."""

import os

import dagster as dg

from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.lake import LakeStore
from plannr_pipeline.storage.lake_maintenance import maintain, retention_from_env


def _maintain(context: dg.OpExecutionContext, storage: PlannrStorage) -> dg.Output[None]:
    store = storage.warehouse().store
    if not isinstance(store, LakeStore):
        raise dg.Failure("no lake is configured (PLANNR_LAKE_CATALOG, PLANNR_LAKE_DATA): nothing to maintain")
    done = maintain(store, retention_from_env(os.environ))
    context.log.info(done.summary())
    return dg.Output(None, metadata={name: value for name, value in vars(done).items()})


def lake_maintenance_defs_for(firm: Firm, running: bool = True) -> list:
    """One firm's lake upkeep (`<slug>_lake_maintenance_job` for a firm) and its nightly schedule."""
    maintain_op = dg.op(
        name=firm.name("maintain_lake"),
        description="Merge the lake's small files, expire old snapshots, delete the objects no snapshot needs.",
    )(rename_resources(_maintain, firm.resource_keys()))

    @dg.job(
        name=firm.name("lake_maintenance_job"),
        description="The lake's upkeep: merged files, expired snapshots, deleted objects.",
    )
    def lake_maintenance_job():
        maintain_op()

    schedule = dg.ScheduleDefinition(
        name=firm.name("lake_maintenance_schedule"),
        job=lake_maintenance_job,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description="Nightly, after the night's full sync: the lake kept small.",
    )
    return [lake_maintenance_job, schedule]


# The single firm's, found by the definitions' folder loader; firms bring their own (firms/build.py).
LAKE_MAINTENANCE_DEFS = (
    lake_maintenance_defs_for(DEFAULT_FIRM) if os.environ.get("PLANNR_LAKE_CATALOG") else []
)
if LAKE_MAINTENANCE_DEFS:
    lake_maintenance_job, lake_maintenance_schedule = LAKE_MAINTENANCE_DEFS
