"""The one place where assets, resources, sensors and schedules meet."""

from __future__ import annotations

import dagster as dg

from plannr_pipeline.alerts import AlertWebhook
from plannr_pipeline.assets import COLLECTION_ASSETS
from plannr_pipeline.assets.analyst_views import VIEW_ASSETS
from plannr_pipeline.checks import CHECKS
from plannr_pipeline.jobs import JOBS
from plannr_pipeline.resources import PlannrApi, storage_resources_from_env
from plannr_pipeline.schedules import SCHEDULES
from plannr_pipeline.sensors import SENSORS

ASSETS = [*COLLECTION_ASSETS, *VIEW_ASSETS]


def resources() -> dict[str, dg.ConfigurableResource]:
    storage, duckdb = storage_resources_from_env()
    return {"plannr": PlannrApi.from_env(), "storage": storage, "duckdb": duckdb, "alert_webhook": AlertWebhook.from_env()}


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=resources(),
)
