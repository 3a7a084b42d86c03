"""`plannr-pipeline sync`: every asset, every partition, in one process, through Dagster.

Assets with different partitions cannot share one run, so the sync is a few runs in
dependency order: each partitioned group is one run over its whole partition range (one
filtered listing per collection, BackfillPolicy.single_run), then the full sweeps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from plannr_pipeline.checks import CHECKS
from plannr_pipeline.definitions import ASSETS, resources
from plannr_pipeline.partitions import client_months, import_days


@dataclass(frozen=True)
class Step:
    name: str
    # Each inner list is one Dagster op: a collection and its child tables land together.
    units: list[list[str]]
    partitions_def: dg.PartitionsDefinition | None = None

    def selection(self, selected: set[str] | None) -> list[str]:
        return [key for unit in self.units if selected is None or selected & set(unit) for key in unit]


STEPS = [
    Step("clients and goals", [["clients"], ["goals"]], client_months),
    Step("imports", [["imports", "import_errors"]], import_days),
    Step("circles", [["circles", "circle_accounts", "circle_groups"]]),
    Step("tasks", [["tasks", "task_custom_fields", "task_assignees"]]),
]
ASSET_NAMES = {key for step in STEPS for unit in step.units for key in unit}


@dataclass
class SyncReport:
    ok: bool = True
    rows: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    check_requests: int = 0
    seconds: float = 0.0


def _range_tags(partitions_def: dg.PartitionsDefinition | None) -> dict[str, str]:
    if partitions_def is None:
        return {}
    keys = partitions_def.get_partition_keys()
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def run_sync(
    selected: set[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    resources_by_key: dict | None = None,
    echo=print,
) -> SyncReport:
    report = SyncReport()
    started = time.monotonic()
    instance = instance or (dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral())
    for step in STEPS:
        selection = step.selection(selected)
        if not selection:
            continue
        echo(f"==> {step.name}")
        run = dg.materialize(
            [*ASSETS, *CHECKS],  # the blocking checks of the selected assets run too
            selection=selection,
            resources=resources_by_key or resources(),
            instance=instance,
            tags=_range_tags(step.partitions_def),
            # INFO shows each asset's progress lines; DEBUG would add an event per partition.
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
        requests_by_step: dict[str, int] = {}  # a multi-asset's tables repeat its step's count
        for event in run.get_asset_materialization_events():
            materialization = event.materialization
            metadata = materialization.metadata
            report.rows[materialization.asset_key.to_user_string()] = int(metadata["dagster/row_count"].value)
            requests_by_step[str(event.step_key)] = int(metadata["requests"].value)
        report.requests += sum(requests_by_step.values())
        for evaluation in run.get_asset_check_evaluations():
            report.checks[f"{evaluation.asset_key.to_user_string()}: {evaluation.check_name}"] = evaluation.passed
            if "requests" in evaluation.metadata:
                report.check_requests += int(evaluation.metadata["requests"].value)
        if name_failures := [e.message for e in run.all_events if e.is_step_failure]:
            report.ok = False
            report.failures.extend(name_failures)
        if not run.success and not name_failures:
            report.ok = False
            report.failures.append(f"{step.name}: run did not succeed")
    report.seconds = time.monotonic() - started
    return report
