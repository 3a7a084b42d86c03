"""`plannr-pipeline sync` as the program users run: what it does to its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from plannr_pipeline.sync import sync_instance
from tests.cli import run_cli, sandbox_env


def test_the_sync_program_lands_everything_without_loading_pandas_or_numpy(make_sandbox, tmp_path):
    """pyarrow loads NumPy as it loads, and pandas on its first conversion from Python lists,
    whenever they are installed, as they are here (the dev extra): 45 MB. The program keeps them
    out; were any step to need them, that step would fail, so a clean sync shows none did."""
    sandbox = make_sandbox(clients=30)
    # Python's own import log (-X importtime) names every module the child loads.
    env = sandbox_env(sandbox, tmp_path, PYTHONPROFILEIMPORTTIME="1")
    done = run_cli("sync", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"pyarrow", "duckdb", "dagster"} <= loaded  # the log does show what the sync loads
    # A refused import is logged under its bare name; one loaded for real brings pandas.core etc.
    assert not {name for name in loaded if name.startswith(("pandas.", "numpy."))}


def test_a_sync_opens_dagster_home_as_dagster_does_without_captured_output(tmp_path, monkeypatch):
    """The sync's instance is DAGSTER_HOME's own (the UI reads the same runs), `~` expanded; a
    relative DAGSTER_HOME is refused as Dagster refuses it, not read against the working folder."""
    (tmp_path / "user" / "dh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("DAGSTER_HOME", "~/dh")
    with sync_instance() as instance:
        assert Path(instance.root_directory) == tmp_path / "user" / "dh"
        assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", "user/dh")
    with pytest.raises(dg.DagsterInvariantViolationError, match="absolute"):
        sync_instance()


@pytest.mark.parametrize("command", [["sync"], ["refresh", "--for", "1"]])
def test_sync_and_refresh_run_on_the_system_allocator_not_arrows_own(make_sandbox, tmp_path, command):
    """Arrow's own allocator keeps what it frees, memory a sync or refresh would hold to its end;
    both ask for the system's through ARROW_DEFAULT_MEMORY_POOL, which pyarrow reads once as it
    loads. A fresh process (pyarrow not loaded) runs the command and says which pool pyarrow
    ended up with."""
    sandbox = make_sandbox(clients=5)
    env = sandbox_env(sandbox, tmp_path)
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    program = (
        f"import sys; from plannr_pipeline import cli; code = cli.main({command!r}); "
        "import pyarrow; print('POOL', pyarrow.default_memory_pool().backend_name); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "POOL system" in done.stdout, done.stdout[-500:]
