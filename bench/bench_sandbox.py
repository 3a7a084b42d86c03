"""The sandbox alone at a given size: how long `plannr-pipeline sandbox` takes to answer its first
request, what it holds (RSS), and what a tasks page costs it, as the sync asks for them.

    .venv/bin/python bench/bench_sandbox.py --clients 100000 [--pages 20] [--all-pages]

The sandbox runs in its own process with the issue's firm shape (bench_sync.py's FIRMS["issue"]),
no latency and no rate limit, so the figures are the sandbox's own. Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "bench-token"
ISSUE_SHAPE = ["--max-goals-per-client", "6", "--tasks-per-client", "5", "--circles-per-client", "0.25"]
ISSUE_SHAPE += ["--imports-per-day", str(50 / 30)]
# What the sync asks of GET /api/v1/task (plannr_pipeline/api/endpoints.py TASKS, oldest first).
TASKS_QUERY = {"filter[show_child_tasks]": "true", "sort": "created_at", "per_page": 500}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=20, help="tasks pages timed one by one")
    parser.add_argument("--all-pages", action="store_true", help="also time listing every tasks page")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "plannr_pipeline.cli", "sandbox", "--port", str(port)]
    command += ["--clients", str(args.clients), "--rate-limit", "100000000", "--token", TOKEN, *ISSUE_SHAPE]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            for line in process.stdout:  # type: ignore[union-attr]
                if "serving at" in line:
                    break
            else:
                raise RuntimeError(f"sandbox exited (code {process.wait()}) before serving")
            first = http.get("/api/v1/task", params=TASKS_QUERY)
            first.raise_for_status()
            started = time.perf_counter() - began
            print(f"clients {args.clients}: first tasks page answered {started:.1f} s after launch")
            print(f"  RSS after start: {rss_mb(process.pid):,.0f} MB")
            total = first.json()["meta"]["total"]
            last_page = first.json()["meta"]["last_page"]
            print(f"  tasks: {total:,} ({last_page} pages of 500)")
            times = []
            for n in range(args.pages):
                page = 1 + (n * 37) % last_page
                t0 = time.perf_counter()
                http.get("/api/v1/task", params={**TASKS_QUERY, "page": page}).raise_for_status()
                times.append(time.perf_counter() - t0)
            print(
                f"  one tasks page (per_page 500, over HTTP): median {statistics.median(times) * 1000:,.1f} ms, "
                f"max {max(times) * 1000:,.1f} ms over {len(times)} pages"
            )
            if args.all_pages:
                t0 = time.perf_counter()
                for page in range(1, last_page + 1):
                    http.get("/api/v1/task", params={**TASKS_QUERY, "page": page}).raise_for_status()
                print(f"  every tasks page, one after another: {time.perf_counter() - t0:,.1f} s")
            print(f"  RSS at the end: {rss_mb(process.pid):,.0f} MB")
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
