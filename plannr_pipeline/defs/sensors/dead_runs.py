"""`dead_runs_sensor`: in a deployment, ends the runs of a `sync` that died (see dead_runs)."""

import os

import dagster as dg

from plannr_pipeline.dead_runs import reap
from plannr_pipeline.defs.assets.common import API_POOL


@dg.sensor(
    name="dead_runs_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks failed the runs of a plannr-pipeline sync on this host whose process died (kill -9, "
        "the OOM killer) and frees their plannr_api pool slots, so scheduled runs do not wait on "
        "them forever; also frees slots that ended runs still hold."
    ),
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # Dagster's run monitoring cannot do this: the default run launcher has no worker health
    # check, and a sync's run has no run worker at all (it executes in the sync's own process).
    done: list[str] = []
    reap(context.instance, API_POOL, by=f"dead_runs_sensor (pid {os.getpid()})", say=done.append)
    for line in done:
        context.log.warning(line)
    return dg.SkipReason("; ".join(done) if done else "no run of a dead process")
