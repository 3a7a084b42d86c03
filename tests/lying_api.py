"""A loopback proxy in front of a sandbox that lies the way real APIs do.

Each lie is a function of (path, query, JSON body) -> body, applied to successful JSON answers
of the paths it names; everything else passes through untouched. Tests use it to prove that a
listing that looks wrong never replaces stored data.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

Lie = Callable[[str, dict[str, str], Any], Any]


class LyingApi:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lies: dict[str, Lie] = {}  # exact path -> lie
        # exact path -> called with the query before the request is forwarded (to change the world)
        self.before: dict[str, Callable[[dict[str, str]], None]] = {}
        # (path, query) -> a status to answer instead of forwarding (a server in trouble), or None
        self.trouble: Callable[[str, dict[str, str]], int | None] = lambda path, query: None
        # A status to answer every request with, its body echoing the token it was sent (as
        # careless APIs do in error messages and field errors)
        self.echo_token_with: int | None = None
        # (path, query) -> True to hold that answer, already fetched from upstream, until
        # `release()`: a run that has read the API but not yet committed, as long as a test needs
        self.hold: Callable[[str, dict[str, str]], bool] = lambda path, query: False
        self.holding = threading.Event()  # set once an answer is being held
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()

    async def _forward(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if (hook := self.before.get(request.path)) is not None:
            hook(dict(request.query))
        if (status := self.trouble(request.path, dict(request.query))) is not None:
            return web.json_response({"message": "Service Unavailable"}, status=status)
        if self.echo_token_with is not None:
            sent = request.headers.get("Authorization", "")
            return web.json_response(
                {"message": f"Request with {sent} refused", "errors": {sent: [f"{sent} is not valid here"]}},
                status=self.echo_token_with,
            )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "accept", "x-plannr-account-uuid")
        }
        async with aiohttp.ClientSession() as session:
            async with session.get(
                self.upstream + request.path, params=request.query, headers=headers
            ) as upstream:
                body = await upstream.read()
                status = upstream.status
                kept = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower().startswith(("x-ratelimit", "retry-after"))
                }
        if self.hold(request.path, dict(request.query)):
            self.holding.set()
            await self._released.wait()
        lie = self.lies.get(request.path)
        if lie is not None and status == 200:
            body = json.dumps(lie(request.path, dict(request.query), json.loads(body))).encode()
        return web.Response(status=status, body=body, content_type="application/json", headers=kept)

    def release(self) -> None:
        """Let every held answer go (and hold none after)."""
        self.hold = lambda path, query: False
        self._loop.call_soon_threadsafe(self._released.set)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
