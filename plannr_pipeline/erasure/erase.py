"""Erase one client's personal data from a data folder, and lift an erasure: the code the
`erase`/`unerase` commands and the `erase_client` Dagster job share.

Everything happens under the data folder's commit lock, so an erasure waits for a sync's commit
in progress and the next commit finds the client in `erasure_log` (and withholds it, see
`withhold.py`). The Dagster instance is not touched: the pipeline puts no personal values there
(counts, uuids of imports and runs, check results; tests/test_erasure.py greps it to prove it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pyarrow.compute as pc

from plannr_pipeline.erasure.rules import IMPORT_ERROR_KEY, Person, rewrites_for
from plannr_pipeline.storage.erasure import append_log, erased_uuids, read_log, rewrite_relations
from plannr_pipeline.storage.history import history_table
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import CIRCLE_ACCOUNTS, CLIENTS, GOALS, IMPORT_ERRORS

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ErasureError(ValueError):
    """Bad input to an erasure: the message is one line naming the problem and the fix."""


@dataclass
class Erased:
    uuid: str
    found: bool
    removed: dict[str, int] = field(default_factory=dict)
    cleared: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if not self.found:
            head = f"client {self.uuid} is in no stored table; recorded as erased so no later sync stores it"
        else:
            head = f"erased client {self.uuid}: its personal data is gone from every file of the data folder"
        rows = [f"  {name}: {n} row(s) removed" for name, n in sorted(self.removed.items()) if n]
        rows += [
            f"  {name}: {n} row(s) kept with personal cells cleared"
            for name, n in sorted(self.cleared.items())
            if n
        ]
        return [head, *rows, "see: select * from erasure_log"]


def check_input(client_uuid: str, reason: str) -> tuple[str, str]:
    if not UUID.match(client_uuid or ""):
        raise ErasureError(f"--client {client_uuid!r} is not a uuid: give the client's uuid (clients.uuid)")
    if not (reason or "").strip():
        raise ErasureError("--reason is empty: say why (e.g. 'article 17 request of 2026-12-01'), no names")
    return client_uuid.lower(), reason.strip()


def _person(store: Store, client_uuid: str) -> Person:
    """Everything that identifies the client, read from its own rows before they go."""
    person = Person(uuids={client_uuid})
    for table in (CLIENTS, history_table(CLIENTS)):
        rows = store.read(table)
        for row in rows.filter(pc.equal(rows.column("uuid"), client_uuid)).to_pylist():
            person.add_account(row)
    members = store.read(CIRCLE_ACCOUNTS)
    for row in members.filter(pc.equal(members.column("account_uuid"), client_uuid)).to_pylist():
        person.add_account(row)
        person.circle_uuids.add(row["circle_uuid"])
    for table in (GOALS, history_table(GOALS)):
        goals = store.read(table, columns=["uuid", "client_uuid"])
        person.goal_uuids |= set(
            goals.filter(pc.equal(goals.column("client_uuid"), client_uuid)).column("uuid").to_pylist()
        )
    return person


def erase_client(store: Store, client_uuid: str, reason: str) -> Erased:
    client_uuid, reason = check_input(client_uuid, reason)
    with store.lock():
        store.recover_locked()  # a killed commit's staged files are data too: finish it first
        person = _person(store, client_uuid)
        error_keys = _import_error_keys(store, person)
        done = rewrite_relations(store, rewrites_for(person))
        result = Erased(
            client_uuid,
            found=bool(
                person.values or person.goal_uuids or any(d.removed or d.cleared for d in done.values())
            ),
            removed={name: d.removed for name, d in done.items()},
            cleared={name: d.cleared for name, d in done.items()},
        )
        append_log(
            store,
            {
                "uuid": client_uuid,
                "action": "erase",
                "reason": reason,
                "rows_removed": {k: v for k, v in result.removed.items() if v},
                "rows_cleared": {k: v for k, v in result.cleared.items() if v},
                "import_error_keys": error_keys,
            },
        )
    return result


def lift_erasure(store: Store, client_uuid: str, reason: str) -> str:
    """Let later syncs store the client again; nothing erased comes back but what the API sends."""
    client_uuid, reason = check_input(client_uuid, reason)
    with store.lock():
        if client_uuid not in erased_uuids(store):
            raise ErasureError(
                f"client {client_uuid} is not erased here: nothing to lift (select * from erasure_log)"
            )
        append_log(store, {"uuid": client_uuid, "action": "lift", "reason": reason})
    return (
        f"lifted the erasure of client {client_uuid}: from the next sync on it is stored again if the API "
        "still sends it (its current data and goals, as new history); what was erased is not restored"
    )


def _import_error_keys(store: Store, person: Person) -> set[str]:
    """The keys of the failed CSV rows that name the client, found before they are removed."""
    if not store.has(IMPORT_ERRORS):
        return set()
    rule = rewrites_for(person, [IMPORT_ERRORS])[IMPORT_ERRORS]
    with store.connect() as db:
        rows = db.execute(
            f"SELECT {IMPORT_ERROR_KEY} FROM {store.source_sql(IMPORT_ERRORS)} "
            f"WHERE coalesce(({rule.delete_where}), false)",
            dict(rule.params) or None,
        ).fetchall()
    return {key for (key,) in rows}


def known_import_error_keys(store: Store, uuids: set[str]) -> set[str]:
    """The failed CSV rows removed by the erasures of clients still erased."""
    log = read_log(store)
    found: set[str] = set()
    for uuid, action, keys in zip(
        log.column("uuid").to_pylist(),
        log.column("action").to_pylist(),
        log.column("import_error_keys").to_pylist(),
        strict=True,
    ):
        if uuid in uuids and action == "erase" and keys:
            found |= set(json.loads(keys))
    return found
