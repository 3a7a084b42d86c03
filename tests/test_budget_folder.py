"""The request budget's folder is the user's own (issue 22, case 3), tried with a real second user.

Whoever creates a folder in a shared place first decides what is in it: with the old default
(`plannr-pipeline-budget` in the temp folder) another user made every sync exit 2, or planted a
budget file that paused the syncs until 2096.
"""

from __future__ import annotations

import os

import pytest

from tests.cli import clean_env, run_cli
from tests.other_user import as_other_user, needs_root, shared_folder

pytestmark = needs_root


def _sync_env(tmp_path, **settings: str) -> dict[str, str]:
    return clean_env(
        {
            "HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "PLANNR_DATA_DIR": str(tmp_path / "data"),
            "PLANNR_SANDBOX_CLIENTS": "5",
            **settings,
        }
    )


def test_another_user_creating_the_old_default_first_changes_nothing(tmp_path):
    """The old default lived in the temp folder; the new one is under our home, out of reach."""
    with shared_folder() as shared:
        taken = shared / "plannr-pipeline-budget"
        made = as_other_user("mkdir", "-m", "0755", str(taken))
        assert made.returncode == 0, made.stderr
        done = run_cli("sync", "--select", "staff", env=_sync_env(tmp_path, TMPDIR=str(shared)), cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert os.listdir(taken) == []  # nothing of ours went there
    budget = tmp_path / "home" / ".local/state/plannr-pipeline/budget"
    assert [p.suffix for p in budget.iterdir()].count(".sqlite") == 1
    for path in (budget, *budget.iterdir()):
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path


@pytest.mark.parametrize("mode", ["0755", "0777"])
def test_a_budget_folder_another_user_made_is_refused_in_one_line(tmp_path, mode):
    with shared_folder() as shared:
        planted = shared / "budget"
        assert as_other_user("mkdir", "-m", mode, str(planted)).returncode == 0
        done = run_cli("sync", env=_sync_env(tmp_path, PLANNR_BUDGET_DIR=str(planted)), cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: PLANNR_BUDGET_DIR ({planted}) belongs to another user"), line


@pytest.mark.parametrize("kind", ["symlink", "world-writable"])
def test_a_budget_folder_that_is_a_symlink_or_writable_by_others_is_refused(tmp_path, kind):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    folder = tmp_path / "budget"
    if kind == "symlink":
        folder.symlink_to(real)
    else:
        folder.mkdir()
        os.chmod(folder, 0o777)
    done = run_cli("sync", env=_sync_env(tmp_path, PLANNR_BUDGET_DIR=str(folder)), cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    said = "is a symbolic link" if kind == "symlink" else "is writable by other users (mode 0777)"
    assert said in line and "PLANNR_BUDGET_DIR" in line, line


def test_a_budget_file_planted_by_another_user_is_refused(tmp_path):
    """Our folder, but a file in it that is not ours (planted while the folder was open)."""
    from plannr_pipeline.api.budget import BudgetFileError, RequestBudget

    with shared_folder() as shared:
        folder = shared / "ours"
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o777)  # open for a moment, long enough for the other user
        assert as_other_user("touch", str(folder / "k.sqlite")).returncode == 0
        os.chmod(folder, 0o700)
        with pytest.raises(BudgetFileError, match="k.sqlite belongs to another user"):
            RequestBudget("k", 100, directory=folder)
