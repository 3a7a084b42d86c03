"""Shared fixtures: sandboxes on loopback, settings and budgets isolated per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plannr_pipeline.api import PlannrClient, PlannrSettings
from plannr_pipeline.api.budget import RequestBudget
from plannr_pipeline.sandbox.firm import FirmSize
from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start a sandbox with a fresh token; every one started is stopped after the test."""
    started: list[SandboxServer] = []

    def make(clients: int = 40, **options: object) -> SandboxServer:
        options.setdefault("token", f"test-token-{uuid.uuid4()}")
        options.setdefault("rate_limit_per_minute", 100_000)  # tests of the limit set their own
        size = options.pop("size", None) or FirmSize(clients=clients)
        server = SandboxServer(SandboxOptions(size=size, **options)).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def make_client(tmp_path: Path) -> Callable[..., PlannrClient]:
    """A client for a sandbox, with its own budget file under tmp_path."""

    def make(
        sandbox: SandboxServer,
        limit: int = 100_000,
        window_seconds: float = 60.0,
        account_uuid: str | None = None,
        **kwargs: object,
    ) -> PlannrClient:
        settings = PlannrSettings(
            base_url=sandbox.url,
            token=sandbox.options.token,
            account_uuid=account_uuid,
            rate_limit_per_minute=limit,
            max_concurrency=int(kwargs.pop("max_concurrency", 8)),  # type: ignore[arg-type]
        )
        # Tests of 429s give the sandbox a window unlike the budget's, so by default the budget
        # keeps its own limit; a test of following the server's limit asks for it.
        follow = bool(kwargs.pop("follow_server_limit", False))
        budget = RequestBudget(
            uuid.uuid4().hex,
            limit,
            directory=tmp_path,
            window_seconds=window_seconds,
            follow_server_limit=follow,
        )
        kwargs.setdefault("backoff_initial", 0.01)
        kwargs.setdefault("backoff_max", 0.2)
        return PlannrClient(settings, budget=budget, **kwargs)  # type: ignore[arg-type]

    return make


class AlertReceiver:
    """A real HTTP endpoint on loopback that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def alert_receiver() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def lake_servers():
    """PostgreSQL and an S3 server on loopback, for every lake test of the session."""
    from plannr_pipeline.local_servers import LocalServers

    servers = LocalServers()
    yield servers
    servers.stop()
