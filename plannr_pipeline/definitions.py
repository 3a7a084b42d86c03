"""The one place where the definitions meet: everything in `defs/` (assets, checks, jobs,
schedules, sensors), found by `load_from_defs_folder`, plus the resources, read from the
environment (the variables docs/design.md fixes).

With firm folders (`defs/firms/<slug>/defs.yaml`, a `PlannrFirm` each) the firms are the
deployment: each brings its own prefixed assets, jobs, schedules and resources, and the single
firm of the `PLANNR_*` variables (today's unprefixed keys) is left out. Without any, the single
firm is all there is, exactly as before firms existed.
"""

from pathlib import Path

import dagster as dg

from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.assets import ASSETS
from plannr_pipeline.defs.checks import CHECKS
from plannr_pipeline.defs.erasure import ERASURE_DEFS
from plannr_pipeline.defs.executor import executor_from_env
from plannr_pipeline.defs.jobs import JOBS
from plannr_pipeline.defs.lake_maintenance import LAKE_MAINTENANCE_DEFS
from plannr_pipeline.defs.refresh import REFRESH_DEFS
from plannr_pipeline.defs.resources import resources_from_env as resources
from plannr_pipeline.defs.schedules import SCHEDULES
from plannr_pipeline.defs.sensors import FIRM_SENSORS
from plannr_pipeline.firms.files import read_firm_files
from plannr_pipeline.private_files import owner_only_umask

__all__ = ["ASSETS", "FIRMS_DIR", "defs", "firm_folders", "resources"]

# The code server and every run worker load this module before they write anything: what they
# create (Parquet, plannr.duckdb, compute logs) is the owner's alone, whoever started them and
# whatever their umask.
owner_only_umask()

FIRMS_DIR = Path(__file__).parent / "defs" / "firms"


def firm_folders() -> list[Path]:
    return sorted(p.parent for p in FIRMS_DIR.glob("*/defs.yaml"))


def _without_single_firm(loaded: dg.Definitions) -> dg.Definitions:
    """The loaded definitions less the single firm's (the module-level objects in defs/, which
    `load_from_defs_folder` always finds); what watches the instance (dead runs, run failures)
    stays."""
    # The single firm's erasure, retention and lake jobs (each firm has its own, `<slug>_erase_client_job`).
    single = {
        id(x)
        for x in [
            *ASSETS,
            *CHECKS,
            *JOBS,
            *SCHEDULES,
            *FIRM_SENSORS,
            *ERASURE_DEFS,
            *REFRESH_DEFS,
            *LAKE_MAINTENANCE_DEFS,
        ]
    }

    def kept(items: object) -> list:
        return [x for x in (items or []) if id(x) not in single]  # type: ignore[union-attr]

    return dg.Definitions(
        assets=kept(loaded.assets),
        asset_checks=kept(loaded.asset_checks),
        jobs=kept(loaded.jobs),
        schedules=kept(loaded.schedules),
        sensors=kept(loaded.sensors),
        resources={**(loaded.resources or {}), "alert_webhook": AlertWebhook.from_env()},
        executor=executor_from_env(),
    )


def _definitions() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    if firm_folders():
        read_firm_files(FIRMS_DIR)  # two firms sharing a slug or a data folder: refused here
        return _without_single_firm(loaded)
    return dg.Definitions.merge(loaded, dg.Definitions(resources=resources(), executor=executor_from_env()))


defs = _definitions()
