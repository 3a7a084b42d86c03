"""A deterministic generated firm: same seed and reference date, same data.

Volumes are knobs (`FirmSize`); shapes follow the docs' examples (docs/plannr-api.md section 5): money objects
with pennies as strings, London-offset ISO timestamps, naive task dates, numbers as strings
where the docs show them, and unexpanded relationships as resource class names.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from faker import Faker

from plannr_pipeline.sandbox.formats import LONDON, iso_london, money, naive_london, placeholder
from plannr_pipeline.sandbox.import_plans import ImportPlan, plan_imports
from plannr_pipeline.sandbox.people import account_summary, assign

CLIENT_ROLES = ["individual", "individual", "individual", "joint", "trust", "business"]
STAFF_ROLES = ["owner", "admin", "member", "member"]
GOAL_NAMES = [
    ("Retirement pot", "Build a pension to retire at 60."),
    ("House deposit", "Save a deposit for a first home."),
    ("School fees", "Fund secondary school fees."),
    ("Emergency fund", "Six months of outgoings in cash."),
    ("Reduced mileage", "Reduce the amount of fuel spent yearly."),
    ("Inheritance planning", "Pass on the estate tax-efficiently."),
]
TIMEFRAMES = ["Within the year.", "In 1-3 years.", "In 3-5 years.", "Over 5 years."]
TASK_NAMES = [
    "Document the transaction",
    "Annual review meeting",
    "Send suitability report",
    "Chase provider for valuation",
    "Update risk profile",
    "Check ID documents",
]
TASK_STATUSES = [
    ("Not started", False, True, False),
    ("Incomplete", False, False, False),
    ("Completed", False, False, True),
    ("Archived", True, False, False),
]
CUSTOM_FIELDS = [("Source of wealth", "text"), ("Vulnerable client", "boolean"), ("Fee agreed", "number")]


@dataclass(frozen=True)
class FirmSize:
    clients: int = 250
    staff: int | None = None  # default: one member of staff per 40 clients, at least 3
    max_goals_per_client: int = 4
    circles_per_client: float = 0.3
    tasks_per_client: float = 1.5
    subtask_share: float = 0.25
    imports_history_days: int = 30
    imports_per_day: float = 0.5


@dataclass
class Firm:
    reference: datetime
    clients: list[dict[str, Any]]
    staff: list[dict[str, Any]]
    goals_by_client: dict[str, list[dict[str, Any]]]
    circles: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    imports: list[ImportPlan] = field(default_factory=list)
    # client uuid -> {assigned_adviser|assigned_administrator|assigned_paraplanner: staff uuid or None}
    assignments: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # goal uuid -> the account an `individual` goal belongs to (include=shared_owner)
    goal_owners: dict[str, str] = field(default_factory=dict)
    # Bumped by every change made to the firm (`changed()`): a large listing keeps its filtered,
    # sorted records while (identity, version) stays the same (listing.paginate's `version`).
    version: int = field(default=0, compare=False)
    # This firm among the others of the process: two firms' listings never share a cached order.
    identity: int = field(default_factory=lambda: next(_FIRM_IDENTITIES), compare=False)

    def changed(self) -> None:
        """Say the firm changed: every change to its records or lists must be followed by this
        (the timeline's steps are), or a listing of more than listing.CHECK_EVERY_RECORD_UP_TO
        records keeps showing them as they were."""
        self.version += 1

    def version_of(self, collection: str) -> tuple[int, int, str]:
        """What names `collection` (e.g. "tasks") of this firm as it is now."""
        return (self.identity, self.version, collection)

    @property
    def accounts(self) -> list[dict[str, Any]]:
        return self.clients + self.staff


_FIRM_IDENTITIES = itertools.count()


class RecordMaker:
    """Fake records from one seed: the firm at the start, and the records its timeline adds."""

    def __init__(self, seed: int, reference: datetime) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker("en_GB")
        self.fake.seed_instance(seed)
        self.reference = reference

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def moment_between(self, start: datetime, end: datetime) -> datetime:
        span = max(int((end - start).total_seconds()), 1)
        return (start + timedelta(seconds=self.rng.randrange(span))).replace(microsecond=0)

    def account(self, account_type: str, role: str, created: datetime) -> dict[str, Any]:
        first, last = self.fake.first_name(), self.fake.last_name()
        updated = self.moment_between(created, self.reference)
        review = self.moment_between(self.reference, self.reference + timedelta(days=365))
        inactive = self.rng.random() < 0.08
        return {
            "uuid": self.uuid(),
            "type": account_type,
            "role": role,
            "first_name": first,
            "last_name": last,
            "name": f"{first} {last}",
            "email": f"{first}.{last}{self.rng.randrange(100)}@example.co.uk".lower(),
            "photo_url": f"https://eu.ui-avatars.com/api/?name={first}+{last}",
            "created_at": iso_london(created),
            "updated_at": iso_london(updated),
            "first_contact_date": iso_london(created),
            "next_review_date": iso_london(review),
            "previous_review_date": iso_london(review - timedelta(days=365)),
            "anniversary_review_date": iso_london(review),
            "with_login": self.rng.random() < 0.6,
            "has_joint_account": role == "joint",
            "can_be_deleted": "false" if self.rng.random() < 0.9 else "true",
            "ownership_percentage": 100 if role != "joint" else 50,
            "inactive_at": (updated.astimezone(LONDON).date().isoformat() if inactive else None),
            "last_interaction_at": naive_london(updated),
            "firm": placeholder("Firm"),
            "tags": placeholder("Tag"),
            "groups": placeholder("Group"),
            "owners": placeholder("Account"),
            "assigned_adviser": placeholder("Account"),
            "assigned_administrator": placeholder("Account"),
            "assigned_paraplanner": placeholder("Account"),
            "primary_email": placeholder("ContactDetail"),
            "custom_fields": placeholder("CustomFieldValue"),
            "external_references": placeholder("ExternalReference"),
        }

    def goal(self, client: dict[str, Any], created: datetime) -> dict[str, Any]:
        name, description = self.rng.choice(GOAL_NAMES)
        updated = self.moment_between(created, self.reference)
        return {
            "uuid": self.uuid(),
            "name": name,
            "description": description,
            "timeframe": self.rng.choice(TIMEFRAMES),
            "priority": str(self.rng.randint(1, 5)),
            "progress": str(self.rng.randint(0, 100)),
            "target_amount": money(self.rng.randrange(1, 5_000) * 10_000),
            "complete_goal_by": iso_london(created + timedelta(days=self.rng.randint(180, 3650))),
            "created_at": iso_london(created),
            "updated_at": iso_london(updated),
            "shared_owner_type": "individual"
            if client["role"] != "individual" and self.rng.random() < 0.5
            else "shared",
        }

    def account_summary(self, account: dict[str, Any]) -> dict[str, Any]:
        return account_summary(account)

    def circle(self, members: list[dict[str, Any]], staff: list[dict[str, Any]]) -> dict[str, Any]:
        created = min(datetime.fromisoformat(m["created_at"]) for m in members)
        group_created = self.moment_between(created, self.reference)
        groups = [
            {
                "uuid": self.uuid(),
                "name": name,
                "slug": name.lower(),
                "created_at": iso_london(group_created),
                "updated_at": iso_london(group_created),
                "participants_count": str(self.rng.randint(1, len(staff))),
            }
            for name in self.rng.sample(
                ["Finance", "Advice", "Admin", "Paraplanning"], k=self.rng.randint(0, 2)
            )
        ]
        return {
            "uuid": self.uuid(),
            "name": f"{members[0]['last_name']} Family",
            "photo_url": None,
            "bg_colour": self.rng.choice(["#398898", "#d97706", "#7c3aed"]),
            "created_at": iso_london(created),
            "updated_at": iso_london(self.moment_between(created, self.reference)),
            "accounts": [self.account_summary(m) for m in members],
            "groups": groups,
        }

    def task(
        self, client: dict[str, Any], staff: list[dict[str, Any]], parent: dict[str, Any] | None
    ) -> dict[str, Any]:
        created = self.moment_between(datetime.fromisoformat(client["created_at"]), self.reference)
        updated = self.moment_between(created, self.reference)
        status_name, archived, not_started, completed = self.rng.choice(TASK_STATUSES)
        due = created + timedelta(days=self.rng.randint(1, 120), hours=self.rng.randint(0, 23))
        recurring = self.rng.random() < 0.15
        assignee = self.rng.choice(staff)
        return {
            "uuid": self.uuid(),
            "name": self.rng.choice(TASK_NAMES),
            "description": self.fake.sentence(nb_words=8),
            "priority": self.rng.choice(["low", "medium", "high"]),
            "position": self.rng.randint(1, 20),
            "status": {
                "uuid": self.uuid(),
                "name": status_name,
                "colour": "#398898",
                "position": TASK_STATUSES.index((status_name, archived, not_started, completed)) + 1,
                "created_at": iso_london(created),
                "updated_at": iso_london(created),
                "is_archived": archived,
                "is_not_started": not_started,
                "is_type_completed": completed,
            },
            "due_at": naive_london(due),
            "completed_at": naive_london(updated) if completed else None,
            "is_recurring": recurring,
            "recurring_frequency": "weekly" if recurring else None,
            "recurring_last_run": naive_london(updated) if recurring else None,
            "recurring_next_run": naive_london(updated + timedelta(days=7)) if recurring else None,
            "taskable_type": self.rng.choice(["case", "plan"]),
            "taskable": {
                "uuid": self.uuid(),
                "name": "finance",
                "slug": "finance",
                "value": money(self.rng.randrange(0, 100_000) * 100),
                "status": placeholder("CasesStatus"),
                "group_uuids": [],
                "assigned_to_uuids": [assignee["uuid"]],
                "participants_count": self.rng.randint(1, 4),
            },
            "author": self.account_summary(self.rng.choice(staff)),
            "assigned_to": self.account_summary(assignee),
            "completed_by": self.account_summary(assignee) if completed else None,
            "custom_fields": [
                {
                    "uuid": self.uuid(),
                    "name": cf_name,
                    "type": cf_type,
                    "reference": cf_name.lower().replace(" ", "_"),
                    "value": {
                        "text": self.fake.word(),
                        "boolean": self.rng.choice(["true", "false"]),
                        "number": str(self.rng.randint(0, 5000)),
                    }[cf_type],
                    "help_text": None,
                    "is_required": False,
                    "selection_options": [],
                    "created_at": iso_london(created),
                    "updated_at": iso_london(created),
                }
                for cf_name, cf_type in self.rng.sample(CUSTOM_FIELDS, k=self.rng.randint(0, 2))
            ],
            "parent": {"uuid": parent["uuid"], "name": parent["name"]} if parent else None,
            "workflow": placeholder("Workflow"),
            "created_at": iso_london(created),
            "updated_at": iso_london(updated),
        }


def default_reference() -> datetime:
    """Midnight UTC today: stable within a day, so every process of a run sees the same firm."""
    return datetime.combine(datetime.now(UTC).date(), time(0), tzinfo=UTC)


def reference_moment(reference: datetime | date | None) -> datetime:
    """The moment a firm is generated at: a date means its midnight UTC; none, today's."""
    if reference is None:
        return default_reference()
    if not isinstance(reference, datetime):
        return datetime.combine(reference, time(0), tzinfo=UTC)
    return reference


def generate_firm(
    seed: int = 42, size: FirmSize | None = None, reference: datetime | date | None = None
) -> Firm:
    size = size or FirmSize()
    reference = reference_moment(reference)
    make = RecordMaker(seed, reference)
    history_start = reference - timedelta(days=3 * 365)

    staff_count = size.staff if size.staff is not None else max(3, size.clients // 40)
    staff = [
        make.account(
            "employee", STAFF_ROLES[i % len(STAFF_ROLES)], make.moment_between(history_start, reference)
        )
        for i in range(staff_count)
    ]
    clients = [
        make.account(
            "client",
            make.rng.choice(CLIENT_ROLES),
            make.moment_between(history_start, reference - timedelta(days=1)),
        )
        for _ in range(size.clients)
    ]
    goals_by_client = {}
    for client in clients:
        count = make.rng.randint(0, size.max_goals_per_client)
        created = datetime.fromisoformat(client["created_at"])
        goals_by_client[client["uuid"]] = [
            make.goal(client, make.moment_between(created, reference)) for _ in range(count)
        ]

    circles = []
    for _ in range(int(size.clients * size.circles_per_client)):
        circles.append(
            make.circle(make.rng.sample(clients, k=min(len(clients), make.rng.randint(1, 4))), staff)
        )

    tasks: list[dict[str, Any]] = []
    for _ in range(int(size.clients * size.tasks_per_client)):
        client = make.rng.choice(clients)
        parent = make.rng.choice(tasks) if tasks and make.rng.random() < size.subtask_share else None
        if parent is not None and parent["parent"] is not None:
            parent = None  # one level of subtasks, as in Plannr
        tasks.append(make.task(client, staff, parent))

    imports = plan_imports(
        make.rng, make.uuid, reference, staff, clients, size.imports_history_days, size.imports_per_day
    )
    firm = Firm(reference, clients, staff, goals_by_client, circles, tasks, imports)

    # Drawn last, from a Random of their own, so that adding them left every record above as it was.
    people = random.Random(f"plannr-sandbox-people:{seed}")
    for client in clients:
        add_people(firm, people, client)
    return firm


def add_people(firm: Firm, rng: random.Random, client: dict[str, Any]) -> None:
    """Assign a client's staff, and own its `individual` goals (by the client itself)."""
    firm.assignments[client["uuid"]] = assign(rng, firm.staff)
    for goal in firm.goals_by_client.get(client["uuid"], []):
        if goal["shared_owner_type"] == "individual":
            firm.goal_owners[goal["uuid"]] = client["uuid"]
