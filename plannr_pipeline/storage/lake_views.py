"""The relations an analyst queries, kept inside the lake itself.

A DuckDB file of views cannot carry an ATTACH, so on the lake the views live in the DuckLake
catalog beside the tables: whoever attaches the lake (the `duckdb` resource, the command-line
client with `lake-sql`'s SQL) finds `<table>_history` and the analyst views there. Their SQL names
relations unqualified, so the lake works under any name it is attached as. Every table is
created up front, so every relation exists (empty) before its first write, as locally.
"""

from __future__ import annotations

import logging

import duckdb

from plannr_pipeline.storage import catalog, history
from plannr_pipeline.storage.catalog import Relation
from plannr_pipeline.storage.lake import ALIAS, LakeStore, lake_name, transaction
from plannr_pipeline.storage.tables import ALL_TABLES, TABLES
from plannr_pipeline.storage.views import ANALYST_VIEWS

log = logging.getLogger(__name__)


def lake_relations() -> list[Relation]:
    """The views to keep in the lake. DuckLake stores a view's comment but not its columns'
    (those are in the data dictionary, and on the tables)."""
    relations = []
    for name in history.HISTORY_OF:
        table, log_table = TABLES[name], history.history_table(TABLES[name])
        log = f'"{lake_name(log_table)}"'
        relations.append(Relation(log_table.name, history.view_sql(table, log), log_table.description))
    relations += [Relation(view.name, view.create_sql, view.description) for view in ANALYST_VIEWS]
    return relations


def refresh_lake_views(store: LakeStore) -> str | None:
    """Create the tables not there yet and write the views whose definition changed, under the
    lake's commit lock (a catalog change is a commit like any other). Return why not, if the lake
    could not be reached or the lock was not had: the data landed, and the next refresh tries again."""
    wanted = lake_relations()
    try:
        with store.lock(), store.connect() as db:
            store.ensure((*ALL_TABLES, *(history.history_table(TABLES[name]) for name in history.HISTORY_OF)))
            db.execute(f"USE {ALIAS}")
            stale = catalog.changed(db, wanted, catalog.read_stored(db, {r.name for r in wanted}))
            if stale:
                with transaction(db):
                    for relation in stale:
                        for statement in relation.statements():
                            db.execute(statement)
    except (duckdb.Error, TimeoutError) as error:
        reason = f"views in the lake not refreshed ({str(error).splitlines()[0]}); the tables hold the data"
        log.warning(reason)
        return reason
    return None
