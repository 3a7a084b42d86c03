"""What each sandbox route lists and which filters and sorts it accepts.

Only the parameters the Plannr docs show are accepted (docs/plannr-api.md section 4); in
particular there is no updated-since filter, because the real API has none.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any

from plannr_pipeline.sandbox.formats import LONDON
from plannr_pipeline.sandbox.listing import Filter, Listing, ListingError, in_list, not_in_list, truthy


@lru_cache(maxsize=200_000)
def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@lru_cache(maxsize=200_000)
def _instant(text: str) -> float:
    # A POSIX timestamp to sort by: sorting 50,000 tasks by aware datetimes (each comparison
    # works out both UTC offsets) took 0.75 s of the sandbox's one core per page.
    return _moment(text).timestamp()


def by_time(field: str):
    def key(record: dict[str, Any]) -> tuple[bool, float]:
        value = record.get(field)
        return (value is None, _instant(value) if value else 0.0)

    return key


def by_text(field: str):
    return lambda record: (record.get(field) is None, str(record.get(field) or "").lower())


def by_number(field: str):
    return lambda record: (record.get(field) is None, float(record.get(field) or 0))


def _date_param(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        message = f"The filter.{name.replace('_', ' ')} field must be a valid date."
        raise ListingError(422, {"message": message, "errors": {f"filter.{name}": [message]}}) from None


def created_on_or_after(name: str) -> Filter:
    return lambda record, value: (
        _moment(record["created_at"]).astimezone(LONDON).date() >= _date_param(name, value)
    )


def created_on_or_before(name: str) -> Filter:
    return lambda record, value: (
        _moment(record["created_at"]).astimezone(LONDON).date() <= _date_param(name, value)
    )


def _name_contains(record: dict[str, Any], value: str) -> bool:
    return value.lower() in str(record.get("name", "")).lower()


ACCOUNT_SORTS = {
    "created_at": by_time("created_at"),
    "updated_at": by_time("updated_at"),
    "first_name": by_text("first_name"),
    "last_name": by_text("last_name"),
    "email": by_text("email"),
    "next_review_date": by_time("next_review_date"),
    "previous_review_date": by_time("previous_review_date"),
    "anniversary_review_date": by_time("anniversary_review_date"),
    "inactive_at": by_text("inactive_at"),
}
ACCOUNT_INCLUDES = frozenset(
    {
        "primary_phone_number",
        "primary_email",
        "primary_address",
        "assigned_adviser",
        "assigned_administrator",
        "assigned_paraplanner",
        "groups",
        "tags",
        "owners",
        "custom_fields",
        "external_references",
        "circles",
    }
)

_CLIENT_FILTERS: dict[str, Filter] = {
    "uuid": in_list("uuid"),
    "name": _name_contains,
    "created_after": created_on_or_after("created_after"),
    "created_before": created_on_or_before("created_before"),
}

ACCOUNTS = Listing(
    filters={
        **_CLIENT_FILTERS,
        "type": in_list("type"),
        "role": in_list("role"),
        "exclude_uuid": not_in_list("uuid"),
    },
    sorts=ACCOUNT_SORTS,
    default_sort="first_name",
    includes=ACCOUNT_INCLUDES,
)

# The deprecated /client route lists clients only; its `type` is the client sub-type.
CLIENTS = Listing(
    filters={**_CLIENT_FILTERS, "type": in_list("role")},
    sorts=ACCOUNT_SORTS,
    default_sort="first_name",
    includes=ACCOUNT_INCLUDES,
)

GOALS = Listing(
    filters={"uuid": in_list("uuid")},
    sorts={
        "created_at": by_time("created_at"),
        "updated_at": by_time("updated_at"),
        "progress": by_number("progress"),
        "complete_goal_by": by_time("complete_goal_by"),
        "priority": by_number("priority"),
    },
    default_sort="created_at",
    includes=frozenset({"shared_owner"}),
)


def _has_member(field: str) -> Filter:
    def check(record: dict[str, Any], value: str) -> bool:
        wanted = set(value.split(","))
        return any(item["uuid"] in wanted for item in record.get(field) or [])

    return check


CIRCLES = Listing(
    filters={
        "uuid": in_list("uuid"),
        "account_uuids": _has_member("accounts"),
        "group_uuids": _has_member("groups"),
        "name": _name_contains,
    },
    sorts={"name": by_text("name"), "created_at": by_time("created_at"), "updated_at": by_time("updated_at")},
    default_sort="name",
    includes=frozenset({"accounts", "firm", "groups"}),
)


def _status_flag(flag: str) -> Filter:
    return lambda record, value: record["status"][flag] == truthy(value)


def _noop(record: dict[str, Any], value: str) -> bool:
    return True  # visibility filters are applied before listing (see tasks_visible)


TASKS = Listing(
    filters={
        "uuid": in_list("uuid"),
        "show_child_tasks": _noop,
        "subtask_visibility": _noop,
        "completed_status": _status_flag("is_type_completed"),
        "archived_status": _status_flag("is_archived"),
        "not_started_status": _status_flag("is_not_started"),
    },
    sorts={
        "created_at": by_time("created_at"),
        "updated_at": by_time("updated_at"),
        "name": by_text("name"),
        "priority": by_text("priority"),
        "due_at": by_text("due_at"),
        "completed_last": by_text("completed_at"),
    },
    default_sort="created_at",
    includes=frozenset({"workflow_task"}),
)


def subtask_visibility(query: dict[str, str]) -> str:
    """ "include", "only" or "exclude" (subtasks hidden unless asked for, as in Plannr)."""
    visibility = query.get("filter[subtask_visibility]")
    if visibility is None:
        visibility = "include" if truthy(query.get("filter[show_child_tasks]", "false")) else "exclude"
    if visibility not in ("include", "only", "exclude"):
        message = "The selected filter.subtask visibility is invalid."
        raise ListingError(422, {"message": message, "errors": {"filter.subtask_visibility": [message]}})
    return visibility


def tasks_visible(tasks: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    """Subtasks are hidden unless asked for, as in Plannr."""
    visibility = subtask_visibility(query)
    if visibility == "include":
        return tasks
    if visibility == "only":
        return [t for t in tasks if t["parent"] is not None]
    return [t for t in tasks if t["parent"] is None]


IMPORTS = Listing(
    filters={
        "uuid": in_list("uuid"),
        "types": in_list("type"),
        "exclude_types": not_in_list("type"),
        "modes": in_list("mode"),
        "statuses": in_list("status"),
        "date_from": created_on_or_after("date_from"),
        "date_to": created_on_or_before("date_to"),
        "initiated_by": lambda record, value: record["account"]["uuid"] == value,
    },
    sorts={"created_at": by_time("created_at"), "updated_at": by_time("updated_at")},
    default_sort="created_at",
    includes=frozenset({"initiatedBy"}),
)
