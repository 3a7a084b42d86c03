"""The one place where the definitions meet: everything in `defs/` (assets, checks, jobs,
schedules, sensors), found by `load_from_defs_folder`, plus the resources, read from the
environment (the variables docs/design.md fixes)."""

from pathlib import Path

import dagster as dg

from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.assets import ASSETS
from plannr_pipeline.defs.resources import PlannrApi, storage_resources_from_env
from plannr_pipeline.private_files import owner_only_umask

__all__ = ["ASSETS", "defs", "resources"]

# The code server and every run worker load this module before they write anything: what they
# create (Parquet, plannr.duckdb, compute logs) is the owner's alone, whoever started them and
# whatever their umask.
owner_only_umask()


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
