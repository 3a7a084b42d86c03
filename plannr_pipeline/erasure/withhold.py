"""What keeps an erased client out: every commit, under the store's lock, rewrites its staged
files by the same rules as the erasure before it decides anything.

A sync may have fetched the client before the erasure and commit after it: the lock orders the
two, and this check runs after the erasure's. The client's rows never reach the store, history
or `rejected_records`; with nothing stored, nothing is "deleted" either.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plannr_pipeline.erasure.erase import known_import_error_keys
from plannr_pipeline.erasure.rules import Person, rewrites_for
from plannr_pipeline.storage.erasure import erased_uuids, rewrite_staged
from plannr_pipeline.storage.parquet_store import StagedWrite
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import CIRCLE_ACCOUNTS, CLIENTS, GOALS


def _staged_rows(write: StagedWrite, tables, name: str, column: str, uuids: set[str]) -> list[dict]:
    table = next((t for t in tables if t.name == name), None)
    if table is None:
        return []
    value_set = pa.array(sorted(uuids), pa.string())
    rows = []
    for temp in write.staged_files_of(table):
        staged = pq.read_table(temp, schema=table.schema)
        rows += staged.filter(
            pc.fill_null(pc.is_in(staged.column(column), value_set=value_set), False)
        ).to_pylist()
    return rows


def withhold_erased(store: Store, write: StagedWrite, request) -> int:
    """Take erased clients out of a write's staged rows and rejections; return how many erased
    clients it received from the API (the firm should erase them in Plannr too)."""
    erased = erased_uuids(store)
    if not erased:
        return 0
    person = Person(uuids=erased, import_error_keys=known_import_error_keys(store, erased))
    clients = _staged_rows(write, request.tables, CLIENTS.name, "uuid", erased)
    for row in clients:
        person.add_account(row)
    for row in _staged_rows(write, request.tables, CIRCLE_ACCOUNTS.name, "account_uuid", erased):
        person.add_account(row)
        person.circle_uuids.add(row["circle_uuid"])
    person.goal_uuids |= {
        row["uuid"] for row in _staged_rows(write, request.tables, GOALS.name, "client_uuid", erased)
    }
    for table, rewrite in rewrites_for(person, request.tables).items():
        rewrite_staged(write, table, rewrite)
    # Sent, even if quarantined (a record that could not be stored is still the client).
    sent = {row["uuid"] for row in clients} | {
        r.get("uuid")
        for r in request.rejected
        if r.get("table_name") == CLIENTS.name and r.get("uuid") in erased
    }
    named = erased | person.goal_uuids
    request.rejected[:] = [
        r
        for r in request.rejected
        if r.get("uuid") not in named
        and not any(u in (r.get("raw_json") or "") for u in erased)
        and not any(v in (r.get("raw_json") or "").lower() for v in person.values)
    ]
    return len(sent)
