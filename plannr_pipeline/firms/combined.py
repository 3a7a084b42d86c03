"""Across firms, read-only: one DuckDB file where a network compares its firms in one query.

Each firm has a schema of its own (`acme.clients`, `acme.goal_progress`, ...) holding exactly
the relations of its own `plannr.duckdb`: its tables, their history and the analyst views, read
from its Parquet of record (never from the firm's database file, which a running sync may hold).
The default schema holds every one of those relations once more, across firms, each with a
`firm` column first: `select firm, count(*) from goal_progress group by firm`.

An analyst view is built inside each firm's schema and only then put side by side with the
other firms', so its joins never pair one firm's goals with another firm's clients.

The file is written whole into a new file and renamed over the old one: an analyst with it open
keeps the copy they opened (its views still read the current Parquet), the next session sees the
new one, and a sync never waits for an analyst nor an analyst for a sync.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

from plannr_pipeline.firms.settings import FirmSettings
from plannr_pipeline.storage.catalog import Relation
from plannr_pipeline.storage.warehouse import CONNECT_CONFIG, Warehouse

COMBINED_FILE = "firms.duckdb"
FIRM_COLUMN = "The firm (its firm file's slug) this row belongs to."


def across_firms(relation: Relation, slugs: list[str]) -> Relation:
    """`relation` over every firm's schema, with `firm` first."""
    union = " UNION ALL BY NAME ".join(
        f'SELECT \'{slug}\' AS firm, * FROM "{slug}"."{relation.name}"' for slug in slugs
    )
    return Relation(
        relation.name,
        f'CREATE OR REPLACE VIEW "{relation.name}" AS {union}',
        f"{relation.description} Every firm's rows, with the firm's slug in `firm`.",
        {"firm": FIRM_COLUMN, **relation.column_comments},
    )


def write_combined(firms: list[FirmSettings], path: Path) -> list[str]:
    """(Re)write `path` with each firm's schema and the relations across firms; returns the
    names of the relations across firms."""
    path.parent.mkdir(parents=True, exist_ok=True)
    slugs = [firm.slug for firm in firms]
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    relations: list[Relation] = []
    try:
        # The format DuckDB's command-line client reads, as for each firm's own database.
        with duckdb.connect(str(temp), config=CONNECT_CONFIG) as db:
            for firm in firms:
                relations = Warehouse(Path(firm.folder()).absolute()).relations()
                db.execute(f'CREATE SCHEMA "{firm.slug}"')
                db.execute(f"SET schema = '{firm.slug}'")  # the firm's views bind to its own tables
                for relation in relations:
                    for statement in relation.statements():
                        db.execute(statement)
            db.execute("SET schema = 'main'")
            for relation in relations:  # every firm has the same relations
                for statement in across_firms(relation, slugs).statements():
                    db.execute(statement)
        os.replace(temp, path)
    finally:
        for leftover in (temp, temp.with_name(temp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return [relation.name for relation in relations]
