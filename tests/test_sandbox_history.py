"""The sandbox moving in time, over real HTTP on 127.0.0.1: `advance`, `POST /__sandbox/advance`
and `plannr-pipeline sandbox --advance N`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from plannr_pipeline.sandbox.formats import iso_london, naive_london
from plannr_pipeline.sandbox.people import ASSIGNMENTS
from plannr_pipeline.sandbox.server import _from_loopback
from plannr_pipeline.sandbox.timeline import KINDS, OPERATIONS, totals
from tests.cli import sandbox_cli
from tests.mocked_requests import request_from

REFERENCE = datetime(2026, 1, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


def snapshot(client, client_uuids: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """Everything a sync would read, keyed by uuid: clients (with their people), goals, tasks."""

    async def run():
        async with client:
            clients = await client.list_all(
                "/api/v1/account", {"filter[type]": "client", "include": ",".join(ASSIGNMENTS)}
            )
            uuids = client_uuids if client_uuids is not None else [c["uuid"] for c in clients]
            goals = [
                g
                async for _, batch, _, _ in client.fan_out(
                    uuids, lambda u: f"/api/v1/client/{u}/goal", {"include": "shared_owner"}
                )
                for g in batch
            ]
            tasks = await client.list_all("/api/v1/task", {"filter[show_child_tasks]": "true"})
            staff = await client.list_all("/api/v1/account", {"filter[type]": "employee"})
            circles = await client.list_all("/api/v1/circles")
        return {"clients": clients, "goals": goals, "tasks": tasks, "staff": staff, "circles": circles}

    return {
        kind: {r["uuid"]: _owner_by_uuid(r) for r in records} for kind, records in asyncio.run(run()).items()
    }


def _owner_by_uuid(record: dict) -> dict:
    """An expanded goal owner shows the owner as it is now (its updated_at moves when its adviser
    changes) while the goal itself is unchanged: compare goals by the owner's uuid."""
    owner = record.get("shared_owner")
    return {**record, "shared_owner": owner["uuid"]} if isinstance(owner, dict) else record


def post_advance(sandbox, steps: int | str, **kwargs) -> httpx.Response:
    """The control as a program sends it: the sandbox's token, no browser headers."""
    headers = {"Authorization": f"Bearer {sandbox.options.token}", **kwargs.pop("headers", {})}
    return httpx.post(f"{sandbox.url}/__sandbox/advance", params={"steps": steps}, headers=headers, **kwargs)


def test_one_step_over_http_changes_exactly_what_it_says(make_sandbox, make_client):
    sandbox = make_sandbox(clients=80, seed=21, reference=REFERENCE)
    before = snapshot(make_client(sandbox))

    answer = post_advance(sandbox, 1)  # no bearer token: the sandbox's own control
    assert answer.status_code == 200
    body = answer.json()
    [step] = body["steps"]
    assert body["step"] == sandbox.step == 1 and sandbox.changes == [step]
    assert step["moment"] == iso_london(REFERENCE + timedelta(hours=1))
    assert body["counts"] == step["counts"] == {k: {op: len(step[k][op]) for op in OPERATIONS} for k in KINDS}
    for kind in KINDS:
        assert step["counts"][kind]["updated"] > 0 and step["counts"][kind]["deleted"] > 0
    assert step["counts"]["clients"]["created"] > 0 and step["counts"]["goals"]["created"] > 0

    after = snapshot(make_client(sandbox))
    moment = REFERENCE + timedelta(hours=1)
    for kind in KINDS:
        created, updated, deleted = (set(step[kind][op]) for op in OPERATIONS)
        assert set(after[kind]) == (set(before[kind]) - deleted) | created, kind
        assert (
            not created & set(before[kind]) and deleted <= set(before[kind]) and updated <= set(after[kind])
        )
        # Nothing else changed, to the byte.
        for uuid in set(before[kind]) & set(after[kind]) - updated:
            assert after[kind][uuid] == before[kind][uuid], (kind, uuid)
        for uuid in updated | created:
            assert after[kind][uuid]["updated_at"] == iso_london(moment)
    assert after["staff"] == before["staff"] and after["circles"] == before["circles"]

    for uuid in step["goals"]["updated"]:
        assert int(after["goals"][uuid]["progress"]) > int(before["goals"][uuid]["progress"])
        assert {k: v for k, v in after["goals"][uuid].items() if k not in ("progress", "updated_at")} == {
            k: v for k, v in before["goals"][uuid].items() if k not in ("progress", "updated_at")
        }
    for uuid in step["clients"]["updated"]:
        new, old = after["clients"][uuid], before["clients"][uuid]
        assert new["assigned_adviser"]["uuid"] != old["assigned_adviser"]["uuid"]
        assert new["assigned_adviser"]["uuid"] == sandbox.firm.assignments[uuid]["assigned_adviser"]
        assert new["assigned_adviser"]["uuid"] in after["staff"]
    for uuid in step["tasks"]["updated"]:
        new, old = after["tasks"][uuid], before["tasks"][uuid]
        assert not old["status"]["is_type_completed"] and new["status"]["is_type_completed"]
        assert new["status"]["name"] == "Completed" and new["completed_at"] == naive_london(moment)
        assert new["completed_by"]["uuid"] == new["assigned_to"]["uuid"]
    for uuid in step["clients"]["created"]:
        assert after["clients"][uuid]["created_at"] == iso_london(moment)
        assert after["clients"][uuid]["assigned_adviser"]["uuid"] in after["staff"]
    new_goals = [g for g in after["goals"].values() if g["uuid"] in step["goals"]["created"]]
    assert len(new_goals) == len(step["goals"]["created"]) and all(
        g["created_at"] == iso_london(moment) for g in new_goals
    )

    # A deleted client's goals answer 404, as for any unknown client; a deleted task too.
    for uuid in step["clients"]["deleted"]:
        response = httpx.get(
            f"{sandbox.url}/api/v1/client/{uuid}/goal",
            headers={"Authorization": f"Bearer {sandbox.options.token}"},
        )
        assert response.status_code == 404
    gone_task = step["tasks"]["deleted"][0]
    response = httpx.get(
        f"{sandbox.url}/api/v1/task/{gone_task}", headers={"Authorization": f"Bearer {sandbox.options.token}"}
    )
    assert response.status_code == 404


