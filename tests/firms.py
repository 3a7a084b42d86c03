"""A copy of the project with firm folders, for tests of many firms.

The repository ships with no firm folder (so it is the single firm of the `PLANNR_*`
variables); a test that needs firms copies the package and pyproject.toml into tmp_path, writes
`plannr_pipeline/defs/firms/<slug>/defs.yaml` there, and runs processes with that copy first on
PYTHONPATH (it wins over the editable install, whose finder comes after sys.path).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def firm_project(tmp_path: Path, firms: Mapping[str, Mapping[str, object]]) -> Path:
    """A copy of the project under tmp_path/project with one firm file per entry (slug ->
    attributes, slug added); returns the copy's root."""
    root = tmp_path / "project"
    shutil.copytree(
        REPO / "plannr_pipeline", root / "plannr_pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for slug, attributes in firms.items():
        write_firm(root, slug, {"slug": slug, **attributes})
    return root


def write_firm(root: Path, folder: str, attributes: Mapping[str, object]) -> Path:
    path = root / "plannr_pipeline" / "defs" / "firms" / folder / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump({"type": "plannr_pipeline.components.PlannrFirm", "attributes": dict(attributes)})
    )
    return path


def project_env(root: Path, env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(root)}
