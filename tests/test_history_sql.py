"""The history step's SQL, on its own: what its memory-saving forms must keep equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from plannr_pipeline.storage import history
from plannr_pipeline.storage.normalise import arrow
from plannr_pipeline.storage.tables import TASK_ASSIGNEES, TASK_CUSTOM_FIELDS, TASKS


def test_the_children_hash_is_the_value_logs_already_hold():
    """Logs written before hold md5 of the ordered string_agg: the list form must give the same
    value for every record, or every task with child rows would look changed once."""
    rows = [
        ("task_custom_fields", "t1", "b"),
        ("task_assignees", "t1", "z"),
        ("task_custom_fields", "t1", "a"),
        ("task_assignees", "t1", "a"),
        ("task_assignees", "t2", "c"),
        ("task_assignees", "t2", "c"),  # the same child row twice
        ("task_custom_fields", "t3", "0f"),
    ]
    with duckdb.connect() as db:
        db.execute("CREATE TABLE c (child VARCHAR, parent VARCHAR, h VARCHAR)")
        db.executemany("INSERT INTO c VALUES (?, ?, ?)", rows)
        db.execute("UPDATE c SET h = md5(h)")  # hex digits, as the real hashes are
        logged = "md5(string_agg(child || ':' || h, ',' ORDER BY child, h))"
        got = db.execute(
            f"SELECT parent, {logged}, {history.CHILDREN_HASH} FROM c GROUP BY parent ORDER BY parent"
        ).fetchall()
    assert len(got) == 3
    assert all(before == now for _, before, now in got)


def _staged(tmp_path, count: int):
    """`count` tasks, one assignee each and a custom field on every other one, as staged files."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    tasks = [
        {"uuid": f"task-{i:04d}", "name": f"Task {i}", "created_at": created + timedelta(minutes=i)}
        for i in range(count)
    ]
    assignees = [{"task_uuid": t["uuid"], "account_uuid": f"staff-{i % 7}"} for i, t in enumerate(tasks)]
    fields = [
        {"task_uuid": t["uuid"], "uuid": f"cf-{i}", "name": "Fee agreed", "value": str(i)}
        for i, t in enumerate(tasks)
        if i % 2
    ]
    files = {}
    for table, rows in ((TASKS, tasks), (TASK_ASSIGNEES, assignees), (TASK_CUSTOM_FIELDS, fields)):
        files[table.name] = tmp_path / f"{table.name}.parquet"
        pq.write_table(arrow(table, rows), files[table.name])
    return files


def _events(tmp_path, files, log: str | None, deleted: set[str], name: str) -> pa.Table:
    out = tmp_path / f"{name}.parquet"
    now = datetime(2026, 2, 1, tzinfo=UTC)
    history.events_for(
        TASKS,
        [files["tasks"]],
        log,
        deleted,
        now,
        now,
        name,
        out,
        children=[
            (TASK_ASSIGNEES, [files["task_assignees"]]),
            (TASK_CUSTOM_FIELDS, [files["task_custom_fields"]]),
        ],
    )
    return (
        pq.read_table(out).drop_columns(["batch"]).sort_by([("uuid", "ascending"), ("change", "ascending")])
    )


def test_a_write_in_several_passes_records_the_same_events_as_in_one(tmp_path, monkeypatch):
    first = _staged(tmp_path, 60)
    one_pass = _events(tmp_path, first, None, set(), "one")
    monkeypatch.setattr(history, "RECORDS_PER_PASS", 7)  # 9 passes
    several = _events(tmp_path, first, None, set(), "several")
    assert one_pass.num_rows == 60
    assert several.equals(one_pass)

    # Against a log: a changed child row is a new version, deletions keep the last version's values.
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    pq.write_table(pq.read_table(tmp_path / "one.parquet"), log_dir / "data.parquet")
    log = f"read_parquet('{log_dir}/*.parquet', union_by_name = true, hive_partitioning = false)"
    later = _staged(tmp_path, 50)  # the next write: ten fewer tasks
    assignees = pq.read_table(later["task_assignees"]).to_pylist()
    assignees[3]["account_uuid"] = "someone-else"
    pq.write_table(arrow(TASK_ASSIGNEES, assignees), later["task_assignees"])
    gone = {f"task-{i:04d}" for i in range(50, 60)}
    monkeypatch.setattr(history, "RECORDS_PER_PASS", 1_000)
    one_pass = _events(tmp_path, later, log, gone, "one-later")
    monkeypatch.setattr(history, "RECORDS_PER_PASS", 7)
    several = _events(tmp_path, later, log, gone, "several-later")
    assert several.equals(one_pass)
    changes = dict(
        zip(one_pass.column("uuid").to_pylist(), one_pass.column("change").to_pylist(), strict=True)
    )
    assert changes == {"task-0003": "upsert", **dict.fromkeys(sorted(gone), "delete")}
