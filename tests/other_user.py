"""Another local user, for real: commands run as `nobody` (runuser), and a folder both can reach.

The tests that use it check what another account on the same machine can and cannot do to this
project's files, so they need root (to switch user) and skip without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

OTHER_USER = "nobody"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to act as another user",
)


def as_other_user(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `command` as the other user, with a minimal environment; output captured."""
    return subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder like /tmp itself (world-writable, sticky), outside pytest's own 0700 temp folder,
    so that only the modes this project sets stand between the other user and our files."""
    path = Path(tempfile.mkdtemp(prefix="plannr-shared-", dir="/tmp"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
