"""A full sync under Plannr's real budget, with the rate limit's clock compressed: the sweep of a
100,000-client firm takes ~3.4 hours at 500 requests a minute; here the sandbox counts its 500
over 60/K seconds (`plannr-pipeline sandbox --time-scale K`) and the pipeline is told so
(PLANNR_RATE_WINDOW_SECONDS), so the same sweep, paced the same way, runs in minutes.

One sandbox process (25 ms latency, the firm shape of bench_sync.py, --rate requests per window),
then one `plannr-pipeline sync` following the limit the sandbox announces. Reported, in the
sandbox's time (real seconds x K) and in real seconds:

- the goals fan-out's ETA (its progress lines' time left) against when it really ended;
- requests served in each whole window from the first request, as a share of the limit: how
  steady the progress is;
- the whole sync against the physical bound, requests / (0.98 x limit) windows;
- 429s, and the sync's peak RSS.

    .venv/bin/python bench/bench_scaled_clock.py [--clients 100000] [--rate 500] [--time-scale 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import eta
from bench_sync import (
    LATENCY_MS,
    Sandbox,
    delta,
    floor_requests,
    package_commit,
    run_measured,
    sync_env,
    whole_windows,
)

# A step's own count, as the sync logs it: "goals - 2000 requests, 3 retries, 72.7s waiting on the budget".
REQUESTS_LINE = re.compile(r" - \d+ requests, \d+ retries, ")
SHARE = 0.98  # of the announced limit the budget runs at (api/budget.py SERVER_LIMIT_SHARE)


def clock(seconds: float, scale: float) -> str:
    """Real seconds as the sandbox's time: `3h24m` (and the real `10m12s` beside it)."""
    scaled = seconds * scale
    return f"{_hms(scaled)} (real {_hms(seconds)})"


def _hms(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=500, help="requests per window (Plannr: 500 a minute)")
    parser.add_argument("--time-scale", type=float, default=20, help="the sandbox's minute lasts 60/K s")
    parser.add_argument("--firm", default="issue")
    parser.add_argument("--out", help="also append the figures to this Markdown file")
    args = parser.parse_args()
    scale, window = args.time_scale, 60 / args.time_scale

    started = datetime.now(UTC)
    sandbox = Sandbox(args.clients, args.rate, args.firm, "--time-scale", f"{scale:g}")
    try:
        totals = sandbox.totals()
        time.sleep(window + 1)  # the probes leave the window: the sync starts with the whole budget
        before = sandbox.counts()
        samples: list[tuple[float, int]] = []

        def sample(elapsed: float) -> None:
            samples.append((elapsed, sandbox.counts()["requests"] - before["requests"]))

        with tempfile.TemporaryDirectory(prefix="plannr-scaled-") as scratch:
            env = sync_env(sandbox.url, Path(scratch), args.rate)
            env["PLANNR_RATE_WINDOW_SECONDS"] = f"{window:g}"
            measured = run_measured(
                [sys.executable, "-m", "plannr_pipeline.cli", "sync"],
                env,
                Path(scratch) / "sync.log",
                stop_after=float("inf"),  # runs to its end; the stopper samples the sandbox every second
                on_sample=sample,
            )
        requests, statuses = delta(sandbox.counts(), before)
    finally:
        sandbox.stop()

    first, windows = whole_windows(samples, window)
    busy = windows[:-1]  # the last whole window may hold the sweep's tail and the commits after it
    bound = requests / (SHARE * args.rate) * window
    fan_out, points = eta.eta_points(measured.lines_at, "goals", "goals: fanning out over")
    finished = measured.returncode == 0 and "sync finished" in measured.output
    lines = [
        f"### {args.clients:,} clients under {args.rate} requests a minute, the clock {scale:g}x "
        f"(a minute lasts {window:g} s)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `.venv/bin/python bench/bench_scaled_clock.py "
        f"{' '.join(sys.argv[1:])}` at commit {package_commit()}; sandbox latency {LATENCY_MS:.0f} ms.",
        "Times are the sandbox's (real seconds x the scale), the real ones beside them.",
        "",
        f"- sync {'finished' if finished else f'exited {measured.returncode}'} in {clock(measured.seconds, scale)}; "
        f"{requests:,} requests (floor {floor_requests(totals):,}); answers {statuses}; 429s: {statuses.get('429', 0)}; "
        f"peak RSS {measured.process_peak_mb:,.0f} MB.",
        f"- the physical bound, {requests:,} requests at {SHARE:.0%} of {args.rate} a minute: {clock(bound, scale)}; "
        f"first request to the end of the sync {clock(measured.seconds - first, scale)}, "
        f"{(measured.seconds - first) / bound:.2f}x the bound.",
    ]
    if busy:
        shares = [n / args.rate for n in busy]
        lines.append(
            f"- requests per whole minute from the first request ({len(busy)} minutes but the last): "
            f"median {statistics.median(shares):.1%} of {args.rate}, lowest {min(shares):.1%}, highest {max(shares):.1%}."
        )
    if points:
        shown = [p for p in (eta.nearest(points, share) for share in (0.1, 0.25, 0.5, 0.75, 0.9)) if p]
        fan_out_bound = args.clients / (SHARE * args.rate) * window  # one goals request a client
        lines.append(
            f"- goals fan-out: {clock(fan_out, scale)}, {fan_out / fan_out_bound:.2f}x its own bound "
            f"({clock(fan_out_bound, scale)}); its progress lines' time left against its real end: "
            + "; ".join(
                f"at {p.share:.0%} {_hms(p.left * scale)} left (error {p.error:+.1%})"
                for p in dict.fromkeys(shown)
            )
            + f"; the worst of its {len(points)} lines {max(abs(p.error) for p in points):.1%}."
        )
    retried = [line.split(" - ")[-2:] for _, line in measured.lines_at if REQUESTS_LINE.search(line)]
    if retried:
        lines.append(
            "- requests and retries by step: " + "; ".join(f"{step}: {said}" for step, said in retried) + "."
        )
    lines.append("")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as out:
            out.write("\n".join(lines) + "\n")
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
