"""Many firms in one deployment (issue 23): a firm is one defs.yaml of type PlannrFirm."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from plannr_pipeline.firms import Firm
from plannr_pipeline.firms.files import FirmFileError, read_firm_files
from tests.cli import clean_env, run_cli
from tests.firms import (
    REPO,
    TwoFirms,
    firm_project,
    holding,
    materialized_in,
    project_env,
    two_sandbox_firms,
    write_firm,
)

# Loads the copy's definitions and prints what the UI would be given: asset keys with group and
# pool, jobs, schedules, resource keys, and the serialised repository snapshot the webserver reads.
DESCRIBE = """
import json, sys
import plannr_pipeline
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value
from plannr_pipeline.definitions import defs
graph = defs.resolve_asset_graph()
repo = defs.get_repository_def()
print(json.dumps({
    "package": plannr_pipeline.__file__,
    "assets": {k.to_user_string(): [graph.get(k).group_name, sorted(graph.get(k).pools or [])]
               for k in graph.get_all_asset_keys()},
    "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
    "schedules": sorted(s.name for s in defs.schedules),
    "sensors": sorted(s.name for s in defs.sensors),
    "resources": sorted(defs.resources),
    "snapshot": serialize_value(RepositorySnap.from_def(repo)),
}))
"""


def describe(root: Path | None, env: dict[str, str]) -> dict:
    cwd = root or REPO
    out = subprocess.run(
        [sys.executable, "-c", DESCRIBE],
        env=project_env(cwd, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_repository_ships_with_no_firm_and_keeps_todays_keys(tmp_path: Path) -> None:
    assert not list((REPO / "plannr_pipeline" / "defs" / "firms").glob("*/defs.yaml"))
    seen = describe(None, clean_env({"DAGSTER_HOME": str(tmp_path)}))
    assert "clients" in seen["assets"] and seen["assets"]["clients"] == ["plannr", ["plannr_api"]]
    assert all("/" not in key for key in seen["assets"])
    assert "clients_job" in seen["jobs"] and "nightly_clients" in seen["schedules"]
    assert {"import_progress_sensor", "import_failures_sensor", "changed_clients_sensor"} <= set(
        seen["sensors"]
    )
    assert {"plannr", "storage", "duckdb"} <= set(seen["resources"])


def test_two_firm_files_give_prefixed_keys_groups_pools_and_no_token(tmp_path: Path) -> None:
    tokens = {"ACME_TOKEN": "acme-secret-7f3a9c", "BETA_TOKEN": "beta-secret-2b8e41"}
    root = firm_project(
        tmp_path,
        {
            "acme": {"token_env": "ACME_TOKEN", "base_url": "http://127.0.0.1:9"},
            "beta": {"token_env": "BETA_TOKEN", "base_url": "http://127.0.0.1:9", "schedules_running": False},
        },
    )
    seen = describe(root, clean_env({"DAGSTER_HOME": str(tmp_path), **tokens}))
    assert seen["package"].startswith(str(root))
    assert seen["assets"]["acme/clients"] == ["acme", ["plannr_api_acme"]]
    assert seen["assets"]["beta/goals"] == ["beta", ["plannr_api_beta"]]
    assert seen["assets"]["beta/client_overview"][0] == "beta"
    # No single firm beside the firms: every key is a firm's.
    assert {key.split("/")[0] for key in seen["assets"]} == {"acme", "beta"}
    assert "acme_clients_job" in seen["jobs"] and "beta_tasks_incremental_job" in seen["jobs"]
    assert "clients_job" not in seen["jobs"]
    assert "acme_nightly_clients" in seen["schedules"] and "beta_hourly_tasks" in seen["schedules"]
    assert "acme_erase_client_job" in seen["jobs"] and "beta_nightly_retention" in seen["schedules"]
    assert {"acme_changed_clients_sensor", "beta_changed_clients_sensor"} <= set(seen["sensors"])
    for name in ("changed_clients_sensor", "import_progress_sensor", "import_failures_sensor"):
        assert {f"acme_{name}", f"beta_{name}"} <= set(seen["sensors"])
        assert name not in seen["sensors"]
    assert {"acme_plannr", "acme_storage", "beta_plannr", "beta_storage"} <= set(seen["resources"])
    # The token's variable name may be shown; its value never.
    assert "ACME_TOKEN" in seen["snapshot"]
    for value in tokens.values():
        assert value not in json.dumps(seen)


def test_a_mistake_in_one_firm_file_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    firms = tmp_path / "firms"
    write_firm(firms.parent / "x", "ok", {"slug": "ok"})  # elsewhere: not read
    path = write_firm(tmp_path / "p", "acme", {"slug": "Acme-1", "token_env": "ACME_TOKEN"})
    with pytest.raises(FirmFileError) as caught:
        read_firm_files(path.parent.parent)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "slug" in message

    path.write_text("type: plannr_pipeline.components.PlannrFirm\nattributes:\n  slug: acme\n  tokn_env: X\n")
    with pytest.raises(FirmFileError, match="tokn_env"):
        read_firm_files(path.parent.parent)

    path.write_text("type: plannr_pipeline.components.PlannrFirm\nattributes:\n  slug: main\n")
    with pytest.raises(FirmFileError, match="slug: .*'main' is a name DuckDB keeps for itself"):
        read_firm_files(path.parent.parent)  # it would be the firm's schema in firms.duckdb


def test_instance_writes_the_firms_pool_limits_and_names_a_bad_firm_file(tmp_path: Path) -> None:
    root = firm_project(tmp_path, {"acme": {"sandbox_seed": 1, "concurrency_share": 3}})
    env = project_env(root, clean_env({"DAGSTER_HOME": str(tmp_path / "home")}))
    done = run_cli("instance", env=env, cwd=root)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "home"), done.stderr
    assert "plannr_api_acme pool: 3 slot(s)" in done.stderr
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert instance.event_log_storage.get_concurrency_info("plannr_api_acme").limit == 3
    bad = write_firm(root, "acme", {"slug": "acme", "concurrency_share": 0})
    refused = run_cli("instance", env=env, cwd=root)
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and str(bad) in error and "concurrency_share" in error


def test_two_firms_may_not_share_a_slug_or_a_data_folder(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_firm(folder, "a", {"slug": "acme", "data_dir": str(tmp_path / "d1")})
    write_firm(folder, "b", {"slug": "acme", "data_dir": str(tmp_path / "d2")})
    firms = folder / "plannr_pipeline" / "defs" / "firms"
    with pytest.raises(FirmFileError, match="slug: 'acme' is used by another firm file"):
        read_firm_files(firms)
    write_firm(folder, "b", {"slug": "beta", "data_dir": str(tmp_path / "d1" / "beta")})
    with pytest.raises(FirmFileError, match="data_dir: .* overlaps firm acme"):
        read_firm_files(firms)


@pytest.mark.parametrize("slug", ["Acme", "1acme", "acme-co", "acme.x", "acme/x", "", "main"])
def test_a_slug_is_lowercase_letters_digits_underscores(slug: str) -> None:
    with pytest.raises(ValueError):
        Firm(slug)


def test_dg_scaffolds_a_firm_and_checks_it(tmp_path: Path) -> None:
    root = firm_project(tmp_path, {})
    env = project_env(root, clean_env({"DAGSTER_HOME": str(tmp_path)}))
    dg_cli = str(Path(sys.executable).with_name("dg"))
    made = subprocess.run(
        [dg_cli, "scaffold", "defs", "plannr_pipeline.components.PlannrFirm", "firms/acme"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    text = (root / "plannr_pipeline/defs/firms/acme/defs.yaml").read_text()
    assert "slug: acme" in text and "token_env: ACME_PLANNR_API_TOKEN" in text
    checked = subprocess.run(
        [dg_cli, "check", "defs"], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Iterator[tuple[TwoFirms, subprocess.CompletedProcess[str]]]:
    """One `sync` of two sandbox firms, shared by the tests that read what it landed."""
    with two_sandbox_firms(tmp_path_factory.mktemp("two_firms"), acme={"concurrency_share": 2}) as firms:
        done = run_cli("sync", env=firms.env, cwd=firms.root, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        yield firms, done


def _uuids(folder: Path, table: str) -> set[str]:
    with duckdb.connect(str(folder / "plannr.duckdb"), read_only=True) as db:
        return {row[0] for row in db.execute(f"select uuid from {table}").fetchall()}


def _run_events_text(home: Path) -> str:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return "\n".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))


def test_two_firms_sync_side_by_side_each_into_its_own_folder(synced) -> None:
    firms, done = synced
    acme, beta, tokens, data = firms.acme, firms.beta, firms.tokens, firms.data
    assert "[acme] " in done.stdout and "[beta] " in done.stdout  # progress per firm
    assert "firm acme: landed" in done.stdout and "firm beta: landed" in done.stdout
    # Each firm exactly, in its own folder, and nothing of one in the other's.
    assert _uuids(data / "acme", "clients") == {c["uuid"] for c in acme.firm.clients}
    assert _uuids(data / "beta", "clients") == {c["uuid"] for c in beta.firm.clients}
    assert not _uuids(data / "acme", "clients") & _uuids(data / "beta", "clients")
    assert not (data / "plannr.duckdb").exists()  # no single firm beside them
    # Across firms, read-only: every relation has `firm`.
    with duckdb.connect(str(data / "firms.duckdb"), read_only=True) as db:
        counts = dict(db.execute("select firm, count(*) from clients group by firm").fetchall())
        assert counts == {"acme": len(acme.firm.clients), "beta": len(beta.firm.clients)}
        across = "select view_name from duckdb_views() where not internal and schema_name = 'main'"
        for (name,) in db.execute(across).fetchall():
            assert "firm" in [c[0] for c in db.execute(f'describe "{name}"').fetchall()], name
    events = _run_events_text(firms.home)
    assert "acme/clients" in events and "beta/clients" in events
    for value in tokens.values():
        assert value not in done.stdout + done.stderr
        assert value not in events


def test_a_wrong_token_fails_that_firm_alone_and_firm_selects(tmp_path: Path) -> None:
    with two_sandbox_firms(tmp_path, beta_token="not-betas-token") as firms:
        done = run_cli("sync", env=firms.env, cwd=firms.root, timeout=600)
        assert done.returncode == 1
        assert "firm acme: landed" in done.stdout and "firm beta: FAILED" in done.stdout
        assert "beta" in done.stderr and "not-betas-token" not in done.stdout + done.stderr
        assert _uuids(firms.data / "acme", "clients") == {c["uuid"] for c in firms.acme.firm.clients}

        only = run_cli("sync", "--firm", "acme", env=firms.env, cwd=firms.root, timeout=600)
        assert only.returncode == 0, (only.stdout + only.stderr)[-3000:]
        assert "[acme] " in only.stdout and "[beta] " not in only.stdout
    unknown = run_cli("sync", "--firm", "gamma", env=firms.env, cwd=firms.root)
    assert unknown.returncode == 2 and "gamma" in unknown.stderr


def test_the_embedded_sandbox_serves_each_seed_its_own_firm_and_token() -> None:
    from plannr_pipeline.sandbox.server import embedded_sandbox

    one, two = embedded_sandbox(101, 5), embedded_sandbox(102, 5)
    assert one is embedded_sandbox(101, 5) and one is not two
    assert one.options.token != two.options.token
    assert {c["uuid"] for c in one.firm.clients}.isdisjoint(c["uuid"] for c in two.firm.clients)


def test_two_sandbox_firms_land_side_by_side(tmp_path: Path) -> None:
    """The quick start with two firms: firm files with no token, each its own sandbox seed."""
    root = firm_project(tmp_path, {"north": {"sandbox_seed": 1}, "south": {"sandbox_seed": 2}})
    env = project_env(
        root,
        clean_env(
            {
                "DAGSTER_HOME": str(tmp_path / "home"),
                "PLANNR_DATA_DIR": str(tmp_path / "data"),
                "PLANNR_SANDBOX_CLIENTS": "10",
            }
        ),
    )
    done = run_cli("sync", env=env, cwd=root, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    north, south = (
        _uuids(tmp_path / "data" / "north", "clients"),
        _uuids(tmp_path / "data" / "south", "clients"),
    )
    assert len(north) == len(south) == 10 and north.isdisjoint(south)


def test_run_config_cannot_move_a_firms_token_or_folder(tmp_path: Path, monkeypatch) -> None:
    from plannr_pipeline.defs.deployment import DeploymentSettingError
    from plannr_pipeline.firms.settings import FirmSettings

    monkeypatch.setenv("ACME_TOKEN", "acme-secret")
    firm = FirmSettings(
        slug="acme", token_env="ACME_TOKEN", base_url="http://127.0.0.1:9", data_dir=str(tmp_path)
    )
    resources = firm.resources()
    with pytest.raises(DeploymentSettingError, match="base_url"):
        resources["acme_plannr"]._with_updated_values({"base_url": "http://elsewhere.example"})
    with pytest.raises(DeploymentSettingError, match="data_dir"):
        resources["acme_storage"]._with_updated_values({"data_dir": str(tmp_path / "other")})


def test_a_firm_without_base_url_uses_the_deployments_and_a_sandbox_firm_never(monkeypatch) -> None:
    from plannr_pipeline.firms.settings import FirmSettings

    monkeypatch.setenv("PLANNR_BASE_URL", "http://127.0.0.1:9/api")
    real = FirmSettings(slug="acme", token_env="ACME_TOKEN").resources()["acme_plannr"]
    assert real.base_url == "http://127.0.0.1:9/api"
    sandbox = FirmSettings(slug="north", sandbox_seed=3).resources()["north_plannr"]
    assert sandbox.base_url is None and sandbox.uses_sandbox


def test_each_firm_watches_its_own_imports_with_its_own_sensors(
    make_sandbox, alert_receiver, tmp_path: Path, monkeypatch
) -> None:
    """`<slug>_import_progress_sensor` and `<slug>_import_failures_sensor`: the firm's own API
    (token), storage, cursor, asset key and jobs; two firms' sensors never see each other's imports."""
    from datetime import timedelta

    from plannr_pipeline.defs.alerts import AlertWebhook
    from plannr_pipeline.firms.build import firm_definitions
    from plannr_pipeline.firms.settings import FirmSettings
    from tests.test_sensors import Clock, tick

    seen: dict[str, dict] = {}
    for slug, seed in (("acme", 7), ("beta", 8)):
        clock = Clock(datetime.min)
        sandbox = make_sandbox(clients=12, seed=seed, clock=clock, live_import_interval=timedelta(minutes=10))
        clock.now = sandbox.firm.reference + timedelta(minutes=5)
        monkeypatch.setenv(f"{slug.upper()}_TOKEN", sandbox.options.token)
        settings = FirmSettings(
            slug=slug,
            token_env=f"{slug.upper()}_TOKEN",
            base_url=sandbox.url,
            rate_limit_per_minute=100_000,
            data_dir=str(tmp_path / slug),
        )
        sensors = {s.name: s for s in firm_definitions(settings).sensors or []}
        progress, failures = (
            sensors[f"{slug}_import_progress_sensor"],
            sensors[f"{slug}_import_failures_sensor"],
        )
        resources = {**settings.resources(), "alert_webhook": AlertWebhook(url=alert_receiver.url)}
        p_cursor = f_cursor = None
        events, runs = [], []
        for _ in range(45):  # 45 minutes of the firm's time in one-minute ticks
            p_result, p_cursor = tick(progress, p_cursor, **resources)
            f_result, f_cursor = tick(failures, f_cursor, **resources)
            for result in (p_result, f_result):
                if not isinstance(result, dg.SkipReason):
                    events += result.asset_events
                    runs += result.run_requests
            clock.now += timedelta(seconds=60)
        seen[slug] = {"events": events, "runs": runs, "cursor": json.loads(p_cursor)}

    for slug, other in (("acme", "beta"), ("beta", "acme")):
        events, runs = seen[slug]["events"], seen[slug]["runs"]
        assert events and runs, slug
        assert {e.asset_key.to_user_string() for e in events} == {f"{slug}/imports"}
        assert {r.job_name for r in runs} <= {f"{slug}_imports_job", f"{slug}_clients_job"}
        assert set(seen[slug]["cursor"]["imports"]).isdisjoint(seen[other]["cursor"]["imports"])
        with duckdb.connect(str(tmp_path / slug / "plannr.duckdb"), read_only=True) as db:
            stored = {u for (u,) in db.execute("select import_uuid from import_progress_history").fetchall()}
        assert stored and stored <= set(seen[slug]["cursor"]["imports"])
    alerts = alert_receiver.received
    assert alerts and {a["firm"] for a in alerts} == {"acme", "beta"}
    assert all(a["link"].endswith(f"/assets/{a['firm']}/imports") for a in alerts)


def test_select_names_one_firms_asset_or_a_collection_in_every_firm() -> None:
    from plannr_pipeline.firms.selection import SelectionError, per_firm_selection

    names, firms = ["clients", "goals", "staff"], ["acme", "beta"]
    assert per_firm_selection(None, firms, names) == {"acme": None, "beta": None}
    assert per_firm_selection("acme/clients", firms, names) == {"acme": ["clients"]}
    assert per_firm_selection("staff,beta/goals", firms, names) == {
        "acme": ["staff"],
        "beta": ["staff", "goals"],
    }
    for wrong in ("nope", "gamma/clients", "acme/nope", "acme/beta/clients", ","):
        with pytest.raises(SelectionError) as caught:
            per_firm_selection(wrong, firms, names)
        assert "\n" not in str(caught.value) and "FIRM/NAME" in str(caught.value), wrong
    with pytest.raises(SelectionError, match="beta/staff"):  # beta is not among the firms synced
        per_firm_selection("beta/staff", ["acme"], names)


def test_sync_select_runs_only_the_firms_and_assets_it_names(synced) -> None:
    firms, _ = synced
    with dg.DagsterInstance.from_config(str(firms.home)) as instance:
        before = {run.run_id for run in instance.get_runs()}
    # An analyst holding firms.duckdb open does not stop the sync rewriting it (a new file, renamed).
    with duckdb.connect(str(firms.data / "firms.duckdb"), read_only=True) as analyst:
        done = run_cli("sync", "--select", "acme/staff", env=firms.env, cwd=firms.root, timeout=600)
        assert analyst.execute("select count(*) from acme.staff").fetchone()[0] > 0
    assert "across firms: " in done.stdout and "not rewritten" not in done.stdout
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "[acme] " in done.stdout and "[beta] " not in done.stdout
    with dg.DagsterInstance.from_config(str(firms.home)) as instance:
        new = [run.run_id for run in instance.get_runs() if run.run_id not in before]
        assert [materialized_in(instance, run_id) for run_id in new] == [{"acme/staff"}]

    wrong = run_cli("sync", "--select", "acme/staf", env=firms.env, cwd=firms.root)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.count("\n") == 1 and "acme/staf" in wrong.stderr and "FIRM/NAME" in wrong.stderr


def _readme_firm_queries() -> list[str]:
    """The SQL the README prints in "Many firms in one deployment"."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Many firms in one deployment", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```sql\n")[1:]]


def test_the_readmes_queries_across_firms_run_on_a_two_firm_sync(synced) -> None:
    firms, _ = synced
    queries = _readme_firm_queries()
    assert len(queries) == 2 and "from clients" in queries[0] and "from goal_progress" in queries[1]
    with duckdb.connect(str(firms.data / "firms.duckdb"), read_only=True) as db:
        clients = db.execute(queries[0]).fetchall()
        assert [(row[0], row[1]) for row in clients] == [
            ("acme", len(firms.acme.firm.clients)),
            ("beta", len(firms.beta.firm.clients)),
        ]
        assert {row[0] for row in db.execute(queries[1]).fetchall()} == {"acme", "beta"}
        # Every analyst view, across firms: each firm's rows are what its own database says.
        for view in (
            "goal_progress",
            "client_overview",
            "overdue_tasks",
            "import_health",
            "goal_progress_history",
        ):
            across = dict(db.execute(f"select firm, count(*) from {view} group by firm").fetchall())
            for slug in ("acme", "beta"):
                with duckdb.connect(str(firms.data / slug / "plannr.duckdb"), read_only=True) as own:
                    alone = own.execute(f"select count(*) from {view}").fetchone()[0]
                assert across.get(slug, 0) == alone, (view, slug)
                assert db.execute(f"select count(*) from {slug}.{view}").fetchone()[0] == alone
        assert db.execute("select count(*) from goal_progress").fetchone()[0] > 0
        # No join pairs one firm's goals with another firm's clients or advisers.
        assert not db.execute(
            "select count(*) from goal_progress g join clients c on c.uuid = g.client_uuid where c.firm <> g.firm"
        ).fetchone()[0]
        with pytest.raises(duckdb.Error):  # read-only for the analyst
            db.execute("create table mine as select 1")


def test_a_firms_share_is_its_own_pool_and_another_firm_never_waits_for_it(synced) -> None:
    """acme's file says concurrency_share: 2, beta's nothing (1): written into the instance by
    the sync. acme with one slot held still runs; with both held (its backfill), acme waits and
    beta lands."""
    firms, done = synced
    assert "plannr_api_acme pool: 2 slot(s)" in done.stdout
    with dg.DagsterInstance.from_config(str(firms.home)) as instance:
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits["plannr_api_acme"] == 2 and limits["plannr_api_beta"] == 1
    sync = ("sync", "--select", "staff", "--pool-wait", "3")
    with holding(firms.home, "plannr_api_acme", 1):
        both = run_cli(*sync, env=firms.env, cwd=firms.root, timeout=600)
    assert both.returncode == 0, (both.stdout + both.stderr)[-3000:]
    with holding(firms.home, "plannr_api_acme", 2):
        starved = run_cli(*sync, env=firms.env, cwd=firms.root, timeout=600)
    assert starved.returncode == 1
    assert "firm beta: landed" in starved.stdout and "firm acme: FAILED" in starved.stdout
    assert "[acme] waiting for a slot in the plannr_api_acme pool (limit 2)" in starved.stdout


def test_refresh_runs_the_firm_it_is_given_and_asks_which_of_several(synced) -> None:
    firms, _ = synced
    asked = run_cli("refresh", "--for", "5", env=firms.env, cwd=firms.root)
    assert asked.returncode == 2
    assert "refresh one with --firm SLUG" in asked.stderr and len(asked.stderr.strip().splitlines()) == 1

    def versions(slug: str) -> int:
        with duckdb.connect(str(firms.data / slug / "plannr.duckdb"), read_only=True) as db:
            return db.execute("select count(*) from goals_history").fetchone()[0]

    beta_before = versions("beta")
    [step] = firms.acme.advance(1)
    assert step["goals"]["updated"]
    done = run_cli("refresh", "--for", "15", "--firm", "acme", env=firms.env, cwd=firms.root, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    with duckdb.connect(str(firms.data / "acme" / "plannr.duckdb"), read_only=True) as db:
        for uuid in set(step["goals"]["updated"]) - set(step["goals"]["deleted"]):
            assert db.execute("select count(*) from goals_history where uuid = ?", [uuid]).fetchone()[0] == 2
        assert {r[0] for r in db.execute("select uuid from goals").fetchall()} == {
            g["uuid"] for gs in firms.acme.firm.goals_by_client.values() for g in gs
        }
    assert versions("beta") == beta_before  # the other firm, its token and its data, untouched
