"""One request budget per token across processes and machines: PLANNR_BUDGET_URL puts the window,
the declarations and the 429 pause in Postgres or Redis (api/budget_postgres.py,
api/budget_redis.py), real servers on loopback started here (plannr_pipeline/local_servers.py).

Windows are 2 s so each test takes a few seconds; Plannr's is a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import psycopg
import pytest
import redis

from plannr_pipeline.api.budget import RequestBudget, budget_for
from plannr_pipeline.api.budget_url import BudgetServerError, parse_budget_url
from plannr_pipeline.api.config import check_settings
from plannr_pipeline.api.errors import ConfigurationError
from plannr_pipeline.local_servers import LocalServers, free_port
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer

WINDOW = 2.0


@pytest.fixture(scope="module")
def servers():
    started = LocalServers(redis=True, s3=False)
    started.create_database("budget")
    yield started
    started.stop()


@pytest.fixture(params=["postgres", "redis"])
def budget_url(request, servers) -> str:
    return servers.postgres_url("budget") if request.param == "postgres" else f"{servers.redis_url}/0"


def _budget(url: str, key: str, limit: int) -> RequestBudget:
    store = parse_budget_url(url).store(key)
    return RequestBudget(key, limit, window_seconds=WINDOW, follow_server_limit=False, store=store)


# A process of the token: takes a slot from the shared budget, then sends a real request, for
# `seconds`; prints how many it sent. Four of these share one sandbox whose window is the budget's.
_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import httpx
    from plannr_pipeline.api.budget import RequestBudget, budget_for
    from plannr_pipeline.api.budget_url import parse_budget_url
    url, key, limit, window, api, token, seconds = sys.argv[1:8]
    budget = RequestBudget(key, int(limit), window_seconds=float(window), follow_server_limit=False,
                           store=parse_budget_url(url).store(key))
    async def main():
        sent = 0
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            print("ready", flush=True)
            start = float(sys.stdin.readline())
            await asyncio.sleep(max(0.0, start - time.time()))
            while time.time() < start + float(seconds):
                await budget.acquire()
                await http.get(f"{api}/api/v1/circles", params={"page": 1})
                sent += 1
        return sent
    print(asyncio.run(main()), flush=True)
    budget.close()
    """
)


def test_processes_of_one_token_stay_under_its_limit_together(budget_url):
    # The sandbox allows 24 a window; each process alone would be allowed 16 by its budget, so
    # four processes that did not share one would send ~64 a window and draw 429s.
    token, key, limit, seconds = f"t-{uuid.uuid4()}", uuid.uuid4().hex, 16, 5.0
    sandbox = SandboxServer(
        SandboxOptions(
            size=FirmSize(clients=5), token=token, rate_limit_per_minute=24, rate_window_seconds=WINDOW
        )
    ).start()
    args = [budget_url, key, str(limit), str(WINDOW), sandbox.url, token, str(seconds)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        start = time.time() + 0.5
        for worker in workers:
            worker.stdin.write(f"{start}\n")
            worker.stdin.flush()
        sent = [int(worker.communicate(timeout=120)[0].strip()) for worker in workers]
        stats = sandbox.stats()
    finally:
        for worker in workers:
            worker.kill()
        sandbox.stop()
    assert stats["by_status"].get("429", 0) == 0, stats
    # Every window's worth at most once, plus the window in flight: ~16 x (5/2 + 1), not 4x that.
    assert sum(sent) <= limit * (seconds / WINDOW + 1), sent
    assert all(n > 0 for n in sent), sent  # each process had its share


def test_a_pause_set_by_one_process_holds_the_others(budget_url):
    key = uuid.uuid4().hex
    seeing, other = _budget(budget_url, key, 1000), _budget(budget_url, key, 1000)
    try:
        seeing.pause_everyone(1.5)
        waited = asyncio.run(other.acquire())
        assert 1.2 <= waited <= 3.0
    finally:
        seeing.close()
        other.close()


def test_the_smallest_live_declaration_wins_and_a_stale_one_lapses(budget_url):
    key = uuid.uuid4().hex
    generous = _budget(budget_url, key, 40)
    strict = _budget(budget_url, key, 4)
    try:
        assert strict.limit == 4
        generous._refresh(declare=True)
        assert generous.limit == 4
        # strict stops asking (a worker on another host died): after two windows it no longer counts.
        time.sleep(2 * WINDOW + 0.3)
        generous._refresh(declare=True)
        assert generous.limit == 40
    finally:
        generous.close()
        strict.close()


def test_the_token_is_never_in_the_server(budget_url, servers):
    token = f"secret-token-{uuid.uuid4().hex}"
    os.environ["PLANNR_BUDGET_URL"] = budget_url
    try:
        budget = budget_for(token, "http://127.0.0.1:9", 100)
        budget.pause_everyone(0.1)
        asyncio.run(budget.acquire())
    finally:
        del os.environ["PLANNR_BUDGET_URL"]
    if budget_url.startswith("redis"):
        names = [key.decode() for key in redis.Redis.from_url(budget_url).keys("*")]
    else:
        with psycopg.connect(servers.conninfo("budget")) as conn:
            names = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables")]
            names += [
                row[0] for row in conn.execute("SELECT budget || owner FROM plannr_budget_declarations")
            ]
    assert names and not [name for name in names if "secret" in name]
    budget.close()


@pytest.mark.parametrize(
    "url, says",
    [
        ("mysql://u:pw-sekrit@127.0.0.1/db", "scheme 'mysql'"),
        ("postgresql+psycopg2://u:pw-sekrit@/db", "names no host"),
        ("postgresql+psycopg2://u:pw-sekrit@127.0.0.1:5432", "must name one database"),
        ("redis://u:pw-sekrit@127.0.0.1:notaport/0", "not a URL"),
    ],
)
def test_a_malformed_budget_url_is_one_line_naming_it_without_its_password(url, says):
    with pytest.raises(ConfigurationError) as raised:
        check_settings({"PLANNR_BUDGET_URL": url})
    text = str(raised.value)
    assert "PLANNR_BUDGET_URL" in text and says in text and "\n" not in text
    assert "sekrit" not in text


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "redis"])
def test_a_budget_server_that_is_down_is_one_line_naming_it_and_the_fix(scheme):
    url = f"{scheme}://plannr:pw-sekrit@127.0.0.1:{free_port()}/budget"
    with pytest.raises(BudgetServerError) as raised:
        _budget(url, uuid.uuid4().hex, 10)
    text = str(raised.value)
    assert "PLANNR_BUDGET_URL" in text and "plannr@127.0.0.1" in text and "\n" not in text
    assert "sekrit" not in text, text
    json.dumps(text)  # plain text
