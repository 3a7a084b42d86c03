"""Every table we write: its columns, Arrow types, where each value comes from, and what it means.

This is the single source of the data dictionary (README) and of `dagster/column_schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

from plannr_pipeline.storage import convert as c

TS = pa.timestamp("us", tz="UTC")
TEXT = pa.string()
INT32 = pa.int32()


DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.date32(): "DATE",
    TS: "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    path: tuple[str, ...] | None  # where in the API record; None = filled by the normaliser
    convert: Callable[[Any], Any] | None
    description: str

    @property
    def duckdb_type(self) -> str:
        """The type an analyst meets in DuckDB (the README, the UI and COMMENTs all say this one)."""
        return DUCKDB_TYPES[self.type]


def col(
    name: str, type_: pa.DataType, path: str | None, convert: Callable[[Any], Any] | None, description: str
) -> Column:
    return Column(name, type_, tuple(path.split(".")) if path else None, convert, description)


def filled(name: str, description: str, type_: pa.DataType = TEXT) -> Column:
    """A column the normaliser fills (parent keys, partitions), not read from the record."""
    return Column(name, type_, None, None, description)


def text(name: str, description: str, path: str | None = None) -> Column:
    return col(name, pa.string(), path or name, c.to_text, description)


def stamp(name: str, description: str, path: str | None = None) -> Column:
    return col(name, TS, path or name, c.to_utc, description)


def flag(name: str, description: str, path: str | None = None) -> Column:
    return col(name, pa.bool_(), path or name, c.to_bool, description)


def whole(name: str, description: str, path: str | None = None, type_: pa.DataType = INT32) -> Column:
    return col(name, type_, path or name, c.to_int, description)


SEEN_AT = filled(
    "seen_at",
    "When a sync last received this record from the API (UTC): how fresh this row is.",
    TS,
)

EXTRA = col(
    "extra_json",
    pa.string(),
    None,
    None,
    "Fields the API sent that this table does not model yet, as JSON (kept, never dropped); `_unparsed` holds values that could not be cast.",
)


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("uuid",)
    partition_column: str | None = None
    # Known API fields without a column of their own: not drift; kept in extra_json when they
    # carry data (an expanded relationship, say), except `children`, which have child tables.
    handled: frozenset[str] = field(default_factory=frozenset)
    children: frozenset[str] = field(default_factory=frozenset)
    # Fields known inside a nested object beyond those a column reads (`status` -> its colour):
    # anything else found there is drift, reported and kept in extra_json like a new top-level field.
    nested_known: dict[str, frozenset[str]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def record_key(self) -> str:
        """The column naming the API record a row came from: `uuid` in a collection's own
        table, the parent's uuid (`task_uuid`, `circle_uuid`, ...) in its child tables."""
        return self.key[0]

    @cached_property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(column.name, column.type) for column in self.columns])

    @cached_property
    def nested_fields(self) -> dict[str, dict]:
        """The nested objects columns read into, as a tree of known keys; an empty dict for a
        value a column takes whole (money, say), whose insides are the converter's business."""
        tree: dict[str, dict] = {}
        for column in self.columns:
            if column.path and len(column.path) > 1:
                node = tree
                for key in column.path[:-1]:
                    node = node.setdefault(key, {})
                node.setdefault(column.path[-1], {})
            elif column.path:
                tree[column.path[0]] = {}
        for key, known in self.nested_known.items():
            for name in known:
                tree.setdefault(key, {}).setdefault(name, {})
        return tree

    @cached_property
    def known_fields(self) -> frozenset[str]:
        return (
            frozenset(column.path[0] for column in self.columns if column.path) | self.handled | self.children
        )


# What an expanded account (an adviser, a task's author) carries: stored once, in `staff`.
PERSON_FIELDS = frozenset(
    {
        "uuid",
        "type",
        "role",
        "name",
        "first_name",
        "last_name",
        "email",
        "photo_url",
        "external_references",
        "created_at",
        "updated_at",
    }
)

ACCOUNT_RELATIONSHIPS = frozenset(
    {
        "firm",
        "tags",
        "groups",
        "owners",
        "assigned_adviser",
        "assigned_administrator",
        "assigned_paraplanner",
        "introduced_by",
        "primary_email",
        "primary_phone_number",
        "primary_address",
        "custom_fields",
        "external_references",
        "current_time_entry",
        "joint_account_circle",
        "circles",
    }
)
# Stored as `<name>_uuid` columns (the people are stored once, in `staff`), never in extra_json.
ASSIGNMENTS = frozenset({"assigned_adviser", "assigned_administrator", "assigned_paraplanner"})

