"""Parquet of record: one file per table partition, replaced atomically.

Layout: `parquet/<table>/<partition_column>=<value>/data.parquet` (hive-style) for partitioned
tables, `parquet/<table>/data.parquet` for the rest. A write stages every file of a
materialisation first (`.data.parquet.<pid>-<id>.tmp` beside its target) and only then commits
them as a set: a journal naming every rename (and every file to remove) is written and synced
first, so a run killed half-way through the renames is rolled forward by the next writer or
reader-facing refresh (`recover`). Readers therefore never stay on a mix of old and new files,
and staged files of runs that died before committing are removed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from plannr_pipeline.storage.tables import Table

FILE_NAME = "data.parquet"
JOURNAL_GLOB = ".commit-*.json"


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
        self._removals: set[Path] = set()

    def _stage(self, target: Path) -> Path:
        """Name the temp file beside `target` that its commit renames into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        self._staged[target] = temp = target.with_name(f".{target.name}.{self._id}.tmp")
        return temp

    def _writer(self, target: Path, schema: pa.Schema) -> pq.ParquetWriter:
        if target not in self._writers:
            self._writers[target] = pq.ParquetWriter(self._stage(target), schema, compression="zstd")
        return self._writers[target]

    def file_for(self, table: Table, partition: str | None = None) -> Path:
        """Stage a file that another writer (DuckDB's COPY) fills: the path to write it to."""
        return self._stage(self._store.path_of(table, partition))

    def discard(self, table: Table, partition: str | None = None) -> None:
        """Take a staged file out of this write, as if it had never been staged."""
        target = self._store.path_of(table, partition)
        if writer := self._writers.pop(target, None):
            writer.close()
        if temp := self._staged.pop(target, None):
            temp.unlink(missing_ok=True)
        _remove_if_empty(target.parent)  # the partition folder it made

    def write(self, table: Table, rows: pa.Table, partitions: Iterable[str] = ()) -> None:
        """Append rows; for a partitioned table, name every partition this write replaces
        (those with no rows become empty files, so a partition that emptied is emptied)."""
        if table.partition_column is None:
            self._writer(self._store.path_of(table), table.schema).write_table(rows)
            return
        for partition in partitions:
            self._writer(self._store.path_of(table, partition), table.schema)
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

    def remove(self, target: Path) -> None:
        """Remove a stored file in the same commit (a partition no longer configured)."""
        self._removals.add(target)

    def targets(self) -> list[Path]:
        return list(self._staged)

    def _staged_of(self, table: Table) -> Iterator[tuple[Path, Path]]:
        """(target, temp file) of each file staged for a table, its writer closed."""
        folder = self._store.root / table.name
        for target, temp in self._staged.items():
            if folder in target.parents:
                if writer := self._writers.get(target):
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
        for writer in self._writers.values():
            writer.close()  # closing twice is harmless
        for temp in self._staged.values():
            _fsync(temp)
        with self._store.lock():
            journal = self._store.root / f".commit-{self._id}.json"
            journal.write_text(
                json.dumps(
                    {
                        "renames": [[str(temp), str(target)] for target, temp in self._staged.items()],
                        "removals": [str(path) for path in sorted(self._removals)],
                    }
                )
            )
            _fsync(journal)
            self._store.apply_journal(journal)
        return list(self._staged)

    def abort(self) -> None:
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # closing a half-written file may fail; it is deleted next
                pass
        for temp in self._staged.values():
            temp.unlink(missing_ok=True)
            _remove_if_empty(temp.parent)  # a partition folder this write made


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # it holds files (stored partitions, other writes' staged files)
        pass


class ParquetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_of(self, table: Table, partition: str | None = None) -> Path:
        if table.partition_column is None:
            return self.root / table.name / FILE_NAME
        if partition is None:
            raise ValueError(f"{table.name} is partitioned by {table.partition_column}; name a partition")
        return self.root / table.name / f"{table.partition_column}={partition}" / FILE_NAME

    def glob_of(self, table: Table) -> str:
        pattern = "*/" + FILE_NAME if table.partition_column else FILE_NAME
        return str(self.root / table.name / pattern)

    def files_of(self, table: Table) -> list[Path]:
        folder = self.root / table.name
        return sorted(folder.glob("*/" + FILE_NAME if table.partition_column else FILE_NAME))

    def apply_journal(self, journal: Path) -> None:
        """Carry out a commit's renames and removals; safe to repeat after a crash."""
        plan = json.loads(journal.read_text())
        for temp, target in plan["renames"]:
            if Path(temp).exists():
                os.replace(temp, target)
        for path in plan["removals"]:
            Path(path).unlink(missing_ok=True)
            try:
                Path(path).parent.rmdir()  # the partition folder, once empty
            except OSError:
                pass
        journal.unlink()

    def recover(self) -> list[str]:
        """Roll forward commits a killed run left half-done; remove staged files of dead runs.

        Returns what was done, for the caller to log.
        """
        if not self.root.exists():
            return []
        done = []
        with self.lock():
            for journal in sorted(self.root.glob(JOURNAL_GLOB)):
                try:
                    self.apply_journal(journal)
                    done.append(f"rolled forward an interrupted commit ({journal.name})")
                except (ValueError, KeyError):  # a journal cut short was never acted on
                    journal.unlink()
                    done.append(f"discarded an incomplete commit journal ({journal.name})")
            for temp in self.root.glob("**/.data.parquet.*.tmp"):
                pid = temp.name.split(".")[-2].split("-")[0]
                if pid.isdigit() and not _alive(int(pid)):
                    temp.unlink(missing_ok=True)
                    done.append(f"removed a staged file of a run that died ({temp.relative_to(self.root)})")
        return done

    def partitions_of(self, table: Table) -> list[str]:
        """The partition values stored for a partitioned table."""
        prefix = f"{table.partition_column}="
        return sorted(path.parent.name.removeprefix(prefix) for path in self.files_of(table))

    @staticmethod
    def rows_in(path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialises commits and read-modify-write merges between processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".write.lock"), timeout=300):
            yield

    @contextmanager
    def history_lock(self, table: Table) -> Iterator[None]:
        """Held from reading a table's history to committing its new events, so two writes of
        the same records cannot both record the same change."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{table.name}.history.lock"), timeout=600):
            yield

    @contextmanager
    def merge_lock(self, table: Table) -> Iterator[None]:
        """Held across a read-merge-write of one table, so two merges cannot lose each other's rows."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{table.name}.merge.lock"), timeout=600):
            yield

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
