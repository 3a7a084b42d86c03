"""The people in the sandbox, over real HTTP on 127.0.0.1: staff, each client's assigned staff,
goal owners, and what the normaliser makes of them."""

from __future__ import annotations

import asyncio
import json

import pytest

from plannr_pipeline.api import BadRequestError
from plannr_pipeline.sandbox.formats import placeholder
from plannr_pipeline.sandbox.people import ASSIGNMENTS
from plannr_pipeline.storage import normalise

PEOPLE = ",".join(ASSIGNMENTS)
CLIENTS = {"filter[type]": "client"}


def fetch(client, path: str, params: dict[str, str] | None = None) -> list[dict]:
    async def run():
        async with client:
            return await client.list_all(path, params or {})

    return asyncio.run(run())


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(clients=120, seed=11)


# What an expanded person shows of the staff record it stands for.
PERSON_FIELDS = ("name", "first_name", "last_name", "email", "role", "type", "created_at", "updated_at")


@pytest.mark.parametrize("path, params", [("/api/v1/account", CLIENTS), ("/api/v1/client", {})])
def test_include_expands_each_clients_assigned_staff(sandbox, make_client, path, params):
    clients = fetch(make_client(sandbox), path, {**params, "include": PEOPLE})
    staff = {s["uuid"]: s for s in sandbox.firm.staff}

    assert len(clients) == len(sandbox.firm.clients)
    for client in clients:
        assigned = sandbox.firm.assignments[client["uuid"]]
        for relationship in ASSIGNMENTS:
            person = client[relationship]
            if assigned[relationship] is None:
                assert person is None
                continue
            assert person["uuid"] == assigned[relationship] and person["uuid"] in staff
            expected = staff[person["uuid"]]
            assert {k: person[k] for k in PERSON_FIELDS} == {k: expected[k] for k in PERSON_FIELDS}
            assert person["type"] == "employee"
    # Everyone has an adviser; some have no administrator or paraplanner, some do.
    assert all(c["assigned_adviser"] for c in clients)
    for optional in ("assigned_administrator", "assigned_paraplanner"):
        assert 0 < sum(c[optional] is None for c in clients) < len(clients)


def test_one_include_expands_only_that_relationship(sandbox, make_client):
    [client, *_] = fetch(make_client(sandbox), "/api/v1/account", {**CLIENTS, "include": "assigned_adviser"})
    assert client["assigned_adviser"]["uuid"] == sandbox.firm.assignments[client["uuid"]]["assigned_adviser"]
    assert client["assigned_administrator"] == client["assigned_paraplanner"] == placeholder("Account")


def test_without_include_the_relationships_stay_placeholders(sandbox, make_client):
    clients = fetch(make_client(sandbox), "/api/v1/account", CLIENTS)
    assert {c[r] for c in clients for r in ASSIGNMENTS} == {placeholder("Account")}


def test_unknown_includes_are_still_refused(sandbox, make_client):
    with pytest.raises(BadRequestError):
        fetch(
            make_client(sandbox),
            "/api/v1/account",
            {**CLIENTS, "include": "assigned_adviser,assigned_chauffeur"},
        )


def test_the_employee_listing_is_exactly_the_firms_staff(sandbox, make_client):
    staff = fetch(make_client(sandbox), "/api/v1/account", {"filter[type]": "employee"})
    assert sorted(s["uuid"] for s in staff) == sorted(s["uuid"] for s in sandbox.firm.staff)
    assert {s["role"] for s in staff} == {"owner", "admin", "member"}
    assert all(s["type"] == "employee" for s in staff)


def test_assignments_are_deterministic_for_a_seed(make_sandbox):
    first, second, other = (
        make_sandbox(clients=60, seed=5),
        make_sandbox(clients=60, seed=5),
        make_sandbox(clients=60, seed=6),
    )
    assert first.firm.assignments == second.firm.assignments
    assert first.firm.goal_owners == second.firm.goal_owners
    assert first.firm.assignments != other.firm.assignments


def goals_with_owner(sandbox, make_client, include: bool) -> list[tuple[str, dict]]:
    client = make_client(sandbox)
    params = {"include": "shared_owner"} if include else {}

    async def run():
        async with client:
            uuids = [c["uuid"] for c in sandbox.firm.clients]
            return [
                (uuid, g)
                async for uuid, batch, _, _ in client.fan_out(
                    uuids, lambda u: f"/api/v1/client/{u}/goal", params
                )
                for g in batch
            ]

    return asyncio.run(run())


def test_shared_owner_is_the_owning_account_for_individual_goals(sandbox, make_client):
    goals = goals_with_owner(sandbox, make_client, include=True)
    individual = [(c, g) for c, g in goals if g["shared_owner_type"] == "individual"]
    assert individual and len(individual) < len(goals)
    for client_uuid, goal in goals:
        if goal["shared_owner_type"] == "individual":
            assert goal["shared_owner"]["uuid"] == sandbox.firm.goal_owners[goal["uuid"]] == client_uuid
            assert goal["shared_owner"]["type"] == "client"
        else:
            assert goal["shared_owner"] is None
    assert all("shared_owner" not in g for _, g in goals_with_owner(sandbox, make_client, include=False))


def test_normalised_people_fill_their_columns_and_stay_out_of_extra_json(sandbox, make_client):
    client = make_client(sandbox)
    drift = normalise.Drift()
    records = fetch(client, "/api/v1/account", {**CLIENTS, "include": PEOPLE})
    rows = normalise.clients(records, drift, partition_of=lambda r: "2026-01")["clients"]
    for row in rows:
        assigned = sandbox.firm.assignments[row["uuid"]]
        assert [row[f"{r}_uuid"] for r in ASSIGNMENTS] == [assigned[r] for r in ASSIGNMENTS]
        assert not set(json.loads(row["extra_json"] or "{}")) & set(ASSIGNMENTS)

    staff_records = fetch(make_client(sandbox), "/api/v1/account", {"filter[type]": "employee"})
    staff_rows = normalise.staff(staff_records, drift)["staff"]
    staff_uuids = {r["uuid"] for r in staff_rows}
    assert staff_uuids == {s["uuid"] for s in sandbox.firm.staff}
    assert {r[f"{a}_uuid"] for r in rows for a in ASSIGNMENTS} - {
        None
    } <= staff_uuids  # every assignment joins
    assert all(
        r["name"] and r["role"] in ("owner", "admin", "member") and r["created_at"] for r in staff_rows
    )

    goal_rows = [
        row
        for client_uuid, goal in goals_with_owner(sandbox, make_client, include=True)
        for row in normalise.goals(client_uuid, [goal], drift, "2026-01")
    ]
    owned = [r for r in goal_rows if r["shared_owner_type"] == "individual"]
    assert owned and all(r["shared_owner_uuid"] == r["client_uuid"] for r in owned)
    assert all("shared_owner" not in json.loads(r["extra_json"] or "{}") for r in goal_rows)

    task_rows = normalise.tasks(
        fetch(make_client(sandbox), "/api/v1/task", {"filter[show_child_tasks]": "true"}), drift
    )["tasks"]
    assert all(r["author_uuid"] in staff_uuids and r["assigned_to_uuid"] in staff_uuids for r in task_rows)
    assert any(r["completed_by_uuid"] in staff_uuids for r in task_rows)
    for row in task_rows:
        assert not set(json.loads(row["extra_json"] or "{}")) & {"author", "assigned_to", "completed_by"}
    assert not drift.unknown_fields, drift.summary()
