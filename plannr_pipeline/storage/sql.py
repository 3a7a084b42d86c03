"""SQL text this package builds for DuckDB: literals, and reading a set of Parquet files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def quote(text: str) -> str:
    """A SQL string literal (paths, names) where DuckDB takes no parameter."""
    return "'" + text.replace("'", "''") + "'"


def read_parquet(files: Iterable[Path]) -> str:
    """`read_parquet` over exactly these files: columns matched by name (older files may lack
    later columns), no partition columns guessed from their folders."""
    listed = ", ".join(quote(str(f)) for f in files)
    return f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
