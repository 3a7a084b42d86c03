"""Casts and normalisation on hand-written records shaped like the docs' examples."""

import json
from datetime import UTC, date, datetime

import pytest

from plannr_pipeline.storage import convert, normalise
from plannr_pipeline.storage.tables import GOALS, STAFF


def test_timestamps_in_every_plannr_format_become_utc():
    assert convert.to_utc("2025-04-02T13:27:55+01:00") == datetime(2025, 4, 2, 12, 27, 55, tzinfo=UTC)
    assert convert.to_utc("2025-07-01 09:00:00") == datetime(2025, 7, 1, 8, 0, tzinfo=UTC)  # BST, naive
    assert convert.to_utc("2025-01-15 09:00:00") == datetime(2025, 1, 15, 9, 0, tzinfo=UTC)  # GMT, naive
    assert convert.to_utc("2025-05-14T21:27:16.710485Z") == datetime(
        2025, 5, 14, 21, 27, 16, 710485, tzinfo=UTC
    )
    assert convert.to_utc("2025-06-01") == datetime(2025, 5, 31, 23, 0, tzinfo=UTC)  # midnight in London
    assert convert.to_utc(None) is None and convert.to_utc("") is None


def test_strings_are_cast_and_nonsense_is_refused():
    assert convert.to_int("68") == 68 and convert.to_int(4) == 4
    assert convert.to_bool("false") is False and convert.to_bool(True) is True
    assert convert.money_minor({"amount": "4000", "currency": "GBP", "formatted": "£40.00"}) == 4000
    assert convert.to_date("2025-04-02") == date(2025, 4, 2)
    for bad in (
        lambda: convert.to_int("high"),
        lambda: convert.to_int("1.5"),
        lambda: convert.to_bool("maybe"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_placeholders_and_schema_blobs_are_recognised():
    assert convert.is_placeholder("App\\Http\\Resources\\FirmResource")
    assert convert.is_placeholder({"amount": {"example": "4000", "description": "pennies"}})
    assert not convert.is_placeholder({"amount": "4000", "currency": "GBP"})
    # A docs-example money blob is not data: no amount is invented from it.
    assert (
        convert.money_minor(
            {
                "amount": {"example": "4000", "description": "x"},
                "currency": {"example": "GBP", "description": "y"},
            }
        )
        is None
    )


def goal(**overrides):
    record = {
        "uuid": "g1",
        "name": "Pension",
        "priority": "4",
        "progress": "68",
        "target_amount": {"amount": "4000", "currency": "GBP", "formatted": "£40.00"},
        "created_at": "2025-04-02T13:27:55+01:00",
        "updated_at": "2025-04-02T13:27:55+01:00",
        "firm": "App\\Http\\Resources\\FirmResource",
    }
    return {**record, **overrides}


def test_unknown_fields_are_kept_and_reported_as_drift():
    drift = normalise.Drift()
    [row] = normalise.goals("c1", [goal(risk_band="cautious")], drift, "2025-04")
    assert json.loads(row["extra_json"]) == {"risk_band": "cautious"}
    assert drift.summary() == ["new field goals.risk_band in 1 rows"]
    assert row["client_uuid"] == "c1" and row["created_month"] == "2025-04" and row["priority"] == 4


def test_uncastable_values_are_kept_not_lost():
    drift = normalise.Drift()
    [row] = normalise.goals("c1", [goal(progress="lots")], drift, "2025-04")
    assert row["progress"] is None
    assert json.loads(row["extra_json"]) == {"_unparsed": {"progress": "lots"}}
    assert drift.unparsed_values == {"goals.progress": 1}
    assert normalise.arrow(GOALS, [row]).num_rows == 1


def test_a_number_too_large_for_its_column_is_kept_not_fatal():
    """progress is SMALLINT, the target BIGINT pennies: one wild number must not sink the batch."""
    drift = normalise.Drift()
    wild = goal(progress=70_000, target_amount={"amount": str(2**63), "currency": "GBP"})
    rows = normalise.goals("c1", [wild, goal(uuid="g2")], drift, "2025-04")
    assert rows[0]["progress"] is None and rows[0]["target_amount_minor"] is None
    assert json.loads(rows[0]["extra_json"])["_unparsed"] == {
        "progress": 70_000,
        "target_amount_minor": {"amount": str(2**63), "currency": "GBP"},
    }
    assert normalise.arrow(GOALS, rows).num_rows == 2
    assert rows[1]["progress"] == 68


def test_an_import_with_nonsense_counts_still_gives_a_snapshot():
    from plannr_pipeline.defs.sensors.import_polling import ImportSnapshot

    record = {
        "uuid": "i1",
        "created_at": "2025-04-02T13:27:55+01:00",
        "progress": "lots",
        "total_jobs": 2**40,
    }
    snapshot = ImportSnapshot.of({**record, "jobs_remaining": 3, "failed_jobs": None})
    assert (snapshot.progress, snapshot.total_jobs, snapshot.jobs_remaining, snapshot.failed_jobs) == (
        None,
        None,
        3,
        0,
    )


def test_import_errors_as_list_or_map():
    as_list = {"uuid": "i1", "errors": [{"client": {"row": 2}, "errors": {"email": ["bad", "worse"]}}]}
    as_map = {"uuid": "i1", "errors": {"0": {"client": {"row": 2}, "errors": {"email": ["bad", "worse"]}}}}
    assert normalise.import_error_rows(as_list, "2026-01-02") == normalise.import_error_rows(
        as_map, "2026-01-02"
    )
    assert [r["message"] for r in normalise.import_error_rows(as_list, "2026-01-02")] == ["bad", "worse"]


def person(uuid, role="member"):
    return {
        "uuid": uuid,
        "name": "Ann Adviser",
        "first_name": "Ann",
        "last_name": "Adviser",
        "email": "ann@example.co.uk",
        "role": role,
        "type": "employee",
        "created_at": "2024-01-02T10:00:00+00:00",
        "updated_at": "2024-01-02T10:00:00+00:00",
        "external_references": "App\\Http\\Resources\\ExternalReferenceResource",
    }


def test_expanded_assignments_become_uuid_columns_not_extra_json():
    record = {
        "uuid": "c1",
        "type": "client",
        "role": "joint",
        "name": "Bo Client",
        "assigned_adviser": person("s1"),
        "assigned_administrator": None,
        "assigned_paraplanner": "App\\Http\\Resources\\AccountResource",  # not included: a placeholder
        "tags": [{"uuid": "t1", "name": "VIP"}],  # an unmodelled relationship, expanded: still kept
    }
    drift = normalise.Drift()
    [row] = normalise.clients([record], drift, partition_of=lambda r: "2025-04")["clients"]
    assert (
        row["assigned_adviser_uuid"],
        row["assigned_administrator_uuid"],
        row["assigned_paraplanner_uuid"],
    ) == ("s1", None, None)
    assert json.loads(row["extra_json"]) == {"tags": [{"uuid": "t1", "name": "VIP"}]}
    assert not drift.unknown_fields


def test_staff_rows_keep_account_fields_in_extra_json_without_drift():
    drift = normalise.Drift()
    record = {
        **person("s1", role="owner"),
        "inactive_at": "2025-03-01",
        "photo_url": "https://example.invalid/a.png",
        "with_login": True,
        "firm": "App\\Http\\Resources\\FirmResource",
    }
    [row] = normalise.staff([record], drift)["staff"]
    assert row["uuid"] == "s1" and row["role"] == "owner" and row["inactive_at"] == date(2025, 3, 1)
    assert row["created_at"] == datetime(2024, 1, 2, 10, 0, tzinfo=UTC)
    assert json.loads(row["extra_json"]) == {
        "type": "employee",
        "photo_url": "https://example.invalid/a.png",
        "with_login": True,
    }
    assert not drift.unknown_fields
    assert normalise.arrow(STAFF, [row]).num_rows == 1


def test_goal_owner_and_task_people_are_columns_only():
    drift = normalise.Drift()
    [row] = normalise.goals(
        "c1", [goal(shared_owner_type="individual", shared_owner=person("a1"))], drift, "2025-04"
    )
    assert row["shared_owner_uuid"] == "a1" and row["extra_json"] is None
    task = {
        "uuid": "t1",
        "author": person("s1"),
        "assigned_to": person("s2"),
        "completed_by": person("s2"),
        "created_at": "2025-04-02T13:27:55+01:00",
    }
    [task_row] = normalise.tasks([task], drift)["tasks"]
    assert (task_row["author_uuid"], task_row["assigned_to_uuid"], task_row["completed_by_uuid"]) == (
        "s1",
        "s2",
        "s2",
    )
    assert task_row["extra_json"] is None
    assert not drift.unknown_fields


def test_whole_numbers_are_parsed_as_integers_not_through_float():
    from plannr_pipeline.storage.convert import to_int

    assert to_int("9007199254740993") == 9007199254740993
    assert to_int(" 42 ") == 42 and to_int("-7") == -7 and to_int("12.00") == 12 and to_int("1e3") == 1000
    with pytest.raises(ValueError):
        to_int("12.5")
