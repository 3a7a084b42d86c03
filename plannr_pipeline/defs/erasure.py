"""Erasure and retention as Dagster jobs: `erase_client_job` launched from the UI (Launchpad) with
the client's uuid and the reason as config, and `retention_job` on a nightly schedule. Both run the
same code as `plannr-pipeline erase` and `plannr-pipeline retention` (plannr_pipeline/erasure/).

Neither logs or records a personal value: the uuid, counts per table, and the reason the
operator typed are all that reach the instance.
"""

import dagster as dg

from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.erasure.erase import ErasureError, erase_client
from plannr_pipeline.erasure.retention import (
    DELETED_VARIABLE,
    HISTORY_VARIABLE,
    RetentionSettingError,
    apply_retention,
    period_from,
)
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources


class EraseClientConfig(dg.Config):
    client_uuid: str
    reason: str


def _erase(context: dg.OpExecutionContext, config: EraseClientConfig, storage: PlannrStorage) -> None:
    warehouse = storage.warehouse()
    try:
        result = erase_client(warehouse.store, config.client_uuid, config.reason)
    except ErasureError as error:
        raise dg.Failure(description=str(error)) from None
    for line in result.lines():
        context.log.info(line)
    if problem := warehouse.refresh_views():
        context.log.warning(problem)


def _retention(context: dg.OpExecutionContext, storage: PlannrStorage) -> None:
    try:
        history, deleted = period_from(HISTORY_VARIABLE), period_from(DELETED_VARIABLE)
    except RetentionSettingError as error:
        raise dg.Failure(description=str(error)) from None
    for name, changed in sorted(apply_retention(storage.warehouse().store, history, deleted).items()):
        context.log.info(f"{name}: {changed.removed} version(s) dropped, {changed.cleared} cleared")


def erasure_defs_for(firm: Firm, running: bool = True) -> list:
    """One firm's erasure job, retention job and schedule (`<slug>_...` for a firm), on its own
    `storage` resource: the same bodies for every firm."""
    erase_op = dg.op(
        name=firm.name("erase_client_op"),
        description="Erase one client's personal data from every file of the data folder (erasure_log).",
    )(rename_resources(_erase, firm.resource_keys()))
    retention_op = dg.op(
        name=firm.name("retention_op"),
        description=f"Drop history past {HISTORY_VARIABLE}; clear deleted records' personal fields past "
        f"{DELETED_VARIABLE}.",
    )(rename_resources(_retention, firm.resource_keys()))

    @dg.job(
        name=firm.name("erase_client_job"),
        description="Erase a client (UK GDPR art. 17): give its uuid and the reason in the Launchpad config. "
        "Same as `plannr-pipeline erase --client UUID --reason TEXT`.",
    )
    def erase_job():
        erase_op()

    @dg.job(
        name=firm.name("retention_job"),
        description="Retention: what `plannr-pipeline retention` does, on the nightly schedule.",
    )
    def retention_job():
        retention_op()

    schedule = dg.ScheduleDefinition(
        name=firm.name("nightly_retention"),
        job=retention_job,
        cron_schedule="30 3 * * *",  # after the nightly refresh (02:00) has landed
        execution_timezone="Europe/London",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description=f"Nightly: history past {HISTORY_VARIABLE}, deleted records' personal fields past "
        f"{DELETED_VARIABLE}.",
    )
    return [erase_job, retention_job, schedule]


ERASURE_DEFS = erasure_defs_for(DEFAULT_FIRM)
erase_client_job, retention_job, retention_schedule = ERASURE_DEFS