CLIENTS = Table(
    "clients",
    "One row per client account (GET /api/v1/account?filter[type]=client).",
    (
        text("uuid", "Client account UUID (key)."),
        text("type", "Account type; always `client` here."),
        text("role", "Client sub-type: individual, joint, trust or business."),
        text("first_name", "First name."),
        text("last_name", "Last name."),
        text("name", "Full display name."),
        text("email", "Email (deprecated by Plannr in favour of the primary email)."),
        text("photo_url", "Avatar URL."),
        stamp("created_at", "When the client was created (UTC)."),
        stamp("updated_at", "When the client was last updated (UTC)."),
        stamp("first_contact_date", "First contact (UTC)."),
        stamp("next_review_date", "Next review (UTC)."),
        stamp("previous_review_date", "Previous review (UTC)."),
        stamp("anniversary_review_date", "Anniversary review (UTC)."),
        stamp(
            "last_interaction_at", "Last interaction; Plannr sends UK local time without a zone (UTC here)."
        ),
        col(
            "inactive_at",
            pa.date32(),
            "inactive_at",
            c.to_date,
            "Date the client became inactive; null while active.",
        ),
        flag("with_login", "Has a client-portal login."),
        flag("has_joint_account", "Is part of a joint account."),
        flag("can_be_deleted", 'Plannr allows deletion (sent as the string "true"/"false").'),
        whole("ownership_percentage", "Ownership percentage."),
        text(
            "assigned_adviser_uuid",
            "The client's adviser (joins to staff.uuid); null unless the listing asks `include=assigned_adviser`.",
            path="assigned_adviser.uuid",
        ),
        text(
            "assigned_administrator_uuid",
            "The client's administrator (joins to staff.uuid); null when none, or unless asked with `include=assigned_administrator`.",
            path="assigned_administrator.uuid",
        ),
        text(
            "assigned_paraplanner_uuid",
            "The client's paraplanner (joins to staff.uuid); null when none, or unless asked with `include=assigned_paraplanner`.",
            path="assigned_paraplanner.uuid",
        ),
        filled(
            "created_month",
            "Partition: month the client was created, `YYYY-MM` in UK time; clients older than the first partition are in it.",
        ),
        SEEN_AT,
        EXTRA,
    ),
    partition_column="created_month",
    handled=ACCOUNT_RELATIONSHIPS - ASSIGNMENTS,
    nested_known=dict.fromkeys(ASSIGNMENTS, PERSON_FIELDS),
)

STAFF = Table(
    "staff",
    "One row per member of the firm's staff (GET /api/v1/account?filter[type]=employee): the advisers, administrators and paraplanners that clients, goals and tasks point at.",
    (
        text("uuid", "Staff account UUID (key)."),
        text("name", "Full display name."),
        text("first_name", "First name."),
        text("last_name", "Last name."),
        text("email", "Email."),
        text("role", "Staff role as Plannr sends it: owner, admin or member."),
        stamp("created_at", "When the account was created (UTC)."),
        stamp("updated_at", "When the account was last updated (UTC)."),
        col(
            "inactive_at",
            pa.date32(),
            "inactive_at",
            c.to_date,
            "Date the account became inactive; null while active.",
        ),
        SEEN_AT,
        EXTRA,
    ),
    # Account fields that mean little for staff: not drift, kept in extra_json.
    handled=ACCOUNT_RELATIONSHIPS
    | frozenset(
        {
            "type",
            "photo_url",
            "first_contact_date",
            "next_review_date",
            "previous_review_date",
            "anniversary_review_date",
            "last_interaction_at",
            "with_login",
            "has_joint_account",
            "can_be_deleted",
            "ownership_percentage",
        }
    ),
)

