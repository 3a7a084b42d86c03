"""Two sensors over the same polled imports.

`import_progress_sensor` records each import's progress in Dagster (an observation of
`imports` per change) and, when an import finishes, requests a run of `imports`, plus, for a
clients import, of the month its new clients were created in.
`import_failures_sensor` notices failed jobs as they appear, requests a run that lands the
row errors in `import_errors` (written by the `imports` asset), and raises one alert per new failure.

Each firm has its own pair (`<slug>_import_progress_sensor`, `<slug>_import_failures_sensor`):
its own API resource (so its own token and budget), storage, cursors and jobs; the single firm's
keep today's names.

State lives in each sensor's cursor (JSON), written only by a tick that succeeded: an API error
skips the tick and leaves the cursor as it was. The first tick of a sensor records what it sees
as its baseline and requests nothing, so turning a sensor on does not replay history.
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from plannr_pipeline.api import PlannrError
from plannr_pipeline.defs.alerts import AlertWebhook, ui_link
from plannr_pipeline.defs.jobs import clients_job, imports_job
from plannr_pipeline.defs.partitions import client_months, partition_key_of
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.defs.sensors.cursors import load_cursor
from plannr_pipeline.defs.sensors.import_polling import ImportSnapshot, poll_imports
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.normalise import arrow
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.tables import IMPORT_PROGRESS_HISTORY

POLL_SECONDS = 60


def _load(context: dg.SensorEvaluationContext) -> dict[str, dict[str, Any]] | None:
    state = load_cursor(context, {"imports"})
    return state["imports"] if state is not None and isinstance(state["imports"], dict) else None


def _dump(imports: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"imports": imports}, sort_keys=True)


def _poll(context: dg.SensorEvaluationContext, plannr: PlannrApi, tracked: dict[str, dict[str, Any]]):
    still_unfinished = [uuid for uuid, state in tracked.items() if not state["finished"]]
    snapshots, requests = poll_imports(plannr, datetime.now(UTC), still_unfinished)
    context.log.info(f"{len(snapshots)} imports polled with {requests} requests from {plannr.source()}")
    return snapshots


def _tracked_and_polled(context: dg.SensorEvaluationContext, plannr: PlannrApi):
    """What the cursor tracks (None on a first tick) and this tick's imports; or, when the API
    fails, the tick's skip reason, leaving the cursor as it was."""
    tracked = _load(context)
    try:
        return tracked, _poll(context, plannr, tracked or {})
    except PlannrError as error:
        return dg.SkipReason(f"Plannr API error; state kept, will retry next tick: {error}")


def _progress_metadata(snapshot: ImportSnapshot) -> dict[str, Any]:
    return {
        "import_uuid": snapshot.uuid,
        "type": snapshot.type or "",
        "status": snapshot.status or "",
        "progress": snapshot.progress if snapshot.progress is not None else -1,
        "jobs_remaining": snapshot.jobs_remaining if snapshot.jobs_remaining is not None else -1,
        "failed_jobs": snapshot.failed_jobs,
        "total_jobs": snapshot.total_jobs if snapshot.total_jobs is not None else -1,
    }


def _finished_runs(snapshot: ImportSnapshot, imports_job: Any, clients_job: Any) -> list[dg.RunRequest]:
    runs = [dg.RunRequest(job_name=imports_job.name, run_key=f"import-finished:{snapshot.uuid}")]
    if snapshot.type == "clients" and snapshot.updated_at is not None:
        # New clients are created as the import runs; updates to existing clients reach their
        # own months through changed_clients_sensor, which watches updated_at.
        month = partition_key_of(snapshot.updated_at, client_months)
        runs.append(
            dg.RunRequest(
                job_name=clients_job.name,
                partition_key=month,
                run_key=f"clients-import-finished:{snapshot.uuid}",
            )
        )
    return runs


def import_progress_sensor_for(firm: Firm, imports_job: Any, clients_job: Any) -> dg.SensorDefinition:
    """One firm's progress sensor, over its own imports, storage and jobs."""

    def import_progress_sensor(
        context: dg.SensorEvaluationContext, plannr: PlannrApi, storage: PlannrStorage
    ):
        polled = _tracked_and_polled(context, plannr)
        if isinstance(polled, dg.SkipReason):
            return polled
        tracked, snapshots = polled
        events, runs, now_tracked, moved = [], [], {}, []
        for snapshot in snapshots:
            before = (tracked or {}).get(snapshot.uuid)
            if before is None or before["signature"] != snapshot.progress_signature:
                events.append(
                    dg.AssetObservation(asset_key=firm.key("imports"), metadata=_progress_metadata(snapshot))
                )
                moved.append(snapshot)
            if tracked is not None and snapshot.finished and not (before and before["finished"]):
                runs.extend(_finished_runs(snapshot, imports_job, clients_job))
            now_tracked[snapshot.uuid] = {
                "signature": snapshot.progress_signature,
                "finished": snapshot.finished,
            }
        if moved:
            _record_progress(context, storage, moved)
        return _result(runs, events, now_tracked)

    return dg.sensor(
        name=firm.name("import_progress_sensor"),
        jobs=[imports_job, clients_job],
        minimum_interval_seconds=POLL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Polls Plannr imports created since yesterday and any still running. Records each change of "
            f"status, progress, jobs remaining or failed jobs as an observation of `{firm.key('imports').to_user_string()}` "
            "and a row of `import_progress_history`; when an import finishes, runs "
            f"`{imports_job.name}` (and `{clients_job.name}` for a clients import)."
        ),
    )(rename_resources(import_progress_sensor, firm.resource_keys()))


