"""A firm's whole definitions from the same asset modules as the single firm's."""

from __future__ import annotations

import dagster as dg

from plannr_pipeline.defs.assets import COLLECTION_ASSETS
from plannr_pipeline.defs.assets.analyst_views import analyst_views_for
from plannr_pipeline.defs.assets.common import API_POOL, collection_asset_for
from plannr_pipeline.defs.checks import checks_for
from plannr_pipeline.defs.erasure import erasure_defs_for
from plannr_pipeline.defs.jobs import jobs_for
from plannr_pipeline.defs.lake_maintenance import lake_maintenance_defs_for
from plannr_pipeline.defs.refresh import refresh_defs_for
from plannr_pipeline.defs.schedules import schedules_for
from plannr_pipeline.defs.sensors.clients import changed_clients_sensor_for
from plannr_pipeline.defs.sensors.import_sensors import import_sensors_for
from plannr_pipeline.firms.settings import FirmSettings


def collection_assets_of(settings: FirmSettings) -> list[dg.AssetsDefinition]:
    return [collection_asset_for(a.key.path[-1], settings.firm) for a in COLLECTION_ASSETS]


def firm_definitions(settings: FirmSettings) -> dg.Definitions:
    firm = settings.firm
    collections = collection_assets_of(settings)
    jobs = jobs_for(firm, collections)
    clients_job, imports_job, *_ = jobs
    erase_job, retention_job, retention_schedule = erasure_defs_for(firm, running=settings.schedules_running)
    refresh_job, refresh_schedule = refresh_defs_for(
        firm, lambda: firm_run_parts(settings, firm.pool(API_POOL))
    )
    # Each firm's lake is its own (schema and prefix), so each is kept small by its own job.
    lake_jobs, lake_schedules = [], []
    if settings.lake():
        lake_job, lake_schedule = lake_maintenance_defs_for(firm, running=settings.schedules_running)
        lake_jobs, lake_schedules = [lake_job], [lake_schedule]
    return dg.Definitions(
        assets=[*collections, analyst_views_for(firm)],
        asset_checks=checks_for(firm),
        jobs=[*jobs, erase_job, retention_job, refresh_job, *lake_jobs],
        schedules=[
            *schedules_for(
                firm,
                jobs,
                running=settings.schedules_running,
                nightly=settings.nightly_cron,
                hourly=settings.hourly_cron,
            ),
            retention_schedule,
            refresh_schedule,
            *lake_schedules,
        ],
        # Each firm polls its own API with its own token, keeping its own cursors.
        sensors=[
            changed_clients_sensor_for(firm, clients_job),
            *import_sensors_for(firm, imports_job, clients_job),
        ],
        resources=settings.resources(),
    )


def firm_run_parts(settings: FirmSettings, pool: str) -> dict:
    """What `run_sync` needs to sync this firm alone: its assets, checks, resources and pool."""
    firm = settings.firm
    return {
        "assets": [*collection_assets_of(settings), analyst_views_for(firm)],
        "checks": checks_for(firm),
        "resources_by_key": settings.resources(),
        "pool": pool,
    }
