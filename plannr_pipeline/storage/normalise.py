"""API records -> typed rows for the tables in `tables.py`.

Nothing the API sends is dropped: a field no column models lands in `extra_json` (and is
reported as schema drift), a value that cannot be cast lands in `extra_json._unparsed`, and
unexpanded relationship placeholders are recognised and not stored as data.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from plannr_pipeline.storage import convert as c
from plannr_pipeline.storage import tables as t
from plannr_pipeline.storage.convert import is_placeholder


@dataclass
class Drift:
    """Fields seen that the tables do not model, and values that could not be cast."""

    unknown_fields: Counter = field(default_factory=Counter)  # "table.field" -> rows
    unparsed_values: Counter = field(default_factory=Counter)

    def summary(self) -> list[str]:
        return [
            f"new field {name} in {count} rows" for name, count in sorted(self.unknown_fields.items())
        ] + [f"uncastable {name} in {count} rows" for name, count in sorted(self.unparsed_values.items())]


def _dig(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _unknown_inside(
    value: dict[str, Any], known: dict[str, dict], where: str, drift: Drift
) -> dict[str, Any]:
    """The fields of a nested object that no column reads and none is known to carry, at any
    depth along the columns' paths, each counted as drift (`tasks.status.is_blocked`)."""
    new: dict[str, Any] = {}
    for key, inner in value.items():
        inside = known.get(key)
        if inside == {} or inner is None or is_placeholder(inner):  # a known leaf is never new
            continue
        if inside is None:
            new[key] = inner
            drift.unknown_fields[f"{where}.{key}"] += 1
        elif isinstance(inner, dict) and (deeper := _unknown_inside(inner, inside, f"{where}.{key}", drift)):
            new[key] = deeper
    return new


@dataclass(frozen=True)
class _Plan:
    """How `to_row` reads one table, worked out once: per column (name, first key, the rest of
    its path, converter, integer bounds), and the top-level fields that need no look at all (a
    column reads them whole). A tasks page is 500 records of ~40 fields: attribute look-ups and
    a placeholder test per field were most of a sync's CPU at 10,000 clients."""

    columns: tuple[tuple[str, str | None, tuple[str, ...], Callable | None, tuple[int, int] | None], ...]
    plain: frozenset[str]


_PLANS: dict[str, _Plan] = {}


def _plan(table: t.Table) -> _Plan:
    plan = _PLANS.get(table.name)
    if plan is None:
        columns = tuple(
            (
                column.name,
                column.path[0] if column.path else None,
                column.path[1:] if column.path else (),
                column.convert,
                c.INTEGER_BOUNDS.get(column.type),
            )
            for column in table.columns
        )
        # Known, not `handled` and with no nested object to look inside: such a field never lands
        # in extra_json, whatever its value.
        nested = {key for key, inside in table.nested_fields.items() if inside}
        plain = frozenset(table.known_fields - table.handled - nested)
        plan = _PLANS[table.name] = _Plan(columns, plain)
    return plan


def to_row(table: t.Table, record: dict[str, Any], drift: Drift, **fixed: Any) -> dict[str, Any]:
    plan = _plan(table)
    row: dict[str, Any] = {}
    unparsed: dict[str, Any] = {}
    get = record.get
    for name, key, rest, convert, bounds in plan.columns:
        if key is None:
            row[name] = fixed.get(name)
            continue
        raw = get(key)
        if rest and raw is not None:
            raw = _dig(raw, rest)
        if raw is None:  # every converter gives None for None
            row[name] = None
            continue
        try:
            row[name] = c.within(convert(raw) if convert else raw, bounds)
        except (ValueError, TypeError):
            row[name] = None
            unparsed[name] = raw
            drift.unparsed_values[f"{table.name}.{name}"] += 1
    # Fields no column models are kept (and reported as drift); relationships we do not model may
    # arrive expanded (include=...): kept too, not drift.
    extra = {}
    known, handled, plain = table.known_fields, table.handled, plan.plain
    for key, value in record.items():
        if key in plain or value is None or is_placeholder(value):
            continue
        if key in known and key not in handled:
            inside = table.nested_fields.get(key)
            if (
                inside
                and isinstance(value, dict)
                and (new := _unknown_inside(value, inside, f"{table.name}.{key}", drift))
            ):
                extra[key] = new
            continue
        extra[key] = value
        if key not in known:
            drift.unknown_fields[f"{table.name}.{key}"] += 1
    if unparsed:
        extra["_unparsed"] = unparsed
    if "extra_json" in row:
        row["extra_json"] = json.dumps(extra, sort_keys=True, default=str) if extra else None
    return row


