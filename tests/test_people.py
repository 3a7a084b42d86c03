"""The people in the data: every client's adviser, administrator and paraplanner, goal owners and
task people are uuids that join to `staff`; the README's queries run exactly as printed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.sync import run_sync

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def synced_people(tmp_path_factory):
    from plannr_pipeline.sandbox.firm import FirmSize
    from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer

    sandbox = SandboxServer(
        SandboxOptions(size=FirmSize(clients=80), token="people-token", rate_limit_per_minute=100_000)
    ).start()
    data_dir = tmp_path_factory.mktemp("people") / "data"
    resources = {
        "plannr": PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000),
        "storage": PlannrStorage(data_dir=str(data_dir)),
    }
    report = run_sync(resources_by_key=resources, echo=lambda _: None)
    assert report.ok, report.failures
    yield sandbox, data_dir, report
    sandbox.stop()


def query(data_dir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_every_clients_people_are_the_sandboxs_and_join_to_staff(synced_people):
    sandbox, data_dir, _ = synced_people
    stored = {
        row[0]: row[1:]
        for row in query(
            data_dir,
            "select uuid, assigned_adviser_uuid, assigned_administrator_uuid, assigned_paraplanner_uuid from clients",
        )
    }
    expected = {
        uuid: (a["assigned_adviser"], a["assigned_administrator"], a["assigned_paraplanner"])
        for uuid, a in sandbox.firm.assignments.items()
    }
    assert stored == expected
    assert all(adviser for adviser, _, _ in stored.values())
    assert query(
        data_dir, "select count(*) from clients c anti join staff s on s.uuid = c.assigned_adviser_uuid"
    ) == [(0,)]
    assert {r[0] for r in query(data_dir, "select uuid from staff")} == {
        s["uuid"] for s in sandbox.firm.staff
    }


def test_goal_owners_and_task_people_join_to_their_rows(synced_people):
    sandbox, data_dir, _ = synced_people
    owners = dict(
        query(data_dir, "select uuid, shared_owner_uuid from goals where shared_owner_type = 'individual'")
    )
    assert owners and owners == {goal: owner for goal, owner in sandbox.firm.goal_owners.items()}
    for column in ("author_uuid", "assigned_to_uuid", "completed_by_uuid"):
        assert query(
            data_dir,
            f"select count(*) from tasks t anti join staff s on s.uuid = t.{column} where t.{column} is not null",
        ) == [(0,)]
    # what the API embeds about a person is stored once, in staff
    assert query(data_dir, "select count(*) from clients where extra_json like '%assigned_adviser%'") == [
        (0,)
    ]


def test_requests_are_the_floor_plus_the_staff_listing(synced_people):
    sandbox, _, report = synced_people
    # one page each for clients, staff, circles, tasks and imports, plus one goals request per client
    assert report.requests == 5 + len(sandbox.firm.clients)
    assert sum(sandbox.requests.values()) == report.requests


def readme_queries(section: str | None = "## Example queries") -> list[str]:
    text = README.read_text()
    if section:
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def test_every_query_in_the_readme_runs_as_printed(synced_people):
    _, data_dir, _ = synced_people
    queries = readme_queries(section=None)  # example and history queries, and the data dictionary's
    # The across-firms query is for the combined database of firm files, which a one-firm sync
    # does not write: it names that database on its first line.
    queries = [sql for sql in queries if "firms.duckdb" not in sql.splitlines()[0]]
    assert len(queries) >= 13
    for sql in queries:
        query(data_dir, sql)  # raises on any error


def test_clients_per_adviser_in_the_readme_gives_the_sandboxs_counts(synced_people):
    sandbox, data_dir, _ = synced_people
    [per_adviser] = [q for q in readme_queries() if "as adviser" in q]
    names = {s["uuid"]: s["name"] for s in sandbox.firm.staff}
    expected = Counter(names[a["assigned_adviser"]] for a in sandbox.firm.assignments.values())
    assert dict(query(data_dir, per_adviser)) == dict(expected)


def test_the_readmes_look_at_the_data_commands_work_as_printed(synced_people):
    """The Python one-liner and the DuckDB command-line client (duckdb-cli 1.5, from PyPI) both
    open the database read-only, as the README says."""
    import shlex
    import subprocess
    import sys

    _, data_dir, _ = synced_people
    section = README.read_text().split("## Look at the data", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    one_liner = shlex.split(commands[0].strip())
    assert one_liner[0] == ".venv/bin/python"
    done = subprocess.run(
        [sys.executable, *one_liner[1:]], cwd=data_dir.parent, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "goal_name" in done.stdout
    cli = shlex.split(commands[1].strip())
    assert cli[0] == ".venv/bin/duckdb"
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    done = subprocess.run(
        [str(duckdb_cli), *cli[1:], "-c", "select count(*) from goal_progress"],
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr  # the storage format is one the 1.5 client reads
