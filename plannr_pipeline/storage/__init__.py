"""Typed tables, normalisers, atomic Parquet writes and DuckDB views. Knows nothing of HTTP."""
