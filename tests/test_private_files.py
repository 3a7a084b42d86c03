"""Client data is the owner's alone (issue 22, case 2), tried with a real second user.

After one sync on today's main, all 125 files were 0644 and every folder 0755: another local
user could read the Parquet tables and history, the raw failed CSV rows, plannr.duckdb, the
instance's runs.db and event logs, and the budget. Here the sync runs with a permissive umask
(022, the usual default) in a folder everyone can reach, and `nobody` tries to read it all.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cli import clean_env, cli_command
from tests.other_user import as_other_user, needs_root, shared_folder

pytestmark = needs_root


def _sync(shared: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        {
            "HOME": str(shared / "home"),
            "DAGSTER_HOME": str(shared / "instance"),
            "PLANNR_DATA_DIR": str(shared / "data"),
            "PLANNR_SANDBOX_CLIENTS": "12",
        }
    )
    return subprocess.run(
        cli_command("sync", *args),
        env=env,
        cwd=shared,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        preexec_fn=lambda: os.umask(umask),
    )


def test_after_a_sync_another_user_can_read_nothing(tmp_path):
    with shared_folder() as shared:
        (shared / "home").mkdir(mode=0o755)  # a home folder as Debian makes them: others may enter
        os.chmod(shared / "home", 0o755)
        done = _sync(shared)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        roots = [shared / "data", shared / "instance", shared / "home/.local/state/plannr-pipeline"]
        folders, files = [], []
        for root in roots:
            for where, _dirs, names in os.walk(root):
                folders.append(Path(where))
                files += [Path(where) / name for name in names]
        assert len(files) > 50 and any(f.name == "runs.db" for f in files)
        assert any("import_errors" in str(f) for f in files)  # the raw failed CSV rows
        loose = [f"{p} {p.stat().st_mode & 0o777:04o}" for p in folders if p.stat().st_mode & 0o077]
        loose += [f"{p} {p.stat().st_mode & 0o777:04o}" for p in files if p.stat().st_mode & 0o077]
        assert loose == [], loose[:10]
        tried = as_other_user(
            "sh",
            "-c",
            'for f; do if [ -d "$f" ]; then ls "$f"; else head -c 1 "$f"; fi >/dev/null 2>&1 && echo "READ $f"; done; echo tried',
            "sh",
            *map(str, folders + files),
        )
        assert tried.stdout.strip().splitlines() == ["tried"], tried.stdout[:3000]


def test_folders_already_open_to_others_are_reported_once_with_the_fix(tmp_path):
    with shared_folder() as shared:
        data = shared / "data"
        data.mkdir()
        os.chmod(data, 0o755)
        done = _sync(shared, "--select", "staff")
        assert done.returncode == 0, done.stderr[-3000:]
        said = [line for line in done.stderr.splitlines() if "open to other users" in line]
        assert said == [
            f"warning: {data} is open to other users (mode 0755) and holds client data: "
            f"run `chmod -R go-rwx {data}` to make it yours alone"
        ]
        assert data.stat().st_mode & 0o777 == 0o755  # reported, not changed behind the user's back
