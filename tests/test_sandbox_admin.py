"""What the sandbox says it served (`GET /__sandbox/stats`), and the firm shape flags of
`plannr-pipeline sandbox`, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from plannr_pipeline import cli
from plannr_pipeline.sandbox.firm import FirmSize, generate_firm
from tests.cli import clean_env, sandbox_cli, start_cli, stop_group
from tests.mocked_requests import request_from

ROOT = Path(__file__).resolve().parents[1]
GOALS = "/api/v1/client/{uuid}/goal"


def admin(sandbox_or_token) -> dict[str, str]:
    """The header the sandbox's controls need: its own token."""
    token = getattr(getattr(sandbox_or_token, "options", None), "token", sandbox_or_token)
    return {"Authorization": f"Bearer {token}"}


def stats_over_http(sandbox) -> dict:
    answer = httpx.get(f"{sandbox.url}/__sandbox/stats", headers=admin(sandbox))
    assert answer.status_code == 200
    return answer.json()


def test_stats_count_every_answer_by_endpoint_and_status_and_not_the_controls(make_sandbox):
    sandbox = make_sandbox(clients=6, rate_limit_per_minute=4)
    assert stats_over_http(sandbox) == {
        "requests": 0,
        "peak_in_window": 0,
        "by_endpoint": {},
        "by_status": {},
    }
    token = {"Authorization": f"Bearer {sandbox.options.token}"}
    client_uuids = [c["uuid"] for c in sandbox.firm.clients]
    sent: list[tuple[str, httpx.Response]] = []

    def get(endpoint: str, path: str, headers: dict[str, str], **params: object) -> None:
        sent.append((endpoint, httpx.get(sandbox.url + path, headers=headers, params=params)))
        httpx.get(f"{sandbox.url}/__sandbox/stats", headers=admin(sandbox))  # controls count for nothing
        httpx.post(f"{sandbox.url}/__sandbox/advance", params={"steps": 0}, headers=admin(sandbox))

    get("/api/v1/account", "/api/v1/account", token)
    get(GOALS, f"/api/v1/client/{client_uuids[0]}/goal", token)
    get(GOALS, f"/api/v1/client/{client_uuids[1]}/goal", token)
    get("/api/v1/account", "/api/v1/account", {"Authorization": "Bearer wrong-token"})
    get("/api/v1/account", "/api/v1/account", token, per_page=501)  # a listing error, the 4th of 4 allowed
    get("/api/v1/task", "/api/v1/task", token)  # past the limit
    get("/api/v1/task", "/api/v1/task", {**token, "X-PLANNR-ACCOUNT-UUID": client_uuids[0]})  # not staff

    assert [answer.status_code for _, answer in sent] == [200, 200, 200, 401, 422, 429, 403]
    stats = stats_over_http(sandbox)
    assert stats == {
        "requests": len(sent),
        "peak_in_window": 4,  # the three 200s and the 422: the 429, 401 and 403 are not counted
        "by_endpoint": dict(Counter(endpoint for endpoint, _ in sent)),
        "by_status": {
            str(status): n for status, n in Counter(answer.status_code for _, answer in sent).items()
        },
    }
    assert stats == sandbox.stats()  # the same figures in process
    # `requests` is as it was: every API request by its own path, the controls left out.
    assert sandbox.requests == Counter(answer.request.url.path for _, answer in sent)


