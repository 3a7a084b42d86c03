"""`plannr-pipeline sandbox`, unchanged, plus what the benchmark needs to read from it.

The sandbox CLI has no way to say how many requests it served or how many it answered 429,
and no flags for the firm's shape other than `--clients`. This wrapper runs the CLI's own
`sandbox` command in this process, and:

- keeps the `SandboxServer` the CLI creates, whose `requests` counter (path -> count) exists
  "for tests and benchmarks", and counts the status of every answer;
- answers a line `counts` on stdin with one line `COUNTS {json}` on stdout;
- optionally sets FirmSize knobs the CLI does not expose (`--max-goals-per-client`,
  `--tasks-per-client`, `--circles-per-client`, `--imports-per-day`).

    python bench/sandbox_process.py --port P --clients N --latency-ms 25 --rate-limit R --token T
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import re
import sys
import threading

from aiohttp import web

from plannr_pipeline import cli
from plannr_pipeline.sandbox import firm, server

GOAL_PATH = re.compile(r"^/api/v1/client/[^/]+/goal$")
servers: list[server.SandboxServer] = []
statuses: collections.Counter[int] = collections.Counter()


def _remember_servers() -> None:
    original_init = server.SandboxServer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        servers.append(self)

    server.SandboxServer.__init__ = init


def _count_statuses() -> None:
    original_guard = server.SandboxServer._guard

    @web.middleware
    async def guard(self, request, handler):
        if request.path.startswith(server.ADMIN_PREFIX):
            return await original_guard(self, request, handler)
        try:
            response = await original_guard(self, request, handler)
        except web.HTTPException as error:
            statuses[error.status] += 1
            raise
        statuses[response.status] += 1
        return response

    server.SandboxServer._guard = guard


def _snapshot() -> dict:
    sandbox = servers[0]
    by_path: collections.Counter[str] = collections.Counter()
    for path, count in list(sandbox.requests.items()):
        by_path["/api/v1/client/{uuid}/goal" if GOAL_PATH.match(path) else path] += count
    return {"requests": sum(by_path.values()), "by_path": dict(by_path), "statuses": {str(k): v for k, v in statuses.items()}}


def _answer_counts() -> None:
    for line in sys.stdin:
        if line.strip() != "counts":
            continue
        sandbox = servers[0] if servers else None
        if sandbox is None or sandbox._loop is None:
            print("COUNTS {}", flush=True)
            continue

        async def on_loop() -> dict:  # read the counters between requests, on the server's loop
            return _snapshot()

        counts = asyncio.run_coroutine_threadsafe(on_loop(), sandbox._loop).result(timeout=30)
        print("COUNTS " + json.dumps(counts), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--max-goals-per-client", type=int)
    parser.add_argument("--tasks-per-client", type=float)
    parser.add_argument("--circles-per-client", type=float)
    parser.add_argument("--imports-per-day", type=float)
    shape, rest = parser.parse_known_args()
    knobs = {name: value for name, value in vars(shape).items() if value is not None}
    if knobs:
        # The CLI builds FirmSize(clients=...) from this module at call time.
        firm.FirmSize = functools.partial(firm.FirmSize, **knobs)
    _remember_servers()
    _count_statuses()
    threading.Thread(target=_answer_counts, name="bench-counts", daemon=True).start()
    return cli.main(["sandbox", *rest])


if __name__ == "__main__":
    sys.exit(main())
