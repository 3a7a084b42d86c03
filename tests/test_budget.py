"""The request budget shared by every process of a token: smallest limit wins, a 429 holds
everyone, dead processes stop counting, a corrupt file is replaced (api/budget.py).

Windows are 2 s so each test takes a few seconds; Plannr's is a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plannr_pipeline.api import PlannrClient, PlannrSettings
from plannr_pipeline.api.budget import BudgetFileError, RequestBudget

WINDOW = 2.0


async def _count_in(budget: RequestBudget, seconds: float) -> int:
    """How many acquisitions succeed in `seconds`."""
    count = 0

    async def take() -> None:
        nonlocal count
        while True:
            await budget.acquire()
            count += 1

    try:
        await asyncio.wait_for(take(), seconds)
    except TimeoutError:
        pass
    return count


def _budget(tmp_path: Path, key: str, limit: int) -> RequestBudget:
    return RequestBudget(key, limit, directory=tmp_path, window_seconds=WINDOW, follow_server_limit=False)


def test_budgets_of_one_token_with_different_limits_run_at_the_smallest(tmp_path):
    key = uuid.uuid4().hex
    generous = _budget(tmp_path, key, 40)
    strict = _budget(tmp_path, key, 4)  # declared after: the generous one learns at its next heartbeat
    assert strict.path == generous.path and strict.limit == 4
    time.sleep(WINDOW / 4)
    taken = asyncio.run(_count_in(generous, 1.0))
    assert taken == 4 and generous.limit == 4  # 40 without sharing: ~35 in 1 s
    assert asyncio.run(_count_in(strict, 0.3)) == 0  # the log is shared too: the window is spent
    strict.close()  # withdrawn: the generous one is back to its own 40
    time.sleep(WINDOW / 4)
    assert asyncio.run(_count_in(generous, 0.5)) > 20
    assert generous.limit == 40
    generous.close()


def test_callers_that_find_no_slot_wait_for_one_take_from_the_log(tmp_path):
    """32 callers at once (a sync's fan-out), 150 requests on a budget of 100 a window: when the
    window frees, one caller takes the next chunk from the shared log and the others wait for it.
    Were each waiting caller to take a chunk of its own, the log would count 32 chunks where 50
    requests were left to send; the slots nobody spends go stale and are dropped, and the rest of
    the window is gone: another process of the token would find none."""
    key = uuid.uuid4().hex
    fan_out = _budget(tmp_path, key, 100)
    chunk = 100 // int(WINDOW) // 4  # the budget's chunk: a quarter of a second's worth

    async def sweep(requests: list[int]) -> None:
        async def caller() -> None:
            while requests:
                requests.pop()
                await fan_out.acquire()
                await asyncio.sleep(0.025)  # the request's round trip

        await asyncio.gather(*(caller() for _ in range(32)))

    asyncio.run(sweep(list(range(150))))  # 100 in the first window, 50 in the next
    other = _budget(tmp_path, key, 100)
    left = asyncio.run(_count_in(other, 0.5))
    # Lost on the way: the last chunk's remainder, and now and then a chunk that went stale
    # between round trips (its life is ~17 ms here, a round trip 25 ms). Without the one take: 0.
    assert left >= 100 - 50 - 3 * chunk, left
    fan_out.close()
    other.close()


def test_slots_left_unspent_past_their_life_are_dropped_not_spent_late(tmp_path):
    """Slots come from the shared log a chunk at a time, stamped when taken. One left over (the end
    of a listing) and spent a step later would reach the server after the log had let its window
    turn: it is dropped, and the next request takes a fresh chunk."""
    key = uuid.uuid4().hex
    budget = _budget(tmp_path, key, 100)
    chunk = 100 // int(WINDOW) // 4
    asyncio.run(budget.acquire())  # takes a chunk, spends one slot of it
    time.sleep(0.2)  # the rest go stale (their life: half the window's slack, ~17 ms here)
    asyncio.run(budget.acquire())  # a fresh chunk, not a stale slot
    other = _budget(tmp_path, key, 100)
    left = asyncio.run(_count_in(other, 0.5))
    assert left <= 100 - 2 * chunk, left  # had it spent a stale slot, the log would hold one chunk
    budget.close()
    other.close()


_DECLARE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from plannr_pipeline.api.budget import RequestBudget
    budget = RequestBudget(sys.argv[1], int(sys.argv[2]), directory=Path(sys.argv[3]), window_seconds=float(sys.argv[4]))
    print("declared", flush=True)
    time.sleep(60)
    """
)


