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


def _budget_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "plannr-pipeline-budget"
    path.mkdir(parents=True, exist_ok=True)
    return path


class RequestBudget:
    def __init__(self, key: str, limit: int, directory: Path | None = None, window_seconds: float = 60.0) -> None:
        """At most `limit` requests in any `window_seconds` (Plannr's window is a minute)."""
        self.limit = limit
        self.window_seconds = window_seconds
        db_path = (directory or _budget_dir()) / f"{key}-{limit}-{window_seconds:g}.sqlite"
        bucket = SQLiteBucket.init_from_file(
            [Rate(limit, int(window_seconds * Duration.SECOND))], db_path=str(db_path), use_file_lock=True
        )
        self._limiter = Limiter(bucket)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds spent waiting."""
        started = time.monotonic()
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        await self._limiter.try_acquire_async("plannr")
        return time.monotonic() - started

    def pause_for(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def observe_remaining(self, remaining: int | None) -> None:
        """Slow down as the server's own count runs low (it may count requests we cannot see)."""
        if remaining is not None and remaining < LOW_REMAINING:
            self.pause_for((LOW_REMAINING - remaining) * self.window_seconds / self.limit)


_budgets: dict[tuple[str, int], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(token: str, base_url: str, per_minute: int) -> RequestBudget:
    """The process-wide budget for this token (one per token and limit)."""
    key = hashlib.sha256(f"{base_url}\0{token}".encode()).hexdigest()[:16]
    with _budgets_lock:
        if (key, per_minute) not in _budgets:
            _budgets[(key, per_minute)] = RequestBudget(key, per_minute)
        return _budgets[(key, per_minute)]