GOALS = Table(
    "goals",
    "One row per client goal (GET /api/v1/client/{client_uuid}/goal, fanned out per client).",
    (
        text("uuid", "Goal UUID (key)."),
        filled("client_uuid", "The client the goal belongs to (joins to clients.uuid)."),
        text("name", "Goal name."),
        text("description", "Description."),
        text("timeframe", "Free-text timeframe."),
        whole("priority", "Priority 1-5 (sent as a string).", type_=pa.int16()),
        whole("progress", "Progress percent 0-100 (sent as a string).", type_=pa.int16()),
        col(
            "target_amount_minor",
            pa.int64(),
            "target_amount",
            c.money_minor,
            "Target amount in minor units (pennies).",
        ),
        col(
            "target_currency",
            pa.string(),
            "target_amount",
            c.money_currency,
            "ISO currency of the target amount.",
        ),
        stamp("complete_goal_by", "Target completion (UTC)."),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC)."),
        text(
            "shared_owner_type",
            "`individual` (the goal belongs to one owner of a joint/trust/business client) or `shared`.",
        ),
        text(
            "shared_owner_uuid",
            "For an `individual` goal, the owning account's UUID; null unless the listing asks `include=shared_owner`.",
            path="shared_owner.uuid",
        ),
        filled("created_month", "Partition: the client's created month (goals follow their client)."),
        SEEN_AT,
        EXTRA,
    ),
    partition_column="created_month",
    children=frozenset({"shared_owner"}),  # stored as shared_owner_uuid
    nested_known={"shared_owner": PERSON_FIELDS},
)

GOAL_READS = Table(
    "goal_reads",
    "When each client's goals were last listed in full (by a sync or the rolling refresh), one row per "
    "client: how the refresh picks whose goals to read next (never read, or read longest ago, first), "
    'and the answer to "how old are this client\'s goals?" for a client that has none.',
    (
        filled("client_uuid", "The client (joins to clients.uuid)."),
        filled("seen_at", "When its goals listing was asked for (UTC).", TS),
    ),
    key=("client_uuid",),
)

CIRCLES = Table(
    "circles",
    "One row per circle (household or family) (GET /api/v1/circles).",
    (
        text("uuid", "Circle UUID (key)."),
        text("name", "Circle name."),
        text("photo_url", "Photo URL."),
        text("bg_colour", "Display colour."),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC)."),
        SEEN_AT,
        EXTRA,
    ),
    handled=frozenset({"firm"}),
    children=frozenset({"accounts", "groups"}),
)

CIRCLE_ACCOUNTS = Table(
    "circle_accounts",
    "Members of each circle: one row per (circle, account).",
    (
        filled("circle_uuid", "Circle (joins to circles.uuid)."),
        text("account_uuid", "Member account (joins to clients.uuid for clients).", path="uuid"),
        text("name", "Member name."),
        text("type", "Account type (client, employee, external)."),
        text("role", "Account role."),
        text("email", "Email."),
        text("first_name", "First name."),
        text("last_name", "Last name."),
        text("photo_url", "Avatar URL."),
        stamp("created_at", "Account created (UTC)."),
        stamp("updated_at", "Account updated (UTC)."),
        EXTRA,
    ),
    key=("circle_uuid", "account_uuid"),
    handled=frozenset({"external_references"}),
)

CIRCLE_GROUPS = Table(
    "circle_groups",
    "Groups attached to each circle: one row per (circle, group).",
    (
        filled("circle_uuid", "Circle (joins to circles.uuid)."),
        text("group_uuid", "Group UUID.", path="uuid"),
        text("name", "Group name."),
        text("slug", "Group slug."),
        whole("participants_count", "Participants in the group (sent as a string)."),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC)."),
        EXTRA,
    ),
    key=("circle_uuid", "group_uuid"),
    handled=frozenset({"participants"}),  # a schema blob in the docs; real lists kept in extra_json
)

