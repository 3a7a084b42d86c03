"""Asset jobs that sensors and schedules launch. Assets with different partitions need
different jobs: clients and goals by month, imports by day, the full sweeps unpartitioned."""

import dagster as dg

from plannr_pipeline.partitions import client_months, import_days

CLIENT_ASSETS = ["clients", "goals"]
IMPORT_ASSETS = ["imports", "import_errors"]
SWEEP_ASSETS = ["circles", "circle_accounts", "circle_groups", "tasks", "task_custom_fields", "task_assignees"]
TASK_ASSETS = ["tasks", "task_custom_fields", "task_assignees"]

clients_job = dg.define_asset_job(
    "clients_job", selection=CLIENT_ASSETS, partitions_def=client_months,
    description="Clients and their goals for the requested months.",
)
imports_job = dg.define_asset_job(
    "imports_job", selection=IMPORT_ASSETS, partitions_def=import_days,
    description="Imports and their row errors for the requested days.",
)
sweeps_job = dg.define_asset_job(
    "sweeps_job", selection=SWEEP_ASSETS,
    description="Full sweeps of circles and tasks (and their child tables).",
)
tasks_incremental_job = dg.define_asset_job(
    "tasks_incremental_job", selection=TASK_ASSETS,
    config={"ops": {"tasks_asset": {"config": {"incremental": True}}}},
    description="Tasks changed since the stored updated_at watermark (sort=-updated_at, early stop).",
)

JOBS = [clients_job, imports_job, sweeps_job, tasks_incremental_job]
