"""`imports` and their row errors: every CSV import, swept in full.

Imports are few (a firm starts a handful a day) and a listing page holds 500, so the whole
history costs a request or two. Daily partitions cost far more in Dagster bookkeeping than they
save (a range run over 328 days took 17 s for one request), and nobody backfills one day of
imports on its own: the sensors simply refresh this asset when an import moves on.
"""

import dagster as dg

from plannr_pipeline.api import endpoints
from plannr_pipeline.defs.assets.common import HOURLY_FRESHNESS, collection_asset, fetch, land_listing
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.convert import to_utc, uk_day
from plannr_pipeline.storage.tables import IMPORT_ERRORS, IMPORTS

IMPORT_TABLES = (IMPORTS, IMPORT_ERRORS)


def import_day(record: dict) -> str:
    return uk_day(to_utc(record["created_at"]))


@collection_asset(IMPORT_TABLES, "GET /api/v1/import", HOURLY_FRESHNESS)
def imports(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    landing = Landing(context, storage, IMPORT_TABLES)

    def rows_of(records: list[dict], drift: normalise.Drift) -> dict[str, list[dict]]:
        return normalise.imports(records, drift, import_day)

    fetch(context, plannr, lambda api: land_listing(api, landing, endpoints.IMPORTS, rows_of), landing)
    yield from landing.finish(plannr.source())
