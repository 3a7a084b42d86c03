"""`staff`: the firm's employee accounts, the people clients, goals and tasks point at
(advisers, administrators, paraplanners, task authors and assignees). A few requests."""

import dagster as dg

from plannr_pipeline.api import endpoints
from plannr_pipeline.defs.assets.common import NIGHTLY_FRESHNESS, collection_asset, fetch, land_listing
from plannr_pipeline.defs.assets.landing import Landing
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.storage import normalise
from plannr_pipeline.storage.tables import STAFF


@collection_asset((STAFF,), "GET /api/v1/account?filter[type]=employee", NIGHTLY_FRESHNESS)
def staff(context: dg.AssetExecutionContext, plannr: PlannrApi, storage: PlannrStorage):
    landing = Landing(context, storage, (STAFF,))
    fetch(context, plannr, lambda api: land_listing(api, landing, endpoints.STAFF, normalise.staff), landing)
    yield from landing.finish(plannr.source())
