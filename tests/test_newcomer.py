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
