"""The analyst layer: views an analyst would otherwise write by hand, over the tables and history.

Each view is declared once, with its SQL, its columns' types and meanings, and where each
column comes from; the warehouse creates and comments it, the README's data dictionary lists
it, and the Dagster asset of the same name shows its schema and column lineage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewColumn:
    name: str
    duckdb_type: str
    description: str
    sources: tuple[str, ...] = ()  # "table.column" it is derived from


@dataclass(frozen=True)
class AnalystView:
    name: str
    description: str
    reads: tuple[str, ...]  # the relations it reads: its upstream assets
    columns: tuple[ViewColumn, ...]
    sql: str
    example: str  # a query an analyst would start from (the README prints it; a test runs it)

    @property
    def create_sql(self) -> str:
        return f'CREATE OR REPLACE VIEW "{self.name}" AS {self.sql}'


def c(name: str, duckdb_type: str, description: str, *sources: str) -> ViewColumn:
    return ViewColumn(name, duckdb_type, description, sources)


# The rule, stated once: a goal is on track when its progress is at least the share of the time
# from its creation to its target date that has passed. Finished goals (100%) are on track; goals
# past their date and unfinished are not; goals without a target date have no verdict (NULL).
ON_TRACK_RULE = (
    "progress >= 100 * (time since the goal was created) / (time from creation to complete_goal_by); "
    "100% is on track, past the date and unfinished is not, no target date is NULL"
)

GOAL_PROGRESS = AnalystView(
    "goal_progress",
    "Each current goal with its client, the client's adviser, the target in pounds, progress, time to target "
    f"and whether it is on track ({ON_TRACK_RULE}).",
    ("goals", "clients", "staff"),
    (
        c("goal_uuid", "VARCHAR", "The goal.", "goals.uuid"),
        c("goal_name", "VARCHAR", "Goal name.", "goals.name"),
        c("client_uuid", "VARCHAR", "The client it belongs to.", "goals.client_uuid"),
        c("client_name", "VARCHAR", "The client's name.", "clients.name"),
        c("adviser_uuid", "VARCHAR", "The client's assigned adviser.", "clients.assigned_adviser_uuid"),
        c("adviser_name", "VARCHAR", "The adviser's name.", "staff.name"),
        c("target_gbp", "DOUBLE", "Target amount in pounds.", "goals.target_amount_minor"),
        c("target_currency", "VARCHAR", "Currency of the target.", "goals.target_currency"),
        c("progress", "SMALLINT", "Progress percent 0-100.", "goals.progress"),
        c("complete_goal_by", "TIMESTAMPTZ", "Target completion date.", "goals.complete_goal_by"),
        c(
            "days_to_target",
            "BIGINT",
            "Days from today to the target date (negative once past).",
            "goals.complete_goal_by",
        ),
        c(
            "on_track",
            "BOOLEAN",
            f"On track: {ON_TRACK_RULE}.",
            "goals.progress",
            "goals.created_at",
            "goals.complete_goal_by",
        ),
    ),
    """
    SELECT g.uuid AS goal_uuid, g.name AS goal_name, g.client_uuid, cl.name AS client_name,
           cl.assigned_adviser_uuid AS adviser_uuid, s.name AS adviser_name,
           g.target_amount_minor / 100.0 AS target_gbp, g.target_currency, g.progress, g.complete_goal_by,
           date_diff('day', current_date, CAST(g.complete_goal_by AS DATE)) AS days_to_target,
           CASE
               WHEN g.complete_goal_by IS NULL OR g.created_at IS NULL OR g.progress IS NULL THEN NULL
               WHEN g.progress >= 100 THEN true
               WHEN now() >= g.complete_goal_by THEN false
               ELSE g.progress >= 100.0 * epoch(now() - g.created_at) / nullif(epoch(g.complete_goal_by - g.created_at), 0)
           END AS on_track
    FROM goals g
    JOIN clients cl ON cl.uuid = g.client_uuid
    LEFT JOIN staff s ON s.uuid = cl.assigned_adviser_uuid""",
    "select adviser_name, count(*) as goals, count(*) filter (where not on_track) as off_track\nfrom goal_progress group by adviser_name order by off_track desc;",
)

CLIENT_OVERVIEW = AnalystView(
    "client_overview",
    "One row per client: adviser, goals and their total target, the adviser's open and overdue tasks, and the "
    "last change on record. Plannr's task listing does not say which client a task is for, so task counts are "
    "those of the client's adviser.",
    ("clients", "staff", "goals", "tasks", "clients_history"),
    (
        c("client_uuid", "VARCHAR", "The client.", "clients.uuid"),
        c("client_name", "VARCHAR", "The client's name.", "clients.name"),
        c("role", "VARCHAR", "Client type: individual, joint, trust or business.", "clients.role"),
        c("adviser_uuid", "VARCHAR", "Assigned adviser.", "clients.assigned_adviser_uuid"),
        c("adviser_name", "VARCHAR", "The adviser's name.", "staff.name"),
        c("goals", "BIGINT", "Number of current goals.", "goals.uuid"),
        c(
            "goals_target_gbp",
            "DOUBLE",
            "Total target of those goals, in pounds.",
            "goals.target_amount_minor",
        ),
        c(
            "adviser_open_tasks",
            "BIGINT",
            "Open tasks assigned to the client's adviser.",
            "tasks.assigned_to_uuid",
            "tasks.status_is_completed",
        ),
        c("adviser_overdue_tasks", "BIGINT", "Of those, past their due date.", "tasks.due_at"),
        c(
            "last_changed_at",
            "TIMESTAMPTZ",
            "When the pipeline last recorded a change to this client.",
            "clients_history.valid_from",
        ),
    ),
    """
    WITH goal_totals AS (
        SELECT client_uuid, count(*) AS goals, sum(target_amount_minor) / 100.0 AS goals_target_gbp
        FROM goals GROUP BY client_uuid
    ), open_tasks AS (
        SELECT assigned_to_uuid, count(*) AS open_tasks, count(*) FILTER (WHERE due_at < now()) AS overdue_tasks
        FROM tasks WHERE NOT coalesce(status_is_completed, false) AND NOT coalesce(status_is_archived, false)
        GROUP BY assigned_to_uuid
    ), changes AS (
        SELECT uuid, max(valid_from) AS last_changed_at FROM clients_history GROUP BY uuid
    )
    SELECT cl.uuid AS client_uuid, cl.name AS client_name, cl.role, cl.assigned_adviser_uuid AS adviser_uuid,
           s.name AS adviser_name, coalesce(g.goals, 0) AS goals, coalesce(g.goals_target_gbp, 0) AS goals_target_gbp,
           coalesce(t.open_tasks, 0) AS adviser_open_tasks, coalesce(t.overdue_tasks, 0) AS adviser_overdue_tasks,
           h.last_changed_at
    FROM clients cl
    LEFT JOIN staff s ON s.uuid = cl.assigned_adviser_uuid
    LEFT JOIN goal_totals g ON g.client_uuid = cl.uuid
    LEFT JOIN open_tasks t ON t.assigned_to_uuid = cl.assigned_adviser_uuid
    LEFT JOIN changes h ON h.uuid = cl.uuid""",
    "select client_name, adviser_name, goals, goals_target_gbp, last_changed_at\nfrom client_overview order by goals_target_gbp desc limit 10;",
)

OVERDUE_TASKS = AnalystView(
    "overdue_tasks",
    "Open tasks (not completed, not archived) past their due date, with assignee, what they hang on, and days "
    "overdue. The task listing names the case or plan, not the client.",
    ("tasks", "staff"),
    (
        c("task_uuid", "VARCHAR", "The task.", "tasks.uuid"),
        c("task_name", "VARCHAR", "Task name.", "tasks.name"),
        c("priority", "VARCHAR", "Priority as Plannr sends it.", "tasks.priority"),
        c("status_name", "VARCHAR", "Status name.", "tasks.status_name"),
        c("due_at", "TIMESTAMPTZ", "When it was due.", "tasks.due_at"),
        c("days_overdue", "BIGINT", "Whole days since it was due.", "tasks.due_at"),
        c("assignee_uuid", "VARCHAR", "Who it is assigned to.", "tasks.assigned_to_uuid"),
        c("assignee_name", "VARCHAR", "The assignee's name.", "staff.name"),
        c("taskable_type", "VARCHAR", "What it hangs on: case or plan.", "tasks.taskable_type"),
        c("taskable_name", "VARCHAR", "That case or plan's name.", "tasks.taskable_name"),
    ),
    """
    SELECT t.uuid AS task_uuid, t.name AS task_name, t.priority, t.status_name, t.due_at,
           date_diff('day', t.due_at, now()) AS days_overdue,
           t.assigned_to_uuid AS assignee_uuid, s.name AS assignee_name, t.taskable_type, t.taskable_name
    FROM tasks t LEFT JOIN staff s ON s.uuid = t.assigned_to_uuid
    WHERE NOT coalesce(t.status_is_completed, false) AND NOT coalesce(t.status_is_archived, false) AND t.due_at < now()""",
    "select assignee_name, count(*) as overdue, max(days_overdue) as oldest_days\nfrom overdue_tasks group by assignee_name order by overdue desc;",
)

IMPORT_HEALTH = AnalystView(
    "import_health",
    "Imports by day and type: how many, their statuses, jobs and the share that failed, and the latest error.",
    ("imports", "import_errors"),
    (
        c("created_day", "VARCHAR", "Day the imports were created (UK).", "imports.created_day"),
        c("type", "VARCHAR", "What was imported.", "imports.type"),
        c("imports", "BIGINT", "Imports that day of that type.", "imports.uuid"),
        c("completed", "BIGINT", "Of those, completed.", "imports.status"),
        c("failed", "BIGINT", "Of those, failed.", "imports.status"),
        c("in_progress", "BIGINT", "Of those, neither completed nor failed yet.", "imports.status"),
        c("jobs", "BIGINT", "Rows (jobs) in them.", "imports.total_jobs"),
        c("failed_jobs", "BIGINT", "Jobs that failed.", "imports.failed_jobs"),
        c("job_failure_rate", "DOUBLE", "failed_jobs / jobs.", "imports.failed_jobs", "imports.total_jobs"),
        c(
            "latest_error",
            "VARCHAR",
            "`field: message` of the newest import's first row error.",
            "import_errors.field",
            "import_errors.message",
        ),
    ),
    """
    WITH first_errors AS (
        SELECT import_uuid, arg_min(field || ': ' || message, error_index) AS first_error
        FROM import_errors GROUP BY import_uuid
    )
    SELECT i.created_day, i.type, count(*) AS imports,
           count(*) FILTER (WHERE i.status = 'completed') AS completed,
           count(*) FILTER (WHERE i.status = 'failed') AS failed,
           count(*) FILTER (WHERE i.status NOT IN ('completed', 'failed')) AS in_progress,
           sum(i.total_jobs) AS jobs, sum(i.failed_jobs) AS failed_jobs,
           round(sum(i.failed_jobs) / nullif(sum(i.total_jobs), 0), 4) AS job_failure_rate,
           arg_max(e.first_error, i.created_at) FILTER (WHERE e.first_error IS NOT NULL) AS latest_error
    FROM imports i LEFT JOIN first_errors e ON e.import_uuid = i.uuid
    GROUP BY i.created_day, i.type""",
    "select created_day, type, imports, failed, job_failure_rate, latest_error\nfrom import_health order by created_day desc limit 10;",
)

GOAL_PROGRESS_HISTORY = AnalystView(
    "goal_progress_history",
    "Each goal's progress over time, one row per recorded version (from goals_history), with the change since "
    "the version before.",
    ("goals_history",),
    (
        c("goal_uuid", "VARCHAR", "The goal.", "goals_history.uuid"),
        c("client_uuid", "VARCHAR", "Its client.", "goals_history.client_uuid"),
        c("goal_name", "VARCHAR", "Goal name at the time.", "goals_history.name"),
        c("progress", "SMALLINT", "Progress percent in this version.", "goals_history.progress"),
        c(
            "progress_change",
            "INTEGER",
            "Change from the previous version (NULL for the first).",
            "goals_history.progress",
        ),
        c("target_gbp", "DOUBLE", "Target in pounds in this version.", "goals_history.target_amount_minor"),
        c("valid_from", "TIMESTAMPTZ", "From when this version held.", "goals_history.valid_from"),
        c("valid_to", "TIMESTAMPTZ", "Until when (NULL: still current).", "goals_history.valid_to"),
        c(
            "deleted_at",
            "TIMESTAMPTZ",
            "When the goal was found deleted, on its last version.",
            "goals_history.deleted_at",
        ),
    ),
    """
    SELECT uuid AS goal_uuid, client_uuid, name AS goal_name, progress,
           CAST(progress - lag(progress) OVER (PARTITION BY uuid ORDER BY valid_from) AS INTEGER) AS progress_change,
           target_amount_minor / 100.0 AS target_gbp, valid_from, valid_to, deleted_at
    FROM goals_history""",
    "select goal_name, valid_from, progress, progress_change\nfrom goal_progress_history where progress_change is not null order by valid_from desc;",
)

ANALYST_VIEWS = (GOAL_PROGRESS, CLIENT_OVERVIEW, OVERDUE_TASKS, IMPORT_HEALTH, GOAL_PROGRESS_HISTORY)
