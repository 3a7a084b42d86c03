"""The firm moving in time: numbered steps of change, so tests of history have something to record.

Step `n` happens at `firm.reference + n * STEP` (one hour per step) and is drawn from a Random
seeded by (seed, n) alone, so two sandboxes with the same seed that have taken the same steps
serve identical data. In each step, in this order:

- updated: a few goals' `progress` rises; a few clients change assigned adviser; a few open
  tasks complete (status Completed, `completed_at`, `completed_by` = the assignee);
  every record changed gets `updated_at` = the step's moment;
- deleted: a goal, a client (with all its goals) and a task, chosen among the records this step
  did not update; a deleted client is never a circle member (the circle would change too) and a
  deleted task never has subtasks;
- created: one or two new clients, each with goals, created at the step's moment.

An expansion shows an account as it is now: a goal whose owning client changed adviser keeps its
own fields, but its `include=shared_owner` summary shows the client's new `updated_at`.

The answer is a dict of what changed: per kind (clients, goals, tasks) the uuids created,
updated and deleted, and their counts.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from plannr_pipeline.sandbox.firm import CLIENT_ROLES, TASK_STATUSES, Firm, RecordMaker, add_people
from plannr_pipeline.sandbox.formats import iso_london, naive_london
from plannr_pipeline.sandbox.people import ADVISER_ROLES

STEP = timedelta(hours=1)
KINDS = ("clients", "goals", "tasks")
OPERATIONS = ("created", "updated", "deleted")

GOALS_PROGRESSED = 3
CLIENTS_REASSIGNED = 2
TASKS_COMPLETED = 3
NEW_CLIENTS = (1, 2)


def step_moment(reference: datetime, step: int) -> datetime:
    return reference + step * STEP


def apply_step(firm: Firm, seed: int, step: int, max_goals_per_client: int = 4) -> dict[str, Any]:
    """Change `firm` in place by step number `step`; return what changed."""
    rng = random.Random(f"plannr-sandbox-step:{seed}:{step}")
    firm.changed()  # every step updates, deletes and adds records (below)
    moment = step_moment(firm.reference, step)
    stamp = iso_london(moment)
    changed: dict[str, dict[str, list[str]]] = {kind: {op: [] for op in OPERATIONS} for kind in KINDS}

    # -- updates ----------------------------------------------------------------------------
    unfinished = [
        (client["uuid"], goal)
        for client in firm.clients
        for goal in firm.goals_by_client[client["uuid"]]
        if int(goal["progress"]) < 100
    ]
    for _, goal in rng.sample(unfinished, k=min(GOALS_PROGRESSED, len(unfinished))):
        goal["progress"] = str(min(100, int(goal["progress"]) + rng.randint(1, 25)))
        goal["updated_at"] = stamp
        changed["goals"]["updated"].append(goal["uuid"])

    advisers = [s["uuid"] for s in firm.staff if s["role"] in ADVISER_ROLES] or [
        s["uuid"] for s in firm.staff
    ]
    if len(advisers) > 1:
        for client in rng.sample(firm.clients, k=min(CLIENTS_REASSIGNED, len(firm.clients))):
            people = firm.assignments[client["uuid"]]
            people["assigned_adviser"] = rng.choice([a for a in advisers if a != people["assigned_adviser"]])
            client["updated_at"] = stamp
            changed["clients"]["updated"].append(client["uuid"])

    open_tasks = [
        t for t in firm.tasks if not t["status"]["is_type_completed"] and not t["status"]["is_archived"]
    ]
    name, archived, not_started, completed = next(s for s in TASK_STATUSES if s[3])
    for task in rng.sample(open_tasks, k=min(TASKS_COMPLETED, len(open_tasks))):
        task["status"] = {
            "uuid": _uuid(rng),
            "name": name,
            "colour": task["status"]["colour"],
            "position": TASK_STATUSES.index((name, archived, not_started, completed)) + 1,
            "created_at": stamp,
            "updated_at": stamp,
            "is_archived": archived,
            "is_not_started": not_started,
            "is_type_completed": completed,
        }
        task["completed_at"] = naive_london(moment)
        task["completed_by"] = dict(task["assigned_to"]) if task.get("assigned_to") else None
        task["updated_at"] = stamp
        changed["tasks"]["updated"].append(task["uuid"])

    # -- deletions, among records this step left alone --------------------------------------
    progressed = set(changed["goals"]["updated"])
    untouched_clients = set(changed["clients"]["updated"]) | {
        client_uuid for client_uuid, goal in unfinished if goal["uuid"] in progressed
    }
    in_circles = {account["uuid"] for circle in firm.circles for account in circle["accounts"]}
    candidates = [
        c for c in firm.clients if c["uuid"] not in untouched_clients and c["uuid"] not in in_circles
    ]
    for client in rng.sample(candidates, k=min(1, len(candidates))):
        firm.clients.remove(client)
        firm.assignments.pop(client["uuid"], None)
        changed["clients"]["deleted"].append(client["uuid"])
        for goal in firm.goals_by_client.pop(client["uuid"]):
            firm.goal_owners.pop(goal["uuid"], None)
            changed["goals"]["deleted"].append(goal["uuid"])

    goals = [
        (client["uuid"], goal)
        for client in firm.clients
        for goal in firm.goals_by_client[client["uuid"]]
        if goal["uuid"] not in progressed
    ]
    for client_uuid, goal in rng.sample(goals, k=min(1, len(goals))):
        firm.goals_by_client[client_uuid].remove(goal)
        firm.goal_owners.pop(goal["uuid"], None)
        changed["goals"]["deleted"].append(goal["uuid"])

    completed_now = set(changed["tasks"]["updated"])
    parents = {t["parent"]["uuid"] for t in firm.tasks if t.get("parent")}
    leaves = [t for t in firm.tasks if t["uuid"] not in completed_now and t["uuid"] not in parents]
    for task in rng.sample(leaves, k=min(1, len(leaves))):
        firm.tasks.remove(task)
        changed["tasks"]["deleted"].append(task["uuid"])

    # -- arrivals ---------------------------------------------------------------------------
    make = RecordMaker(rng.getrandbits(63), moment)
    for _ in range(rng.randint(*NEW_CLIENTS)):
        client = make.account("client", make.rng.choice(CLIENT_ROLES), moment)
        client["inactive_at"] = None  # a new arrival is active
        firm.clients.append(client)
        firm.goals_by_client[client["uuid"]] = [
            make.goal(client, moment) for _ in range(make.rng.randint(1, max(1, max_goals_per_client)))
        ]
        add_people(firm, make.rng, client)
        changed["clients"]["created"].append(client["uuid"])
        changed["goals"]["created"].extend(goal["uuid"] for goal in firm.goals_by_client[client["uuid"]])

    counts = {kind: {op: len(uuids) for op, uuids in ops.items()} for kind, ops in changed.items()}
    return {"step": step, "moment": stamp, **changed, "counts": counts}


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def totals(steps: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts summed over several steps."""
    return {
        kind: {op: sum(step["counts"][kind][op] for step in steps) for op in OPERATIONS} for kind in KINDS
    }
