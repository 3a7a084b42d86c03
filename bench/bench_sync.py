"""End to end: `plannr-pipeline sync` against dlt's rest_api source, same sandbox, same machine.

For each size, one sandbox process (`plannr-pipeline sandbox`, 25 ms latency, no effective rate
limit, the firm shape set by its flags; what it served is read from its `GET /__sandbox/stats`),
then per repetition, each in a subprocess of its own with fresh temp folders:

1. a full `plannr-pipeline sync` (PLANNR_MAX_CONCURRENCY 32, `CONCURRENCY`; budget lifted);
2. dlt's rest_api source loading the same collections into DuckDB (bench/dlt_peer.py);
3. at sizes up to --dagster-dlt-up-to (1,000 by default), the same dlt source as `@dlt_assets`
   (dagster-dlt) in one Dagster run on a fresh instance (bench/dagster_dlt_peer.py): the peer a
   user who runs dlt inside Dagster would pick, where Dagster's fixed cost dominates.

Each is measured for wall time, the peak summed RSS of its process group (sampled from /proc
every 50 ms) and the peak RSS of its largest process (wait4's ru_maxrss), the requests the
sandbox served it against the floor (pages of 500 per listing plus one goals request per
client), and the rows it landed per table.

Then a budget run: a sandbox limiting the token to N requests/minute and a sync with
PLANNR_RATE_LIMIT_PER_MINUTE=N, stopped after --budget-seconds; reports the achieved rate as a
share of N and the 429s the sandbox answered.

    .venv/bin/python bench/bench_sync.py [--clients 1000,10000,100000] [--repeat 1] [--skip-dlt]
        [--skip-dlt-above N] [--dagster-dlt-up-to N] [--skip-budget] [--firm issue|cli]
        [--budget-clients 2000] [--budget-rate 600] [--budget-seconds 240]

Writes bench/RESULTS.md (or --out) and prints the same figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import httpx

from plannr_pipeline.api import endpoints

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eta  # noqa: E402  (beside this file; bench/ is not a package)

BENCH = Path(__file__).resolve().parent
TOKEN = "bench-token"
UNLIMITED = 100_000_000
LATENCY_MS = 25.0
# Requests in flight: the sync's PLANNR_MAX_CONCURRENCY and the dlt peers' extract workers alike.
CONCURRENCY = 32
# `plannr-pipeline sandbox` firm shape flags. "issue", the default, is the shape the benchmark issue
# asks for: about 3 goals per client (0..6), tasks 5x clients, circles clients/4, about 50 imports
# over the 30 days of history. "cli" keeps the sandbox's own defaults.
FIRMS = {
    "cli": {},
    "issue": {
        "max-goals-per-client": 6,
        "tasks-per-client": 5,
        "circles-per-client": 0.25,
        "imports-per-day": 50 / 30,
    },
}
LISTINGS = {
    "clients": endpoints.CLIENTS,
    "staff": endpoints.STAFF,
    "circles": endpoints.CIRCLES,
    "tasks": endpoints.TASKS,
    "imports": endpoints.IMPORTS,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sandbox:
    """`plannr-pipeline sandbox` in its own process; `counts()` asks it what it has served so far."""

    def __init__(
        self, clients: int, rate_limit: int, firm: str, *flags: str, latency_ms: float = LATENCY_MS
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shape = [arg for name, value in FIRMS[firm].items() for arg in (f"--{name}", str(value))]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plannr_pipeline.cli",
                "sandbox",
                "--port",
                str(self.port),
                "--clients",
                str(clients),
                "--latency-ms",
                str(latency_ms),
                "--rate-limit",
                str(rate_limit),
                "--token",
                TOKEN,
                *shape,
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in self.process.stdout:  # type: ignore[union-attr]
            if "serving at" in line:
                break
        else:
            raise RuntimeError(f"sandbox exited (code {self.process.wait()}) before serving")

    def counts(self) -> dict:
        """`{"requests": total, "by_endpoint": {...}, "by_status": {"200": n, ...}}`: the sandbox's own
        count of the API requests it has served (its controls, this call included, are not counted)."""
        answer = httpx.get(
            f"{self.url}/__sandbox/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        answer.raise_for_status()
        return answer.json()

    def totals(self) -> dict[str, int]:
        """meta.total of each listing, asked with the same filters the sync uses (5 requests)."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        totals = {}
        for name, endpoint in LISTINGS.items():
            answer = httpx.get(
                self.url + endpoint.path,
                params={**endpoint.params, "per_page": 1},
                headers=headers,
                timeout=60,
            )
            answer.raise_for_status()
            totals[name] = answer.json()["meta"]["total"]
        return totals

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def floor_requests(totals: dict[str, int]) -> int:
    pages = sum(max(1, math.ceil(total / endpoints.PAGE_SIZE)) for total in totals.values())
    return pages + totals["clients"]


