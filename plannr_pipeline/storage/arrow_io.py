"""Arrow in and out without `pyarrow.dataset`.

Importing `pyarrow.dataset` costs a process about 60 MB of RSS (34 MB of it anonymous: Acero
and the dataset machinery set themselves up), and two everyday calls import it behind your back:
`pq.read_table`, which reads even one file as a dataset, and handing DuckDB a pyarrow object,
whose type DuckDB tells by checking it against the dataset classes too. A sync needs neither: a
file of ours is read with `ParquetFile`, and DuckDB is handed the Arrow C stream itself.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet_file(path: Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as `schema` (or its `columns`, in that order): columns the file lacks
    (written before they existed) come back null, and the rest are cast to the schema's types."""
    parquet = pq.ParquetFile(path)
    wanted = columns if columns is not None else schema.names
    held = set(parquet.schema_arrow.names)
    rows = parquet.read(columns=[name for name in wanted if name in held])
    fields = [schema.field(name) for name in wanted]
    # pa.table casts each column to its field's type.
    return pa.table(
        [rows.column(f.name) if f.name in held else pa.nulls(rows.num_rows, f.type) for f in fields],
        schema=pa.schema(fields),
    )


def register_scanned_once(db: duckdb.DuckDBPyConnection, name: str, rows: pa.Table) -> None:
    """Make `rows` queryable as `name` for one scan: a stream is used up by the query that reads
    it (a second scan fails loudly), so name it in one query once, or register it again."""
    db.register(name, rows.__arrow_c_stream__())
