"""What a sync costs with almost nothing to fetch, against what the issue-26 time targets leave.

Every `plannr-pipeline sync` pays a fixed part whatever the firm's size: starting Python and
importing Dagster, DuckDB and Arrow; creating a fresh instance's SQLite databases; creating the
run, whose planned events Dagster's SQLite storage writes one per partition (48 for each monthly
asset of this firm's four years), then a materialisation event per partition; a commit and a
views refresh per collection. This measures that part: a sync of a one-client firm (the same
four years, so the same 48 partitions; 6 requests, ~600 rows, most of them its imports' error
rows), at no latency, budget lifted; and the part of it that is
Dagster's: the sync's run with every asset's and check's body doing nothing
(bench/dagster_floor_peer.py: same keys, partitions, range, dependencies and checks, on a fresh
instance made as the sync makes it). Beside them, dagster-dlt (bench/dagster_dlt_peer.py) on the
one-client firm, and the sync and dagster-dlt at 1,000 clients at 25 ms as bench_sync.py runs
them, so the 1,000-client target (at most half of dagster-dlt's wall time) can be set against the
floor. With --with-10k, bare dlt and the sync at 10,000 clients too, for the 10,000-client target
(at most a third of bare dlt's), against the floor plus the goals fan-out's latency floor
(10,000 requests at 25 ms, 32 in flight).

    .venv/bin/python bench/bench_floor.py [--repeat 3] [--with-10k] [--out bench/FLOOR.md]

Each run is a process of its own with fresh temp folders, measured as bench_sync.py measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import (  # noqa: E402  (beside this file; bench/ is not a package)
    BENCH,
    CONCURRENCY,
    LATENCY_MS,
    PEERS,
    UNLIMITED,
    Run,
    Sandbox,
    bare_env,
    package_commit,
    run_measured,
    run_peer,
    run_sync,
)


def import_seconds(repeat: int) -> list[float]:
    """Wall time of a process that only imports what a sync imports before it starts work."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import plannr_pipeline.cli, plannr_pipeline.sync"],
            check=True,
            env=bare_env(),
        )
        times.append(time.perf_counter() - started)
    return times


def dagster_alone(scratch: Path, repeat: int) -> tuple[list[Run], list[dict]]:
    """bench/dagster_floor_peer.py, each run on a fresh DAGSTER_HOME: its runs and its phases."""
    runs, phases = [], []
    env = bare_env()
    for repetition in range(repeat):
        workdir = scratch / f"dagster-alone-{repetition}"
        workdir.mkdir(parents=True)
        measured = run_measured(
            [sys.executable, str(BENCH / "dagster_floor_peer.py")],
            {**env, "DAGSTER_HOME": str(workdir / "dagster_home")},
            workdir / "run.log",
        )
        said = re.search(r"^PHASES (.*)$", measured.output, re.M)
        if measured.returncode != 0 or not said:
            raise RuntimeError(
                "dagster_floor_peer.py failed:\n" + "\n".join(measured.output.splitlines()[-15:])
            )
        print(f"  the sync's Dagster run alone #{repetition + 1}: {measured.seconds:.1f} s", flush=True)
        runs.append(Run("dagster-alone", measured, 0, {}))
        phases.append(json.loads(said.group(1)))
    return runs, phases


def runs_of(tool: str, sandbox: Sandbox, scratch: Path, label: str, repeat: int) -> list[Run]:
    runs = []
    for repetition in range(repeat):
        workdir = scratch / f"{label}-{tool}-{repetition}"
        run = run_sync(sandbox, workdir) if tool == "sync" else run_peer(tool, PEERS[tool], sandbox, workdir)
        if run.measured.returncode != 0:
            raise RuntimeError(
                f"{tool} ({label}) exited {run.measured.returncode}:\n"
                + "\n".join(run.measured.output.splitlines()[-15:])
            )
        print(f"  {label} clients, {tool} #{repetition + 1}: {run.measured.seconds:.1f} s", flush=True)
        runs.append(run)
    return runs


def row(label: str, tool: str, runs: list[Run]) -> str:
    seconds = [r.measured.seconds for r in runs]
    every = ", ".join(f"{s:.1f}" for s in seconds)
    peak = max(r.measured.tree_peak_mb for r in runs)
    return f"| {label} | {tool} | {min(seconds):.1f} s | {statistics.median(seconds):.1f} s ({every}) | {peak:.0f} MB |"


