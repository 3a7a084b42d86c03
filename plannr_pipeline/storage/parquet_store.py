"""Parquet of record: one file per table partition, replaced atomically.

Layout: `parquet/<table>/<partition_column>=<value>/data.parquet` (hive-style) for partitioned
tables, `parquet/<table>/data.parquet` for the rest. A write stages every file of a
materialisation first (`.data.parquet.<pid>-<id>.tmp` beside its target) and only then commits
them as a set: a journal naming every rename (and every file to remove) is written and synced
first, so a run killed half-way through the renames is rolled forward by the next writer or
reader-facing refresh (`recover`). Readers therefore never stay on a mix of old and new files,
and staged files of runs that died before committing are removed.

Every commit moves the store's version on by one (`.version`), and its journal names the version
it was made against: a journal is only ever applied on that version, so an old journal can never
overwrite a newer commit. Recovery trusts nothing else in a journal either: its paths must be
relative, inside the store, and name our own data and staged files; anything else is reported and
left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from plannr_pipeline.storage import history
from plannr_pipeline.storage.sql import quote
from plannr_pipeline.storage.tables import Table

FILE_NAME = "data.parquet"
SPILL_PREFIX = ".commit-spill-"  # + "<pid>-<id>": where a commit's DuckDB spills
JOURNAL_GLOB = ".commit-*.json"
VERSION_FILE = ".version"
LOCK_TIMEOUT_SECONDS = 300


class UntrustedJournal(ValueError):
    """A commit journal that names something recovery must not touch."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class StagedWrite:
    """Collects a materialisation's files; `commit` renames them all into place."""

    def __init__(self, store: ParquetStore) -> None:
        self._store = store
        self._id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self._staged: dict[Path, Path] = {}  # target -> temp file
        self._removals: dict[Path, tuple[Table, str | None]] = {}
        self._places: dict[Path, tuple[Table, str | None]] = {}  # target -> (table, partition)

    def _stage(self, table: Table, partition: str | None) -> Path:
        """Name the temp file beside its target that the commit puts in the target's place."""
        target = self._store.path_of(table, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._places[target] = (table, partition)
        self._staged[target] = temp = target.with_name(f".{target.name}.{self._id}.tmp")
        return temp

    def _writer(self, table: Table, partition: str | None = None) -> pq.ParquetWriter:
        target, schema = self._store.path_of(table, partition), table.schema
        if target in self._writers:
            return self._writers[target]
        if (temp := self._staged.get(target)) is not None and temp.exists():
            # Closed to be read (by the commit, say) and now added to: a Parquet file cannot be
            # appended to, so it is written again with what it held first.
            held = pq.read_table(temp, schema=schema)
            writer = self._writers[target] = pq.ParquetWriter(temp, schema, compression="zstd")
            writer.write_table(held)
            return writer
        self._writers[target] = pq.ParquetWriter(self._stage(table, partition), schema, compression="zstd")
        return self._writers[target]

    def file_for(self, table: Table, partition: str | None = None) -> Path:
        """Stage a file that another writer (DuckDB's COPY) fills: the path to write it to."""
        return self._stage(table, partition)

    def discard(self, table: Table, partition: str | None = None) -> None:
        """Take a staged file out of this write, as if it had never been staged."""
        target = self._store.path_of(table, partition)
        if writer := self._writers.pop(target, None):
            writer.close()
        if temp := self._staged.pop(target, None):
            temp.unlink(missing_ok=True)
        self._places.pop(target, None)
        _remove_if_empty(target.parent)  # the partition folder it made

    def write(self, table: Table, rows: pa.Table, partitions: Iterable[str] = ()) -> None:
        """Append rows; for a partitioned table, name every partition this write replaces
        (those with no rows become empty files, so a partition that emptied is emptied)."""
        if table.partition_column is None:
            self._writer(table).write_table(rows)
            return
        for partition in partitions:
            self._writer(table, partition)
        if rows.num_rows == 0:
            return
        values = rows.column(table.partition_column)
        for partition in pc.unique(values).to_pylist():
            target = self._store.path_of(table, partition)
            if target not in self._writers:
                raise ValueError(
                    f"{table.name}: row for partition {partition!r}, which this write does not replace"
                )
            self._writers[target].write_table(rows.filter(pc.equal(values, partition)))

    @property
    def id(self) -> str:
        return self._id

    def remove(self, table: Table, partition: str | None = None) -> None:
        """Remove a stored partition (or table) in the same commit (a partition no longer configured)."""
        self._removals[self._store.path_of(table, partition)] = (table, partition)

    def targets(self) -> list[Path]:
        return list(self._staged)

    def _staged_of(self, table: Table) -> Iterator[tuple[Path, Path]]:
        """(target, temp file) of each file staged for a table, its writer closed."""
        folder = self._store.root / table.name
        for target, temp in list(self._staged.items()):
            if folder in target.parents:
                if writer := self._writers.pop(target, None):
                    writer.close()
                yield target, temp

    def staged_files_of(self, table: Table) -> list[Path]:
        """The staged (not yet committed) files of a table, closed and readable."""
        return [temp for _, temp in self._staged_of(table)]

    def drop_rows(self, table: Table, column: str, values: Collection[str]) -> pa.Table:
        """Take back staged rows whose `column` is one of `values` (records staged again in a
        newer copy); return the rows taken back. Rare, so each file is simply rewritten."""
        value_set = pa.array(sorted(values), pa.string())
        dropped = [table.schema.empty_table()]
        for target, temp in list(self._staged_of(table)):
            staged = pq.read_table(temp, schema=table.schema)
            hit = pc.fill_null(pc.is_in(staged.column(column), value_set=value_set), False)
            dropped.append(staged.filter(hit))
            writer = self._writers[target] = pq.ParquetWriter(temp, table.schema, compression="zstd")
            writer.write_table(staged.filter(pc.invert(hit)))
        return pa.concat_tables(dropped)

    def commit(self) -> list[Path]:
        """Commit the staged files as one set (taking the store's lock)."""
        with self._store.lock():
            return self.commit_locked()

    def commit_locked(self) -> list[Path]:
        """Commit with the store's lock already held (the commit protocol holds it throughout).
        A commit a killed process left half-done is finished first, never after this one."""
        for writer in self._writers.values():
            writer.close()  # closing twice is harmless
        self._writers.clear()
        self._store.land(self)
        return list(self._staged)

    def staged_files(self) -> list[tuple[Table, str | None, Path, Path]]:
        """(table, partition, target, staged file) of every file this write puts in place."""
        return [(*self._places[target], target, temp) for target, temp in self._staged.items()]

    def removals(self) -> list[tuple[Table, str | None, Path]]:
        """(table, partition, target) of every stored file this write removes."""
        return [(table, partition, target) for target, (table, partition) in sorted(self._removals.items())]

    def abort(self) -> None:
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # closing a half-written file may fail; it is deleted next
                pass
        for temp in self._staged.values():
            temp.unlink(missing_ok=True)
            _remove_if_empty(temp.parent)  # a partition folder this write made


def remove_dead_staged_files(root: Path) -> list[str]:
    """Remove the staged files and spill folders of runs that died before committing; say which."""
    done = []
    # os.walk, not Path.glob: other runs make and remove partition and spill folders while this
    # walks, and a folder gone mid-walk is skipped rather than raised (Path.glob raised it).
    for folder, subfolders, names in os.walk(root):
        for name in subfolders[:]:
            if name.startswith(SPILL_PREFIX):
                subfolders.remove(name)  # DuckDB's scratch files, never staged data
                if not _alive_owner(name.removeprefix(SPILL_PREFIX)):
                    shutil.rmtree(Path(folder, name), ignore_errors=True)
                    done.append(f"removed the spill folder of a run that died ({name})")
        for name in names:
            if name.startswith(f".{FILE_NAME}.") and name.endswith(".tmp"):
                if not _alive_owner(name.split(".")[-2]):
                    temp = Path(folder, name)
                    temp.unlink(missing_ok=True)
                    done.append(f"removed a staged file of a run that died ({temp.relative_to(root)})")
    return done


def spill_folder(root: Path) -> tempfile.TemporaryDirectory[str]:
    """A private (0700) folder in `root` for DuckDB to spill to, named so that `recover` can tell
    whether the run that made it still lives."""
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root, prefix=f"{SPILL_PREFIX}{os.getpid()}-")


