"""The analyst views as assets, downstream of the tables they read: where a user meets the data
in the UI (schema, description, column lineage) and the place to build from.

A view costs nothing to refresh: it holds a query, not data, and reads the current Parquet at
query time. The assets stay current without a person (eager automation after their tables land).
"""

import dagster as dg

from plannr_pipeline.defs.assets.common import GROUP, OWNERS
from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.history import HISTORY_OF
from plannr_pipeline.storage.tables import TABLES
from plannr_pipeline.storage.views import ANALYST_VIEWS, AnalystView

# Relations that are not assets of their own, and the asset that writes them.
WRITTEN_BY = {"import_errors": "imports", **{f"{name}_history": name for name in HISTORY_OF}}


def asset_of(relation: str) -> str:
    return WRITTEN_BY.get(relation, relation)


def column_lineage(view: AnalystView, firm: Firm = DEFAULT_FIRM) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column.name: [
                dg.TableColumnDep(
                    asset_key=firm.key(asset_of(source.split(".")[0])), column_name=source.split(".")[1]
                )
                for source in column.sources
            ]
            for column in view.columns
        }
    )


def view_spec(view: AnalystView, firm: Firm = DEFAULT_FIRM) -> dg.AssetSpec:
    return dg.AssetSpec(
        firm.key(view.name),
        description=view.description,
        group_name=firm.group(GROUP),  # one group: the graph shows the views beside the tables they read
        owners=OWNERS,
        kinds={"duckdb", "sql"},
        deps=[firm.key(name) for name in sorted({asset_of(relation) for relation in view.reads})],
        automation_condition=dg.AutomationCondition.eager(),
        metadata={
            "dagster/table_name": view.name,
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(c.name, c.duckdb_type, description=c.description) for c in view.columns
                ]
            ),
            "dagster/column_lineage": column_lineage(view, firm),
            "sql": dg.MetadataValue.md(f"```sql\n{view.sql.strip()}\n```"),
        },
    )


VIEWS_BY_NAME = {view.name: view for view in ANALYST_VIEWS}


def analyst_views_for(firm: Firm) -> dg.AssetsDefinition:
    """The views of one firm's database, as one multi-asset."""

    def views(context: dg.AssetExecutionContext, storage: PlannrStorage):
        """The selected views in one step: the database's views brought in line (written only where a
        definition changed), then their row counts in one connection (a step per view would cost
        more in Dagster's bookkeeping than the view)."""
        warehouse = storage.warehouse()
        names = [key.path[-1] for key in context.selected_asset_keys]
        problem = warehouse.refresh_views()
        if problem:  # the definitions already in the database still read the current Parquet
            context.log.warning(problem)
        counts = {} if problem else warehouse.counts(names)
        for name in names:
            # The UI draws column lineage from the latest materialisation, so every one carries it.
            metadata = {
                "dagster/column_lineage": column_lineage(VIEWS_BY_NAME[name], firm),
                "database": str(warehouse.db_path),
            }
            if problem:
                metadata.update({"views_refreshed": False, "views_problem": problem})
            else:
                metadata["views_refreshed"] = True
                if counts.get(name) is not None:  # None if another program took the database meanwhile
                    metadata["dagster/row_count"] = counts[name]
            yield dg.MaterializeResult(asset_key=firm.key(name), metadata=metadata)

    return dg.multi_asset(
        specs=[view_spec(view, firm) for view in ANALYST_VIEWS],
        can_subset=True,
        name=firm.name("analyst_views"),
    )(rename_resources(views, firm.resource_keys()))


analyst_views = analyst_views_for(DEFAULT_FIRM)


VIEW_ASSETS = [analyst_views]
assert all(asset_of(r) in TABLES for view in ANALYST_VIEWS for r in view.reads), (
    "a view reads a relation no asset writes"
)
