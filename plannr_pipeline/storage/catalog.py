"""What `plannr.duckdb` holds against what it should hold: which relations need writing.

The database is written only when a relation's definition changes (it is new, an empty-shaped
view gains files to read, the data folder moved, a release changed a column or a comment). New
Parquet files need no write: views read them through globs at query time. Every write of the
database needs its write lock, which any analyst's open session (even read-only) denies, so
writing only on change is what keeps a reader from blocking a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from plannr_pipeline.storage.sql import quote


@dataclass(frozen=True)
class Relation:
    """One view an analyst queries: its definition and the comments that document it."""

    name: str
    create_sql: str  # CREATE OR REPLACE VIEW "<name>" AS <query>
    description: str
    column_comments: dict[str, str] = field(default_factory=dict)

    def statements(self) -> list[str]:
        return [
            self.create_sql,
            f'COMMENT ON VIEW "{self.name}" IS {quote(self.description)}',
            *(
                f'COMMENT ON COLUMN "{self.name}"."{column}" IS {quote(text)}'
                for column, text in self.column_comments.items()
            ),
        ]


@dataclass(frozen=True)
class Stored:
    """The views a database holds (their SQL as DuckDB renders it, their comments), and whether
    it holds anything else (a user's own table or view, which a rebuilt file would lose)."""

    sql: dict[str, str]
    comments: dict[str, str | None]
    column_comments: dict[str, dict[str, str | None]]
    others: list[str]


def read_stored(connection: duckdb.DuckDBPyConnection, ours: set[str]) -> Stored:
    views = connection.execute(
        "SELECT view_name, sql, comment FROM duckdb_views() WHERE NOT internal AND database_name = current_database()"
    ).fetchall()
    tables = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()
    columns: dict[str, dict[str, str | None]] = {}
    for table, column, comment in connection.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE database_name = current_database()"
    ).fetchall():
        columns.setdefault(table, {})[column] = comment
    return Stored(
        sql={name: sql for name, sql, _ in views},
        comments={name: comment for name, _, comment in views},
        column_comments=columns,
        others=sorted({name for name, _, _ in views} - ours | {name for (name,) in tables}),
    )


_CREATE = re.compile(
    r'^\s*CREATE (?:OR REPLACE )?VIEW\s+(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_]*)\s+AS\s+', re.S | re.I
)


def normalised(connection: duckdb.DuckDBPyConnection, create_sql: str | None) -> str | None:
    """A view's query as DuckDB prints it after a parse, or None if it cannot be parsed.

    DuckDB stores its own rendering of a view's query, not the text given, and that rendering
    differs between releases (1.5 quotes `"TIMESTAMP WITH TIME ZONE"`, its parser's printer does
    not). So both sides of a comparison go through the same parse and print round trip, which
    never binds the query (binding would open every Parquet file the view reads)."""
    if create_sql is None:
        return None
    query = _CREATE.sub("", create_sql, count=1).rstrip().removesuffix(";")
    try:
        (text,) = connection.execute("SELECT json_deserialize_sql(json_serialize_sql(?))", [query]).fetchone()
    except duckdb.Error:
        return None
    return text


def changed(connection: duckdb.DuckDBPyConnection, wanted: list[Relation], stored: Stored) -> list[Relation]:
    """The relations whose view or comments differ from what is stored (all, for a new file)."""
    out = []
    for relation in wanted:
        if (
            (wanted_sql := normalised(connection, relation.create_sql)) is None
            or normalised(connection, stored.sql.get(relation.name)) != wanted_sql
            or stored.comments.get(relation.name) != relation.description
            or any(
                stored.column_comments.get(relation.name, {}).get(column) != text
                for column, text in relation.column_comments.items()
            )
        ):
            out.append(relation)
    return out