def delta(after: dict, before: dict) -> tuple[int, dict[str, int]]:
    statuses = {k: v - before["by_status"].get(k, 0) for k, v in after["by_status"].items()}
    return after["requests"] - before["requests"], {k: v for k, v in statuses.items() if v}


@dataclass
class Measured:
    seconds: float
    tree_peak_mb: float  # peak of the summed RSS of the process group, sampled
    process_peak_mb: float  # ru_maxrss of the largest process in the tree (wait4)
    returncode: int
    output: str
    processes_seen: int
    lines_at: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, line) as printed


def _group_rss(pgid: int) -> tuple[int, int]:
    total, count = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state ppid pgrp ...
                continue
            with open(f"/proc/{entry}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            count += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, count


def run_measured(
    command: list[str], env: dict[str, str], log: Path, stop_after: float | None = None, on_sample=None
) -> Measured:
    """Run `command` in a new process group; sample its RSS; stop it after `stop_after` seconds."""
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        peak, seen, done = 0, set(), threading.Event()
        lines_at: list[tuple[float, str]] = []

        def sample() -> None:
            nonlocal peak
            with open(log) as printed:
                pending = ""
                while not done.is_set():
                    rss, count = _group_rss(process.pid)
                    peak = max(peak, rss)
                    seen.add(count)
                    # When each line appeared (to 50 ms), for the progress ETA's error.
                    pending += printed.read()
                    *complete, pending = pending.split("\n")
                    lines_at.extend((time.perf_counter() - started, line) for line in complete)
                    done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if stop_after is not None:

            def stop_later() -> None:
                while not done.wait(1.0):
                    if on_sample:
                        on_sample(time.perf_counter() - started)
                    if time.perf_counter() - started >= stop_after:
                        os.killpg(process.pid, signal.SIGTERM)
                        if not done.wait(10):
                            os.killpg(process.pid, signal.SIGKILL)
                        return

            threading.Thread(target=stop_later, daemon=True).start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    return Measured(
        seconds,
        peak / 2**20,
        usage.ru_maxrss / 1024,
        process.returncode,
        log.read_text(),
        max(seen, default=0),
        lines_at,
    )


def bare_env() -> dict[str, str]:
    """This process's environment without its own PLANNR_* and DAGSTER_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PLANNR_", "DAGSTER_"))}


def sync_env(url: str, workdir: Path, rate_limit: int) -> dict[str, str]:
    env = bare_env()
    env.update(
        {
            "DAGSTER_HOME": str(workdir / "dagster_home"),
            "PLANNR_DATA_DIR": str(workdir / "data"),
            "PLANNR_BASE_URL": url,
            "PLANNR_API_TOKEN": TOKEN,
            "PLANNR_RATE_LIMIT_PER_MINUTE": str(rate_limit),
            "PLANNR_MAX_CONCURRENCY": str(CONCURRENCY),
        }
    )
    return env


def sync_rows(output: str) -> tuple[dict[str, int], int | None]:
    rows = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^table\s+rows$", line.strip()):
            for row in lines[index + 1 :]:
                if not row.strip():
                    break
                name, count = row.split()
                rows[name] = int(count)
    said = re.search(r"^(\d+) API requests in", output, re.M)
    return rows, int(said.group(1)) if said else None


@dataclass
class Run:
    tool: str
    measured: Measured
    requests: int
    statuses: dict[str, int]
    rows: dict[str, int] = field(default_factory=dict)
    self_reported_requests: int | None = None


def run_sync(sandbox: Sandbox, workdir: Path) -> Run:
    workdir.mkdir(parents=True)
    before = sandbox.counts()
    measured = run_measured(
        [sys.executable, "-m", "plannr_pipeline.cli", "sync"],
        sync_env(sandbox.url, workdir, UNLIMITED),
        workdir / "sync.log",
    )
    requests, statuses = delta(sandbox.counts(), before)
    rows, said = sync_rows(measured.output)
    return Run("sync", measured, requests, statuses, rows, said)


def run_peer(tool: str, script: str, sandbox: Sandbox, workdir: Path) -> Run:
    """A dlt peer (bench/dlt_peer.py or bench/dagster_dlt_peer.py) in a process of its own."""
    workdir.mkdir(parents=True)
    before = sandbox.counts()
    measured = run_measured(
        [
            sys.executable,
            str(BENCH / script),
            "--base-url",
            sandbox.url,
            "--token",
            TOKEN,
            "--data-dir",
            str(workdir),
            "--workers",
            str(CONCURRENCY),
        ],
        bare_env(),
        workdir / f"{tool}.log",
    )
    requests, statuses = delta(sandbox.counts(), before)
    said = re.search(r"^ROWS (.*)$", measured.output, re.M)
    return Run(tool, measured, requests, statuses, json.loads(said.group(1)) if said else {})


PEERS = {"dlt": "dlt_peer.py", "dagster-dlt": "dagster_dlt_peer.py"}


def whole_windows(samples: list[tuple[float, int]], window: float = 60.0) -> tuple[float, list[int]]:
    """(when the first request was served, requests served in each whole window from it), from
    (seconds, requests so far) samples. Both limits are sliding windows (Plannr's a minute) that
    start full, so a rate over any shorter span flatters or punishes."""
    first = next((t for t, n in samples if n > 0), 0.0)
    windows, edge, served_before = [], first + window, 0
    for t, n in samples:
        if t >= edge:
            windows.append(n - served_before)
            served_before, edge = n, edge + window
    return first, windows


def budget_run(clients: int, rate: int, seconds: float, firm: str, workdir: Path) -> dict:
    sandbox = Sandbox(clients, rate, firm)
    try:
        totals = sandbox.totals()
        time.sleep(
            61
        )  # let the probes leave the sandbox's 60 s window: the sync starts with the whole budget
        before = sandbox.counts()
        samples: list[tuple[float, int]] = []

        def sample(elapsed: float) -> None:
            if not samples or elapsed - samples[-1][0] >= 1:
                samples.append((elapsed, sandbox.counts()["requests"] - before["requests"]))

        workdir.mkdir(parents=True)
        measured = run_measured(
            [sys.executable, "-m", "plannr_pipeline.cli", "sync"],
            sync_env(sandbox.url, workdir, rate),
            workdir / "budget-sync.log",
            stop_after=seconds,
            on_sample=sample,
        )
        requests, statuses = delta(sandbox.counts(), before)
    finally:
        sandbox.stop()
    first, windows = whole_windows(samples)
    last = next((t for t, n in reversed(samples) if n < samples[-1][1]), samples[-1][0] if samples else 0.0)
    finished = measured.returncode == 0 and "sync finished" in measured.output
    # The fastest a sliding window allows: N at once, then N more each time the window turns over.
    ideal = (math.ceil(requests / rate) - 1) * 60
    return {
        "clients": clients,
        "rate": rate,
        "seconds": measured.seconds,
        "finished": finished,
        "requests": requests,
        "floor": floor_requests(totals),
        "statuses": statuses,
        "windows": windows,
        "first_request_at": first,
        "requesting_seconds": last - first + 1,
        "ideal_seconds": ideal,
        "stopped_after": seconds,
    }


def versions() -> dict[str, str]:
    names = [
        "plannr_pipeline",
        "dagster",
        "duckdb",
        "pyarrow",
        "httpx",
        "httpx-aiohttp",
        "aiohttp",
        "dlt",
        "dagster-dlt",
        "pyinstrument",
    ]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def package_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mb(value: float) -> str:
    return f"{value:,.0f} MB"


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "-"


def eta_lines(syncs: list[Run]) -> list[str]:
    """The goals fan-out's ETA (its progress lines' time left) against when it really ended."""
    lines = []
    for index, run in enumerate(syncs):
        actual, points = eta.eta_points(run.measured.lines_at, "goals", "goals: fanning out over")
        shown = [p for p in (eta.nearest(points, 0.1), eta.nearest(points, 0.5)) if p is not None]
        if not shown:
            continue
        said = "; ".join(
            f"at {p.share:.0%} ({p.at:.1f} s in) it showed {p.left:.0f} s left: error {p.error:+.1%}"
            for p in dict.fromkeys(shown)
        )
        worst = max(abs(p.error) for p in points)
        lines.append(
            f"- sync #{index + 1}, goals fan-out {actual:.1f} s: {said}; worst of its {len(points)} lines {worst:.1%}."
        )
    return (
        [
            "",
            "ETA of the goals fan-out (the time left its progress lines showed vs its real end):",
            "",
            *lines,
        ]
        if lines
        else []
    )


def size_table(clients: int, firm: str, totals: dict[str, int], runs: list[Run]) -> list[str]:
    floor = floor_requests(totals)
    lines = [
        f"### {clients:,} clients (firm shape: {firm}; listings: "
        + ", ".join(f"{name} {total:,}" for name, total in totals.items())
        + f"; request floor {floor:,})",
        "",
    ]
    lines += [
        "| run | tool | wall time | peak RSS, process group | peak RSS, largest process | requests (vs floor) | non-200 answers | sync's own count |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    seen: dict[str, int] = {}
    repetitions = [seen.__setitem__(r.tool, seen.get(r.tool, 0) + 1) or seen[r.tool] for r in runs]
    for index, run in enumerate(runs):
        m = run.measured
        failed = "" if m.returncode == 0 else f" (exit {m.returncode})"
        other = {k: v for k, v in run.statuses.items() if k != "200"}
        lines.append(
            f"| {repetitions[index]} | {run.tool}{failed} | {m.seconds:.1f} s | "
            f"{mb(m.tree_peak_mb)} ({m.processes_seen} proc.) | {mb(m.process_peak_mb)} | "
            f"{run.requests:,} ({run.requests / floor:.3f}x) | {other or 'none'} | "
            f"{run.self_reported_requests if run.self_reported_requests is not None else '-'} |"
        )
    ours = [r for r in runs if r.tool == "sync"]
    best = lambda rs, f: min(f(r) for r in rs)  # noqa: E731
    for peer in PEERS:
        theirs = [r for r in runs if r.tool == peer]
        if ours and theirs:
            lines += [
                "",
                f"Ours / {peer} (best of each): wall time {ratio(best(ours, lambda r: r.measured.seconds), best(theirs, lambda r: r.measured.seconds))}, "
                f"peak RSS (process group) {ratio(best(ours, lambda r: r.measured.tree_peak_mb), best(theirs, lambda r: r.measured.tree_peak_mb))}, "
                f"requests {ratio(ours[0].requests, theirs[0].requests)}.",
            ]
    lines += eta_lines(ours)
    firsts = [next(r for r in runs if r.tool == tool) for tool in dict.fromkeys(r.tool for r in runs)]
    tables = sorted({t for r in firsts for t in r.rows})
    if tables:
        heads = [r.tool for r in firsts]
        lines += [
            "",
            "Rows landed (first run of each; dlt's nested tables are its unnested lists):",
            "",
            "| table | " + " | ".join(heads) + " |",
            "| --- |" + " --- |" * len(heads),
        ]
        for table in tables:
            lines.append(
                f"| {table} | "
                + " | ".join(f"{r.rows[table]:,}" if table in r.rows else "-" for r in firsts)
                + " |"
            )
    return lines + [""]


def budget_lines(b: dict) -> list[str]:
    if b["finished"]:
        how = f"sync finished in {b['seconds']:.0f} s"
    else:
        how = f"sync stopped after {b['stopped_after']:.0f} s (exit after {b['seconds']:.0f} s), before it finished"
    whole = b["windows"]
    share = sum(whole) / (len(whole) * b["rate"]) if whole else 0.0
    return [
        f"### Budget run: {b['clients']:,} clients, sandbox limit and PLANNR_RATE_LIMIT_PER_MINUTE = {b['rate']}/min",
        "",
        f"- {how}; {b['requests']:,} requests (floor {b['floor']:,}); first request {b['first_request_at']:.0f} s after start.",
        f"- requests served in each whole 60 s window from the first request: {whole or 'none (run too short)'} "
        f"= {share:.0%} of {b['rate']}/window.",
        f"- first to last request: ~{b['requesting_seconds']:.0f} s; a 60 s sliding window allows these "
        f"{b['requests']:,} requests in {b['ideal_seconds']:.0f} s at best (N at once, N more per turn of the window).",
        f"- answers by status (sandbox): {b['statuses']}; 429s: {b['statuses'].get('429', 0)}.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1000,10000", help="comma-separated sizes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-dlt", action="store_true", help="no dlt peer at any size")
    parser.add_argument(
        "--skip-dlt-above", type=int, default=None, help="no bare dlt peer above this many clients"
    )
    parser.add_argument(
        "--dagster-dlt-up-to",
        type=int,
        default=1000,
        help="the dagster-dlt peer at sizes up to this many clients (0: never)",
    )
    parser.add_argument("--skip-budget", action="store_true")
    parser.add_argument(
        "--firm",
        choices=sorted(FIRMS),
        default="issue",
        help="issue (default): ~3 goals/client, tasks 5x, circles /4, ~50 imports; cli: the sandbox's defaults",
    )
    parser.add_argument("--budget-clients", type=int, default=2000)
    parser.add_argument("--budget-rate", type=int, default=600)
    parser.add_argument(
        "--budget-seconds", type=float, default=240, help="stop the budget sync after this long"
    )
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--note", default="", help="a line for the report, e.g. what else loaded the machine")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp folders (logs, data) and print where"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.clients.split(",") if s]
    scratch = Path(tempfile.mkdtemp(prefix="plannr-bench-"))
    started = datetime.now(UTC)
    report = [
        "# bench/bench_sync.py results",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `.venv/bin/python bench/bench_sync.py {' '.join(sys.argv[1:])}` "
        f"on the package at commit {package_commit()}, validation before commit and history on.",
        f"Machine: nproc {os.cpu_count()}, {platform.machine()}, Python {platform.python_version()}, "
        f"sandbox latency {LATENCY_MS:.0f} ms per request, sync with PLANNR_MAX_CONCURRENCY={CONCURRENCY}, dlt with {CONCURRENCY} extract workers.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        *([args.note] if args.note else []),
        "",
    ]
    print("\n".join(report))
    try:
        for clients in sizes:
            sandbox = Sandbox(clients, UNLIMITED, args.firm)
            try:
                totals = sandbox.totals()
                runs: list[Run] = []
                for repetition in range(args.repeat):
                    runs.append(run_sync(sandbox, scratch / f"{clients}-sync-{repetition}"))
                    print(
                        f"  {clients} sync #{repetition + 1}: {runs[-1].measured.seconds:.1f} s, exit {runs[-1].measured.returncode}",
                        flush=True,
                    )
                    peers = []
                    if not args.skip_dlt and (args.skip_dlt_above is None or clients <= args.skip_dlt_above):
                        peers.append("dlt")
                    if not args.skip_dlt and clients <= args.dagster_dlt_up_to:
                        peers.append("dagster-dlt")
                    for peer in peers:
                        runs.append(
                            run_peer(peer, PEERS[peer], sandbox, scratch / f"{clients}-{peer}-{repetition}")
                        )
                        print(
                            f"  {clients} {peer} #{repetition + 1}: {runs[-1].measured.seconds:.1f} s, exit {runs[-1].measured.returncode}",
                            flush=True,
                        )
            finally:
                sandbox.stop()
            for run in runs:
                if run.measured.returncode != 0:
                    print(
                        f"--- {run.tool} failed; last lines of its output:\n"
                        + "\n".join(run.measured.output.splitlines()[-15:])
                    )
            lines = size_table(clients, args.firm, totals, runs)
            print("\n".join(lines))
            report += lines
        if not args.skip_budget:
            result = budget_run(
                args.budget_clients, args.budget_rate, args.budget_seconds, args.firm, scratch / "budget"
            )
            lines = budget_lines(result)
            print("\n".join(lines))
            report += lines
    finally:
        if args.keep:
            print(f"logs and data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
