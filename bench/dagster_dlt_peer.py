"""The peer a Dagster user would pick: dlt's `rest_api` source as `@dlt_assets` (dagster-dlt), in
one Dagster run on a fresh instance, loading the same collections as bench/dlt_peer.py into DuckDB.

The same source, pipeline and tuning as the bare dlt peer (bench/dlt_peer.py); what it adds is
what Dagster costs: importing it, creating a fresh DAGSTER_HOME's instance, planning and running
the run, and an event per asset (one per dlt resource) in the instance's storage.

    python bench/dagster_dlt_peer.py --base-url URL --token T --data-dir DIR [--workers 32]

Prints one line `ROWS {json}`, as the bare peer does.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dlt_peer  # noqa: E402  (beside this file; bench/ is not a package)


def main() -> int:
    args = dlt_peer.arguments(__doc__)
    dlt_peer.configure(args.data_dir, args.workers)
    # A fresh instance of its own, as `plannr-pipeline sync` gets in the benchmark.
    os.environ["DAGSTER_HOME"] = home = os.path.join(args.data_dir, "dagster_home")
    os.makedirs(home, exist_ok=True)

    import dagster as dg
    from dagster_dlt import DagsterDltResource, dlt_assets

    pipeline, source = dlt_peer.pipeline_and_source(args.base_url, args.token, args.data_dir)

    @dlt_assets(dlt_source=source, dlt_pipeline=pipeline, name="plannr_dlt", group_name="plannr_dlt")
    def plannr_dlt_assets(context: dg.AssetExecutionContext, dlt: DagsterDltResource):
        yield from dlt.run(context=context, loader_file_format="parquet")

    result = dg.materialize(
        [plannr_dlt_assets],
        resources={"dlt": DagsterDltResource()},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )
    if not result.success:
        print("dagster-dlt run failed", file=sys.stderr)
        return 1
    dlt_peer.print_rows(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
