"""Who looks after whom: each client's assigned adviser, administrator and paraplanner, and the
owner of each `individual` goal, expanded into account summaries only when `include=` asks.

The assignments live beside the records (in `Firm.assignments` and `Firm.goal_owners`), not in
them, so a record without `include=` shows the resource-class placeholder as Plannr's docs do,
and an expansion always shows the account as it is now.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from plannr_pipeline.sandbox.formats import placeholder

# The account relationships that name a member of staff (GET /api/v1/account `include=`).
ASSIGNMENTS = ("assigned_adviser", "assigned_administrator", "assigned_paraplanner")
ADVISER_ROLES = ("owner", "member")
ADMINISTRATOR_ROLES = ("admin",)
ADMINISTRATOR_SHARE = 0.7  # clients with an administrator; the rest have none (null)
PARAPLANNER_SHARE = 0.5

SUMMARY_KEYS = (
    "uuid",
    "name",
    "role",
    "type",
    "email",
    "first_name",
    "last_name",
    "photo_url",
    "created_at",
    "updated_at",
)


def account_summary(account: Mapping[str, Any]) -> dict[str, Any]:
    """An account as Plannr nests it in other resources (task author, circle member, ...)."""
    return {
        **{key: account[key] for key in SUMMARY_KEYS},
        "external_references": placeholder("ExternalReference"),
    }


def assign(rng: random.Random, staff: list[dict[str, Any]]) -> dict[str, str | None]:
    """A client's people: always an adviser (while the firm has staff), sometimes the others.

    Draws exactly five values from `rng` whatever the staff, so the draws that follow stay put.
    """
    advisers = [s for s in staff if s["role"] in ADVISER_ROLES] or staff
    administrators = [s for s in staff if s["role"] in ADMINISTRATOR_ROLES] or staff
    adviser, has_administrator, administrator, has_paraplanner, paraplanner = (rng.random() for _ in range(5))

    def choose(pool: list[dict[str, Any]], roll: float) -> str | None:
        return pool[int(roll * len(pool))]["uuid"] if pool else None

    return {
        "assigned_adviser": choose(advisers, adviser),
        "assigned_administrator": choose(administrators, administrator)
        if has_administrator < ADMINISTRATOR_SHARE
        else None,
        "assigned_paraplanner": choose(staff, paraplanner) if has_paraplanner < PARAPLANNER_SHARE else None,
    }


def requested(query: Mapping[str, str]) -> frozenset[str]:
    """The `include=` comma list (already validated by the listing)."""
    return frozenset(part for part in query.get("include", "").split(",") if part)


def expand_account(
    record: dict[str, Any],
    includes: frozenset[str],
    assignments: Mapping[str, Mapping[str, str | None]],
    accounts: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """The record with each requested assignment as an account summary (null when unassigned)."""
    wanted = includes.intersection(ASSIGNMENTS)
    if not wanted:
        return record
    people = assignments.get(record["uuid"], {})
    expanded = dict(record)
    for relationship in ASSIGNMENTS:
        if relationship in wanted:
            person = accounts.get(people.get(relationship) or "")
            expanded[relationship] = account_summary(person) if person else None
    return expanded


def expand_goal(
    goal: dict[str, Any],
    includes: frozenset[str],
    owners: Mapping[str, str],
    accounts: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """`include=shared_owner`: the owning account for an `individual` goal, else null."""
    if "shared_owner" not in includes:
        return goal
    owner = (
        accounts.get(owners.get(goal["uuid"]) or "")
        if goal.get("shared_owner_type") == "individual"
        else None
    )
    return {**goal, "shared_owner": account_summary(owner) if owner else None}