TASKS = Table(
    "tasks",
    "One row per task, subtasks included (GET /api/v1/task with filter[show_child_tasks]=true).",
    (
        text("uuid", "Task UUID (key)."),
        text("parent_uuid", "Parent task for a subtask; null for a top-level task.", path="parent.uuid"),
        text("name", "Task name."),
        text("description", "Description."),
        text("priority", "Priority as Plannr sends it, one of the filter values highest, high, medium, low."),
        whole("position", "Position on its board."),
        text("status_uuid", "Status UUID.", path="status.uuid"),
        text("status_name", "Status name.", path="status.name"),
        flag("status_is_archived", "Status is an archived type.", path="status.is_archived"),
        flag("status_is_not_started", "Status is a not-started type.", path="status.is_not_started"),
        flag("status_is_completed", "Status is a completed type.", path="status.is_type_completed"),
        stamp("due_at", "Due (UTC; Plannr sends UK local time without a zone)."),
        stamp("completed_at", "Completed (UTC; sent without a zone)."),
        flag("is_recurring", "Recurs."),
        text("recurring_frequency", "Recurrence, e.g. weekly."),
        stamp("recurring_last_run", "Last recurrence (UTC; sent without a zone)."),
        stamp("recurring_next_run", "Next recurrence (UTC; sent without a zone)."),
        text("taskable_type", "What the task hangs on: case or plan."),
        text("taskable_uuid", "That case or plan's UUID.", path="taskable.uuid"),
        text("taskable_name", "That case or plan's name.", path="taskable.name"),
        col(
            "taskable_value_minor",
            pa.int64(),
            "taskable.value",
            c.money_minor,
            "Case or plan value in minor units.",
        ),
        col(
            "taskable_value_currency",
            pa.string(),
            "taskable.value",
            c.money_currency,
            "Currency of that value.",
        ),
        text("author_uuid", "Account that created the task (joins to staff.uuid).", path="author.uuid"),
        text(
            "assigned_to_uuid",
            "Account the task is assigned to (joins to staff.uuid).",
            path="assigned_to.uuid",
        ),
        text(
            "completed_by_uuid",
            "Account that completed it (joins to staff.uuid); null while open.",
            path="completed_by.uuid",
        ),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC); the incremental refresh's watermark."),
        SEEN_AT,
        EXTRA,
    ),
    handled=frozenset({"workflow", "workflow_task", "task_status"}),
    children=frozenset({"custom_fields"}),
    nested_known={
        "status": frozenset({"colour", "position", "created_at", "updated_at"}),
        "taskable": frozenset({"assigned_to_uuids", "group_uuids", "participants_count", "slug", "status"}),
        "parent": frozenset({"name"}),
        "author": PERSON_FIELDS,
        "assigned_to": PERSON_FIELDS,
        "completed_by": PERSON_FIELDS,
    },
)

TASK_CUSTOM_FIELDS = Table(
    "task_custom_fields",
    "Custom field values on each task: one row per (task, custom field).",
    (
        filled("task_uuid", "Task (joins to tasks.uuid)."),
        text("custom_field_uuid", "Custom field value UUID.", path="uuid"),
        text("name", "Field name."),
        text("type", "Field type (text, boolean, number, ...)."),
        text("reference", "Field reference."),
        text("value", "Value as text, as Plannr sends it."),
        flag("is_required", "Required field."),
        text("help_text", "Help text shown with the field."),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC)."),
        EXTRA,
    ),
    key=("task_uuid", "custom_field_uuid"),
    handled=frozenset({"selection_options"}),
)

TASK_ASSIGNEES = Table(
    "task_assignees",
    "Who each task is assigned to: its assignee and the assignees of its case or plan.",
    (
        filled("task_uuid", "Task (joins to tasks.uuid)."),
        filled("account_uuid", "Assigned account."),
        filled(
            "source", "`assigned_to` (the task's own assignee) or `taskable` (assigned on its case/plan)."
        ),
    ),
    key=("task_uuid", "account_uuid", "source"),
)

IMPORTS = Table(
    "imports",
    "One row per CSV import (GET /api/v1/import).",
    (
        text("uuid", "Import UUID (key)."),
        text("type", "What is imported: clients, tasks, notes, plans, ..."),
        text("mode", "store (create), update or validate."),
        text("status", "Status as Plannr sends it (pending, processing, completed, failed, ...)."),
        whole("total_jobs", "Rows (jobs) in the import."),
        whole("jobs_remaining", "Jobs not yet processed."),
        whole("failed_jobs", "Jobs that failed."),
        whole("progress", "Progress percent 0-100."),
        text("initiated_by_uuid", "Account that started the import.", path="account.uuid"),
        text("error_report_uuid", "Error report file UUID.", path="error_report.uuid"),
        text(
            "error_report_url", "Where to download the full error report.", path="error_report.download_url"
        ),
        whole(
            "error_report_size",
            "Error report size in bytes (sent as a string).",
            path="error_report.size",
            type_=pa.int64(),
        ),
        stamp("created_at", "Created (UTC)."),
        stamp("updated_at", "Updated (UTC)."),
        filled("created_day", "Day the import was created, `YYYY-MM-DD` in UK time."),
        SEEN_AT,
        EXTRA,
    ),
    handled=frozenset({"headers", "mapping"}),
    children=frozenset({"errors"}),
    nested_known={
        "account": PERSON_FIELDS,
        "error_report": frozenset(
            {
                "name",
                "filename",
                "extension",
                "path",
                "status",
                "progress",
                "navigator",
                "created_at",
                "updated_at",
                "uploaded_at",
            }
        ),
    },
)

