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
    config = home / "dagster.yaml"
    if config.exists():
        said.append(f"Dagster instance: {home} (its own dagster.yaml, kept as it is)")
    elif not PROJECT_CONFIG.exists():  # installed without the repository: Dagster's defaults
        said.append(f"Dagster instance: {home} (no dagster.yaml; Dagster's defaults)")
    else:
        shutil.copyfile(PROJECT_CONFIG, config)
        said.append(f"Dagster instance: {home} (dagster.yaml written from {PROJECT_CONFIG})")
    env["DAGSTER_HOME"] = str(home)
    _create_storage(home)
    return said


def _create_storage(home: Path) -> None:
    """Open the instance once, under a lock in DAGSTER_HOME, so its databases exist before anyone
    uses them: two processes creating a fresh instance's SQLite schema at once fail ("table ...
    already exists"), a sync from a schedule and one by hand, say. ~0.05 s once they exist."""
    import dagster as dg

    with (
        FileLock(str(home / CREATE_LOCK), timeout=120),
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        instance.get_runs(limit=1)
