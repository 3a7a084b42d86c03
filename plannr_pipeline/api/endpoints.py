"""The one catalogue of the Plannr endpoints this project reads, with the filters each needs.

Assets, sensors and benchmarks take their paths and parameters from here, so a rule such as
"clients come from /account with filter[type]=client" is written once (docs/plannr-api.md,
section 4, lists what the API accepts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAGE_SIZE = 500  # the documented maximum per page


@dataclass(frozen=True)
class Endpoint:
    path: str
    params: dict[str, Any] = field(default_factory=dict)

    def with_params(self, **extra: Any) -> Endpoint:
        return Endpoint(self.path, {**self.params, **extra})


# /client is deprecated; /account with filter[type]=client lists the same clients with more
# filters. The assigned people come expanded in the same request, so they cost nothing extra.
CLIENTS = Endpoint(
    "/api/v1/account",
    {"filter[type]": "client", "include": "assigned_adviser,assigned_administrator,assigned_paraplanner"},
)
STAFF = Endpoint("/api/v1/account", {"filter[type]": "employee"})
CIRCLES = Endpoint("/api/v1/circles", {"include": "accounts,groups"})
# Subtasks are hidden from the list unless asked for; this is the documented (older) filter.
TASKS = Endpoint("/api/v1/task", {"filter[show_child_tasks]": "true"})
IMPORTS = Endpoint("/api/v1/import")
GOALS_INCLUDE = {"include": "shared_owner"}

# Date filters that define a partition: clients by created date (inclusive bounds unknown).
CLIENTS_CREATED_AFTER = "filter[created_after]"
CLIENTS_CREATED_BEFORE = "filter[created_before]"
IMPORTS_CREATED_FROM = "filter[date_from]"
NEWEST_UPDATED_FIRST = {"sort": "-updated_at"}
# A stable order for page-number paging: records added while we read land at the end.
OLDEST_CREATED_FIRST = {"sort": "created_at"}


def goals_of(client_uuid: str) -> Endpoint:
    """Goals exist only per client: one listing per client."""
    return Endpoint(f"/api/v1/client/{client_uuid}/goal", GOALS_INCLUDE)


def client(uuid: str) -> str:
    """One client (documented, if deprecated, beside /client; /account has no show route)."""
    return f"/api/v1/client/{uuid}"


def task(uuid: str) -> str:
    return f"/api/v1/task/{uuid}"