def test_several_steps_add_up_and_the_firm_stays_consistent(make_sandbox, make_client):
    sandbox = make_sandbox(clients=60, seed=4, reference=REFERENCE)
    before = snapshot(make_client(sandbox))
    steps = sandbox.advance(4) + post_advance(sandbox, 2).json()["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6] and sandbox.changes == steps
    assert steps[-1]["moment"] == iso_london(REFERENCE + timedelta(hours=6))
    after = snapshot(make_client(sandbox))

    total = totals(steps)
    for kind in KINDS:
        assert len(after[kind]) == len(before[kind]) + total[kind]["created"] - total[kind]["deleted"]
        deleted = {u for s in steps for u in s[kind]["deleted"]}
        assert not deleted & set(after[kind])
        touched = {u for s in steps for op in OPERATIONS for u in s[kind][op]}
        assert all(after[kind][u] == before[kind][u] for u in set(after[kind]) - touched)
    firm = sandbox.firm
    assert set(firm.goals_by_client) == {c["uuid"] for c in firm.clients} == set(firm.assignments)
    assert set(firm.goal_owners) <= {g["uuid"] for gs in firm.goals_by_client.values() for g in gs}
    assert set(sandbox._task_by_uuid) == {t["uuid"] for t in firm.tasks}


def test_same_seed_and_steps_serve_identical_data(make_sandbox, make_client):
    first = make_sandbox(clients=50, seed=9, reference=REFERENCE)
    second = make_sandbox(clients=50, seed=9, reference=REFERENCE)
    fewer = make_sandbox(clients=50, seed=9, reference=REFERENCE)
    post_advance(first, 3)
    second.advance(1)
    second.advance(2)  # the same steps, in two calls and not over HTTP
    fewer.advance(2)
    assert first.changes == second.changes
    assert snapshot(make_client(first)) == snapshot(make_client(second))
    assert snapshot(make_client(fewer)) != snapshot(make_client(first))


def test_the_advance_endpoint_checks_its_input_and_answers_only_loopback(make_sandbox):
    sandbox = make_sandbox(clients=20, reference=REFERENCE)
    for bad in ("-1", "two", "1001"):
        assert post_advance(sandbox, bad).status_code == 422
    assert sandbox.step == 0 and sandbox.changes == []
    assert post_advance(sandbox, 0).json() == {"step": 0, "steps": [], "counts": totals([])}
    assert httpx.get(f"{sandbox.url}/__sandbox/advance").status_code == 401  # no token: no say
    assert sandbox.requests == {}  # controls are not API traffic
    with pytest.raises(ValueError):
        sandbox.advance(-1)

    def from_loopback(peer: str) -> bool:
        return _from_loopback(request_from(peer, "POST", "/__sandbox/advance"))

    assert from_loopback("127.0.0.1") and from_loopback("::1")
    assert not from_loopback("10.1.2.3") and not from_loopback("192.168.0.7")


def test_cli_advance_serves_the_firm_after_n_steps(make_sandbox, make_client):
    token = "cli-advance-token"
    flags = ("--seed", "13", "--clients", "30", "--token", token, "--advance", "3", "--rate-limit", "100000")
    with sandbox_cli(*flags, cwd=ROOT) as (banner, url):
        assert "advanced 3 step(s)" in banner, banner
        here = make_sandbox(clients=30, seed=13)  # the CLI's reference: midnight UTC today
        here.advance(3)
        served = type("Served", (), {"url": url, "options": type("O", (), {"token": token})()})()
        assert snapshot(make_client(served)) == snapshot(make_client(here))
