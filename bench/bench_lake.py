"""A full `plannr-pipeline sync` into the lake against the same sync into the local store.

One sandbox process per size (25 ms latency, budget lifted, the issue's firm shape: see
bench_sync.py), then, each in a process group of its own with fresh folders:

1. `plannr-pipeline sync` into the local store;
2. the same into a new DuckLake (PostgreSQL catalog and moto's S3 server on loopback, started
   here as the tests start them: plannr_pipeline/local_servers.py).

Each is measured for wall time and peak RSS (the sync's process group, sampled every 50 ms; the
catalog and S3 servers are separate processes, reported at the end, not in the sync's figure).
Both must land the same rows; the target is the lake at most 1.5x the local store's wall time.
Last, what opening the lake costs on its own: the RSS a process that has imported what a sync
imports, and used DuckDB as the local store does, gains by loading the extensions and attaching
the catalog (both connections a sync opens).

    .venv/bin/python bench/bench_lake.py [--clients 10000] [--out bench/LAKE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from bench_sync import UNLIMITED, Sandbox, _group_rss, mb, run_measured, sync_env, sync_rows  # noqa: E402

from plannr_pipeline.local_servers import LocalServers  # noqa: E402

# Run with the lake's variables set, after the lake sync: prints RSS in MB before opening the lake
# (DuckDB already loaded and used, as in any sync), after the sync's connection has counted a
# table, after its second (read-only) connection too.
OPENING_COST = """
import os, sys
from pathlib import Path

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

import duckdb
import plannr_pipeline.cli, plannr_pipeline.sync  # what a sync has loaded before it opens a store
from plannr_pipeline.storage.lake import LakeSettings, LakeStore

# What the local store's sync pays too: a DuckDB connection that has written and read Parquet.
plain = duckdb.connect()
sample = Path(sys.argv[1]) / "sample.parquet"
plain.execute(f"COPY (SELECT range AS n, range::VARCHAR AS s FROM range(100000)) TO '{sample}'")
plain.execute(f"SELECT count(*), max(s) FROM '{sample}'").fetchall()
before = rss()
store = LakeStore(LakeSettings.from_env(), Path(sys.argv[1]))
store.connect().execute("SELECT count(*) FROM plannr.clients").fetchall()
opened = rss()
store.scratch().execute("SELECT count(*) FROM plannr.clients").fetchall()
print(f"{before:.1f} {opened:.1f} {rss():.1f}")
"""


def opening_cost(env: dict[str, str], staging: Path) -> tuple[float, float, float]:
    staging.mkdir(parents=True)
    said = subprocess.run(
        [sys.executable, "-c", OPENING_COST, str(staging)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    before, opened, both = (float(x) for x in said.stdout.split())
    return before, opened, both


def run(label: str, sandbox: Sandbox, workdir: Path, extra: dict[str, str]) -> dict:
    workdir.mkdir(parents=True)
    env = {**sync_env(sandbox.url, workdir, UNLIMITED), **extra}
    measured = run_measured([sys.executable, "-m", "plannr_pipeline.cli", "sync"], env, workdir / "sync.log")
    if measured.returncode != 0:
        raise SystemExit(f"{label} sync failed ({measured.returncode}):\n{measured.output[-3000:]}")
    rows, requests = sync_rows(measured.output)
    return {"label": label, "measured": measured, "rows": rows, "requests": requests}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=BENCH / "LAKE.md")
    args = parser.parse_args()
    servers = LocalServers()
    sandbox = Sandbox(args.clients, UNLIMITED, "issue")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-lake-") as folder:
            local = run("local store", sandbox, Path(folder) / "local", {})
            lake = servers.new_lake()
            in_lake = run("lake", sandbox, Path(folder) / "lake", lake.env)
            lake_env = {**sync_env(sandbox.url, Path(folder) / "probe", UNLIMITED), **lake.env}
            before, opened, both = opening_cost(lake_env, Path(folder) / "probe")
            server_rss = sum(_group_rss(p.pid)[0] for p in servers.processes.values()) / 2**20
            objects = len(servers.objects(lake))
    finally:
        sandbox.stop()
        servers.stop()
    # The sandbox's imports progress on its clock between the two syncs (an import that fails in
    # between brings its error rows to the second sync alone): those relations are reported, not compared.
    moving = {name for name in local["rows"] if name.startswith("import")}
    compared = {name: rows for name, rows in local["rows"].items() if name not in moving}
    if compared != {name: rows for name, rows in in_lake["rows"].items() if name not in moving}:
        raise SystemExit(f"the two syncs landed different rows:\n{local['rows']}\n{in_lake['rows']}")
    ratio = in_lake["measured"].seconds / local["measured"].seconds
    moving_rows = ", ".join(f"{n} {local['rows'][n]:,} / {in_lake['rows'][n]:,}" for n in sorted(moving))
    lines = [
        f"# Lake against local store: {args.clients:,} clients",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores), "
        f"`bench/bench_lake.py --clients {args.clients}`; sandbox at 25 ms latency, budget lifted.",
        "",
        "| store | wall time | peak RSS (sync's processes) | largest process | API requests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in (local, in_lake):
        m = result["measured"]
        lines.append(
            f"| {result['label']} | {m.seconds:.1f} s | {mb(m.tree_peak_mb)} | {mb(m.process_peak_mb)} | "
            f"{result['requests']:,} |"
        )
    lines += [
        "",
        f"Lake / local wall time: **{ratio:.2f}x** (target: at most 1.5x). Both landed the same rows "
        f"({sum(compared.values()):,} across {len(compared)} relations; of the imports', which move "
        f"with the sandbox's clock between the syncs: "
        f"{moving_rows}). The lake held "
        f"{objects:,} objects in its bucket after the sync; the catalog (PostgreSQL) and S3 (moto) "
        f"servers used {server_rss:.0f} MB between them at the end, outside the sync's figure.",
        "",
        f"Opening the lake alone, in a process that has imported what a sync imports and used DuckDB ({before:.0f} MB): "
        f"+{opened - before:.0f} MB for the extensions, the S3 secret and the catalog attached (one count "
        f"read), +{both - before:.0f} MB with the history's second, read-only connection. A lake sync holds "
        f"this on top of what the local store's sync holds ({local['measured'].tree_peak_mb:.0f} MB at its "
        f"peak here): {local['measured'].tree_peak_mb + both - before:.0f} MB before the lake's own commits cost anything.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
