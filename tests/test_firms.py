"""Many firms in one deployment (issue 23): a firm is one defs.yaml of type PlannrFirm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from plannr_pipeline.firms import Firm
from plannr_pipeline.firms.files import FirmFileError, read_firm_files
from tests.cli import clean_env, run_cli
from tests.firms import REPO, firm_project, project_env, write_firm

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
    assert "changed_clients_sensor" not in seen["sensors"]
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


@pytest.mark.parametrize("slug", ["Acme", "1acme", "acme-co", "acme.x", "acme/x", ""])
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


def _two_firms(make_sandbox, tmp_path: Path, beta_token: str | None = None):
    """Two sandboxes (own seed, own token) and two firm files pointing at them."""
    acme, beta = make_sandbox(clients=12, seed=7), make_sandbox(clients=9, seed=8)
    root = firm_project(
        tmp_path,
        {
            "acme": {"token_env": "ACME_TOKEN", "base_url": acme.url, "rate_limit_per_minute": 100_000},
            "beta": {"token_env": "BETA_TOKEN", "base_url": beta.url, "rate_limit_per_minute": 100_000},
        },
    )
    tokens = {"ACME_TOKEN": acme.options.token, "BETA_TOKEN": beta_token or beta.options.token}
    env = project_env(
        root,
        clean_env(
            {"DAGSTER_HOME": str(tmp_path / "home"), "PLANNR_DATA_DIR": str(tmp_path / "data"), **tokens}
        ),
    )
    return root, env, acme, beta, tokens


def _uuids(folder: Path, table: str) -> set[str]:
    with duckdb.connect(str(folder / "plannr.duckdb"), read_only=True) as db:
        return {row[0] for row in db.execute(f"select uuid from {table}").fetchall()}


def _run_events_text(home: Path) -> str:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return "\n".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))


def test_two_firms_sync_side_by_side_each_into_its_own_folder(make_sandbox, tmp_path: Path) -> None:
    root, env, acme, beta, tokens = _two_firms(make_sandbox, tmp_path)
    done = run_cli("sync", env=env, cwd=root, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "[acme] " in done.stdout and "[beta] " in done.stdout  # progress per firm
    assert "firm acme: landed" in done.stdout and "firm beta: landed" in done.stdout
    data = tmp_path / "data"
    # Each firm exactly, in its own folder, and nothing of one in the other's.
    assert _uuids(data / "acme", "clients") == {c["uuid"] for c in acme.firm.clients}
    assert _uuids(data / "beta", "clients") == {c["uuid"] for c in beta.firm.clients}
    assert not _uuids(data / "acme", "clients") & _uuids(data / "beta", "clients")
    assert not (data / "plannr.duckdb").exists()  # no single firm beside them
    # Across firms, read-only: every relation has `firm`.
    with duckdb.connect(str(data / "firms.duckdb"), read_only=True) as db:
        counts = dict(db.execute("select firm, count(*) from clients group by firm").fetchall())
        assert counts == {"acme": len(acme.firm.clients), "beta": len(beta.firm.clients)}
        for (name,) in db.execute("select view_name from duckdb_views() where not internal").fetchall():
            assert "firm" in [c[0] for c in db.execute(f'describe "{name}"').fetchall()], name
    events = _run_events_text(tmp_path / "home")
    assert "acme/clients" in events and "beta/clients" in events
    for value in tokens.values():
        assert value not in done.stdout + done.stderr
        assert value not in events


def test_a_wrong_token_fails_that_firm_alone_and_firm_selects(make_sandbox, tmp_path: Path) -> None:
    root, env, acme, _beta, _tokens = _two_firms(make_sandbox, tmp_path, beta_token="not-betas-token")
    done = run_cli("sync", env=env, cwd=root, timeout=600)
    assert done.returncode == 1
    assert "firm acme: landed" in done.stdout and "firm beta: FAILED" in done.stdout
    assert "beta" in done.stderr and "not-betas-token" not in done.stdout + done.stderr
    assert _uuids(tmp_path / "data" / "acme", "clients") == {c["uuid"] for c in acme.firm.clients}

    only = run_cli("sync", "--firm", "acme", env=env, cwd=root, timeout=600)
    assert only.returncode == 0, (only.stdout + only.stderr)[-3000:]
    assert "[acme] " in only.stdout and "[beta] " not in only.stdout
    unknown = run_cli("sync", "--firm", "gamma", env=env, cwd=root)
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
