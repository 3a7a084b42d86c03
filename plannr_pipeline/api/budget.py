"""One request budget per token, shared by every caller in the process and across processes.

Every process using a token draws on one shared store:

- with PLANNR_BUDGET_URL unset, a SQLite file on this machine (`api/budget_file.py`:
  `<PLANNR_BUDGET_DIR>/<hash>.sqlite`, `<hash>` a hash of the base URL and the token, never the
  token itself);
- with PLANNR_BUDGET_URL set, a Postgres or Redis server every machine reaches
  (`api/budget_server.py`), so processes on several hosts stay under the token's limit together.

The store holds:

- the sliding-window log of requests (a pyrate-limiter bucket), so concurrent Dagster steps and
  runs, here or on other hosts, draw on the same allowance instead of each assuming it has the
  whole 500/minute;
- each live process's declared limit (`declarations`): the budget every process runs at is the
  smallest limit any live process of that token declared. A declaration counts while it has been
  refreshed within a couple of windows (and, on this host, while its process is alive), so a
  process that died or stopped asking no longer holds the others down;
- the pause after a 429, which holds every process of the token, not just the one that saw it.

An `X-Ratelimit-Remaining` that is running low slows only this process (every process sees its
own).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pyrate_limiter import AbstractBucket, Duration, Limiter, Rate

from plannr_pipeline.api.budget_file import BudgetFileError, FileStore
from plannr_pipeline.api.config import budget_dir_from_env, budget_server_from_env
from plannr_pipeline.api.errors import PlannrError

if TYPE_CHECKING:
    from plannr_pipeline.api.config import PlannrSettings

__all__ = ["BudgetFileError", "BudgetStore", "RequestBudget", "budget_for", "budget_of"]

log = logging.getLogger(__name__)

# When the server says this few requests are left in its window, spread the rest out.
LOW_REMAINING = 10
# Run at this share of the limit the server announces (X-RateLimit-Limit): close to all of it,
# with room for the odd request a clock skew between our window and the server's lets through.
SERVER_LIMIT_SHARE = 0.98
# Our window is this share longer than the server's (a second a minute). The server counts a
# request when it arrives, we count it when it leaves, and the time between varies (network
# latency, the server's queue): a request counted here a minute after another may reach the
# server less than a minute after it. Bursts at the window's turn (a sync's fan-out) then drew a
# few 429s with only the 2% above to spare; a second of slack covers that much jitter.
WINDOW_SLACK = 1 / 60
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


class BudgetStore(Protocol):
    """Where the budget's shared state lives: a file on this machine, or a server (see above)."""

    errors: tuple[type[BaseException], ...]  # what its operations raise when the store fails
    where: str  # names the store in messages (never a password)

    def failed(self, error: BaseException) -> PlannrError: ...
    def bucket(self, rates: list[Rate]) -> AbstractBucket: ...
    def declare(
        self, owner: str, host: str, pid: int, per_window: int, ttl: float
    ) -> list[tuple[str, str, int, int]]:
        """Write this declaration, drop those older than `ttl` seconds, return what is left."""

    def forget(self, owners: list[str]) -> None: ...
    def pause_left(self) -> float:
        """Seconds left of the shared pause (<= 0 when none)."""

    def pause(self, seconds: float) -> None:
        """Hold every process for `seconds` from now, unless a longer pause already holds them."""

    def close(self) -> None: ...


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
        store: BudgetStore | None = None,
    ) -> None:
        """At most `limit` requests in any `window_seconds` (Plannr's window is a minute).

        The limit then follows what the server announces (`observe_server_limit`), never above
        `ceiling` (an explicit PLANNR_RATE_LIMIT_PER_MINUTE); and every process of this key runs
        at the smallest limit any of them declared. The shared state is `store`, by default the
        file `<directory>/<key>.sqlite` (directory: PLANNR_BUDGET_DIR).
        """
        self.window_seconds = window_seconds
        self.ceiling = ceiling
        self.follow_server_limit = follow_server_limit
        self.declared = limit  # this process's own limit; `limit` is the one in force
        self.limit = limit
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat = min(HEARTBEAT_SECONDS, window_seconds / 4)
        # A slot spent later than this after the log stamped it could break the server's window;
        # half the slack, so the other half still covers the network's jitter.
        self._slot_life = window_seconds * WINDOW_SLACK / 2
        self._ttl = DECLARATION_TTL_WINDOWS * window_seconds
        self._paused_until = 0.0  # this process only (time.monotonic)
        self._shared_until = 0.0  # every process (time.monotonic), as last read from the store
        self._declared_at = float("-inf")  # time.monotonic of the last declaration
        self._lock = threading.Lock()
        self._store = store or FileStore((directory or budget_dir_from_env(os.environ)) / f"{key}.sqlite")
        self.path: Path | None = getattr(self._store, "path", None)  # the file, for the file store
        try:
            self._bucket = self._store.bucket(self._rates(limit))
        except self._store.errors as error:
            self._store.close()
            raise self._store.failed(error) from None
        self._limiter = Limiter(self._bucket)
        self._set_chunk()
        self._slots = 0
        self._slots_taken_at = 0.0  # time.monotonic of the last take from the shared log
        # The lock of `_taker`, per thread: (the event loop it belongs to, weakly; the lock).
        self._takers = threading.local()
        self._refresh(declare=True)

    def _rates(self, limit: int) -> list[Rate]:
        return [Rate(limit, int(self.window_seconds * (1 + WINDOW_SLACK) * Duration.SECOND))]

    def _set_chunk(self) -> None:
        self._chunk = max(1, min(MAX_CHUNK, int(self.limit / self.window_seconds / 4)))

    def _use(self, limit: int) -> None:
        if limit != self.limit:
            self._bucket.rates = self._rates(limit)
            self.limit = limit
            self._set_chunk()

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
                self._shared_until = time.monotonic() + self._store.pause_left()
        except self._store.errors as error:
            raise self._store.failed(error) from None

    def _declare(self) -> int:
        """Write this process's limit; return the smallest limit of the live declarations."""
        host, pid = socket.gethostname(), os.getpid()
        rows = self._store.declare(self._owner, host, pid, self.declared, self._ttl)
        # Pids mean something on this host only: elsewhere the heartbeat's TTL decides.
        dead = [owner for owner, on, other, _ in rows if on == host and other != pid and not _alive(other)]
        if dead:
            self._store.forget(dead)
        return min(per_window for owner, _, _, per_window in rows if owner not in dead)

    def close(self) -> None:
        """Withdraw this process's declaration and close the store (a dead process's lapses anyway)."""
        try:
            with self._lock:
                self._store.forget([self._owner])
        except self._store.errors:
            pass
        self._limiter.dispose(self._bucket)
        self._store.close()

    # -- the hot path ---------------------------------------------------------------------

    def _hold(self) -> float:
        return max(self._paused_until, self._shared_until) - time.monotonic()

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds spent waiting.

        Slots are taken from the shared log a chunk at a time; each take also reads the shared
        pause (and, every heartbeat, the declarations), so another process's 429 holds this
        one from its next take on.
        """
        started = time.monotonic()
        while True:
            if (delay := self._hold()) > 0:
                # Slots taken before a pause are not spent after it: by then they are past their
                # life, and dropped below like any other.
                await asyncio.sleep(min(delay, self._heartbeat))
                self._refresh()
                continue
            if self._slots > 0 and time.monotonic() - self._slots_taken_at > self._slot_life:
                # Slots left over from a burst (the end of one listing, before the next step
                # starts) or held across a pause: the log stamped them when taken and frees them a
                # window later, so spent now they would reach the server after the log thinks they
                # left, inside a window it thinks is free (429s at its turn).
                self._slots = 0
            if self._slots > 0:
                self._slots -= 1
                return time.monotonic() - started
            async with self._taker():
                if self._slots > 0:
                    continue  # another caller took a chunk while this one waited for its turn
                self._refresh()
                if self._hold() > 0:
                    continue
                chunk = self._chunk
                taking = time.monotonic()
                try:
                    await self._limiter.try_acquire_async("plannr", weight=chunk)
                except self._store.errors as error:
                    raise self._store.failed(error) from None
                self._slots += chunk
                self._slots_taken_at = time.monotonic()
                if time.monotonic() - taking >= RECHECK_AFTER_WAIT_SECONDS:
                    self._refresh()  # the wait was long enough for another process to pause us all

    def _taker(self) -> asyncio.Lock:
        """One take from the shared log at a time per event loop: callers that find no slot left
        wait for the chunk one of them takes, instead of each taking a chunk of its own (32 callers
        would take 32 chunks when the window frees, and hold most of them past their life)."""
        # A sync's steps each run an event loop of their own (asyncio.run), one after another; a
        # lock belongs to the loop it first waited in, so a new loop gets a new lock, and a lock
        # kept per thread (not per loop, in a table) goes with the loop it no longer serves.
        loop = asyncio.get_running_loop()
        owner, lock = getattr(self._takers, "current", (None, None))
        if lock is None or owner() is not loop:
            lock = asyncio.Lock()
            self._takers.current = (weakref.ref(loop), lock)
        return lock

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
        """Hold every process of this token for `seconds` (after a 429), from the shared store."""
        try:
            with self._lock:
                self._store.pause(seconds)
        except self._store.errors as error:
            raise self._store.failed(error) from None
        self._shared_until = max(self._shared_until, time.monotonic() + seconds)

    def observe_remaining(self, remaining: int | None) -> None:
        """Slow down as the server's own count runs low (it may count requests we cannot see)."""
        if remaining is not None and remaining < LOW_REMAINING:
            self.pause_for((LOW_REMAINING - remaining) * self.window_seconds / self.limit)


_budgets: dict[tuple[str, int, int | None, float], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(
    token: str, base_url: str, per_window: int, ceiling: int | None = None, window_seconds: float = 60.0
) -> RequestBudget:
    """The process-wide budget for this token (one per token, configured limit and window), in
    the store PLANNR_BUDGET_URL names, else in this machine's budget file."""
    key = hashlib.sha256(f"{base_url}\0{token}".encode()).hexdigest()[:16]
    with _budgets_lock:
        if (key, per_window, ceiling, window_seconds) not in _budgets:
            server = budget_server_from_env(os.environ)
            store = server.store(key) if server else None
            _budgets[(key, per_window, ceiling, window_seconds)] = RequestBudget(
                key, per_window, window_seconds=window_seconds, ceiling=ceiling, store=store
            )
        return _budgets[(key, per_window, ceiling, window_seconds)]


def budget_of(settings: PlannrSettings) -> RequestBudget:
    """The budget of the token `settings` name, on the limit and window they configure."""
    return budget_for(
        settings.token,
        settings.base_url,
        settings.starting_budget,
        settings.rate_limit_per_minute,
        settings.rate_window_seconds,
    )
