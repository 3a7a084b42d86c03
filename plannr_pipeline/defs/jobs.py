"""Asset jobs that sensors and schedules launch, derived from the asset definitions.

Assets with different partitions need different jobs: the monthly client assets together,
and the full sweeps (everything unpartitioned) together.
"""

import dagster as dg

from plannr_pipeline.defs.assets import COLLECTION_ASSETS
from plannr_pipeline.defs.assets.imports import imports
from plannr_pipeline.defs.assets.tasks import TasksConfig, tasks
from plannr_pipeline.defs.partitions import client_months

MONTHLY_ASSETS = [a for a in COLLECTION_ASSETS if a.partitions_def == client_months]
SWEPT_ASSETS = [a for a in COLLECTION_ASSETS if a.partitions_def is None]

clients_job = dg.define_asset_job(
    "clients_job",
    selection=dg.AssetSelection.assets(*MONTHLY_ASSETS),
    partitions_def=client_months,
    description="Clients and their goals for the requested months.",
)
imports_job = dg.define_asset_job(
    "imports_job",
    selection=dg.AssetSelection.assets(imports),
    description="Every import and its row errors (a request or two).",
)
sweeps_job = dg.define_asset_job(
    "sweeps_job",
    selection=dg.AssetSelection.assets(*SWEPT_ASSETS),
    description="Full sweeps of the unpartitioned collections: "
    + ", ".join(a.key.to_user_string() for a in SWEPT_ASSETS)
    + ".",
)
tasks_incremental_job = dg.define_asset_job(
    "tasks_incremental_job",
    selection=dg.AssetSelection.assets(tasks),
    config=dg.RunConfig(ops={tasks.op.name: TasksConfig(incremental=True)}),
    description="Tasks changed since the stored updated_at watermark (sort=-updated_at, early stop).",
)

JOBS = [clients_job, imports_job, sweeps_job, tasks_incremental_job]
