"""The peer: dlt's `rest_api` source loading the collections the sync loads, into DuckDB.

Tuned per dlt's performance guide: every resource parallelized (the goals transformer too, one
deferred fetch per client), 32 extract workers, parquet loader files. Laravel page-number
paging (`page`, `meta.last_page`, `per_page=500`) and a Bearer token. The paths and filters
come from `plannr_pipeline.api.endpoints`, so both sides ask for the same things.

    python bench/dlt_peer.py --base-url URL --token T --data-dir DIR [--workers 32]

Prints one line `ROWS {json}`: rows per table in the DuckDB file, nested tables included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def rest_api_config(base_url: str, token: str) -> dict:
    from plannr_pipeline.api import endpoints as e

    def listing(name: str, endpoint: e.Endpoint) -> dict:
        return {
            "name": name,
            "endpoint": {"path": endpoint.path, "params": {**endpoint.params, "per_page": e.PAGE_SIZE}},
        }

    return {
        "client": {
            "base_url": base_url,
            "auth": {"type": "bearer", "token": token},
            "paginator": {
                "type": "page_number",
                "base_page": 1,
                "page_param": "page",
                "total_path": "meta.last_page",
            },
        },
        "resource_defaults": {
            "primary_key": "uuid",
            "write_disposition": "replace",
            "parallelized": True,
            "endpoint": {"data_selector": "data"},
        },
        "resources": [
            listing("clients", e.CLIENTS),
            listing("staff", e.STAFF),
            {
                "name": "goals",
                "endpoint": {
                    "path": "/api/v1/client/{resources.clients.uuid}/goal",
                    "params": {**e.GOALS_INCLUDE, "per_page": e.PAGE_SIZE},
                },
                "include_from_parent": ["uuid"],
            },
            listing("circles", e.CIRCLES),
            listing("tasks", e.TASKS),
            listing("imports", e.IMPORTS),
        ],
    }


def configure(data_dir: str, workers: int) -> None:
    """dlt reads its configuration from the environment: call before importing it."""
    os.environ.setdefault("EXTRACT__WORKERS", str(workers))
    os.environ.setdefault("EXTRACT__MAX_PARALLEL_ITEMS", str(workers))
    os.environ.setdefault(
        "NORMALIZE__WORKERS", "1"
    )  # 2 cores: a second normaliser process costs more than it saves
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ["DLT_DATA_DIR"] = os.path.join(data_dir, ".dlt")


def pipeline_and_source(base_url: str, token: str, data_dir: str):
    """(the dlt pipeline into `data_dir`/plannr_dlt.duckdb, the rest_api source), as both peers run them."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    pipeline = dlt.pipeline(
        pipeline_name="plannr_dlt",
        destination=dlt.destinations.duckdb(database_path(data_dir)),
        dataset_name="plannr",
        pipelines_dir=os.path.join(data_dir, ".dlt", "pipelines"),
    )
    return pipeline, rest_api_source(rest_api_config(base_url, token))


def database_path(data_dir: str) -> str:
    return os.path.join(data_dir, "plannr_dlt.duckdb")


def print_rows(data_dir: str) -> None:
    """One line `ROWS {json}`: rows per table landed, nested tables included."""
    import duckdb

    with duckdb.connect(database_path(data_dir), read_only=True) as db:
        tables = [
            row[0]
            for row in db.execute(
                "select table_name from information_schema.tables where table_schema = 'plannr' and table_name not like '_dlt%'"
            ).fetchall()
        ]
        rows = {
            table: db.execute(f'select count(*) from plannr."{table}"').fetchone()[0]
            for table in sorted(tables)
        }
    print("ROWS " + json.dumps(rows), flush=True)


def arguments(description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--workers", type=int, default=32)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    configure(args.data_dir, args.workers)
    pipeline, source = pipeline_and_source(args.base_url, args.token, args.data_dir)
    pipeline.run(source, loader_file_format="parquet")
    print_rows(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
