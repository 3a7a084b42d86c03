"""`plannr-pipeline sync`: every asset, every partition, in one process, through Dagster.

One Dagster run: the monthly assets over their whole range (one filtered listing per
collection, BackfillPolicy.single_run) and the unpartitioned full sweeps and views beside them
(a range run materialises an unpartitioned asset once, unpartitioned). Each run has a fixed
cost (creating it, its planned events, resources, run start and end), so one run is cheaper
than one per partitioning. Assets of two different partitionings cannot share a run; were
there ever two, the sync would make one run for each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from plannr_pipeline import dead_runs
from plannr_pipeline.api import UnreachableError
from plannr_pipeline.defs.assets import ASSETS
from plannr_pipeline.defs.assets.common import API_POOL, SkippedUnreachable
from plannr_pipeline.defs.checks import CHECKS
from plannr_pipeline.defs.resources import resources_from_env
from plannr_pipeline.pool_wait import reaping_while_waiting, wait_for_slot

# How long a sync waits for a slot in the API pool before it gives up (--pool-wait).
POOL_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class Step:
    assets: list[dg.AssetsDefinition]
    partitions_def: dg.PartitionsDefinition | None

    @property
    def names(self) -> list[str]:
        return [key.to_user_string() for a in self.assets for key in a.keys]

    @property
    def name(self) -> str:
        return ", ".join(self.names)


def _steps(assets: list[dg.AssetsDefinition] = ASSETS) -> list[Step]:
    """One step per partitioning, in the order the assets are listed (dependencies first); the
    unpartitioned assets join the partitioned step when there is only one partitioning."""
    steps: list[Step] = []
    for asset in assets:
        same = next((s for s in steps if s.partitions_def == asset.partitions_def), None)
        if same is None:
            steps.append(Step([asset], asset.partitions_def))
        else:
            same.assets.append(asset)
    partitioned = [s for s in steps if s.partitions_def is not None]
    unpartitioned = [s for s in steps if s.partitions_def is None]
    if len(partitioned) == 1 and unpartitioned:
        return [Step([*partitioned[0].assets, *unpartitioned[0].assets], partitioned[0].partitions_def)]
    return steps


STEPS = _steps()
ASSET_NAMES = {name for step in STEPS for name in step.names}


@dataclass
class SyncReport:
    ok: bool = True
    rows: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    views_problems: list[str] = field(default_factory=list)
    rejected: int = 0
    erased_still_sent: int = 0  # erased clients the API still sends (withheld)
    seconds: float = 0.0


def range_tags(partitions_def: dg.PartitionsDefinition | None) -> dict[str, str]:
    if partitions_def is None:
        return {}
    keys = partitions_def.get_partition_keys()
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def _failed_with(event: dg.DagsterEvent, error_class: type[BaseException]) -> bool:
    """Whether a step failure's error, or one in its cause chain, is an `error_class`."""
    data = event.step_failure_data
    error = data.error if data else None
    while error is not None:
        if error.cls_name == error_class.__name__:
            return True
        error = error.cause or error.context
    return False


def _failure_line(event: dg.DagsterEvent) -> str:
    """The cause of a failed step in one line (the API's advice, a validation's numbers)."""
    data = event.step_failure_data
    error = data.error if data else None
    while error is not None and error.cause is not None and "dagster" in (error.cls_name or "").lower():
        error = error.cause
    if data and data.user_failure_data and data.user_failure_data.description:
        message = data.user_failure_data.description
    elif error is not None:
        message = (
            error.message.strip().splitlines()[-1] if error.message.strip() else error.cls_name or "error"
        )
    else:
        message = event.message or "step failed"
    return f"{event.step_key}: {message}"


