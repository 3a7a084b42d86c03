"""Read what a sync stored, from either backend: the local store's `plannr.duckdb`, or the lake
attached read-only as an analyst would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import duckdb

from plannr_pipeline.defs.resources import PlannrStorage
from plannr_pipeline.local_servers import Lake
from plannr_pipeline.storage.lake import ALIAS, LakeSettings, open_lake

_READERS: dict[str, duckdb.DuckDBPyConnection] = {}  # catalog -> a reader kept open


@dataclass(frozen=True)
class StoredData:
    data_dir: Path
    lake: Lake | None = None

    @property
    def backend(self) -> str:
        return "lake" if self.lake else "local"

    def storage(self) -> PlannrStorage:
        if self.lake is None:
            return PlannrStorage(data_dir=str(self.data_dir))
        return PlannrStorage(
            data_dir=str(self.data_dir), lake_catalog=self.lake.catalog, lake_data=self.lake.data
        )

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        if self.lake is None:
            with duckdb.connect(str(self.data_dir / "plannr.duckdb"), read_only=True) as connection:
                return connection.execute(sql, params or []).fetchall()
        if self.lake.catalog not in _READERS:  # kept open: each query still reads the newest snapshot
            with mock.patch.dict(os.environ, self.lake.env):
                _READERS[self.lake.catalog] = open_lake(
                    LakeSettings(self.lake.catalog, self.lake.data), os.environ, read_only=True
                )
            _READERS[self.lake.catalog].execute(f"USE {ALIAS}")
        with _READERS[self.lake.catalog].cursor() as connection:
            connection.execute(f"USE {ALIAS}")
            return connection.execute(sql, params or []).fetchall()

    @staticmethod
    @contextmanager
    def analyst(lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
        """The lake attached read-only, as an analyst has it."""
        with mock.patch.dict(os.environ, lake.env):
            connection = open_lake(LakeSettings(lake.catalog, lake.data), os.environ, read_only=True)
        try:
            connection.execute(f"USE {ALIAS}")
            yield connection
        finally:
            connection.close()