def test_another_process_with_a_smaller_limit_holds_this_one_until_it_dies(tmp_path):
    key = uuid.uuid4().hex
    child = subprocess.Popen(
        [sys.executable, "-c", _DECLARE, key, "4", str(tmp_path), str(WINDOW)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "declared"
        budget = _budget(tmp_path, key, 40)
        assert budget.limit == 4
        assert asyncio.run(_count_in(budget, 1.0)) == 4
    finally:
        child.kill()
        child.wait()
    # Killed without a word: its declaration stops counting at the next heartbeat (pid is gone).
    time.sleep(WINDOW / 4)
    assert asyncio.run(_count_in(budget, 0.5)) > 20
    assert budget.limit == 40
    budget.close()


def test_a_stale_declaration_from_elsewhere_stops_counting(tmp_path):
    """A process on another host (no pid to check) counts only while it keeps its declaration fresh."""
    key = uuid.uuid4().hex
    budget = _budget(tmp_path, key, 40)
    with sqlite3.connect(budget.path) as conn:
        conn.execute(
            "INSERT INTO declarations VALUES ('elsewhere:1:x', 'elsewhere', 1, 4, ?)",
            (time.time() - 3 * WINDOW,),  # last seen three windows ago
        )
        conn.execute(
            "INSERT INTO declarations VALUES ('elsewhere:2:y', 'elsewhere', 2, 30, ?)", (time.time(),)
        )
    budget._refresh(declare=True)
    assert budget.limit == 30  # the fresh one counts, the stale one does not
    budget.close()


def test_a_pause_set_by_one_process_holds_the_others(tmp_path):
    key = uuid.uuid4().hex
    saw_429, other = _budget(tmp_path, key, 40), _budget(tmp_path, key, 40)
    saw_429.pause_everyone(0.8)
    assert asyncio.run(other.acquire()) >= 0.7
    assert asyncio.run(saw_429.acquire()) < 0.1  # the pause has passed for everyone
    saw_429.close()
    other.close()


@pytest.mark.parametrize(
    "corruption",
    [
        pytest.param(lambda path: path.write_bytes(b"\x00garbage, not a database" * 100), id="garbage"),
        pytest.param(
            lambda path: sqlite3.connect(path).execute("CREATE TABLE rate_bucket (something_else TEXT)"),
            id="wrong-tables",
        ),
    ],
)
def test_a_corrupt_budget_file_is_replaced_with_a_warning(tmp_path, caplog, corruption):
    key = uuid.uuid4().hex
    path = tmp_path / f"{key}.sqlite"
    corruption(path)
    with caplog.at_level(logging.WARNING, logger="plannr_pipeline.api.budget"):
        budget = _budget(tmp_path, key, 40)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "replacing" in warnings[0]
    assert asyncio.run(_count_in(budget, 0.3)) > 0  # and it works
    budget.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="plannr_pipeline.api.budget"):
        _budget(tmp_path, key, 40).close()  # the replacement is a good file: no second warning
    assert not caplog.records


def test_an_unusable_budget_directory_is_one_line_naming_it_and_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(BudgetFileError) as raised:
        _budget(blocker / "budget", uuid.uuid4().hex, 40)
    message = str(raised.value)
    assert str(blocker / "budget") in message and "PLANNR_BUDGET_DIR" in message and "\n" not in message


class _RateLimitedApi:
    """A loopback API that answers its first request 429 (with the given headers), then 200."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.times: list[float] = []
        times = self.times

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                times.append(time.monotonic())
                status, extra = (429, headers) if len(times) == 1 else (200, {})
                body = json.dumps(
                    {"message": "Too Many Attempts."} if status == 429 else {"ok": True}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize(
    "headers, window, held",
    [
        # No Retry-After, no reset: the server's window is taken as spent, so every caller waits a window.
        ({"X-RateLimit-Limit": "60", "X-Ratelimit-Remaining": "0"}, WINDOW, (WINDOW - 0.1, WINDOW + 1.0)),
        # X-RateLimit-Reset (a Unix time, whole seconds) says when the window passes: wait for that, not a window.
        ({"X-RateLimit-Reset": "{reset}"}, 20.0, (0.9, 2.5)),
        # Retry-After says it first: it wins over a later reset and over the window.
        ({"Retry-After": "1", "X-RateLimit-Reset": "{later}"}, 20.0, (0.9, 2.0)),
    ],
    ids=["no-retry-after", "ratelimit-reset", "retry-after"],
)
def test_a_429_holds_every_process_until_the_server_says_or_its_window_passes(
    tmp_path, headers, window, held
):
    reset, later = str(int(time.time()) + 2), str(int(time.time()) + 10)
    api = _RateLimitedApi({name: value.format(reset=reset, later=later) for name, value in headers.items()})
    key = uuid.uuid4().hex

    def budget() -> RequestBudget:
        return RequestBudget(key, 1000, directory=tmp_path, window_seconds=window, follow_server_limit=False)

    settings = PlannrSettings(base_url=api.url, token="t")
    client = PlannrClient(settings, budget=budget(), backoff_initial=0.01, backoff_max=0.05)
    other_process = budget()

    async def run() -> tuple[object, float]:
        async with client:
            asking = asyncio.create_task(client.get("/api/v1/account"))
            while not api.times:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the 429 has been answered and seen
            other_waited = await other_process.acquire()
            return await asking, other_waited

    try:
        answer, other_waited = asyncio.run(run())
    finally:
        api.close()
    assert answer == {"ok": True}
    assert len(api.times) == 2  # one 429, one retry: no hammering in between
    gap = api.times[1] - api.times[0]
    assert held[0] <= gap <= held[1]
    assert client.stats.retries == 1
    # Another budget of the token (another process), asking 0.2 s after the 429, was held too.
    assert other_waited >= held[0] - 0.3
