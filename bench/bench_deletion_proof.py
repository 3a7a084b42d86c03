"""What proving deletions costs: a sync, the sandbox moved on, a second sync; requests by route.

A record missing from a full listing is only recorded deleted once the API's show route answers
404 for it (a listing that shifts while it is paged can skip a live record). This prints, for a
firm of --clients, the second sync's requests by route against the floor (pages of 500 per
listing plus one goals request per client) and how many deletions it recorded.

    .venv/bin/python bench/bench_deletion_proof.py [--clients 1000] [--steps 24]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer


def sync(sandbox: SandboxServer, folder: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PLANNR_", "DAGSTER_"))},
        "PLANNR_BASE_URL": sandbox.url,
        "PLANNR_API_TOKEN": sandbox.options.token,
        "PLANNR_DATA_DIR": str(folder / "data"),
        "DAGSTER_HOME": str(folder / "home"),
        "PLANNR_RATE_LIMIT_PER_MINUTE": "100000",
        "PLANNR_MAX_CONCURRENCY": "32",
    }
    done = subprocess.run(
        [sys.executable, "-m", "plannr_pipeline.cli", "sync"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=24, help="hours of change between the two syncs")
    args = parser.parse_args()
    options = SandboxOptions(
        size=FirmSize(clients=args.clients), token="bench", rate_limit_per_minute=1_000_000
    )
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(options) as sandbox:
        folder = Path(tmp)
        sync(sandbox, folder)
        changes = sandbox.advance(args.steps)
        before = sandbox.stats()["by_endpoint"]
        sync(sandbox, folder)
        after = sandbox.stats()["by_endpoint"]
        served = {
            route: after[route] - before.get(route, 0)
            for route in after
            if after[route] != before.get(route, 0)
        }
        clients = len(sandbox.firm.clients)
        pages = sum(n for route, n in served.items() if "{uuid}" not in route)
        floor = pages + clients
        checks = sum(
            n for route, n in served.items() if route in ("/api/v1/client/{uuid}", "/api/v1/task/{uuid}")
        )
        with duckdb.connect(str(folder / "data" / "plannr.duckdb"), read_only=True) as db:
            recorded = {
                table: db.execute(
                    f"select count(*) from {table}_history where deleted_at is not null"
                ).fetchone()[0]
                for table in ("clients", "tasks")
            }
        # Records created and deleted between the two syncs were never stored: nothing to record.
        deleted = {
            kind: len(
                {u for step in changes for u in step[kind]["deleted"]}
                - {u for step in changes for u in step[kind]["created"]}
            )
            for kind in ("clients", "tasks")
        }
        print(f"{args.clients:,} clients, {args.steps} steps of change between the syncs")
        for route, count in sorted(served.items()):
            print(f"  {route:<32} {count:>6,}")
        print(f"  floor {floor:,}; show-route checks {checks:,} (+{checks / floor:.1%})")
        print(f"  stored then deleted in the sandbox {deleted}; recorded deleted {recorded}")


if __name__ == "__main__":
    main()
