"""The Dagster UI end to end: `dagster dev` as the README starts it, driven in headless
Chromium (Playwright pointed at Debian's /usr/bin/chromium), and through dagster-graphql.

Screenshots land in test-artifacts/. Every process started here is stopped at the end.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.cli import clean_env, run_cli, stop_group

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# As the probe on this kind of machine starts it: without the background-networking flags
# Chromium keeps trying hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SANDBOX_CLIENTS = 30
LOCATION = "plannr_pipeline"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


@dataclass
class DagsterUI:
    url: str
    port: int
    data_dir: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def count(self, table: str) -> int:
        with duckdb.connect(str(self.data_dir / "plannr.duckdb"), read_only=True) as db:
            return db.execute(f"select count(*) from {table}").fetchone()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, every: float = 2.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory) -> DagsterUI:
    workdir = tmp_path_factory.mktemp("newcomer")
    home = workdir / ".dagster_home"  # what the quick start leaves, DAGSTER_HOME unset
    data_dir = workdir / "data"
    settings = {"PLANNR_DATA_DIR": str(data_dir), "PLANNR_SANDBOX_CLIENTS": str(SANDBOX_CLIENTS)}
    env = clean_env({**settings, "DAGSTER_HOME": str(home)})
    # The newcomer's path: a sync first (as scripts/quickstart.sh runs it: the installed script,
    # DAGSTER_HOME unset), then the UI on ./.dagster_home (as scripts/dev.sh prepares it); here
    # the sync covers staff.
    quick = clean_env({**settings, "DAGSTER_HOME": None})
    synced = run_cli("sync", "--select", "staff", env=quick, cwd=workdir, installed=True)
    assert synced.returncode == 0, synced.stderr[-2000:]
    prepared = run_cli("instance", env=quick, cwd=workdir, installed=True)
    assert prepared.stdout.strip() == str(home)
    with dagster_dev(REPO, env, data_dir, "-w", "workspace.yaml") as ui:
        yield ui


@contextmanager
def dagster_dev(cwd: Path, env: dict[str, str], data_dir: Path, *target: str, log: str = "dagster-dev.log"):
    """`dagster dev <target>` on a free loopback port while the block runs (its output in
    test-artifacts/<log>); stopped with everything it started."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    output = open(ARTIFACTS / log, "w")
    dagster = Path(sys.executable).with_name("dagster")
    process = subprocess.Popen(
        [str(dagster), "dev", *target, "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ui = DagsterUI(f"http://127.0.0.1:{port}", port, data_dir)

    def up() -> bool:
        assert process.poll() is None, f"dagster dev exited; see test-artifacts/{log}"
        try:
            return httpx.get(f"{ui.url}/server_info", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 120, 1, "the Dagster webserver")
        yield ui
    finally:
        stop_group(process)
        output.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="networkidle")
    try:  # the community dialog a new browser profile is shown, a moment after loading
        page.get_by_role("button", name="Skip").click(timeout=10_000)
    except PlaywrightTimeout:
        pass
    return page


IN_PROGRESS = "{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) { ... on Runs { results { runId } } } }"
BACKFILLS = "{ partitionBackfillsOrError(limit: 5) { ... on PartitionBackfills { results { id status runs(limit: 20) { runId status } } } } }"


def test_what_the_quick_start_synced_shows_in_the_ui(dagster_ui, browser):
    page = open_page(browser, f"{dagster_ui.url}/assets/staff")
    page.get_by_text("Row count").first.wait_for()  # shown only once the asset has a materialisation
    assert page.get_by_text("Never materialized").count() == 0
    page.screenshot(path=str(ARTIFACTS / "after-quick-start.png"))
    page.close()


def test_materialize_all_from_the_asset_graph(dagster_ui, browser):
    page = open_page(browser, f"{dagster_ui.url}/asset-groups/plannr")
    for name in ("clients", "goals", "staff", "circles", "tasks", "imports"):  # one asset per collection
        page.get_by_role("button", name=name, exact=False).first.wait_for()

    page.screenshot(path=str(ARTIFACTS / "asset-graph-before.png"))
    page.get_by_role("button", name="Materialize all…").click()
    page.get_by_role("button", name="All", exact=True).click()  # every partition of the monthly assets
    page.get_by_role("button", name="Launch backfill").click()  # every asset, every partition

    def backfill_done():
        results = dagster_ui.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]
        return results and results[0]["status"].startswith("COMPLETED") and results[0]

    backfill = wait_for(backfill_done, 600, 5, "the backfill to finish")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["runs"] and all(run["status"] == "SUCCESS" for run in backfill["runs"])

    # Sensors may start runs of their own (an import finished): let them end before the picture.
    wait_for(
        lambda: not dagster_ui.graphql(IN_PROGRESS)["runsOrError"]["results"],
        300,
        3,
        "runs in progress to end",
    )
    page.goto(f"{dagster_ui.url}/runs?show_runs_within_backfills=true", wait_until="networkidle")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "runs.png"))
    page.set_viewport_size({"width": 1600, "height": 1400})

    def quiet() -> bool:
        return not dagster_ui.graphql(IN_PROGRESS)["runsOrError"]["results"]

    for _ in range(10):  # the README's picture: taken while no run is under way, checks settled
        wait_for(quiet, 300, 3, "runs in progress to end")
        page.goto(f"{dagster_ui.url}/asset-groups/plannr", wait_until="networkidle")
        page.get_by_text("Materialized").first.wait_for()
        page.mouse.move(1100, 600)
        page.keyboard.down("Control")  # ctrl+wheel zooms the graph; one step out fits it, checks legible
        page.mouse.wheel(0, 100)
        page.keyboard.up("Control")
        page.wait_for_timeout(3000)
        page.screenshot(path=str(ARTIFACTS / "asset-graph.png"))
        if (
            quiet()
            and not page.get_by_text("Materializing").count()
            and not page.get_by_text("Loading").count()
        ):
            break
    else:
        raise AssertionError("no moment without a run under way for the asset-graph picture")
    page.close()

    assert dagster_ui.count("clients") == SANDBOX_CLIENTS
    for table in ("goals", "circles", "circle_accounts", "tasks", "task_assignees", "imports"):
        assert dagster_ui.count(table) > 0, table


