"""The Dagster instance that `sync` and the UI share.

With DAGSTER_HOME unset both use `./.dagster_home`, so a sync's runs, metadata and checks show
in the UI afterwards. The project's `dagster.yaml` is written there only when the folder has
none: an instance a user pointed DAGSTER_HOME at (Postgres storage, say) keeps its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path

from filelock import FileLock

from plannr_pipeline.private_files import make_private_dir

DEFAULT_HOME = ".dagster_home"
CREATE_LOCK = ".plannr-instance.lock"  # in DAGSTER_HOME: one process at a time creates its databases
PROJECT_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"


def prepare_instance(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """Create DAGSTER_HOME and its dagster.yaml if missing, set DAGSTER_HOME (absolute) in `env`;
    return lines saying which instance and which configuration are in use."""
    home = Path(env.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().absolute()
    said = []
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(
            f"DAGSTER_HOME={home} is a file; point DAGSTER_HOME at a folder (or unset it for ./{DEFAULT_HOME})."
        )
    if not home.exists():
        make_private_dir(home)  # runs.db, event and compute logs: the owner's alone
        said.append(f"created DAGSTER_HOME {home}")
    # One process at a time writes the configuration and creates the databases: two creating a
    # fresh instance's SQLite schema at once fail ("table ... already exists"), a sync from a
    # schedule and one by hand, say.
    with FileLock(str(home / CREATE_LOCK), timeout=120):
        config = home / "dagster.yaml"
        if config.exists():
            said.append(f"Dagster instance: {home} (its own dagster.yaml, kept as it is)")
        elif not PROJECT_CONFIG.exists():  # installed without the repository: Dagster's defaults
            said.append(f"Dagster instance: {home} (no dagster.yaml; Dagster's defaults)")
        else:
            shutil.copyfile(PROJECT_CONFIG, config)
            said.append(f"Dagster instance: {home} (dagster.yaml written from {PROJECT_CONFIG})")
        # A user's own configuration (Postgres storage, say) creates its databases its own way.
        if not config.exists() or _is_project_config(config):
            _create_sqlite_storage(home)  # ~0.05 s once they exist
    env["DAGSTER_HOME"] = str(home)
    return said


def _is_project_config(config: Path) -> bool:
    return PROJECT_CONFIG.exists() and config.read_bytes() == PROJECT_CONFIG.read_bytes()


def _create_sqlite_storage(home: Path) -> None:
    """Open the instance once so that its SQLite databases exist before anyone else uses them."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
