"""An asset of your own on top of the Plannr data: each adviser's goals and how many are off track.

Copy it into your own code location. It reads the `goal_progress` view through the `duckdb`
resource (dagster-duckdb's DuckDBResource) that plannr_pipeline's definitions carry, so it reads
whatever database PLANNR_DATA_DIR points the pipeline at, and it sits downstream of the view in
the asset graph. To run it beside the pipeline:

    import dagster as dg
    from plannr_pipeline.definitions import defs as plannr_defs
    defs = dg.Definitions.merge(plannr_defs, dg.Definitions(assets=[adviser_workload]))
"""

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

WORKLOAD_SQL = """
select adviser_name, count(*) as goals,
       count(*) filter (where not on_track) as goals_off_track,
       round(sum(target_gbp), 2) as target_gbp
from goal_progress
group by adviser_name
order by goals desc, adviser_name
"""


@dg.asset(
    deps=["goal_progress"],
    kinds={"duckdb", "pandas"},
    group_name="examples",
    description="Each adviser's goals, how many are off track, and their total target in pounds.",
)
def adviser_workload(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as connection:
        workload: pd.DataFrame = connection.execute(WORKLOAD_SQL).df()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(workload),
            "preview": dg.MetadataValue.md(workload.to_markdown(index=False)),
            "goals_off_track": int(workload["goals_off_track"].sum()),
        }
    )
