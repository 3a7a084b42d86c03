"""Plannr CRM data as Dagster assets: Parquet of record, DuckDB for queries."""
