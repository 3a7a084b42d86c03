"""A listing too large for the sandbox to check every record on every page (issue 26): it keeps
its filtered, sorted records while the firm's version stays the same, so every change the firm
makes must show on the very next page."""

from __future__ import annotations

import httpx

from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.listing import CHECK_EVERY_RECORD_UP_TO

# 12,500 tasks: past CHECK_EVERY_RECORD_UP_TO, yet generated in a few seconds.
LARGE = FirmSize(clients=500, tasks_per_client=25)
NEWEST_TASKS = {"filter[show_child_tasks]": "true", "sort": "-updated_at", "per_page": 500}


def _tasks(sandbox, **params) -> dict:
    headers = {"Authorization": f"Bearer {sandbox.options.token}"}
    answer = httpx.get(f"{sandbox.url}/api/v1/task", params={**NEWEST_TASKS, **params}, headers=headers)
    answer.raise_for_status()
    return answer.json()


def test_a_step_of_the_timeline_shows_on_the_next_page_of_a_large_listing(make_sandbox):
    sandbox = make_sandbox(size=LARGE)
    before = _tasks(sandbox)
    assert before["meta"]["total"] > CHECK_EVERY_RECORD_UP_TO  # the listing this test is about
    assert _tasks(sandbox, page=2)["data"][0]["uuid"] != before["data"][0]["uuid"]  # an order kept

    [step] = sandbox.advance(1)  # completes 3 tasks (re-timed to the step) and deletes one

    after = _tasks(sandbox)
    completed = set(step["tasks"]["updated"])
    assert len(completed) == 3
    assert {task["uuid"] for task in after["data"][:3]} == completed
    assert all(task["updated_at"] == step["moment"] for task in after["data"][:3])
    assert after["meta"]["total"] == before["meta"]["total"] - 1
    deleted = step["tasks"]["deleted"][0]
    every_page = [_tasks(sandbox, page=page)["data"] for page in range(1, after["meta"]["last_page"] + 1)]
    shown = [task["uuid"] for page in every_page for task in page]
    assert deleted not in shown and len(shown) == len(set(shown)) == after["meta"]["total"]


def test_the_admin_route_and_the_filters_of_a_large_listing_follow_the_firm(make_sandbox):
    sandbox = make_sandbox(size=LARGE)
    completed_before = _tasks(sandbox, **{"filter[completed_status]": "true"})["meta"]["total"]
    headers = {"Authorization": f"Bearer {sandbox.options.token}"}
    moved = httpx.post(f"{sandbox.url}/__sandbox/advance", params={"steps": 2}, headers=headers)
    moved.raise_for_status()
    completed_after = _tasks(sandbox, **{"filter[completed_status]": "true"})["meta"]["total"]
    # 6 tasks completed, at most 2 deleted: the filtered listing is the firm as it is now
    assert completed_after > completed_before
    assert completed_after == sum(task["status"]["is_type_completed"] for task in sandbox.firm.tasks)
