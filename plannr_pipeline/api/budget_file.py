"""The per-machine budget store: one SQLite file per token, `<PLANNR_BUDGET_DIR>/<hash>.sqlite`.

The sliding-window log (pyrate-limiter's SQLiteBucket, guarded by a file lock), the live
processes' declared limits, and the pause after a 429, for every process of the token on this
machine. A file that is not a budget (garbage bytes, a database with other tables) is replaced
with a warning naming it. One that is not ours (a symlink, another user's, writable by others)
is refused: whoever controls it could pause every sync of the token. Ours are created 0600.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from filelock import FileLock
from pyrate_limiter import Rate, SQLiteBucket

from plannr_pipeline.api.errors import PlannrError
from plannr_pipeline.private_files import make_private_dir, not_ours

log = logging.getLogger(__name__)

TABLE = "rate_bucket"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR, item_timestamp INTEGER)",
    f"CREATE INDEX IF NOT EXISTS idx_{TABLE}_rate_item_timestamp ON {TABLE} (item_timestamp)",
    "CREATE TABLE IF NOT EXISTS declarations"
    " (owner TEXT PRIMARY KEY, host TEXT, pid INTEGER, per_window INTEGER, seen_at REAL)",
    "CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY CHECK (id = 0), until REAL NOT NULL)",
)
# Every column the budget reads: a table of ours with other columns fails here, not mid-run.
_PROBES = (
    f"SELECT name, item_timestamp FROM {TABLE} LIMIT 1",
    "SELECT owner, host, pid, per_window, seen_at FROM declarations LIMIT 1",
    "SELECT id, until FROM pause LIMIT 1",
)


class BudgetFileError(PlannrError):
    """The request budget's file or directory cannot be used."""


def _fix_for(path: Path) -> str:
    return (
        f"make {path.parent} writable, or set PLANNR_BUDGET_DIR to a directory you can write "
        "(every process using one token must share it)"
    )


def _transient(error: sqlite3.Error) -> bool:
    """A busy or locked database is in use, not broken: never replace it for that."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED", check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.commit()
        for probe in _PROBES:
            conn.execute(probe).fetchall()
    except BaseException:
        conn.close()
        raise
    return conn


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def _refuse_foreign(path: Path) -> None:
    """The folder and every file of the budget must be ours alone (private_files.not_ours)."""
    for part in (path.parent, path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", ".lock"))):
        if problem := not_ours(part):
            raise BudgetFileError(
                f"The request budget file {part} {problem}, so it cannot be trusted: remove it, or set "
                "PLANNR_BUDGET_DIR to a directory of your own that only you can write."
            )


def _connect_private(path: Path) -> sqlite3.Connection:
    """`_connect`, the file made 0600 first: SQLite gives its -wal and -shm the same mode."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    return _connect(path)


def open_budget_file(path: Path, lock: FileLock) -> sqlite3.Connection:
    """Open (creating if needed) the budget file; replace it, with a warning, when it is corrupt."""
    try:
        make_private_dir(path.parent)
        _refuse_foreign(path)
        with lock:
            try:
                return _connect_private(path)
            except sqlite3.DatabaseError as error:
                if (
                    _transient(error)
                    or isinstance(error, sqlite3.OperationalError)
                    and ("unable to open" in str(error) or "readonly" in str(error))
                ):
                    raise
                log.warning(
                    "The request budget file %s is not a budget (%s); replacing it with a fresh one.",
                    path,
                    error,
                )
                _remove(path)
                return _connect_private(path)
    except (OSError, sqlite3.Error) as error:
        raise BudgetFileError(
            f"The request budget file {path} cannot be used ({error}): {_fix_for(path)}."
        ) from None


class FileStore:
    """The budget's shared state in one SQLite file on this machine (see the module's text)."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._file_lock = FileLock(str(path) + ".lock", mode=0o600)
        self._conn = open_budget_file(path, self._file_lock)
        self._bucket: SQLiteBucket | None = None

    def failed(self, error: BaseException) -> BudgetFileError:
        return BudgetFileError(
            f"The request budget file {self.path} failed ({error}): {_fix_for(self.path)}."
        )

    def bucket(self, rates: list[Rate]) -> SQLiteBucket:
        # The log has its own connection: the limiter's leak thread commits on it.
        self._bucket = SQLiteBucket(
            rates, open_budget_file(self.path, self._file_lock), table=TABLE, lock=self._file_lock
        )
        return self._bucket

    def declare(
        self, owner: str, host: str, pid: int, per_window: int, ttl: float
    ) -> list[tuple[str, str, int, int]]:
        now = time.time()
        with self._conn:  # one transaction
            self._conn.execute(
                "INSERT INTO declarations (owner, host, pid, per_window, seen_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET per_window = excluded.per_window, seen_at = excluded.seen_at",
                (owner, host, pid, per_window, now),
            )
            self._conn.execute("DELETE FROM declarations WHERE seen_at < ?", (now - ttl,))
            return self._conn.execute("SELECT owner, host, pid, per_window FROM declarations").fetchall()

    def forget(self, owners: list[str]) -> None:
        with self._conn:
            self._conn.executemany("DELETE FROM declarations WHERE owner = ?", [(owner,) for owner in owners])

    def pause_left(self) -> float:
        row = self._conn.execute("SELECT until FROM pause WHERE id = 0").fetchone()
        return row[0] - time.time() if row else 0.0

    def pause(self, seconds: float) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO pause (id, until) VALUES (0, ?)"
                " ON CONFLICT (id) DO UPDATE SET until = max(until, excluded.until)",
                (time.time() + seconds,),
            )

    def close(self) -> None:
        if self._bucket is not None:
            self._bucket.close()
        self._conn.close()
