"""Request counters a caller can read and report (request count is a first-class metric)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def endpoint_of(path: str) -> str:
    """`/api/v1/client/5c0f.../goal` -> `/api/v1/client/{uuid}/goal`, so counts group by route."""
    return _UUID.sub("{uuid}", path.split("?", 1)[0])


@dataclass
class RequestStats:
    by_endpoint_status: Counter = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0
    bytes_received: int = 0
    budget_wait_seconds: float = 0.0
    budget_per_minute: int | None = None  # the budget in force at the last answer, per real minute
    warnings: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.by_endpoint_status.values())

    def record(self, path: str, status: int, size: int) -> None:
        self.by_endpoint_status[(endpoint_of(path), status)] += 1
        self.bytes_received += size
        if status == 429:
            self.rate_limited += 1

    def as_metadata(self) -> dict[str, object]:
        """Flat, JSON-friendly figures for logs and Dagster metadata."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited_429": self.rate_limited,
            "bytes_received": self.bytes_received,
            "budget_wait_seconds": round(self.budget_wait_seconds, 3),
            "budget_per_minute": self.budget_per_minute,
            "requests_by_endpoint": {
                f"{endpoint} {status}": count
                for (endpoint, status), count in sorted(self.by_endpoint_status.items())
            },
        }
