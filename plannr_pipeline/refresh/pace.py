"""How fast the rolling refresh gets round, and the one line that says so in the UI and the log:
"oldest goals read 14 min ago; 1,200 of 10,000 clients to go, at this rate all within 19 min"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Pace:
    """Clients whose goals were read, and the seconds it took (fetch and commit), this run."""

    clients: int = 0
    seconds: float = 0.0

    def add(self, clients: int, seconds: float) -> None:
        self.clients += clients
        self.seconds += seconds

    def per_minute(self) -> float:
        return 60 * self.clients / self.seconds if self.seconds > 0 else 0.0

    def seconds_for(self, clients: int) -> float | None:
        rate = self.per_minute()
        return 60 * clients / rate if rate > 0 else None

    def describe(self, oldest: datetime | None, behind: int, total: int, now: datetime | None = None) -> str:
        """`oldest`: the oldest goals read (None: some never read); `behind`: clients whose goals
        were last read before the last sweep, of `total`."""
        now = now or datetime.now(UTC)
        age = (
            "some clients' goals never read yet"
            if oldest is None
            else f"oldest goals read {duration((now - oldest).total_seconds())} ago"
        )
        if behind == 0:
            return f"{age}; every client's goals read since the last sweep"
        eta = self.seconds_for(behind)
        when = f"at this rate all within {duration(eta)}" if eta is not None else "no rate measured yet"
        return f"{age}; {behind:,} of {total:,} clients to go, {when}"