SENSOR = """query ($name: String!) { sensorOrError(sensorSelector: {repositoryName: "__repository__",
  repositoryLocationName: "plannr_pipeline", sensorName: $name}) { ... on Sensor {
  sensorState { status ticks(limit: 1) { timestamp status } } } } }"""


def test_turn_a_sensor_off_and_on_in_the_ui_and_see_it_tick(dagster_ui, browser):
    name = "import_progress_sensor"

    def state():
        return dagster_ui.graphql(SENSOR, {"name": name})["sensorOrError"]["sensorState"]

    page = open_page(browser, f"{dagster_ui.url}/locations/{LOCATION}/sensors/{name}")
    toggle = page.locator("label:has(input[type=checkbox])").first
    assert page.locator("input[type=checkbox]").first.is_checked()  # sensors run by default
    toggle.click()
    wait_for(lambda: state()["status"] == "STOPPED", 30, 1, "the sensor to stop")
    turned_on_at = datetime.now(UTC).timestamp()
    toggle.click()
    wait_for(lambda: state()["status"] == "RUNNING", 30, 1, "the sensor to start")
    tick = wait_for(  # a tick still under way (STARTED) has no outcome yet: wait for its end
        lambda: (
            (t := state()["ticks"])
            and t[0]["timestamp"] > turned_on_at
            and t[0]["status"] != "STARTED"
            and t[0]
        ),
        150,
        3,
        "a finished tick after turning the sensor on",
    )
    assert tick["status"] in ("SUCCESS", "SKIPPED")  # SKIPPED: nothing changed since the last poll
    page.reload(wait_until="networkidle")
    page.screenshot(path=str(ARTIFACTS / "sensor.png"))
    page.close()


