"""A copy of the project with firm folders, for tests of many firms.

The repository ships with no firm folder (so it is the single firm of the `PLANNR_*`
variables); a test that needs firms copies the package and pyproject.toml into tmp_path, writes
`plannr_pipeline/defs/firms/<slug>/defs.yaml` there, and runs processes with that copy first on
PYTHONPATH (it wins over the editable install, whose finder comes after sys.path).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tests.cli import clean_env

if TYPE_CHECKING:
    from plannr_pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parent.parent


def firm_project(tmp_path: Path, firms: Mapping[str, Mapping[str, object]]) -> Path:
    """A copy of the project under tmp_path/project with one firm file per entry (slug ->
    attributes, slug added); returns the copy's root."""
    root = tmp_path / "project"
    shutil.copytree(
        REPO / "plannr_pipeline", root / "plannr_pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(REPO / "dagster.yaml", root / "dagster.yaml")  # what `instance` writes into a new home
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


@dataclass
class TwoFirms:
    """Two firm files, `acme` and `beta`, each over its own sandbox (own seed and token)."""

    root: Path
    env: dict[str, str]
    acme: SandboxServer
    beta: SandboxServer
    tokens: dict[str, str]
    home: Path
    data: Path


@contextmanager
def two_sandbox_firms(
    tmp_path: Path, beta_token: str | None = None, **attributes: Mapping[str, object]
) -> Iterator[TwoFirms]:
    """Both sandboxes serve while the block runs; `attributes` adds to a firm's file by slug."""
    from plannr_pipeline.sandbox.firm import FirmSize
    from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer

    sandboxes = [
        SandboxServer(
            SandboxOptions(
                seed=seed,
                size=FirmSize(clients=clients),
                token=f"test-token-{uuid.uuid4()}",
                rate_limit_per_minute=100_000,
            )
        ).start()
        for seed, clients in ((7, 12), (8, 9))
    ]
    acme, beta = sandboxes
    try:
        root = firm_project(
            tmp_path,
            {
                slug: {
                    "token_env": f"{slug.upper()}_TOKEN",
                    "base_url": sandbox.url,
                    "rate_limit_per_minute": 100_000,
                    **attributes.get(slug, {}),
                }
                for slug, sandbox in (("acme", acme), ("beta", beta))
            },
        )
        tokens = {"ACME_TOKEN": acme.options.token, "BETA_TOKEN": beta_token or beta.options.token}
        home, data = tmp_path / "home", tmp_path / "data"
        env = project_env(
            root, clean_env({"DAGSTER_HOME": str(home), "PLANNR_DATA_DIR": str(data), **tokens})
        )
        yield TwoFirms(root, env, acme, beta, tokens, home, data)
    finally:
        for sandbox in sandboxes:
            sandbox.stop()


def materialized_in(instance, run_id: str) -> set[str]:
    """The asset keys a run materialised (a sync's runs carry no asset selection of their own)."""
    import dagster as dg

    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {event.dagster_event.asset_key.to_user_string() for event in events}


@contextmanager
def holding(home: Path, pool: str, slots: int) -> Iterator[None]:
    """`slots` slots of `pool` held by STARTED runs of this (live) process, as a firm's backfill
    holds them; released afterwards."""
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun

    from plannr_pipeline.dead_runs import process_tags

    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage, run_ids = instance.event_log_storage, []
        try:
            for n in range(slots):
                run = instance.add_run(
                    DagsterRun(job_name="backfill", status=dg.DagsterRunStatus.STARTED, tags=process_tags())
                )
                run_ids.append(run.run_id)
                assert storage.claim_concurrency_slot(pool, run.run_id, f"step_{n}").is_claimed
            yield
        finally:
            for run_id in run_ids:
                storage.free_concurrency_slots_for_run(run_id)
                instance.delete_run(run_id)
