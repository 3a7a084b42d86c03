"""Sensors: imports as they progress, import failures, changed clients, and our own run failures."""

from plannr_pipeline.defs.sensors.clients import changed_clients_sensor
from plannr_pipeline.defs.sensors.import_sensors import import_failures_sensor, import_progress_sensor
from plannr_pipeline.defs.sensors.run_failures import pipeline_run_failure_sensor

SENSORS = [
    import_progress_sensor,
    import_failures_sensor,
    changed_clients_sensor,
    pipeline_run_failure_sensor,
]

__all__ = ["SENSORS"]
