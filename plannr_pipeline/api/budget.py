"""One request budget per token, shared by every caller in the process and across processes.

The budget is a sliding-window limiter (pyrate-limiter) kept in a small SQLite file named by a
hash of the token, guarded by a file lock, so concurrent Dagster steps and runs on one machine
draw on the same allowance instead of each assuming it has the whole 500/minute.
On top of it sits a shared pause: a 429's Retry-After, or an `X-Ratelimit-Remaining` that is
running low, holds back every caller of that token, not just the one that saw it.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import threading
import time
from pathlib import Path

from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

# When the server says this few requests are left in its window, spread the rest out.
LOW_REMAINING = 10
# Run at this share of the limit the server announces (X-RateLimit-Limit): close to all of it,
# with room for the odd request a clock skew between our window and the server's lets through.
SERVER_LIMIT_SHARE = 0.98
# Slots taken from the shared (file-locked) log at a time, at most: each take costs a SQLite
# transaction, so at high rates a small chunk saves most of that; at Plannr's 500/minute it is 1.
MAX_CHUNK = 16


def _budget_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "plannr-pipeline-budget"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        `ceiling` (an explicit PLANNR_RATE_LIMIT_PER_MINUTE).
        """
        self.window_seconds = window_seconds
        self.ceiling = ceiling
        self.follow_server_limit = follow_server_limit
        self._key = key
        self._directory = directory or _budget_dir()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._use(limit)

    def _use(self, limit: int) -> None:
        # One log file per token, limit and window: every process of one token at one limit shares it.
        db_path = self._directory / f"{self._key}-{limit}-{self.window_seconds:g}.sqlite"
        bucket = SQLiteBucket.init_from_file(
            [Rate(limit, int(self.window_seconds * Duration.SECOND))],
            db_path=str(db_path),
            use_file_lock=True,
        )
        self.limit = limit
        self._limiter = Limiter(bucket)
        self._chunk = max(1, min(MAX_CHUNK, int(limit / self.window_seconds / 4)))
        self._slots = 0

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds spent waiting."""
        started = time.monotonic()
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        if self._slots <= 0:
            chunk = self._chunk
            await self._limiter.try_acquire_async("plannr", weight=chunk)
            self._slots += chunk
        self._slots -= 1
        return time.monotonic() - started

    def observe_server_limit(self, server_limit: int | None) -> int | None:
        """Follow the server's announced limit; return the new budget when it changed."""
        if not self.follow_server_limit or not server_limit or server_limit <= 0:
            return None
        target = max(1, int(server_limit * SERVER_LIMIT_SHARE))
        if self.ceiling is not None:
            target = min(target, self.ceiling)
        if target == self.limit:
            return None
        with self._lock:
            self._use(target)
        return target

    def pause_for(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

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
