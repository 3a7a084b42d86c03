"""Client speed: a full sweep (clients, goals per client, circles, tasks, imports) against the
sandbox in its own process, with 25 ms injected latency, at 1,000 and 10,000 clients.

Prints requests/s, records/s, wall time and the client process's peak memory. The budget is
lifted for the measurement; the last column says how long the same requests take under
Plannr's real limit with the default budget (450/minute), which dominates in production.

    .venv/bin/python bench/bench_client.py [--clients 1000 10000] [--latency-ms 25] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import time
import uuid

import httpx

from plannr_pipeline.api import PlannrClient, PlannrSettings
from plannr_pipeline.api.budget import RequestBudget
from plannr_pipeline.api.config import DEFAULT_RATE_LIMIT_PER_MINUTE

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sandbox(clients: int, latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plannr_pipeline.cli",
            "sandbox",
            "--port",
            str(port),
            "--clients",
            str(clients),
            "--token",
            TOKEN,
            "--latency-ms",
            str(latency_ms),
            "--rate-limit",
            "10000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/v1/circles", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("sandbox did not start")


async def sweep(url: str, concurrency: int) -> tuple[int, PlannrClient]:
    settings = PlannrSettings(
        base_url=url, token=TOKEN, rate_limit_per_minute=10_000_000, max_concurrency=concurrency
    )
    # A fresh budget per run, so earlier runs' requests do not count against this one.
    client = PlannrClient(settings, budget=RequestBudget(uuid.uuid4().hex, settings.rate_limit_per_minute))
    records = 0
    async with client:
        clients = await client.list_all("/api/v1/account", {"filter[type]": "client"})
        records += len(clients)
        async for _, goals, _, _ in client.fan_out(
            [c["uuid"] for c in clients], lambda u: f"/api/v1/client/{u}/goal"
        ):
            records += len(goals)
        for path, params in (
            ("/api/v1/circles", None),
            ("/api/v1/task", {"filter[show_child_tasks]": "true"}),
            ("/api/v1/import", None),
        ):
            async for page in client.iter_pages(path, params):
                records += len(page.records)
    return records, client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--latency-ms", type=float, default=25.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"latency {args.latency_ms} ms, concurrency {args.concurrency}")
    print(
        f"{'clients':>8} {'requests':>9} {'records':>9} {'seconds':>8} {'req/s':>8} {'rec/s':>9} {'peak MB':>8} {'at 450/min':>11}"
    )
    for count in args.clients:
        sandbox, url = start_sandbox(count, args.latency_ms)
        try:
            started = time.perf_counter()
            records, client = asyncio.run(sweep(url, args.concurrency))
            seconds = time.perf_counter() - started
        finally:
            sandbox.terminate()
            sandbox.wait()
        requests = client.stats.requests
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        real_minutes = requests / DEFAULT_RATE_LIMIT_PER_MINUTE
        print(
            f"{count:>8} {requests:>9} {records:>9} {seconds:>8.2f} {requests / seconds:>8.0f} {records / seconds:>9.0f} {peak_mb:>8.0f} {real_minutes:>9.1f} m"
        )


if __name__ == "__main__":
    main()