def best(runs: list[Run]) -> float:
    return min(r.measured.seconds for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--with-10k", action="store_true", help="also bare dlt and the sync at 10,000 clients"
    )
    parser.add_argument("--out", default=str(BENCH / "FLOOR.md"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="plannr-floor-"))
    started = datetime.now(UTC)
    results: dict[tuple[str, str], list[Run]] = {}
    try:
        imports = import_seconds(args.repeat)
        print(f"  imports: {', '.join(f'{s:.2f}' for s in imports)} s", flush=True)
        alone, phases = dagster_alone(scratch, args.repeat)
        results[("no API", "the sync's Dagster run, bodies doing nothing")] = alone
        firms = [("1 client, 0 ms", 1, 0.0), ("1,000 clients, 25 ms", 1000, LATENCY_MS)]
        for label, clients, latency in firms:
            sandbox = Sandbox(clients, UNLIMITED, "issue", latency_ms=latency)
            try:
                for tool in ("sync", "dagster-dlt"):
                    results[(label, tool)] = runs_of(tool, sandbox, scratch, str(clients), args.repeat)
            finally:
                sandbox.stop()
        if args.with_10k:
            label = "10,000 clients, 25 ms"
            sandbox = Sandbox(10_000, UNLIMITED, "issue")
            try:
                for tool in ("sync", "dlt"):
                    results[(label, tool)] = runs_of(tool, sandbox, scratch, "10000", 1)
            finally:
                sandbox.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    floor = best(results[("1 client, 0 ms", "sync")])
    dagster_floor = best(alone)
    fastest = min(phases, key=lambda p: p["imports"] + p["instance"] + p["run"])
    dagster_dlt = best(results[("1,000 clients, 25 ms", "dagster-dlt")])
    ours = best(results[("1,000 clients, 25 ms", "sync")])
    lines = [
        "# What a sync costs with almost nothing to fetch (bench/bench_floor.py)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `.venv/bin/python bench/bench_floor.py {' '.join(sys.argv[1:])}` "
        f"at commit {package_commit()}; nproc {os.cpu_count()}, Python {platform.python_version()}. "
        "Firm shape as bench_sync.py's `issue` firm: clients created over four years, 48 monthly partitions "
        f"whatever the count. Syncs with PLANNR_MAX_CONCURRENCY={CONCURRENCY}, budget lifted; each run a fresh process, "
        "fresh DAGSTER_HOME and data folder.",
        "",
        f'Importing what a sync imports (`python -c "import plannr_pipeline.cli, plannr_pipeline.sync"`): '
        f"best {min(imports):.2f} s of {len(imports)}.",
        "",
        f"The sync's Dagster run with every body doing nothing (its fastest run, from inside the process): "
        f"imports {fastest['imports']:.2f} s, the fresh instance {fastest['instance']:.2f} s, the run "
        f"{fastest['run']:.2f} s ({fastest['materialisations']} materialisation events).",
        "",
        "| firm | tool | wall time, best | median (every run) | peak RSS, process group |",
        "| --- | --- | --- | --- | --- |",
        *(row(label, tool, runs) for (label, tool), runs in results.items()),
        "",
        f"- **1,000 clients**: the target is at most 0.5 of dagster-dlt's wall time, {0.5 * dagster_dlt:.2f} s "
        f"today (dagster-dlt best {dagster_dlt:.1f} s). A sync of the one-client firm takes {floor:.1f} s, "
        f"{floor / dagster_dlt:.2f} of dagster-dlt's 1,000-client time; the sync's Dagster run with nothing "
        f"in its bodies {dagster_floor:.2f} s ({dagster_floor / dagster_dlt:.2f}), to which 1,000 clients add at "
        f"least their goals' latency ({1000 * LATENCY_MS / 1000 / CONCURRENCY:.1f} s at {CONCURRENCY} in flight); the sync of "
        f"1,000 clients took {ours:.1f} s ({ours / dagster_dlt:.2f}).",
    ]
    if args.with_10k:
        dlt = best(results[("10,000 clients, 25 ms", "dlt")])
        ours_10k = best(results[("10,000 clients, 25 ms", "sync")])
        fan_out = 10_000 * LATENCY_MS / 1000 / CONCURRENCY
        lines.append(
            f"- **10,000 clients**: the target is at most a third of bare dlt's wall time, {dlt / 3:.1f} s today "
            f"(dlt {dlt:.1f} s); the sync took {ours_10k:.1f} s ({ours_10k / dlt:.2f} of dlt). Its steps run one "
            f"after another (Dagster's in-process executor); the one-client sync ({floor:.1f} s) and the goals "
            f"fan-out's latency (10,000 requests x {LATENCY_MS:.0f} ms / {CONCURRENCY} in flight = {fan_out:.1f} s) "
            f"come to {floor + fan_out:.1f} s, leaving {dlt / 3 - floor - fan_out:.1f} s for the rest, against "
            f"{ours_10k - floor - fan_out:.1f} s the sync spends on it."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
