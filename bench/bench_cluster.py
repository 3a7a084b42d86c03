"""Firms synced through the local cluster (scripts/cluster.sh: Postgres storage, the queued run
coordinator, Celery workers, the shared request budget in Postgres, the firms' data in the lake):
what bounds a firm, and what many firms gain from workers.

Scenarios, each on a fresh cluster and fresh sandboxes (one `plannr-pipeline sandbox` process per
firm, 25 ms latency, the issue's firm shape, its own rate limit per token):

1. one firm of --clients clients on one worker;
2. the same on two workers;
3. --firms firms of --clients-per-firm clients each, on two workers.

Each firm's full sync is its clients job over every month and its sweeps job, queued together
and launched by the daemon. Measured: wall time from the launch to the last run's success, and
per token the requests, the requests a minute (overall, and the most the API counted in any one
minute: its `peak_in_window`) against the limit, and its 429s. Plannr's limit is 500 a minute; a
10,000-client firm at that takes ~20 min, so by default the sandboxes and budgets run at a raised
limit (--limit 3000) and the tables say so.

    .venv/bin/python bench/bench_cluster.py [--clients 10000] [--firms 4] [--clients-per-firm 2500]
        [--limit 3000] [--out bench/CLUSTER.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import dagster as dg  # noqa: E402
from bench_sync import TOKEN, Sandbox  # noqa: E402

from plannr_pipeline.defs.partitions import client_months  # noqa: E402
from tests.cli import clean_env  # noqa: E402
from tests.firms import firm_project, project_env  # noqa: E402

SLUGS = ("acme", "beta", "gamma", "delta", "epsilon", "zeta")


def _cluster_env(folder: Path) -> dict[str, str]:
    lines = (folder / "env").read_text().splitlines()
    return {k.removeprefix("export "): v.strip("'") for k, v in (line.split("=", 1) for line in lines)}


def _launch(job: str, env: dict[str, str], workspace: str, tags: dict[str, str] | None = None) -> None:
    command = [str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", workspace, "-j", job]
    done = subprocess.run(
        command + (["--tags", json.dumps(tags)] if tags else []), env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"launching {job} failed:\n{done.stderr[-3000:]}")


def scenario(label: str, firms: dict[str, int], workers: int, limit: int, folder: Path) -> dict:
    print(f"== {label}", flush=True)
    folder.mkdir(parents=True)
    sandboxes = {slug: Sandbox(clients, limit, "issue") for slug, clients in firms.items()}
    root = firm_project(
        folder,
        {
            slug: {"token_env": "BENCH_TOKEN", "base_url": sandbox.url, "concurrency_share": 2}
            | {"schedules_running": False}
            for slug, sandbox in sandboxes.items()
        },
    )
    cluster = folder / "cluster"
    settings = {
        "BENCH_TOKEN": TOKEN,
        "PLANNR_CLUSTER_DIR": str(cluster),
        "PLANNR_CLUSTER_WORKERS": str(workers),
    }
    env = project_env(root, clean_env(settings))
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), "up"], env=env, capture_output=True, text=True
    )
    try:
        if up.returncode != 0:
            raise SystemExit(f"cluster up failed:\n{(up.stdout + up.stderr)[-3000:]}")
        workspace = json.loads((cluster / "state.json").read_text())["workspace"]
        env = {**env, **_cluster_env(cluster)}
        keys = client_months.get_partition_keys()
        whole = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
        started = time.monotonic()
        for slug in firms:
            _launch(f"{slug}_clients_job", env, workspace, whole)
            _launch(f"{slug}_sweeps_job", env, workspace)
        jobs = {f"{slug}_{job}" for slug in firms for job in ("clients_job", "sweeps_job")}
        with mock.patch.dict(os.environ, _cluster_env(cluster)):
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                while True:
                    # The runs launched here; the firms' sensors launch runs of these jobs too.
                    runs = [
                        r
                        for r in instance.get_runs()
                        if r.job_name in jobs and "dagster/sensor_name" not in r.tags
                    ]
                    if len(runs) == len(jobs) and all(r.is_finished for r in runs):
                        break
                    time.sleep(1)
                seconds = time.monotonic() - started
                failed = [r.job_name for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        if failed:
            raise SystemExit(f"{label}: runs failed: {failed} (logs: {cluster / 'servers' / 'logs'})")
        tokens = {}
        for slug, sandbox in sandboxes.items():
            counts = sandbox.counts()
            tokens[slug] = {
                "requests": counts["requests"],
                "per_minute": counts["requests"] / seconds * 60,
                "peak": counts["peak_in_window"],
                "429": counts["by_status"].get("429", 0),
            }
        print(f"   {seconds:.1f} s, {tokens}", flush=True)
        return {"label": label, "workers": workers, "firms": firms, "seconds": seconds, "tokens": tokens}
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "down"], env=env, capture_output=True)
        for sandbox in sandboxes.values():
            sandbox.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--firms", type=int, default=4)
    parser.add_argument("--clients-per-firm", type=int, default=2_500)
    parser.add_argument("--limit", type=int, default=3_000, help="each token's requests a minute (sandbox)")
    parser.add_argument("--out", type=Path, default=BENCH / "CLUSTER.md")
    parser.add_argument(
        "--only", choices=("one-1", "one-2", "many-2"), action="append", help="these scenarios"
    )
    args = parser.parse_args()
    many = {slug: args.clients_per_firm for slug in SLUGS[: args.firms]}
    scenarios = {
        "one-1": ("one firm, one worker", {"acme": args.clients}, 1),
        "one-2": ("one firm, two workers", {"acme": args.clients}, 2),
        "many-2": (f"{args.firms} firms, two workers", many, 2),
    }
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        results = [
            scenario(label, firms, workers, args.limit, Path(folder) / name)
            for name, (label, firms, workers) in scenarios.items()
            if not args.only or name in args.only
        ]
    budget = int(args.limit * 0.98)  # the budget follows the limit the API announces, at 98%
    lines = [
        "# Firms through the cluster: workers against the budget",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, every",
        "server and worker on this one machine), `bench/bench_cluster.py "
        f"--clients {args.clients} --firms {args.firms} --clients-per-firm {args.clients_per_firm} --limit {args.limit}`.",
        f"Each token's limit is **{args.limit:,} requests a minute** (Plannr's is 500: raised so a 10,000-client",
        f"firm takes minutes, not ~20), so each firm's budget runs at {budget:,}. Sandbox latency 25 ms, the",
        "issue's firm shape; each worker runs 2 steps at once; the budget is shared in Postgres",
        "(PLANNR_BUDGET_URL), each worker with its own budget folder as on its own host.",
        "",
        "| scenario | workers | firms x clients | wall time | requests (all tokens) | per token: requests a minute, overall | per token: most in any minute (limit) | 429s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tokens = r["tokens"].values()
        per_minute = ", ".join(format(t["per_minute"], ",.0f") for t in tokens)
        sizes = sorted(set(r["firms"].values()))
        lines.append(
            f"| {r['label']} | {r['workers']} | {len(r['firms'])} x {'/'.join(f'{s:,}' for s in sizes)} "
            f"| {r['seconds']:.1f} s | {sum(t['requests'] for t in tokens):,} "
            f"| {per_minute} "
            f"| {', '.join(str(t['peak']) for t in tokens)} ({args.limit:,}) | {sum(t['429'] for t in tokens)} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
