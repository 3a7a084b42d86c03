"""Client data stays with the user who synced it: folders 0700, files 0600, whatever the umask.

The data folder, the Dagster instance (runs.db, event logs, compute logs) and the request budget
hold a UK firm's clients: names, emails, dates of birth, money. Everything this project creates
is made for its owner only: the process umask is 0o077 from the first moment we can set it
(the CLI's `main`, the code location's definitions), and the folders we create are given 0700
explicitly, so a file some library writes with its own mode still sits where no one else can
reach it. A folder found looser than that is reported once, with the command that fixes it.

No Dagster, HTTP or DuckDB here: the API client, storage and the CLI all use it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

OWNER_ONLY_UMASK = 0o077
DIR_MODE = 0o700

_reported: set[Path] = set()


def owner_only_umask() -> int:
    """Make every file and folder this process creates from now on its owner's alone."""
    return os.umask(OWNER_ONLY_UMASK)


def make_private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as 0700 (umask or not). Existing ones are left as
    they are: `looser_than_private` reports them."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it between the look and the mkdir
            continue
        os.chmod(folder, DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    return path


def not_ours(path: Path) -> str | None:
    """Why `path` (a file or folder) must not be trusted with our data, or None: it is a symlink
    (it could lead anywhere), someone else owns it (they decide what is in it), or others may
    write to it (they could swap what is in it)."""
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # not there: nothing to distrust yet
        return None
    if stat.S_ISLNK(found.st_mode):
        return "is a symbolic link"
    if found.st_uid != os.geteuid():
        return f"belongs to another user (uid {found.st_uid}, we are {os.geteuid()})"
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by other users (mode {stat.S_IMODE(found.st_mode):04o})"
    return None


def looser_than_private(path: Path) -> str | None:
    """One line saying that others can reach `path` (a folder), and the fix; None when they
    cannot. Each folder is reported once per process."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    resolved = path.resolve()
    if not mode & 0o077 or resolved in _reported:
        return None
    _reported.add(resolved)
    return (
        f"warning: {path} is open to other users (mode {mode:04o}) and holds client data: "
        f"run `chmod -R go-rwx {path}` to make it yours alone"
    )


def report_looser(paths: list[Path], say: Callable[[str], None]) -> None:
    for path in paths:
        if line := looser_than_private(path):
            say(line)
