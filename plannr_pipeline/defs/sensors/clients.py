"""`changed_clients_sensor`: re-syncs only the months that hold changed or new clients.

Plannr has no updated-since filter, so the sensor reads clients newest-updated first
(`sort=-updated_at`) and stops at the page that reaches its watermark: usually one request.
"""

import json
from datetime import datetime
from typing import Any

import dagster as dg

from plannr_pipeline.api import PlannrClient, PlannrError, RequestStats, endpoints
from plannr_pipeline.defs.jobs import clients_job
from plannr_pipeline.defs.partitions import client_months, partition_key_of
from plannr_pipeline.defs.resources import PlannrApi
from plannr_pipeline.defs.sensors.cursors import load_cursor
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.convert import to_utc


async def changed_since(api: PlannrClient, watermark: datetime | None) -> list[dict]:
    """Clients updated at or after the watermark (all of page 1 when there is none yet)."""
    changed: list[dict] = []
    listing = endpoints.CLIENTS.with_params(**endpoints.NEWEST_UPDATED_FIRST)
    async for page in api.walk_pages(listing.path, listing.params):
        fresh = [c for c in page.records if watermark is None or to_utc(c["updated_at"]) >= watermark]
        changed.extend(fresh)
        if watermark is None or len(fresh) < len(page.records):
            break
    return changed


def changed_clients_sensor_for(firm: Firm, clients_job: Any) -> dg.SensorDefinition:
    """One firm's changed-clients sensor, `<slug>_changed_clients_sensor` for a firm, launching
    its own clients job through its own API resource (so its own token and cursor)."""

    def changed_clients_sensor(context: dg.SensorEvaluationContext, plannr: PlannrApi):
        state = load_cursor(context, {"watermark", "uuids_at_watermark"})
        try:
            watermark = datetime.fromisoformat(state["watermark"]) if state else None
        except (TypeError, ValueError):
            context.log.warning(
                "the cursor's watermark could not be read; starting again from a fresh baseline"
            )
            state = watermark = None
        stats = RequestStats()
        try:
            changed = plannr.run(lambda api: changed_since(api, watermark), stats=stats)
            requests = stats.requests
        except PlannrError as error:
            return dg.SkipReason(f"Plannr API error; state kept, will retry next tick: {error}")
        # Clients updated exactly at the watermark were seen last tick unless their uuid is new.
        seen_at_watermark = set(state["uuids_at_watermark"]) if state else set()
        news = [
            c
            for c in changed
            if not (to_utc(c["updated_at"]) == watermark and c["uuid"] in seen_at_watermark)
        ]
        if not changed:
            return dg.SkipReason("no clients yet" if state is None else "no changed clients")
        newest = max(to_utc(c["updated_at"]) for c in changed)
        cursor = json.dumps(
            {
                "watermark": newest.isoformat(),
                "uuids_at_watermark": sorted(c["uuid"] for c in changed if to_utc(c["updated_at"]) == newest),
            }
        )
        if state is None:  # first tick: a baseline, not a replay of every client
            return dg.SensorResult(cursor=cursor, skip_reason=f"baseline at {newest.isoformat()}")
        if not news:
            return dg.SensorResult(cursor=cursor, skip_reason="no changed clients")
        months = sorted({partition_key_of(to_utc(c["created_at"]), client_months) for c in news})
        context.log.info(f"{len(news)} changed clients in {len(months)} month(s), {requests} request(s)")
        runs = [
            dg.RunRequest(
                job_name=clients_job.name,
                partition_key=month,
                run_key=f"clients-changed:{month}:{newest.isoformat()}",
            )
            for month in months
        ]
        return dg.SensorResult(run_requests=runs, cursor=cursor)

    return dg.sensor(
        name=firm.name("changed_clients_sensor"),
        jobs=[clients_job],
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Polls Plannr clients by most recent update (sort=-updated_at), usually one request, and runs "
            f"`{clients_job.name}` (clients and their goals) only for the created months that hold changed or new clients."
        ),
    )(rename_resources(changed_clients_sensor, firm.resource_keys()))


changed_clients_sensor = changed_clients_sensor_for(DEFAULT_FIRM, clients_job)