# A sync's steps report through the run's event log, which the UI shows, and print to the terminal
# that runs the sync. Capturing that output as well would start four helper processes per run (a
# `tail -F` and a Python watcher each for stdout and stderr: ~25 MB between them, started while
# the run starts), so a sync's runs go without it. Runs launched from the UI keep theirs.
WITHOUT_CAPTURED_OUTPUT = {
    "compute_logs": {
        "module": "dagster._core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
}


def sync_instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance (the CLI has set it: plannr_pipeline.instance), whose run history
    the UI shares, without captured output; an ephemeral one for a library caller that set none."""
    home = os.path.expanduser(os.environ.get("DAGSTER_HOME", ""))
    if not home:
        return dg.DagsterInstance.ephemeral()
    if not (os.path.isabs(home) and os.path.isdir(home)):
        return dg.DagsterInstance.get()  # refuses it, with Dagster's own message naming the fix
    # `local_temp` given a folder is that folder's own persistent instance, its dagster.yaml read,
    # with overrides: the public way to open DAGSTER_HOME's instance with one setting changed.
    return dg.DagsterInstance.local_temp(tempdir=home, overrides=WITHOUT_CAPTURED_OUTPUT)


def run_sync(
    selected: set[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    resources_by_key: dict | None = None,
    echo=print,
    log_level: str = "INFO",
    should_stop=lambda: False,
    pool_wait: float = POOL_WAIT_SECONDS,
    assets: list[dg.AssetsDefinition] | None = None,
    checks: list[dg.AssetChecksDefinition] | None = None,
    pool: str = API_POOL,
) -> SyncReport:
    """Sync the single firm, or (assets, checks, resources_by_key and pool given) one firm of
    many: the same steps over that firm's own definitions."""
    report = SyncReport()
    steps = STEPS if assets is None else _steps(assets)
    assets, checks = assets or ASSETS, checks or CHECKS
    started = time.monotonic()
    instance = instance or sync_instance()
    # A sync killed earlier left its run STARTED, holding its slot: end it before waiting on it.
    dead_runs.reap(instance, pool, by=f"plannr-pipeline sync (pid {os.getpid()})", say=echo)
    for step in steps:
        if should_stop():  # SIGTERM or Ctrl-C: the step under way has unwound; start no other
            report.ok = False
            break
        selection = [name for name in step.names if selected is None or name in selected]
        if not selection:
            continue
        echo(f"==> {', '.join(selection)}")
        if gave_up := wait_for_slot(instance, pool, pool_wait, say=echo):
            report.ok = False
            report.failures.append(gave_up)
            break  # the next steps would wait for the same slot
        partitioned = any(
            a.partitions_def is not None and any(key.to_user_string() in selection for key in a.keys)
            for a in step.assets
        )
        with reaping_while_waiting(instance, pool, say=echo):
            run = dg.materialize(
                [*assets, *checks],  # the blocking checks of the selected assets run too
                selection=selection,
                resources=resources_by_key or resources_from_env(),
                instance=instance,
                # The process, so a later sync (or dead_runs_sensor) can tell if it died mid-run.
                tags={**dead_runs.process_tags(), **(range_tags(step.partitions_def) if partitioned else {})},
                # INFO shows each asset's progress lines (WARNING when terminal bars show them
                # instead); DEBUG would add an event per partition.
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                raise_on_error=False,
            )
        counted_assets = set()
        for event in run.get_asset_materialization_events():
            materialization = event.materialization
            metadata = materialization.metadata
            if materialization.asset_key in counted_assets:
                continue  # a range run records one materialisation per partition; the first has the totals
            counted_assets.add(materialization.asset_key)
            if "tables_written" in metadata:  # a collection: its tables, requests and rejections
                report.rows.update(
                    {name: int(rows) for name, rows in metadata["tables_written"].value.items()}
                )
                report.requests += int(metadata["requests"].value)
                report.rejected += int(metadata["rejected_records"].value)
                if (
                    materialization.asset_key.path[-1] == "clients"
                    and "erased_clients_still_sent" in metadata
                ):
                    report.erased_still_sent += int(metadata["erased_clients_still_sent"].value)
            elif "dagster/row_count" in metadata:  # an analyst view
                report.rows[materialization.asset_key.to_user_string()] = int(
                    metadata["dagster/row_count"].value
                )
            if "views_problem" in metadata:
                report.views_problems.append(str(metadata["views_problem"].value))
        for evaluation in run.get_asset_check_evaluations():
            report.checks[f"{evaluation.asset_key.to_user_string()}: {evaluation.check_name}"] = (
                evaluation.passed
            )
        if failed := [e for e in run.all_events if e.is_step_failure]:
            report.ok = False
            # Steps that did not try because an earlier one found the API unreachable are not
            # failures of their own: one line says they were skipped.
            report.failures.extend(
                _failure_line(e) for e in failed if not _failed_with(e, SkippedUnreachable)
            )
            if any(_failed_with(e, UnreachableError) for e in failed):  # the next steps would only wait too
                report.failures.append("remaining steps skipped: the API is unreachable")
                break
        if not run.success and not failed:
            report.ok = False
            report.failures.append(f"{step.name}: run did not succeed")
    report.seconds = time.monotonic() - started
    return report
