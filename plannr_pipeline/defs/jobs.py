"""Asset jobs that sensors and schedules launch, derived from the asset definitions.

Assets with different partitions need different jobs: the monthly client assets together,
and the full sweeps (everything unpartitioned) together.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from plannr_pipeline.defs.assets import COLLECTION_ASSETS
from plannr_pipeline.defs.assets.tasks import TasksConfig
from plannr_pipeline.defs.partitions import client_months
from plannr_pipeline.firms import DEFAULT_FIRM, Firm

FIRM_TAG = "plannr/firm"


def jobs_for(firm: Firm, collection_assets: Sequence[dg.AssetsDefinition]) -> list[Any]:
    """One firm's four jobs over its own collection assets, named `<slug>_...` for a firm."""
    by_name = {a.key.path[-1]: a for a in collection_assets}
    monthly = [a for a in collection_assets if a.partitions_def == client_months]
    swept = [a for a in collection_assets if a.partitions_def is None]
    # The queued run coordinator limits runs per value of this tag (deploy/dagster.yaml), so one
    # firm's backlog never takes every run slot of a deployment serving many.
    tags = {FIRM_TAG: firm.slug or "default"}
    return [
        dg.define_asset_job(
            firm.name("clients_job"),
            selection=dg.AssetSelection.assets(*monthly),
            partitions_def=client_months,
            description="Clients and their goals for the requested months.",
            tags=tags,
        ),
        dg.define_asset_job(
            firm.name("imports_job"),
            selection=dg.AssetSelection.assets(by_name["imports"]),
            description="Every import and its row errors (a request or two).",
            tags=tags,
        ),
        dg.define_asset_job(
            firm.name("sweeps_job"),
            selection=dg.AssetSelection.assets(*swept),
            description="Full sweeps of the unpartitioned collections: "
            + ", ".join(a.key.to_user_string() for a in swept)
            + ".",
            tags=tags,
        ),
        dg.define_asset_job(
            firm.name("tasks_incremental_job"),
            selection=dg.AssetSelection.assets(by_name["tasks"]),
            config=dg.RunConfig(ops={by_name["tasks"].op.name: TasksConfig(incremental=True)}),
            description="Tasks changed since the stored updated_at watermark (sort=-updated_at, early stop).",
            tags=tags,
        ),
    ]


MONTHLY_ASSETS = [a for a in COLLECTION_ASSETS if a.partitions_def == client_months]
SWEPT_ASSETS = [a for a in COLLECTION_ASSETS if a.partitions_def is None]

JOBS = jobs_for(DEFAULT_FIRM, COLLECTION_ASSETS)
clients_job, imports_job, sweeps_job, tasks_incremental_job = JOBS
