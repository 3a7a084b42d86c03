"""What is a client's personal data in each relation, as `Rewrite`s (removed rows, cleared cells).

Per table (the README's "Personal data" section says the same):

- `clients`, `clients_history`: the client's rows go; another client's `extra_json` (a joint
  account lists its owners) is cleared where it names the client.
- `goals`, `goals_history`: the client's goals go (they are about the client); another goal
  owned by it keeps its row, `shared_owner_uuid` cleared.
- `goal_reads`: the client's row goes (when its goals were read says the client existed).
- `circle_accounts`: the client's memberships go. `circles`, `circles_history`: the circle stays
  (it has other members); its `name` is cleared where it carries the client's name ("Smith
  Family"), and `extra_json` where it names the client.
- `tasks`, `tasks_history`: a task is the firm's work, so it stays; `author_uuid`,
  `assigned_to_uuid`, `completed_by_uuid` naming the client are cleared, and `name`,
  `description`, `taskable_name`, `extra_json` where they carry its name, email or phone.
  `task_assignees`: its rows go. `task_custom_fields`: `value`/`extra_json` cleared likewise.
- `imports`: `initiated_by_uuid` cleared if it is the client. `import_errors`: a failed CSV row
  naming the client (its email, or its first and last name) goes.
- `rejected_records`: a quarantined record of the client or its goals, or naming it, goes.
- `import_progress_history` (counts and statuses only) and `staff` (the firm's people) hold no
  client's personal data and are not rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from plannr_pipeline.storage.erasure import Rewrite
from plannr_pipeline.storage.history import HISTORY_OF, history_table
from plannr_pipeline.storage.tables import TABLES, Table

# extra_json keys whose values are personal (phones, addresses, dates of birth): a key holding
# one of these words. Collected from the client's own rows so the same values are cleared
# wherever else they appear.
PERSONAL_KEY_WORDS = ("email", "phone", "mobile", "address", "birth", "dob", "national_insurance", "postcode")
# Shorter values ("Ann", "UK") would clear cells of people who merely share them.
MIN_VALUE_LENGTH = 5


@dataclass
class Person:
    """What identifies the erased clients, found in their own rows before they go."""

    uuids: set[str]
    goal_uuids: set[str] = field(default_factory=set)
    circle_uuids: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)  # lower-cased names, emails, phones, ...
    last_names: set[str] = field(default_factory=set)
    import_error_keys: set[str] = field(default_factory=set)  # `import_uuid:error_index`, from erasure_log

    def add_account(self, row: dict) -> None:
        """A row of `clients`/`clients_history`/`circle_accounts` describing the client."""
        first, last = row.get("first_name"), row.get("last_name")
        for value in (row.get("name"), row.get("email"), row.get("photo_url")):
            self._add(value)
        if first and last:
            self._add(f"{first} {last}")
        if last and len(last) >= 3:
            self.last_names.add(last.lower())
        if row.get("extra_json"):
            try:
                extra = json.loads(row["extra_json"])
            except ValueError:
                return
            for key, value in extra.items() if isinstance(extra, dict) else ():
                if any(word in key.lower() for word in PERSONAL_KEY_WORDS):
                    for leaf in _leaves(value):
                        self._add(leaf)

    def _add(self, value: object) -> None:
        if isinstance(value, str) and len(value.strip()) >= MIN_VALUE_LENGTH:
            self.values.add(value.strip().lower())


def _leaves(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        for inner in value.values():
            yield from _leaves(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _leaves(inner)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


# SQL pieces over the parameters every rule shares.
IS_CLIENT = "list_contains($uuids::VARCHAR[], {})"
MENTIONS_UUID = "len(list_filter($uuids::VARCHAR[], lambda u: contains({0}, u))) > 0"
HAS_VALUE = "len(list_filter($values::VARCHAR[], lambda v: contains(lower({0}), v))) > 0"


def _names(column: str) -> str:
    return f"({HAS_VALUE.format(column)} OR {MENTIONS_UUID.format(column)})"


# A failed CSV row carries no uuid: at the erasure it is found by the client's values; later
# syncs, which no longer know them, by the key of each row then removed (`erasure_log`).
IMPORT_ERROR_KEY = "import_uuid || ':' || error_index"


def _import_error_names() -> str:
    full = (
        "lower(trim(json_extract_string(client_json, '$.first_name')) || ' ' || "
        "trim(json_extract_string(client_json, '$.last_name')))"
    )
    email = "lower(trim(json_extract_string(client_json, '$.email')))"
    return (
        f"({_names('client_json')} OR list_contains($values::VARCHAR[], {full}) "
        f"OR list_contains($values::VARCHAR[], {email}) "
        f"OR list_contains($error_keys::VARCHAR[], {IMPORT_ERROR_KEY}))"
    )


def _rules() -> dict[str, Rewrite]:
    own = IS_CLIENT.format("uuid")
    extra = {"extra_json": _names("extra_json")}
    task_rule = Rewrite(
        clear={
            **{c: IS_CLIENT.format(c) for c in ("author_uuid", "assigned_to_uuid", "completed_by_uuid")},
            **{c: HAS_VALUE.format(c) for c in ("name", "description", "taskable_name")},
            **extra,
        }
    )
    goal_rule = Rewrite(
        delete_where=IS_CLIENT.format("client_uuid"),
        clear={
            "shared_owner_uuid": IS_CLIENT.format("shared_owner_uuid"),
            **{c: HAS_VALUE.format(c) for c in ("name", "description")},
            **extra,
        },
    )
    circle_rule = Rewrite(
        clear={
            "name": f"({HAS_VALUE.format('name')} OR (list_contains($circles::VARCHAR[], uuid) AND "
            "len(list_filter($last_names::VARCHAR[], lambda n: contains(lower(name), n))) > 0))",
            **extra,
        }
    )
    return {
        "clients": Rewrite(delete_where=own, clear=extra),
        "goals": goal_rule,
        "goal_reads": Rewrite(delete_where=IS_CLIENT.format("client_uuid")),
        "circles": circle_rule,
        "circle_accounts": Rewrite(delete_where=IS_CLIENT.format("account_uuid"), clear=extra),
        "circle_groups": Rewrite(clear=extra),
        "tasks": task_rule,
        "task_custom_fields": Rewrite(clear={"value": HAS_VALUE.format("value"), **extra}),
        "task_assignees": Rewrite(delete_where=IS_CLIENT.format("account_uuid")),
        "imports": Rewrite(clear={"initiated_by_uuid": IS_CLIENT.format("initiated_by_uuid"), **extra}),
        "import_errors": Rewrite(delete_where=_import_error_names()),
        "rejected_records": Rewrite(
            delete_where=f"(list_contains($uuids::VARCHAR[], uuid) OR list_contains($goals::VARCHAR[], uuid) "
            f"OR {_names('raw_json')})"
        ),
    }


RULES = _rules()
NOT_PERSONAL = ("staff", "import_progress_history", "erasure_log")


def rewrites_for(person: Person, tables: Collection[Table] | None = None) -> dict[Table, Rewrite]:
    """Each relation's rewrite for `person` (history relations follow their table's rule)."""
    params = {
        "uuids": sorted(person.uuids),
        "goals": sorted(person.goal_uuids),
        "circles": sorted(person.circle_uuids),
        "values": sorted(person.values),
        "last_names": sorted(person.last_names),
        "error_keys": sorted(person.import_error_keys),
    }
    out: dict[Table, Rewrite] = {}
    for name, rule in RULES.items():
        for table in [TABLES[name], *([history_table(TABLES[name])] if name in HISTORY_OF else [])]:
            if tables is None or table in tables:
                used = {k: v for k, v in params.items() if f"${k}" in _sql_of(rule)}
                out[table] = Rewrite(rule.delete_where, rule.clear, used)
    return out


def _sql_of(rule: Rewrite) -> str:
    return " ".join([rule.delete_where or "", *rule.clear.values()])
