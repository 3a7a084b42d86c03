"""Retention: history is kept for a period, not forever, and deleted records' personal fields
for a period of their own.

- `PLANNR_HISTORY_RETENTION` (default `6y`): a version that stopped being current (a newer
  version or a deletion replaced it) longer ago than this is dropped; so is a deletion older than
  this, with every version before it. The version current at the cutoff is kept: "what did we
  hold on that day" stays answerable for the whole period. Six years: the limitation period for
  a claim over advice (Limitation Act 1980, s.5), the usual record-keeping period for advice files.
- `PLANNR_DELETED_PERSONAL_RETENTION` (default `6y`, the same): a record deleted in Plannr longer
  ago than this keeps its history versions (what changed, when, the amounts) with its personal
  fields cleared (names, emails, descriptions, `extra_json`). The firm deleted it at the source;
  a firm that wants the evidence of who it was for less time sets a shorter period (e.g. `1y`).

A period is a whole number and a unit: `d` days, `w` weeks, `m` months, `y` years, or `forever`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from plannr_pipeline.erasure.periods import (  # noqa: F401 (re-exported)
    DELETED_VARIABLE,
    HISTORY_VARIABLE,
    Period,
    RetentionSettingError,
    check_retention_settings,
    period_from,
)
from plannr_pipeline.storage.erasure import Rewrite, Rewritten, rewrite_relations
from plannr_pipeline.storage.history import HISTORY_OF, history_table
from plannr_pipeline.storage.store import Store
from plannr_pipeline.storage.tables import TABLES

# What a deleted record's history keeps past PLANNR_DELETED_PERSONAL_RETENTION: all but these.
PERSONAL_COLUMNS = {
    "clients": ("first_name", "last_name", "name", "email", "photo_url", "extra_json"),
    "goals": ("description", "extra_json"),
    "circles": ("name", "photo_url", "extra_json"),
    "tasks": ("description", "extra_json"),
}


def _boundaries(store: Store, log, cutoff: datetime) -> tuple[list[str], list[datetime]]:
    """Per record with something to drop: events before this instant go (see the module doc)."""
    with store.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        rows = db.execute(
            f"""SELECT uuid, CASE WHEN arg_max(change, valid_from) = 'delete'
                                  THEN max(valid_from) + INTERVAL 1 MICROSECOND ELSE max(valid_from) END
                FROM {store.source_sql(log)}
                WHERE valid_from < $cutoff GROUP BY uuid
                HAVING count(*) > 1 OR arg_max(change, valid_from) = 'delete'""",
            {"cutoff": cutoff},
        ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def _deleted_before(store: Store, log, cutoff: datetime) -> list[str]:
    """Records whose latest event is a deletion older than `cutoff`."""
    with store.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        rows = db.execute(
            f"""SELECT uuid FROM {store.source_sql(log)}
                GROUP BY uuid HAVING arg_max(change, valid_from) = 'delete' AND max(valid_from) < $cutoff""",
            {"cutoff": cutoff},
        ).fetchall()
    return [r[0] for r in rows]


def apply_retention(
    store: Store, history: Period | None, deleted_personal: Period | None, now: datetime | None = None
) -> dict[str, Rewritten]:
    """Drop history past `history`, clear deleted records' personal fields past `deleted_personal`,
    under the commit lock, in one commit. Returns what changed per history relation."""
    now = now or datetime.now(UTC)
    with store.lock():
        store.recover_locked()
        rewrites = {}
        for name in HISTORY_OF:
            log = history_table(TABLES[name])
            if not store.has(log):
                continue
            uuids, before = _boundaries(store, log, history.cutoff(now)) if history else ([], [])
            deleted = _deleted_before(store, log, deleted_personal.cutoff(now)) if deleted_personal else []
            if not uuids and not deleted:
                continue
            personal = "list_contains($deleted::VARCHAR[], uuid)"
            rewrites[log] = Rewrite(
                delete_where="valid_from < ($before::TIMESTAMPTZ[])[list_position($uuids::VARCHAR[], uuid)]",
                clear={c: f'{personal} AND "{c}" IS NOT NULL' for c in PERSONAL_COLUMNS[name]},
                params={"uuids": uuids, "before": before, "deleted": deleted},
            )
        return rewrite_relations(store, rewrites)
