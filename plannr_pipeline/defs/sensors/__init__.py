"""Sensors: imports as they progress, import failures, changed clients, our own run failures, and
runs whose process died."""

from plannr_pipeline.defs.sensors.clients import changed_clients_sensor
from plannr_pipeline.defs.sensors.dead_runs import dead_runs_sensor
from plannr_pipeline.defs.sensors.import_sensors import import_failures_sensor, import_progress_sensor
from plannr_pipeline.defs.sensors.run_failures import pipeline_run_failure_sensor

SENSORS = [
    import_progress_sensor,
    import_failures_sensor,
    changed_clients_sensor,
    pipeline_run_failure_sensor,
    dead_runs_sensor,
]

# The single firm's own sensors (they read its API and storage); the others watch the instance.
FIRM_SENSORS = [import_progress_sensor, import_failures_sensor, changed_clients_sensor]

__all__ = ["FIRM_SENSORS", "SENSORS"]
