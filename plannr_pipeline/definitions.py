"""The one place where the definitions meet: everything in `defs/` (assets, checks, jobs,
schedules, sensors), found by `load_from_defs_folder`, plus the resources, read from the
environment (the variables docs/design.md fixes)."""

from pathlib import Path

import dagster as dg

from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.assets import ASSETS
from plannr_pipeline.defs.resources import PlannrApi, storage_resources_from_env

__all__ = ["ASSETS", "defs", "resources"]


def resources() -> dict[str, dg.ConfigurableResource]:
    storage, duckdb = storage_resources_from_env()
    return {
        "plannr": PlannrApi.from_env(),
        "storage": storage,
        "duckdb": duckdb,
        "alert_webhook": AlertWebhook.from_env(),
    }


defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(resources=resources()),
)
