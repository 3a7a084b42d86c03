"""The one interface the commit protocol, the views and the checks use to reach stored data.

Two backends implement it:
- `ParquetStore` (parquet_store.py): a local folder of Parquet files with this project's own
  journal; the zero-config default.
- `LakeStore` (lake.py): DuckLake, a table format with real transactions (a Postgres catalog,
  Parquet on S3-compatible storage), for workers on several machines.

Either way a write is staged as local Parquet files (`StagedWrite`) and `land` puts them in place
as one set while the commit holds `lock`.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import duckdb
import pyarrow as pa

from plannr_pipeline.storage.tables import Table

if TYPE_CHECKING:
    from plannr_pipeline.storage.parquet_store import StagedWrite


class Store(Protocol):
    root: Path  # the local folder a write stages its files in

    def path_of(self, table: Table, partition: str | None = None) -> Path:
        """Where a staged file of this table (partition) is kept until it lands."""
        ...

    def lock(self) -> AbstractContextManager[None]:
        """Held by a commit from its first read to its last write: one commit at a time per store,
        whichever process or machine it runs on."""
        ...

    def recover(self) -> list[str]:
        """Finish or discard what a killed writer left; say what was done."""
        ...

    def recover_locked(self) -> list[str]: ...

    def land(self, write: StagedWrite) -> None:
        """Put every staged file of `write` in place, and its removals, as one set (lock held)."""
        ...

    def read(
        self, table: Table, partitions: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pa.Table: ...

    def rows_of(self, table: Table) -> int: ...

    def rows_in_partition(self, table: Table, partition: str | None) -> int: ...

    def partitions_of(self, table: Table) -> list[str]: ...

    def has(self, table: Table) -> bool: ...

    def source_sql(self, table: Table) -> str:
        """SQL that reads `table` as stored, in a connection from `connect`."""
        ...

    def connect(self) -> duckdb.DuckDBPyConnection: ...

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """A connection that can read `source_sql`, whose settings (one thread, for memory) touch
        no other connection: the history's work."""
        ...

    def compact_log(self, log_table: Table) -> int:
        """Keep a history log from growing into many small files; return how many were merged."""
        ...