MATERIALIZATIONS = """query ($key: [String!]!, $limit: Int!) { assetOrError(assetKey: {path: $key}) { ... on Asset {
  assetMaterializations(limit: $limit) { runId partition metadataEntries { label
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }"""


def test_graphql_client_launches_a_partitioned_run_and_reads_its_metadata(dagster_ui):
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_ui.port)
    run_id = client.submit_job_execution(
        "clients_job",
        repository_location_name=LOCATION,
        repository_name="__repository__",
        tags={
            "dagster/asset_partition_range_start": "2023-01",
            "dagster/asset_partition_range_end": datetime.now(UTC).strftime("%Y-%m"),
        },
    )
    status = wait_for(
        lambda: (
            (s := client.get_run_status(run_id)) in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
            and s
        ),
        300,
        3,
        "the run to finish",
    )
    assert status == dg.DagsterRunStatus.SUCCESS

    months = len(
        dg.MonthlyPartitionsDefinition(start_date="2023-01", fmt="%Y-%m", end_offset=1).get_partition_keys()
    )
    materializations = dagster_ui.graphql(MATERIALIZATIONS, {"key": ["clients"], "limit": months})[
        "assetOrError"
    ]["assetMaterializations"]
    assert {m["runId"] for m in materializations} == {run_id} and len(materializations) == months
    metadata = [
        {e["label"]: e.get("intValue", e.get("text")) for e in m["metadataEntries"]} for m in materializations
    ]
    # each month carries its own row count; together they are every client
    assert sum(m["dagster/row_count"] for m in metadata) == SANDBOX_CLIENTS
    assert all(m["requests"] == 1 for m in metadata)  # one page of clients for the whole range
    assert metadata[0]["source"].startswith("embedded sandbox")


def test_one_asset_alone_from_its_page(dagster_ui, browser):
    def latest_run() -> str | None:
        found = dagster_ui.graphql(MATERIALIZATIONS, {"key": ["circles"], "limit": 1})["assetOrError"][
            "assetMaterializations"
        ]
        return found[0]["runId"] if found else None

    before = latest_run()
    page = open_page(browser, f"{dagster_ui.url}/assets/circles")
    page.locator("button", has_text="Materialize").first.click()
    run_id = wait_for(
        lambda: (r := latest_run()) != before and r, 300, 3, "circles to materialise on its own"
    )
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_ui.port)
    # the materialisation is recorded a moment before the run itself ends
    finished = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    status = wait_for(
        lambda: (s := client.get_run_status(run_id)) in finished and s, 120, 2, "the run to end"
    )
    assert status == dg.DagsterRunStatus.SUCCESS
    page.close()


LINEAGE = """query { assetOrError(assetKey: {path: ["goal_progress"]}) { ... on Asset {
  assetMaterializations(limit: 1) { metadataEntries { label
    ... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { assetKey { path } columnName } } } } } } } }"""


def test_the_views_sit_downstream_of_their_tables_with_column_lineage(dagster_ui, browser):
    page = open_page(browser, f"{dagster_ui.url}/assets/goal_progress?view=lineage")
    for name in ("goals", "clients", "staff", "goal_progress"):  # the view and the tables it reads
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "goal-progress-lineage.png"))
    page.goto(f"{dagster_ui.url}/assets/goal_progress", wait_until="networkidle")
    page.get_by_text("adviser_name").first.wait_for()  # its columns, in DuckDB's types
    page.get_by_text("TIMESTAMPTZ").first.wait_for()
    page.close()
    [materialization] = dagster_ui.graphql(LINEAGE)["assetOrError"]["assetMaterializations"]
    [entry] = [e for e in materialization["metadataEntries"] if e["label"] == "dagster/column_lineage"]
    deps = {
        column["columnName"]: [(d["assetKey"]["path"][0], d["columnName"]) for d in column["columnDeps"]]
        for column in entry["lineage"]
    }
    assert deps["adviser_name"] == [("staff", "name")]
    assert deps["target_gbp"] == [("goals", "target_amount_minor")]
