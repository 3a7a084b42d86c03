"""`circles` and their members and groups: a small collection, swept in full each time."""

import dagster as dg

from plannr_pipeline.api import endpoints
from plannr_pipeline.defs.assets.common import NIGHTLY_FRESHNESS, collection_asset, fetch, land_listing
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import CIRCLE_ACCOUNTS, CIRCLE_GROUPS, CIRCLES

CIRCLE_TABLES = (CIRCLES, CIRCLE_ACCOUNTS, CIRCLE_GROUPS)


@collection_asset(CIRCLE_TABLES, "GET /api/v1/circles", NIGHTLY_FRESHNESS)
def circles(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    landing = Landing(context, storage, CIRCLE_TABLES)
    fetch(
        context, plannr, lambda api: land_listing(api, landing, endpoints.CIRCLES, normalise.circles), landing
    )
    yield from landing.finish(plannr.source())