def _record_progress(
    context: dg.SensorEvaluationContext, storage: PlannrStorage, snapshots: list[ImportSnapshot]
) -> None:
    """Append what this tick observed to import_progress_history (one small Parquet file a tick)."""
    warehouse = storage.warehouse()
    observed_at = datetime.now(UTC)
    write = StagedWrite(warehouse.store)
    rows = [
        {
            "import_uuid": s.uuid,
            "observed_at": observed_at,
            "status": s.status,
            "progress": s.progress,
            "jobs_remaining": s.jobs_remaining,
            "failed_jobs": s.failed_jobs,
            "batch": write.id,
        }
        for s in snapshots
    ]
    try:
        write.write(IMPORT_PROGRESS_HISTORY, arrow(IMPORT_PROGRESS_HISTORY, rows), [write.id])
        write.commit()
    except BaseException:
        write.abort()
        raise
    if problem := warehouse.refresh_views():
        context.log.warning(problem)


def _result(
    runs: list[dg.RunRequest], events: list[dg.AssetObservation], tracked: dict[str, dict[str, Any]]
) -> dg.SensorResult:
    """A tick that only recorded observations says so, instead of "returned an empty result"."""
    if runs:
        return dg.SensorResult(run_requests=runs, asset_events=events, cursor=_dump(tracked))
    said = f"recorded {len(events)} import observation(s); no run needed" if events else "no import changed"
    return dg.SensorResult(asset_events=events, cursor=_dump(tracked), skip_reason=said)


def failure_alert(
    snapshot: ImportSnapshot, new_failed_jobs: int, source: str, firm: Firm = DEFAULT_FIRM
) -> dict[str, Any]:
    """Counts, the import's uuid and where to look: never its failed rows (names, emails, dates of
    birth), nor the error report's download link. The same payload is the observation stored in
    the event log, which every UI user and anyone holding the instance's database can read."""
    return {
        "event": "plannr.import.failed" if snapshot.failed else "plannr.import.jobs_failed",
        "source": source,
        "import_uuid": snapshot.uuid,
        "type": snapshot.type,
        "status": snapshot.status,
        "failed_jobs": snapshot.failed_jobs,
        "new_failed_jobs": new_failed_jobs,
        "total_jobs": snapshot.total_jobs,
        "created_day": snapshot.created_day,
        **({} if firm.is_default else {"firm": firm.slug}),
        "link": ui_link(f"/assets/{'/'.join(firm.key('imports').path)}"),
    }


def import_failures_sensor_for(firm: Firm, imports_job: Any) -> dg.SensorDefinition:
    """One firm's failures sensor, over its own imports; the alert webhook is the deployment's."""

    def import_failures_sensor(
        context: dg.SensorEvaluationContext, plannr: PlannrApi, alert_webhook: AlertWebhook
    ):
        polled = _tracked_and_polled(context, plannr)
        if isinstance(polled, dg.SkipReason):
            return polled
        tracked, snapshots = polled
        events, runs, now_tracked = [], [], {}
        for snapshot in snapshots:
            before = (tracked or {}).get(snapshot.uuid, {"failed_jobs": 0, "failed": False})
            current = {
                "failed_jobs": snapshot.failed_jobs,
                "failed": snapshot.failed,
                "finished": snapshot.finished,
            }
            new_failed_jobs = snapshot.failed_jobs - before["failed_jobs"]
            if tracked is not None and (new_failed_jobs > 0 or (snapshot.failed and not before["failed"])):
                alert = failure_alert(snapshot, max(new_failed_jobs, 0), plannr.source(), firm)
                problem = alert_webhook.send(alert)
                if problem:
                    context.log.warning(
                        f"import {snapshot.uuid}: {problem}; the alert will be retried next tick"
                    )
                    current = {**before, "finished": snapshot.finished}  # not alerted yet: keep the old count
                else:
                    context.log.warning(
                        f"import {snapshot.uuid} ({snapshot.type}): {snapshot.failed_jobs} failed jobs, status {snapshot.status}"
                    )
                    events.append(
                        dg.AssetObservation(
                            asset_key=firm.key("imports"),
                            description=f"Import {snapshot.uuid} has {snapshot.failed_jobs} failed jobs ({snapshot.status}).",
                            metadata={
                                "alert": dg.MetadataValue.json(alert),
                                "webhook": alert_webhook.configured,
                            },
                        )
                    )
                runs.append(
                    dg.RunRequest(
                        job_name=imports_job.name,
                        run_key=f"import-errors:{snapshot.uuid}:{snapshot.failed_jobs}:{snapshot.status}",
                    )
                )
            now_tracked[snapshot.uuid] = current
        return _result(runs, events, now_tracked)

    return dg.sensor(
        name=firm.name("import_failures_sensor"),
        jobs=[imports_job],
        minimum_interval_seconds=POLL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches Plannr imports for failed jobs. When an import's failed job count rises or it ends "
            f"failed, runs `{imports_job.name}` (landing the row errors in `import_errors`) and raises one alert: "
            f"an observation on `{firm.key('imports').to_user_string()}` and, if PLANNR_ALERT_WEBHOOK_URL is set, a JSON POST."
        ),
    )(rename_resources(import_failures_sensor, firm.resource_keys()))


def import_sensors_for(firm: Firm, imports_job: Any, clients_job: Any) -> list[dg.SensorDefinition]:
    return [
        import_progress_sensor_for(firm, imports_job, clients_job),
        import_failures_sensor_for(firm, imports_job),
    ]


import_progress_sensor, import_failures_sensor = import_sensors_for(DEFAULT_FIRM, imports_job, clients_job)
