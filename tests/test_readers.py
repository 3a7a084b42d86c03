"""Analysts reading `plannr.duckdb` while syncs run (issue 21, case 10): a reader never makes a
sync fail, and the database changes only when a relation's definition does."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from plannr_pipeline.storage import catalog
from plannr_pipeline.storage.warehouse import Warehouse
from tests.cli import run_cli, sandbox_env

# A reader that keeps one read-only connection open and answers each SQL line on stdin with one
# line: the first row's values, or the error.
PYTHON_READER = """
import duckdb, sys
connection = duckdb.connect(sys.argv[1], read_only=True)
print("open", flush=True)
for sql in sys.stdin:
    try:
        print(*connection.execute(sql).fetchone(), flush=True)
    except duckdb.Error as error:
        print("ERROR", str(error).splitlines()[0], flush=True)
"""

DUCKDB_CLI = Path(sys.executable).with_name("duckdb")


class Reader:
    """An analyst's session in another process, asked one query at a time."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._lines = selectors.DefaultSelector()
        self._lines.register(self.process.stdout, selectors.EVENT_READ)

    def line(self, timeout: float = 30) -> str:
        assert self._lines.select(timeout), f"{self.process.args[0]} said nothing for {timeout}s"
        return self.process.stdout.readline().strip()

    def ask(self, sql: str) -> str:
        self.process.stdin.write(sql.rstrip(";") + ";\n")
        self.process.stdin.flush()
        return self.line()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def db_counts(db: Path, relations: list[str]) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return {r: connection.execute(f'select count(*) from "{r}"').fetchone()[0] for r in relations}


@pytest.mark.skipif(not DUCKDB_CLI.exists(), reason="the duckdb-cli package is not installed")
def test_syncs_with_readers_attached_exit_0_and_the_database_changes_only_with_its_shape(
    make_sandbox, tmp_path
):
    sandbox = make_sandbox(clients=60)
    env = sandbox_env(sandbox, tmp_path)
    db = tmp_path / "data" / "plannr.duckdb"
    first = run_cli("sync", "--select", "clients", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-2000:]

    python_reader = Reader([sys.executable, "-c", PYTHON_READER, str(db)])
    cli_reader = Reader([str(DUCKDB_CLI), "-readonly", "-csv", "-noheader", str(db)])
    try:
        assert python_reader.line() == "open"
        assert python_reader.ask("select count(*) from clients") == "60"
        assert cli_reader.ask("select count(*) from clients") == "60"

        # Every other table's view is still the empty shape: this sync must change it, and
        # the file is shared-locked by both readers.
        sandbox.advance(6)  # new clients, changed tasks
        second = run_cli("sync", cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "could not be updated" not in second.stderr
        clients = len(sandbox.firm.clients)
        assert clients != 60
        # The open sessions keep working, and their views read the new files through globs.
        assert python_reader.ask("select count(*) from clients") == str(clients)
        assert cli_reader.ask("select count(*) from clients") == str(clients)
        assert python_reader.ask("select count(*) from goals") == "0"  # their copy: the old shape

        # Nothing changes shape now: the third sync must leave the very same file alone.
        before = os.stat(db)
        sandbox.advance(3)
        third = run_cli("sync", cwd=tmp_path, env=env)
        assert third.returncode == 0, third.stderr[-2000:]
        after = os.stat(db)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert python_reader.ask("select count(*) from clients") == str(len(sandbox.firm.clients))
        assert cli_reader.ask("select count(*) from clients") == str(len(sandbox.firm.clients))
        assert cli_reader.ask("select count(*) from tasks") == "0"  # still its copy, still answering
    finally:
        python_reader.close()
        cli_reader.close()

    # A session opened now sees every relation reading its files, with nothing left to update.
    firm = sandbox.firm
    assert db_counts(db, ["clients", "goals", "tasks", "circles"]) == {
        "clients": len(firm.clients),
        "goals": sum(len(goals) for goals in firm.goals_by_client.values()),
        "tasks": len(firm.tasks),
        "circles": len(firm.circles),
    }
    warehouse = Warehouse(tmp_path / "data")
    with duckdb.connect(str(db), read_only=True) as connection:
        wanted = warehouse.relations()
        assert catalog.changed(connection, wanted, catalog.read_stored(connection, set())) == []
    assert not [p for p in db.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_moved_data_folder_is_followed_with_a_reader_attached(make_sandbox, tmp_path):
    """A shape change a reader must not hold up: views naming the old folder are rewritten."""
    sandbox = make_sandbox(clients=30)
    env = sandbox_env(sandbox, tmp_path, PLANNR_DATA_DIR=str(tmp_path / "old"))
    assert run_cli("sync", "--select", "clients", cwd=tmp_path, env=env).returncode == 0
    shutil.move(tmp_path / "old", tmp_path / "data")
    reader = Reader([sys.executable, "-c", PYTHON_READER, str(tmp_path / "data" / "plannr.duckdb")])
    try:
        assert reader.line() == "open"
        assert reader.ask("select count(*) from clients").startswith("ERROR")  # reads the old place
        moved = run_cli("sync", "--select", "clients", cwd=tmp_path, env=sandbox_env(sandbox, tmp_path))
        assert moved.returncode == 0, moved.stderr[-2000:]
        assert "could not be updated" not in moved.stderr
    finally:
        reader.close()
    assert db_counts(tmp_path / "data" / "plannr.duckdb", ["clients"]) == {"clients": 30}


def test_a_change_held_up_by_a_reader_waits_for_the_next_sync_without_failing_one(make_sandbox, tmp_path):
    """A file that holds an analyst's own table is never replaced (that would lose it), so a reader
    can hold a view change up: the sync still exits 0, and the next one makes the change."""
    sandbox = make_sandbox(clients=30)
    env = sandbox_env(sandbox, tmp_path)
    db = tmp_path / "data" / "plannr.duckdb"
    assert run_cli("sync", "--select", "clients", cwd=tmp_path, env=env).returncode == 0
    with duckdb.connect(str(db)) as connection:
        connection.execute("CREATE TABLE my_notes AS SELECT 1 AS note")

    reader = Reader([sys.executable, "-c", PYTHON_READER, str(db)])
    try:
        assert reader.line() == "open"
        held = run_cli("sync", "--select", "circles", cwd=tmp_path, env=env)  # circles' view must change
        assert held.returncode == 0, held.stderr[-2000:]
        assert "the DuckDB views could not be updated yet" in held.stderr
        assert "sync finished: all assets landed." in held.stdout
        assert reader.ask("select count(*) from my_notes") == "1"
        assert reader.ask("select count(*) from circles") == "0"  # the change waits
    finally:
        reader.close()

    later = run_cli("sync", "--select", "clients", cwd=tmp_path, env=env)  # the next chance
    assert later.returncode == 0, later.stderr[-2000:]
    assert "could not be updated" not in later.stderr
    assert db_counts(db, ["circles", "my_notes"]) == {"circles": len(sandbox.firm.circles), "my_notes": 1}
