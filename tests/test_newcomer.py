"""Defects a newcomer tripped on: each test here failed before its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_CONFIG = (REPO / "dagster.yaml").read_text()
CUSTOM_CONFIG = "# someone's own instance\nstorage:\n  postgres:\n    postgres_url: postgresql://localhost/dagster\n"


def _bash(script: Path, *args: str, cwd: Path, env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    environ.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60, check=False)


def _repo_copy(tmp_path: Path) -> Path:
    """The scripts and dagster.yaml in a scratch folder, with setup.sh and `dagster` stubbed out."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("dev.sh", "instance.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    shutil.copy(REPO / "dagster.yaml", root / "dagster.yaml")
    (root / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\n")  # no venv, no pip
    stub = root / ".venv" / "bin" / "dagster"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/usr/bin/env bash\necho "dagster stub: DAGSTER_HOME=$DAGSTER_HOME args=$*"\n')
    stub.chmod(0o755)
    return root


# -- 1. scripts/dev.sh must not overwrite an existing instance's dagster.yaml -------------------


def test_instance_script_keeps_an_existing_dagster_yaml(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(CUSTOM_CONFIG)
    result = _bash(REPO / "scripts" / "instance.sh", cwd=tmp_path, env={"DAGSTER_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == CUSTOM_CONFIG
    assert f"DAGSTER_HOME={home}" in result.stdout
    assert f"{home / 'dagster.yaml'} (already there, kept as it is)" in result.stdout


def test_instance_script_gives_a_fresh_home_the_projects_dagster_yaml(tmp_path):
    home = tmp_path / "fresh" / "home"  # not there yet
    result = _bash(REPO / "scripts" / "instance.sh", cwd=tmp_path, env={"DAGSTER_HOME": "fresh/home"})
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == PROJECT_CONFIG
    assert f"DAGSTER_HOME={home}" in result.stdout  # a relative path is made absolute
    assert f"{home / 'dagster.yaml'} (written from {REPO / 'dagster.yaml'})" in result.stdout


def test_instance_script_defaults_to_dot_dagster_home_in_the_repository(tmp_path):
    root = _repo_copy(tmp_path)
    result = _bash(root / "scripts" / "instance.sh", cwd=tmp_path, env={"DAGSTER_HOME": None})
    assert result.returncode == 0, result.stderr
    assert (root / ".dagster_home" / "dagster.yaml").read_text() == PROJECT_CONFIG
    assert f"DAGSTER_HOME={root / '.dagster_home'}" in result.stdout


@pytest.mark.parametrize("existing", [True, False])
def test_dev_script_starts_dagster_on_the_prepared_instance(tmp_path, existing):
    root = _repo_copy(tmp_path)
    home = tmp_path / "home"
    if existing:
        home.mkdir()
        (home / "dagster.yaml").write_text(CUSTOM_CONFIG)
    result = _bash(root / "scripts" / "dev.sh", "-p", "3001", cwd=tmp_path, env={"DAGSTER_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == (CUSTOM_CONFIG if existing else PROJECT_CONFIG)
    assert f"dagster.yaml: {home / 'dagster.yaml'}" in result.stdout
    assert f"dagster stub: DAGSTER_HOME={home} args=dev -w workspace.yaml -p 3001" in result.stdout


# -- 2. the sandbox serves its own import error reports -----------------------------------------


def _all_imports(http, sandbox) -> list[dict]:
    records, url = [], f"{sandbox.url}/api/v1/import?per_page=500"
    while url:
        page = http.get(url).raise_for_status().json()
        records += page["data"]
        url = page["links"]["next"]
    return records


def test_sandbox_error_reports_are_served_by_the_sandbox(make_sandbox):
    import csv
    import io

    import httpx

    sandbox = make_sandbox()
    auth = {"Authorization": f"Bearer {sandbox.options.token}"}
    with httpx.Client(headers=auth, timeout=30) as http:
        imports = _all_imports(http, sandbox)
        with_report = [i for i in imports if i["error_report"] is not None]
        assert with_report, "the sandbox's history should hold finished imports with failed rows"
        for record in with_report:
            report = record["error_report"]
            assert report["download_url"] == f"{sandbox.url}/file/{report['uuid']}/download"
            answer = http.get(report["download_url"])
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/csv")
            assert int(report["size"]) == len(answer.content)
            rows = list(csv.DictReader(io.StringIO(answer.text)))
            assert len(rows) == record["failed_jobs"]  # one error per failed row in this sandbox
            assert len({row["row"] for row in rows}) == record["failed_jobs"]
            shown = [  # the API lists the first 25 failed rows; the report starts with the same ones
                {"row": str(e["client"]["row"]), "first_name": e["client"]["first_name"], "last_name": e["client"]["last_name"],
                 "field": field, "error": message}
                for e in record["errors"] for field, messages in e["errors"].items() for message in messages
            ]
            assert rows[: len(shown)] == shown
        detail = http.get(f"{sandbox.url}/api/v1/import/{with_report[0]['uuid']}").json()
        assert detail["error_report"]["download_url"] == with_report[0]["error_report"]["download_url"]

        assert all(i["error_report"] is None for i in imports if i["failed_jobs"] == 0)
        url = with_report[0]["error_report"]["download_url"]
        assert httpx.get(url, timeout=30).status_code == 401  # same Bearer auth as every route
        unknown = http.get(f"{sandbox.url}/file/00000000-0000-4000-8000-000000000000/download")
        assert unknown.status_code == 404
        assert unknown.json() == {"message": "No query results for model [App\\Models\\File] 00000000-0000-4000-8000-000000000000"}
