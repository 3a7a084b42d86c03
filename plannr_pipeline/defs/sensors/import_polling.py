"""Fetching the imports a sensor watches, and what counts as finished.

Plannr has no import webhooks, so imports are polled: everything created since yesterday
(`filter[date_from]`), plus, by uuid, any import still tracked as unfinished that is older.
Plannr does not document its status values; an import is taken as finished when its status is
a terminal one we know, or when no jobs remain (docs/plannr-api.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from plannr_pipeline.api import PlannrClient, RequestStats, endpoints
from plannr_pipeline.defs.resources import PlannrApi
from plannr_pipeline.storage.convert import LONDON, fitting, to_int, to_utc, uk_day

TERMINAL_STATUSES = {"completed", "complete", "finished", "failed", "cancelled", "canceled"}
RECENT_DAYS = 1


def _count(value: Any) -> int | None:
    """A job count as a whole number, None when it is not one (nonsense must not stop the sensor)."""
    try:
        return fitting(to_int(value), pa.int32())
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class ImportSnapshot:
    uuid: str
    type: str | None
    status: str | None
    progress: int | None
    total_jobs: int | None
    jobs_remaining: int | None
    failed_jobs: int
    created_day: str
    updated_at: datetime | None
    # Deliberately not kept: the import's failed rows and its error report's link. They hold client
    # data; the `imports` asset lands them in `import_errors`, and nothing a sensor says needs them.

    @classmethod
    def of(cls, record: dict[str, Any]) -> ImportSnapshot:
        return cls(
            uuid=record["uuid"],
            type=record.get("type"),
            status=record.get("status"),
            progress=_count(record.get("progress")),
            total_jobs=_count(record.get("total_jobs")),
            jobs_remaining=_count(record.get("jobs_remaining")),
            failed_jobs=_count(record.get("failed_jobs")) or 0,
            created_day=uk_day(to_utc(record["created_at"])),
            updated_at=to_utc(record.get("updated_at")),
        )

    @property
    def finished(self) -> bool:
        return (self.status or "").lower() in TERMINAL_STATUSES or self.jobs_remaining == 0

    @property
    def failed(self) -> bool:
        return (self.status or "").lower() == "failed"

    @property
    def progress_signature(self) -> list[Any]:
        """What the progress sensor compares between ticks."""
        return [self.status, self.progress, self.jobs_remaining, self.failed_jobs]


async def _fetch(api: PlannrClient, since: str, older_uuids: list[str]) -> list[dict[str, Any]]:
    path = endpoints.IMPORTS.path
    records = await api.list_all(path, {**endpoints.IMPORTS.params, endpoints.IMPORTS_CREATED_FROM: since})
    listed = {r["uuid"] for r in records}
    missing = [uuid for uuid in older_uuids if uuid not in listed]
    if missing:
        records += await api.list_all(path, {**endpoints.IMPORTS.params, "filter[uuid]": ",".join(missing)})
    return records


def poll_imports(
    plannr: PlannrApi, now: datetime, still_unfinished: list[str]
) -> tuple[list[ImportSnapshot], int]:
    """Recent imports and the older ones still tracked; also the number of requests made."""
    since = (now.astimezone(LONDON) - timedelta(days=RECENT_DAYS)).date().isoformat()
    stats = RequestStats()
    records = plannr.run(lambda api: _fetch(api, since, still_unfinished), stats=stats)
    return [ImportSnapshot.of(record) for record in records], stats.requests