def arrow(table: t.Table, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=table.schema)


# -- per collection --------------------------------------------------------------------------


def clients(
    records: Iterable[dict], drift: Drift, partition_of: Callable[[dict], str]
) -> dict[str, list[dict]]:
    return {"clients": [to_row(t.CLIENTS, r, drift, created_month=partition_of(r)) for r in records]}


def staff(records: Iterable[dict], drift: Drift) -> dict[str, list[dict]]:
    return {"staff": [to_row(t.STAFF, r, drift) for r in records]}


def goals(client_uuid: str, records: Iterable[dict], drift: Drift, created_month: str) -> list[dict]:
    return [to_row(t.GOALS, r, drift, client_uuid=client_uuid, created_month=created_month) for r in records]


def circles(records: Iterable[dict], drift: Drift) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"circles": [], "circle_accounts": [], "circle_groups": []}
    for record in records:
        out["circles"].append(to_row(t.CIRCLES, record, drift))
        for account in _list_of(record.get("accounts")):
            out["circle_accounts"].append(
                to_row(t.CIRCLE_ACCOUNTS, account, drift, circle_uuid=record["uuid"])
            )
        for group in _list_of(record.get("groups")):
            out["circle_groups"].append(to_row(t.CIRCLE_GROUPS, group, drift, circle_uuid=record["uuid"]))
    return out


def tasks(records: Iterable[dict], drift: Drift) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"tasks": [], "task_custom_fields": [], "task_assignees": []}
    for record in records:
        uuid = record["uuid"]
        out["tasks"].append(to_row(t.TASKS, record, drift))
        for custom_field in _list_of(record.get("custom_fields")):
            out["task_custom_fields"].append(
                to_row(t.TASK_CUSTOM_FIELDS, custom_field, drift, task_uuid=uuid)
            )
        assignees = {}
        assigned = record.get("assigned_to")
        if isinstance(assigned, dict) and isinstance(assigned.get("uuid"), str):
            assignees[(assigned["uuid"], "assigned_to")] = None
        taskable = record.get("taskable")
        for account_uuid in (taskable.get("assigned_to_uuids") or []) if isinstance(taskable, dict) else []:
            assignees[(account_uuid, "taskable")] = None
        out["task_assignees"].extend(
            {"task_uuid": uuid, "account_uuid": account_uuid, "source": source}
            for account_uuid, source in assignees
        )
    return out


def imports(
    records: Iterable[dict], drift: Drift, partition_of: Callable[[dict], str]
) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"imports": [], "import_errors": []}
    for record in records:
        day = partition_of(record)
        out["imports"].append(to_row(t.IMPORTS, record, drift, created_day=day))
        out["import_errors"].extend(import_error_rows(record, day))
    return out


def import_error_rows(record: dict[str, Any], day: str) -> list[dict]:
    """One row per (failed row, field, message). `errors` may be a list or a keyed map."""
    errors = record.get("errors")
    items = list(errors.values()) if isinstance(errors, dict) else _list_of(errors)
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or is_placeholder(item):
            continue
        client = item.get("client")
        for field_name, messages in (item.get("errors") or {}).items():
            for message in messages if isinstance(messages, list) else [messages]:
                rows.append(
                    {
                        "import_uuid": record["uuid"],
                        "error_index": index,
                        "field": field_name,
                        "message": str(message),
                        "client_json": json.dumps(client, sort_keys=True) if client is not None else None,
                        "created_day": day,
                    }
                )
    return rows


def _list_of(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
