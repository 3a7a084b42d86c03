"""The sync's Dagster run with nothing in it: every asset and check of the sync, same keys, same
monthly partitions and range, same dependencies, each body returning at once.

What any `plannr-pipeline sync` pays to Dagster before its own code runs: importing it, creating
a fresh DAGSTER_HOME's SQLite instance as the sync does (`plannr_pipeline.instance`), and one
range run over these assets (its planned events and a materialisation event per partition of the
monthly assets, check evaluations, step events). Run by bench/bench_floor.py in a process of its
own with DAGSTER_HOME set to a fresh folder.

    DAGSTER_HOME=<fresh folder> python bench/dagster_floor_peer.py

Prints one line `PHASES {json}`: seconds from the process's start to the end of its imports, of
the instance's creation and of the run.
"""

import json
import time

STARTED = time.perf_counter()  # the interpreter's own start is in the parent's wall time

import dagster as dg  # noqa: E402

from plannr_pipeline.defs.assets import ASSETS  # noqa: E402
from plannr_pipeline.defs.checks import CHECKS  # noqa: E402
from plannr_pipeline.instance import prepare_instance  # noqa: E402
from plannr_pipeline.sync import STEPS, range_tags, sync_instance  # noqa: E402


def stand_in(index: int, asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """An asset of the same keys, partitions, dependencies and checks whose body does nothing."""

    @dg.multi_asset(
        name=f"stand_in_{index}",
        specs=list(asset.specs),
        check_specs=list(asset.check_specs),
        backfill_policy=asset.backfill_policy,
        can_subset=asset.can_subset,
    )
    def nothing(context: dg.AssetExecutionContext):
        for key in context.selected_asset_keys:
            yield dg.MaterializeResult(asset_key=key)
        for check in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return nothing


def check_stand_in(index: int, checks: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(name=f"check_stand_in_{index}", specs=list(checks.check_specs))
    def nothing(context: dg.AssetCheckExecutionContext):
        for check in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return nothing


def main() -> None:
    imported = time.perf_counter()
    prepare_instance()
    instance = sync_instance()
    created = time.perf_counter()
    (step,) = STEPS  # the sync makes one run of one partitioning (plannr_pipeline.sync)
    result = dg.materialize(
        [
            *(stand_in(i, a) for i, a in enumerate(ASSETS)),
            *(check_stand_in(i, c) for i, c in enumerate(CHECKS)),
        ],
        selection=step.names,
        instance=instance,
        tags=range_tags(step.partitions_def),
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # as the sync runs
        raise_on_error=True,
    )
    ran = time.perf_counter()
    materialisations = len(result.get_asset_materialization_events())
    phases = {
        "imports": imported - STARTED,
        "instance": created - imported,
        "run": ran - created,
        "materialisations": materialisations,
    }
    print("PHASES " + json.dumps(phases))


if __name__ == "__main__":
    main()
