"""The rolling refresh against its targets: a firm moved on, every goal re-read as fast as the
budget allows, the budget used while there is work, no 429.

One sandbox process (`plannr-pipeline sandbox`, 25 ms latency, --rate-limit L per minute, the
firm shape of bench_sync.py), then:

1. a full `plannr-pipeline sync` under the same limit (the copy to refresh);
2. the firm moves on (`POST /__sandbox/advance?steps=3`: goals progress, clients change adviser,
   records are created and deleted), and a minute passes so the sync's window has turned over;
3. `plannr-pipeline refresh --for SECONDS`, the sandbox's served count sampled every second.

Reported: when the first full pass over every client's goals ended (the refresh's "sweeping the
rest" line) against the physical bound N / (0.98 x L) minutes; requests served in each whole
60-second window from the first request, as a share of L; 429s; the refresh's peak RSS.

    .venv/bin/python bench/bench_refresh.py [--clients 500] [--rate 300] [--seconds 240]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from bench_sync import TOKEN, Sandbox, delta, run_measured, sync_env, whole_windows

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def first_pass_end(log: str) -> datetime | None:
    """When the refresh's log first says every client's goals were read since the last sweep."""
    for line in log.splitlines():
        if "every client's goals were re-read since the last sweep" in line and (m := LOG_TIME.match(line)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return None


def log_start(log: str) -> datetime | None:
    for line in log.splitlines():
        if "rolling_refresh_job" in line and (m := LOG_TIME.match(line)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--firm", default="issue")
    parser.add_argument("--out", help="also append the figures to this Markdown file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    sandbox = Sandbox(args.clients, args.rate, args.firm)
    env = sync_env(sandbox.url, workdir, args.rate)
    env.pop("PLANNR_RATE_LIMIT_PER_MINUTE")  # follow the limit the sandbox announces, as against Plannr
    try:
        started = time.perf_counter()
        sync = subprocess.run(
            [sys.executable, "-m", "plannr_pipeline.cli", "sync"], env=env, capture_output=True, text=True
        )
        if sync.returncode != 0:
            print(sync.stdout[-3000:], sync.stderr[-3000:])
            return 1
        print(f"initial sync: {time.perf_counter() - started:.0f} s")
        moved = httpx.post(
            f"{sandbox.url}/__sandbox/advance",
            params={"steps": 3},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ).json()
        changed = {
            kind: sum(
                len(step[kind][op]) for step in moved["steps"] for op in ("created", "updated", "deleted")
            )
            for kind in ("clients", "goals", "tasks")
        }
        print(f"the firm moved on three steps: {changed}")
        time.sleep(61)  # the sync's requests leave the sandbox's 60 s window
        before = sandbox.counts()
        samples: list[tuple[float, int]] = []

        def sample(elapsed: float) -> None:
            samples.append((elapsed, sandbox.counts()["requests"] - before["requests"]))

        measured = run_measured(
            [sys.executable, "-m", "plannr_pipeline.cli", "refresh", "--for", str(args.seconds)],
            env,
            workdir / "refresh.log",
            stop_after=args.seconds + 120,
            on_sample=sample,
        )
        requests, statuses = delta(sandbox.counts(), before)
    finally:
        sandbox.stop()

    _, windows = whole_windows(samples)
    began, passed = log_start(measured.output), first_pass_end(measured.output)
    bound = args.clients / (0.98 * args.rate) * 60
    lines = [
        f"## Rolling refresh (bench/bench_refresh.py): {args.clients} clients, limit {args.rate}/min, refresh --for {args.seconds:g}",
        "",
        f"- refresh exit code {measured.returncode}, wall {measured.seconds:.1f} s, peak RSS {measured.tree_peak_mb:.0f} MB",
        f"- requests {requests:,}; statuses {statuses}; 429s: {statuses.get('429', 0)}",
        "- first full pass over every client's goals: "
        + (
            f"{(passed - began).total_seconds():.0f} s after the run's first log line; physical bound "
            f"N/(0.98 L) = {bound:.0f} s; ratio {(passed - began).total_seconds() / bound:.2f}"
            if began and passed
            else "not reached"
        ),
        f"- requests per whole 60 s window from the first request: {windows} "
        f"(share of {args.rate}: {', '.join(f'{w / args.rate:.0%}' for w in windows)})",
        f"- log: {workdir / 'refresh.log'}",
    ]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as out:
            out.write("\n" + "\n".join(lines[:-1]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
