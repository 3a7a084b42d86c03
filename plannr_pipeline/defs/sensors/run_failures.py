"""`pipeline_run_failure_sensor`: our own failed runs, raised the same way as import failures."""

import dagster as dg

from plannr_pipeline.defs.alerts import AlertWebhook, ui_link


@dg.run_failure_sensor(
    name="pipeline_run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a plannr-pipeline run fails, logs it and, if PLANNR_ALERT_WEBHOOK_URL is set, POSTs a JSON alert.",
)
def pipeline_run_failure_sensor(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhook) -> None:
    run = context.dagster_run
    payload = {
        "event": "plannr.pipeline.run_failed",
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        # Not the failure's message: an error's text can quote a record. The UI has the details.
        "link": ui_link(f"/runs/{run.run_id}"),
    }
    problem = alert_webhook.send(payload)
    if problem:
        context.log.warning(f"run {run.run_id} failed; {problem}")
    else:
        context.log.info(
            f"run {run.run_id} of {run.job_name} failed; alert sent"
            if alert_webhook.configured
            else f"run {run.run_id} failed"
        )
