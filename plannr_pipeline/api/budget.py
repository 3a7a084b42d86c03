"""One request budget per token, shared by every caller in the process and across processes.

Every process using a token on this machine draws on one SQLite file, `<dir>/<hash>.sqlite`
(`<dir>` is PLANNR_BUDGET_DIR, by default the user's own `~/.local/state/plannr-pipeline/budget`;
`<hash>` is a hash of the base URL and the token, never the token itself). It holds:

- the sliding-window log of requests (pyrate-limiter's SQLiteBucket, guarded by a file lock),
  so concurrent Dagster steps and runs draw on the same allowance instead of each assuming it
  has the whole 500/minute;
- each live process's declared limit (`declarations`): the budget every process runs at is the
  smallest limit any live process of that token declared. A declaration counts while its
  process is alive (checked by pid on this host) and has refreshed it within a couple of
  windows, so a process that died or stopped asking no longer holds the others down;
- the pause after a 429 (`pause`, an absolute wall-clock time), which holds every process of
  the token, not just the one that saw it.

A file that is not a budget (garbage bytes, a database with other tables) is replaced with a
warning naming it. One that is not ours (a symlink, another user's, writable by others) is
refused: whoever controls it could pause every sync of the token. Ours are created 0600. An `X-Ratelimit-Remaining` that is running low slows only this process (every
process sees its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from filelock import FileLock
from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

from plannr_pipeline.api.config import budget_dir_from_env
from plannr_pipeline.api.errors import PlannrError
from plannr_pipeline.private_files import make_private_dir, not_ours

log = logging.getLogger(__name__)

# When the server says this few requests are left in its window, spread the rest out.
LOW_REMAINING = 10
# Run at this share of the limit the server announces (X-RateLimit-Limit): close to all of it,
# with room for the odd request a clock skew between our window and the server's lets through.
SERVER_LIMIT_SHARE = 0.98
# Slots taken from the shared (file-locked) log at a time, at most: each take costs a SQLite
# transaction, so at high rates a small chunk saves most of that; at Plannr's 500/minute it is 2.
MAX_CHUNK = 16
# A process refreshes its declaration (and reads the others') this often while it asks for
# requests, at most; a quarter of the window when that is shorter.
HEARTBEAT_SECONDS = 10.0
# A declaration not refreshed for this many windows no longer counts (its process died on
# another host, or stopped asking). A dead process on this host stops counting at once.
DECLARATION_TTL_WINDOWS = 2.0
# An acquire that waited at least this long for the log re-reads the shared pause before it goes.
RECHECK_AFTER_WAIT_SECONDS = 0.05

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


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows: trust the TTL
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


class RequestBudget:
    def __init__(
        self,
        key: str,
        limit: int,
        directory: Path | None = None,
        window_seconds: float = 60.0,
        ceiling: int | None = None,
        follow_server_limit: bool = True,
    ) -> None:
        """At most `limit` requests in any `window_seconds` (Plannr's window is a minute).

        The limit then follows what the server announces (`observe_server_limit`), never above
        `ceiling` (an explicit PLANNR_RATE_LIMIT_PER_MINUTE); and every process of this key runs
        at the smallest limit any of them declared.
        """
        self.window_seconds = window_seconds
        self.ceiling = ceiling
        self.follow_server_limit = follow_server_limit
        self.declared = limit  # this process's own limit; `limit` is the one in force
        self.limit = limit
        self.path = (directory or budget_dir_from_env(os.environ)) / f"{key}.sqlite"
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat = min(HEARTBEAT_SECONDS, window_seconds / 4)
        self._ttl = DECLARATION_TTL_WINDOWS * window_seconds
        self._paused_until = 0.0  # this process only (time.monotonic)
        self._shared_until = 0.0  # every process (time.time), as last read from the file
        self._declared_at = float("-inf")  # time.monotonic of the last declaration
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(self.path) + ".lock", mode=0o600)
        self._conn = open_budget_file(self.path, self._file_lock)
        # The log has its own connection: the limiter's leak thread commits on it.
        self._bucket_conn = open_budget_file(self.path, self._file_lock)
        self._bucket = SQLiteBucket(self._rates(limit), self._bucket_conn, table=TABLE, lock=self._file_lock)
        self._limiter = Limiter(self._bucket)
        self._set_chunk()
        self._slots = 0
        self._refresh(declare=True)

    def _rates(self, limit: int) -> list[Rate]:
        return [Rate(limit, int(self.window_seconds * Duration.SECOND))]

    def _set_chunk(self) -> None:
        self._chunk = max(1, min(MAX_CHUNK, int(self.limit / self.window_seconds / 4)))

    def _use(self, limit: int) -> None:
        if limit != self.limit:
            self._bucket.rates = self._rates(limit)
            self.limit = limit
            self._set_chunk()

    def _failed(self, error: sqlite3.Error) -> BudgetFileError:
        return BudgetFileError(
            f"The request budget file {self.path} failed ({error}): {_fix_for(self.path)}."
        )

    # -- the shared state -----------------------------------------------------------------

    def _refresh(self, declare: bool = False) -> None:
        """Read the shared pause; refresh this process's declaration and the limit in force when due."""
        now_mono = time.monotonic()
        declare = declare or now_mono - self._declared_at >= self._heartbeat
        try:
            with self._lock:
                if declare:
                    self._declared_at = now_mono
                    self._use(self._declare())
                row = self._conn.execute("SELECT until FROM pause WHERE id = 0").fetchone()
                self._shared_until = row[0] if row else 0.0
        except sqlite3.Error as error:
            raise self._failed(error) from None

    def _declare(self) -> int:
        """Write this process's limit; return the smallest limit of the live declarations."""
        now = time.time()
        conn = self._conn
        with conn:  # one transaction
            conn.execute(
                "INSERT INTO declarations (owner, host, pid, per_window, seen_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET per_window = excluded.per_window, seen_at = excluded.seen_at",
                (self._owner, socket.gethostname(), os.getpid(), self.declared, now),
            )
            conn.execute("DELETE FROM declarations WHERE seen_at < ?", (now - self._ttl,))
            host = socket.gethostname()
            rows = conn.execute("SELECT owner, host, pid, per_window FROM declarations").fetchall()
            dead = [
                owner for owner, on, pid, _ in rows if on == host and pid != os.getpid() and not _alive(pid)
            ]
            conn.executemany("DELETE FROM declarations WHERE owner = ?", [(owner,) for owner in dead])
        return min(per_window for owner, _, _, per_window in rows if owner not in dead)

    def close(self) -> None:
        """Withdraw this process's declaration and close the file (a dead process's lapses anyway)."""
        try:
            with self._lock, self._conn:
                self._conn.execute("DELETE FROM declarations WHERE owner = ?", (self._owner,))
        except sqlite3.Error:
            pass
        self._limiter.dispose(self._bucket)
        self._bucket.close()
        self._conn.close()

    # -- the hot path ---------------------------------------------------------------------

    def _hold(self) -> float:
        return max(self._paused_until - time.monotonic(), self._shared_until - time.time())

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds spent waiting.

        Slots are taken from the shared log a chunk at a time; each take also reads the shared
        pause (and, every heartbeat, the declarations), so another process's 429 holds this
        one from its next take on.
        """
        started = time.monotonic()
        while True:
            if (delay := self._hold()) > 0:
                await asyncio.sleep(min(delay, self._heartbeat))
                self._refresh()
                continue
            if self._slots > 0:
                self._slots -= 1
                return time.monotonic() - started
            self._refresh()
            if self._hold() > 0:
                continue
            chunk = self._chunk
            taking = time.monotonic()
            try:
                await self._limiter.try_acquire_async("plannr", weight=chunk)
            except sqlite3.Error as error:
                raise self._failed(error) from None
            self._slots += chunk
            if time.monotonic() - taking >= RECHECK_AFTER_WAIT_SECONDS:
                self._refresh()  # the wait was long enough for another process to pause us all

    def observe_server_limit(self, server_limit: int | None) -> int | None:
        """Follow the server's announced limit; return the limit in force when it changed."""
        if not self.follow_server_limit or not server_limit or server_limit <= 0:
            return None
        target = max(1, int(server_limit * SERVER_LIMIT_SHARE))
        if self.ceiling is not None:
            target = min(target, self.ceiling)
        if target == self.declared:
            return None
        before = self.limit
        self.declared = target
        self._refresh(declare=True)
        return self.limit if self.limit != before else None

    def pause_for(self, seconds: float) -> None:
        """Hold this process's callers for `seconds`."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def pause_everyone(self, seconds: float) -> None:
        """Hold every process of this token for `seconds` (after a 429), from the shared file."""
        until = time.time() + seconds
        try:
            with self._lock, self._conn:
                self._conn.execute(
                    "INSERT INTO pause (id, until) VALUES (0, ?)"
                    " ON CONFLICT (id) DO UPDATE SET until = max(until, excluded.until)",
                    (until,),
                )
        except sqlite3.Error as error:
            raise self._failed(error) from None
        self._shared_until = max(self._shared_until, until)
        self._slots = 0  # slots taken before the 429 are not spent after it: the budget paces again

    def observe_remaining(self, remaining: int | None) -> None:
        """Slow down as the server's own count runs low (it may count requests we cannot see)."""
        if remaining is not None and remaining < LOW_REMAINING:
            self.pause_for((LOW_REMAINING - remaining) * self.window_seconds / self.limit)


_budgets: dict[tuple[str, int, int | None], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(token: str, base_url: str, per_minute: int, ceiling: int | None = None) -> RequestBudget:
    """The process-wide budget for this token (one per token and configured limit)."""
    key = hashlib.sha256(f"{base_url}\0{token}".encode()).hexdigest()[:16]
    with _budgets_lock:
        if (key, per_minute, ceiling) not in _budgets:
            _budgets[(key, per_minute, ceiling)] = RequestBudget(key, per_minute, ceiling=ceiling)
        return _budgets[(key, per_minute, ceiling)]