def test_stats_count_server_errors_and_dropped_connections(make_sandbox):
    failing = make_sandbox(clients=3, error_rate=1.0)
    headers = {"Authorization": f"Bearer {failing.options.token}"}
    assert [httpx.get(f"{failing.url}/api/v1/circles", headers=headers).status_code for _ in range(3)] == [
        500
    ] * 3
    assert (
        httpx.get(f"{failing.url}/api/v1/nowhere", headers=headers).status_code == 500
    )  # faults come before routing
    assert stats_over_http(failing) == {
        "requests": 4,
        "peak_in_window": 4,
        "by_endpoint": {"/api/v1/circles": 3, "/api/v1/nowhere": 1},
        "by_status": {"500": 4},
    }

    dropping = make_sandbox(clients=3, drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        httpx.get(
            f"{dropping.url}/api/v1/task", headers={"Authorization": f"Bearer {dropping.options.token}"}
        )
    assert stats_over_http(dropping) == {
        "requests": 1,
        "peak_in_window": 1,
        "by_endpoint": {"/api/v1/task": 1},
        "by_status": {"dropped": 1},
    }


def test_stats_answer_loopback_only(make_sandbox):
    sandbox = make_sandbox(clients=3)

    async def handler(request):
        raise AssertionError("the stats were answered off loopback")

    answer = asyncio.run(sandbox._guard(request_from("10.1.2.3", "GET", "/__sandbox/stats"), handler))
    assert answer.status == 403
    assert sandbox.stats() == {"requests": 0, "peak_in_window": 0, "by_endpoint": {}, "by_status": {}}


# -- the firm shape flags -------------------------------------------------------------------


def parsed(monkeypatch, *flags: str):
    """The arguments `plannr-pipeline sandbox FLAGS` runs with (through cli.main, not served)."""
    seen = []
    monkeypatch.setattr(cli, "_sandbox", lambda args: seen.append(args) or 0)
    assert cli.main(["sandbox", *flags]) == 0
    return seen[0]


def test_no_shape_flags_is_firm_size_defaults(monkeypatch):
    assert cli.firm_size_from_args(parsed(monkeypatch)) == FirmSize()


def test_shape_flags_make_the_firm_they_say(monkeypatch):
    args = parsed(
        monkeypatch,
        "--clients",
        "40",
        "--staff",
        "7",
        "--max-goals-per-client",
        "6",
        "--tasks-per-client",
        "5",
        "--circles-per-client",
        "0.25",
        "--imports-per-day",
        "3",
    )
    size = cli.firm_size_from_args(args)
    assert size == FirmSize(
        clients=40,
        staff=7,
        max_goals_per_client=6,
        tasks_per_client=5.0,
        circles_per_client=0.25,
        imports_per_day=3.0,
    )
    firm = generate_firm(7, size)
    assert len(firm.clients) == 40 and len(firm.staff) == 7
    assert len(firm.tasks) == 5 * 40 and len(firm.circles) == 40 // 4
    goals = [len(g) for g in firm.goals_by_client.values()]
    assert max(goals) == 6 and min(goals) >= 0
    assert len(firm.imports) == 3 * size.imports_history_days  # 3 a day is every draw


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--staff", "0"),
        ("--staff", "two"),
        ("--clients", "-1"),
        ("--max-goals-per-client", "-1"),
        ("--max-goals-per-client", "2.5"),
        ("--tasks-per-client", "-0.5"),
        ("--tasks-per-client", "lots"),
        ("--circles-per-client", "nan"),
        ("--circles-per-client", "inf"),
        ("--imports-per-day", "4"),
        ("--advance", "-1"),
    ],
)
def test_a_bad_shape_flag_exits_2_with_one_line_naming_it(monkeypatch, capsys, flag, value):
    monkeypatch.setattr(cli, "_sandbox", lambda args: pytest.fail("ran with a bad flag"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sandbox", "--clients", "10", flag, value])
    assert exit_.value.code == 2
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and f"argument {flag}:" in said[0] and value in said[0], said


def test_the_cli_serves_the_shape_asked_and_its_stats():
    token = "admin-cli-token"
    flags = ("--clients", "20", "--tasks-per-client", "5", "--circles-per-client", "0.5", "--token", token)
    with sandbox_cli(*flags, cwd=ROOT) as (banner, url):
        assert "20 clients, tasks per client 5.0, circles per client 0.5)" in banner, banner
        headers = {"Authorization": f"Bearer {token}"}
        tasks = httpx.get(
            f"{url}/api/v1/task", params={"filter[show_child_tasks]": "true", "per_page": 1}, headers=headers
        )
        circles = httpx.get(f"{url}/api/v1/circles", params={"per_page": 1}, headers=headers)
        assert tasks.json()["meta"]["total"] == 100 and circles.json()["meta"]["total"] == 10
        assert httpx.get(f"{url}/__sandbox/stats", headers=admin(token)).json() == {
            "requests": 2,
            "peak_in_window": 2,
            "by_endpoint": {"/api/v1/circles": 1, "/api/v1/task": 1},
            "by_status": {"200": 2},
        }


def test_a_listing_order_reused_between_pages_follows_records_changed_in_place():
    """The sandbox keeps a listing's order between page requests; a record re-timed or replaced
    in place, as the timeline and tests do, must still come out where it now belongs."""
    from datetime import datetime, timedelta

    from plannr_pipeline.sandbox import routes
    from plannr_pipeline.sandbox.listing import paginate

    firm = generate_firm(7, FirmSize(clients=60))
    query = {"per_page": "10", "page": "1", "sort": "-updated_at", "filter[type]": "client"}

    def newest() -> dict:
        return paginate(firm.clients, query, routes.ACCOUNTS, "http://x/api/v1/account")["data"][0]

    oldest = min(firm.clients, key=lambda c: datetime.fromisoformat(c["updated_at"]))
    assert newest()["uuid"] != oldest["uuid"]
    later = datetime.fromisoformat(newest()["updated_at"]) + timedelta(days=1)
    oldest["updated_at"] = later.isoformat()  # re-timed in place: the same dict
    assert newest()["uuid"] == oldest["uuid"]
    replacement = {**oldest, "first_name": "Replaced"}
    firm.clients[firm.clients.index(oldest)] = replacement  # a new dict, same sort value
    assert newest()["first_name"] == "Replaced"


# -- the controls are the sandbox's own (issue 22, case 7) -----------------------------------


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),  # any local process
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),  # a web page's POST
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "null"}, 403),  # a sandboxed frame or a file:// page
    ],
)
def test_the_controls_refuse_without_the_token_or_from_a_web_page(make_sandbox, headers, status):
    sandbox = make_sandbox(clients=5)
    token = admin(sandbox)
    sent = {**token, **headers} if status == 403 else headers  # a web page may know the token too
    advanced = httpx.post(f"{sandbox.url}/__sandbox/advance", params={"steps": 3}, headers=sent)
    stats = httpx.get(f"{sandbox.url}/__sandbox/stats", headers=sent)
    assert (advanced.status_code, stats.status_code) == (status, status)
    assert "by_endpoint" not in stats.text and sandbox.step == 0 and sandbox.changes == []
    assert sandbox.options.token not in advanced.text + stats.text
    # the program that started it, with the token: answered
    assert (
        httpx.post(f"{sandbox.url}/__sandbox/advance", params={"steps": 1}, headers=token).status_code == 200
    )
    assert sandbox.step == 1


def test_the_cli_takes_its_token_from_the_environment_out_of_ps():
    token = f"env-token-{uuid.uuid4()}"
    process = start_cli(
        "sandbox",
        "--port",
        "0",
        "--clients",
        "3",
        env=clean_env({"PYTHONPATH": str(ROOT), "PLANNR_SANDBOX_TOKEN": token}),
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        banner = process.stdout.readline()  # type: ignore[union-attr]
        url = banner.rsplit(" ", 1)[1].strip()
        rest = process.stdout.readline() + process.stdout.readline()  # type: ignore[union-attr]
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert token.encode() not in command_line and token not in banner + rest
        accepted = httpx.get(f"{url}/api/v1/account", params={"per_page": 1}, headers=admin(token))
        assert accepted.status_code == 200
        assert httpx.get(f"{url}/api/v1/account", headers=admin("sandbox-token")).status_code == 401
        assert httpx.get(f"{url}/__sandbox/stats", headers=admin(token)).json()["requests"] == 2
    finally:
        stop_group(process)
