"""A share of the token's budget, for a caller that must leave the rest to others.

The rolling refresh would otherwise spend every request the token has, and a sensor's one
request a tick or a sync started from the UI would queue behind it for the whole window. Its
client draws on the token's shared budget as every process does (so together they stay under
the limit, and a 429 pauses it too), and before each request also on a window of its own, in
this process, that holds it to `share` of the limit in force.
"""

from __future__ import annotations

import math
import time

from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

from plannr_pipeline.api.budget import RequestBudget

# The share is spent evenly over this many slices of the window.
SLICES = 12


class BudgetShare:
    """`budget`, but this caller takes at most `share` of its limit (what is in force now)."""

    def __init__(self, budget: RequestBudget, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a budget share is above 0 and at most 1, not {share}")
        self._budget = budget
        self.share = share
        self._cap = 0
        self._limiter: Limiter | None = None

    def _own_window(self) -> Limiter:
        cap = max(1, int(self._budget.limit * self.share))
        if cap != self._cap or self._limiter is None:  # the limit in force moved: so does the share
            window_ms = int(self._budget.window_seconds * Duration.SECOND)
            # Evenly, a twelfth of the share per twelfth of the window, not the whole share in one
            # burst: a burst lands on the server's window edge with its requests arriving out of
            # step with when they were counted here, and draws 429s; an even pace never does.
            paced = Rate(math.ceil(cap / SLICES), window_ms // SLICES)
            self._limiter = Limiter(InMemoryBucket([paced, Rate(cap, window_ms)]))
            self._cap = cap
        return self._limiter

    async def acquire(self) -> float:
        started = time.monotonic()
        await self._own_window().try_acquire_async("share")
        await self._budget.acquire()
        return time.monotonic() - started

    def __getattr__(self, name: str):
        # Everything else (the limit in force, 429 pauses, the server's announcements) is the
        # token's budget's own.
        return getattr(self._budget, name)
