"""A data engineer's own asset on top of the Plannr data, through the definitions' DuckDB resource;
the analyst views are assets downstream of their tables, with schema and column lineage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.sync import run_sync

REPO = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location(
        "adviser_workload", REPO / "examples" / "adviser_workload.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_definitions_carry_a_duckdb_resource_on_the_database(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNR_DATA_DIR", str(tmp_path / "elsewhere"))
    from plannr_pipeline.definitions import resources

    built = resources()
    assert isinstance(built["duckdb"], DuckDBResource)
    assert built["duckdb"].database == str(tmp_path / "elsewhere" / "plannr.duckdb")
    assert (
        built["storage"].warehouse().db_path == tmp_path / "elsewhere" / "plannr.duckdb"
    )  # one setting moves both


@pytest.fixture
def synced_through_the_definitions(make_sandbox, monkeypatch, tmp_path) -> dict:
    """A sandbox of 40 clients synced into tmp_path/data with the definitions' own resources."""
    sandbox = make_sandbox(clients=40)
    monkeypatch.setenv("PLANNR_DATA_DIR", str(tmp_path / "data"))
    from plannr_pipeline.definitions import resources

    built = resources()
    built["plannr"] = PlannrApi(
        base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000
    )
    assert run_sync(resources_by_key=built, echo=lambda _: None).ok
    return built


def test_a_users_own_asset_reads_a_view_through_the_definitions_resource(
    synced_through_the_definitions, tmp_path
):
    from plannr_pipeline.definitions import ASSETS

    built = synced_through_the_definitions
    example = load_example()
    result = dg.materialize(
        [*ASSETS, example.adviser_workload], selection=[example.adviser_workload], resources=built
    )
    assert result.success
    [materialization] = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    with duckdb.connect(str(tmp_path / "data" / "plannr.duckdb"), read_only=True) as db:
        advisers, off_track = db.execute(
            "select count(distinct adviser_name), count(*) filter (where not on_track) from goal_progress"
        ).fetchone()
    assert metadata["dagster/row_count"].value == advisers
    assert metadata["goals_off_track"].value == off_track


def test_views_follow_the_data_folder_when_it_is_moved_or_copied(
    synced_through_the_definitions, monkeypatch, tmp_path
):
    """Views name absolute paths (an analyst's DuckDB finds them from any directory); a moved or
    copied folder's views are pointed at it by the next thing of ours that opens it."""
    import shutil

    from plannr_pipeline.definitions import ASSETS, resources
    from plannr_pipeline.storage.warehouse import Warehouse

    def clients_in(folder: Path) -> int:
        with duckdb.connect(str(folder / "plannr.duckdb"), read_only=True) as db:
            return db.execute("select count(*) from clients").fetchone()[0]

    copied = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copied)
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "data", moved)
    with pytest.raises(duckdb.IOException):
        clients_in(moved)  # still reading the old place, now gone

    assert "moved or copied" in Warehouse(copied).follow_a_move()
    assert Warehouse(copied).follow_a_move() is None  # once is enough
    shutil.rmtree(moved / "parquet" / "clients")  # the copy reads its own files, not these
    assert clients_in(copied) == 40

    # A user's asset through the definitions' DuckDB resource, on the moved folder.
    shutil.rmtree(moved)
    shutil.copytree(copied, moved)
    shutil.rmtree(copied)
    monkeypatch.setenv("PLANNR_DATA_DIR", str(moved))
    example = load_example()
    result = dg.materialize(
        [*ASSETS, example.adviser_workload], selection=[example.adviser_workload], resources=resources()
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert clients_in(moved) == 40

    # One Plannr asset's write on a moved folder repoints every view, not only its own.
    again = tmp_path / "again"
    shutil.move(moved, again)
    storage = {**synced_through_the_definitions, "storage": PlannrStorage(data_dir=str(again))}
    assert dg.materialize(ASSETS, selection=["staff"], resources=storage).success
    assert clients_in(again) == 40


@pytest.mark.parametrize(
    "view, upstream",
    [
        ("goal_progress", {"goals", "clients", "staff"}),
        ("client_overview", {"clients", "staff", "goals", "tasks"}),
        ("overdue_tasks", {"tasks", "staff"}),
        ("import_health", {"imports"}),
        ("goal_progress_history", {"goals"}),
    ],
)
def test_each_analyst_view_is_an_asset_downstream_of_its_tables(view, upstream):
    from plannr_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(view))
    assert {key.to_user_string() for key in node.parent_keys} == upstream
    spec_metadata = node.metadata
    schema = spec_metadata["dagster/column_schema"]
    lineage = spec_metadata["dagster/column_lineage"]
    assert {c.name for c in schema.columns} == set(lineage.deps_by_column)
    assert all(c.type.isupper() for c in schema.columns)  # DuckDB's type names
    assert node.automation_condition is not None


def test_goal_progress_lineage_names_its_source_columns():
    from plannr_pipeline.definitions import defs

    lineage = defs.resolve_asset_graph().get(dg.AssetKey("goal_progress")).metadata["dagster/column_lineage"]
    assert [
        (d.asset_key.to_user_string(), d.column_name) for d in lineage.deps_by_column["adviser_name"]
    ] == [("staff", "name")]
    assert [(d.asset_key.to_user_string(), d.column_name) for d in lineage.deps_by_column["target_gbp"]] == [
        ("goals", "target_amount_minor")
    ]