def _alive_owner(tag: str) -> bool:
    """Whether the process in a `<pid>-<id>` tag still runs (a tag without one counts as alive)."""
    pid = tag.split("-")[0]
    return not pid.isdigit() or _alive(int(pid))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # it holds files (stored partitions, other writes' staged files)
        pass


def file_path(root: Path, table: Table, partition: str | None = None) -> Path:
    """Where a table's (partition's) file is kept under `root`: hive-style partition folders."""
    if table.partition_column is None:
        return root / table.name / FILE_NAME
    if partition is None:
        raise ValueError(f"{table.name} is partitioned by {table.partition_column}; name a partition")
    return root / table.name / f"{table.partition_column}={partition}" / FILE_NAME


class ParquetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_of(self, table: Table, partition: str | None = None) -> Path:
        return file_path(self.root, table, partition)

    def glob_of(self, table: Table) -> str:
        pattern = "*/" + FILE_NAME if table.partition_column else FILE_NAME
        return str(self.root / table.name / pattern)

    def files_of(self, table: Table) -> list[Path]:
        folder = self.root / table.name
        return sorted(folder.glob("*/" + FILE_NAME if table.partition_column else FILE_NAME))

    def version(self) -> int:
        """How many commits this store has taken (0 for a store older than versions)."""
        try:
            return int((self.root / VERSION_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _inside(self, relative: str, temp: bool) -> Path:
        """A journal's path, refused unless it is one of our files inside this store."""
        path = Path(relative)
        name_ok = (
            path.name.startswith(f".{FILE_NAME}.") and path.name.endswith(".tmp")
            if temp
            else path.name == FILE_NAME
        )
        if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or not name_ok:
            raise UntrustedJournal(relative)
        resolved = (self.root / path).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise UntrustedJournal(relative)  # through a symbolic link, out of the store
        return self.root / path

    def land(self, write: StagedWrite) -> None:
        """Put a write's staged files in place as one set (the lock held): a journal naming every
        rename and removal is synced first, so a kill half-way is rolled forward, never undone.
        A commit a killed process left half-done is finished first, never after this one."""
        self.recover_locked()
        staged = write.staged_files()
        for *_, temp in staged:
            _fsync(temp)
        journal = self.root / f".commit-{write.id}.json"
        journal.write_text(
            json.dumps(
                {
                    "base_version": self.version(),
                    "renames": [
                        [str(temp.relative_to(self.root)), str(target.relative_to(self.root))]
                        for *_, target, temp in staged
                    ],
                    "removals": [str(target.relative_to(self.root)) for *_, target in write.removals()],
                }
            )
        )
        _fsync(journal)
        self.apply_journal(journal)

    def apply_journal(self, journal: Path) -> str:
        """Carry out a commit's renames and removals, if it was made against the current version;
        safe to repeat after a crash. Returns what was done."""
        plan = json.loads(journal.read_text())
        renames = [(self._inside(t, temp=True), self._inside(d, temp=False)) for t, d in plan["renames"]]
        removals = [self._inside(p, temp=False) for p in plan["removals"]]
        base = plan["base_version"]
        if not isinstance(base, int):
            raise UntrustedJournal(f"base_version {base!r}")
        if base != self.version():
            # Made against an older version: a newer commit has landed since, and this one's
            # files must never replace it. Its staged files are simply dropped.
            for temp, _ in renames:
                temp.unlink(missing_ok=True)
            journal.unlink()
            return f"discarded a commit made against version {base}, older than the store's {self.version()} ({journal.name})"
        for temp, target in renames:
            if temp.exists():
                os.replace(temp, target)
        for path in removals:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # the partition folder, once empty
            except OSError:
                pass
        version_file = self.root / VERSION_FILE
        next_version = version_file.with_name(f"{VERSION_FILE}.{os.getpid()}.tmp")
        next_version.write_text(str(base + 1))
        _fsync(next_version)
        os.replace(next_version, version_file)
        journal.unlink()
        return f"rolled forward an interrupted commit ({journal.name})"

    def recover(self) -> list[str]:
        """Roll forward commits a killed run left half-done; remove staged files of dead runs.

        Returns what was done, for the caller to log.
        """
        if not self.root.exists():
            return []
        with self.lock():
            return self.recover_locked()

    def recover_locked(self) -> list[str]:
        """`recover` with the store's lock already held."""
        done = []
        for journal in sorted(self.root.glob(JOURNAL_GLOB), key=lambda path: path.stat().st_mtime):
            try:
                done.append(self.apply_journal(journal))
            except UntrustedJournal as refused:
                done.append(
                    f"left alone a commit journal recovery does not trust ({journal.name}: {refused}); "
                    "if you did not put it there, find out who did, then delete it"
                )
            except (ValueError, KeyError, TypeError):  # a journal cut short was never acted on
                journal.unlink()
                done.append(f"discarded an incomplete commit journal ({journal.name})")
        return done + remove_dead_staged_files(self.root)

    def partitions_of(self, table: Table) -> list[str]:
        """The partition values stored for a partitioned table."""
        prefix = f"{table.partition_column}="
        return sorted(path.parent.name.removeprefix(prefix) for path in self.files_of(table))

    def rows_of(self, table: Table) -> int:
        return sum(self.rows_in(path) for path in self.files_of(table))

    @staticmethod
    def rows_in(path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def rows_in_partition(self, table: Table, partition: str | None) -> int:
        return self.rows_in(self.path_of(table, partition))

    def has(self, table: Table) -> bool:
        """Whether anything of `table` is stored (an empty view stands in until then)."""
        return bool(self.files_of(table))

    def source_sql(self, table: Table) -> str:
        """SQL that reads `table` as stored, in a connection from `connect` (and in plannr.duckdb)."""
        return f"read_parquet({quote(self.glob_of(table))}, union_by_name = true, hive_partitioning = false)"

    @staticmethod
    def connect() -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for reading `source_sql` (and staged files)."""
        return duckdb.connect()

    scratch = connect  # a private connection either way: history's settings stay its own

    def compact_log(self, log_table: Table) -> int:
        """Fold a long history log's small files into one, a commit of its own (the lock held);
        return how many were folded."""
        folded = history.files_to_fold(self.files_of(log_table))
        if not folded:
            return 0
        write = StagedWrite(self)
        out = write.file_for(log_table, f"folded-{write.id}")
        before = sum(pq.ParquetFile(f).metadata.num_rows for f in folded)
        if history.fold(folded, out) != before:  # never trade events for fewer files
            write.abort()
            raise RuntimeError(f"folding {log_table.name} lost events; nothing was changed")
        for path in folded:
            write.remove(log_table, path.parent.name.split("=", 1)[1])
        write.commit_locked()
        return len(folded)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialises commits between processes: a commit decides, records history and renames
        while holding it, so what it decides against is what is stored when it lands."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".write.lock"))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_SECONDS)
        except Timeout:
            raise TimeoutError(
                f"another process has held the commit lock of {self.root} for {LOCK_TIMEOUT_SECONDS} s; "
                "nothing was replaced. A lock is let go when its process ends, so a process is still "
                "running there: find it (a sync, a Dagster run) and let it finish or stop it."
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def staged(self) -> Iterator[StagedWrite]:
        write = StagedWrite(self)
        try:
            yield write
        except BaseException:
            write.abort()
            raise
        write.commit()

    def read(
        self, table: Table, partitions: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        if table.partition_column and partitions is not None:
            files = [self.path_of(table, p) for p in partitions]
        else:
            files = self.files_of(table)
        files = [f for f in files if f.exists()]
        if not files:
            return table.schema.empty_table().select(columns) if columns else table.schema.empty_table()
        return pa.concat_tables(pq.read_table(f, columns=columns, schema=table.schema) for f in files)
