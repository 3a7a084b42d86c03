"""Keeping a lake small: merged files, expired snapshots, deleted objects.

Every commit writes new Parquet objects (data inlining is off, so every row is in the bucket), and
DuckLake keeps every snapshot for time travel and never deletes a file by itself. A year of hourly
syncs would leave hundreds of thousands of small objects and every version of every row. So, on a
schedule (defs/lake_maintenance.py) or by hand, `maintain`:

1. merges each table's small adjacent files into larger ones;
2. expires snapshots older than the retention (PLANNR_LAKE_SNAPSHOT_RETENTION, default 7 days):
   the lake's own time travel reaches back that far. The pipeline's history tables do not depend
   on it: they hold every version they ever saw;
3. deletes the objects only expired snapshots or merged-away files still named;
4. deletes orphans: objects no snapshot names, left by a commit killed before it landed.

It runs under the lake's commit lock, so no commit of ours is in flight: an object not yet named
by the catalog is an orphan, never a file a running commit is about to name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from plannr_pipeline.storage.lake import ALIAS, LakeSettingsError, LakeStore

DEFAULT_RETENTION = timedelta(days=7)
_DURATION = re.compile(r"^\s*(\d+)\s*(h|d|w)\s*$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def retention_from_env(env: Mapping[str, str]) -> timedelta:
    """PLANNR_LAKE_SNAPSHOT_RETENTION: `36h`, `7d` or `2w`; unset: 7 days."""
    value = env.get("PLANNR_LAKE_SNAPSHOT_RETENTION", "")
    if not value:
        return DEFAULT_RETENTION
    if not (match := _DURATION.match(value)):
        raise LakeSettingsError(
            f"PLANNR_LAKE_SNAPSHOT_RETENTION={value!r} is not a duration: write hours, days or weeks, like 36h, 7d or 2w"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class Maintained:
    files_merged: int
    files_written: int
    snapshots_expired: int
    objects_deleted: int
    orphans_deleted: int

    def summary(self) -> str:
        return (
            f"merged {self.files_merged} file(s) into {self.files_written}, expired {self.snapshots_expired} "
            f"snapshot(s), deleted {self.objects_deleted} old and {self.orphans_deleted} orphaned object(s)"
        )


def maintain(store: LakeStore, retention: timedelta) -> Maintained:
    with store.lock(), store.connect() as db:
        merged = db.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')").fetchall()
        expired = db.execute(
            f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now() - to_seconds(?))",
            [retention.total_seconds()],
        ).fetchall()
        deleted = db.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)").fetchall()
        orphans = db.execute(
            f"CALL ducklake_delete_orphaned_files('{ALIAS}', cleanup_all => true)"
        ).fetchall()
    return Maintained(
        files_merged=sum(row[2] for row in merged),
        files_written=sum(row[3] for row in merged),
        snapshots_expired=len(expired),
        objects_deleted=len(deleted),
        orphans_deleted=len(orphans),
    )