IMPORT_ERRORS = Table(
    "import_errors",
    "Row errors of each import (the API shows at most 25 failed rows; the rest are in the error report).",
    (
        filled("import_uuid", "Import (joins to imports.uuid)."),
        filled("error_index", "Position of the failed row in the API's list.", pa.int32()),
        filled("field", "Field that failed validation."),
        filled("message", "The validation message."),
        filled("client_json", "The failed row's client data, as JSON."),
        filled("created_day", "The import's created day, `YYYY-MM-DD` in UK time."),
    ),
    key=("import_uuid", "error_index", "field", "message"),
)

IMPORT_PROGRESS_HISTORY = Table(
    "import_progress_history",
    "Each import's progress as the import sensor saw it, one row per change it observed (status, progress, "
    "jobs remaining or failed jobs moved): how fast imports run and where they stall.",
    (
        filled("import_uuid", "The import (joins to imports.uuid)."),
        filled("observed_at", "When the sensor saw this state (UTC).", TS),
        filled("status", "Status as Plannr sent it."),
        filled("progress", "Progress percent 0-100.", pa.int32()),
        filled("jobs_remaining", "Jobs not yet processed.", pa.int32()),
        filled("failed_jobs", "Jobs that had failed.", pa.int32()),
        filled("batch", "The sensor tick that recorded it."),
    ),
    key=("import_uuid", "observed_at"),
    partition_column="batch",
)

REJECTED_RECORDS = Table(
    "rejected_records",
    "Records the API sent that could not be stored (no uuid, no or malformed created_at, ...): kept here "
    "with the reason, so one bad record never sinks its table. One row per record still quarantined: a "
    "record rejected again replaces its row, and one that later stores cleanly leaves this table.",
    (
        filled("table_name", "The table the record was meant for."),
        filled("uuid", "The record's uuid, if it had one."),
        filled("reason", "Why it could not be stored."),
        filled("raw_json", "The record exactly as the API sent it, as JSON."),
        filled("rejected_at", "When it was last rejected (UTC).", TS),
        filled("batch", "The write that last rejected it."),
    ),
    key=("table_name", "uuid"),
)

ERASURE_LOG = Table(
    "erasure_log",
    "One row per erasure of a client's personal data (`plannr-pipeline erase`) and per lifting of one "
    "(`plannr-pipeline unerase`): which client, when, why and what was removed. Holds no personal data "
    "beyond the client's uuid; a client whose latest row here is `erase` is never stored again by a sync.",
    (
        filled("uuid", "The client's uuid (joins to nothing any more: its rows are gone)."),
        filled("action", "`erase` or `lift` (the erasure lifted: later syncs store the client again)."),
        filled("recorded_at", "When (UTC).", TS),
        filled("reason", "Why, as the operator gave it (keep names out of it)."),
        filled("rows_removed", "Rows removed per table, as JSON (`{}` for a lift)."),
        filled("rows_cleared", "Rows kept with their personal cells set NULL, per table, as JSON."),
        filled(
            "import_error_keys",
            "The `import_errors` rows removed, as `import_uuid:error_index` (JSON): withheld when a sync "
            "fetches them again. Identifiers only; no name, email or hash of one.",
        ),
    ),
    key=("uuid", "recorded_at"),
)

ALL_TABLES = (
    CLIENTS,
    STAFF,
    GOALS,
    GOAL_READS,
    CIRCLES,
    CIRCLE_ACCOUNTS,
    CIRCLE_GROUPS,
    TASKS,
    TASK_CUSTOM_FIELDS,
    TASK_ASSIGNEES,
    IMPORTS,
    IMPORT_ERRORS,
    IMPORT_PROGRESS_HISTORY,
    REJECTED_RECORDS,
    ERASURE_LOG,
)
TABLES = {table.name: table for table in ALL_TABLES}
