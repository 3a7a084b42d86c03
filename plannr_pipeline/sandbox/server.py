"""The sandbox's HTTP server: aiohttp on 127.0.0.1, in a background thread.

Auth, a per-token rate limit and optional faults wrap every route, as the real API would:
401 `{"message":"Unauthenticated."}`, `X-Ratelimit-Remaining` on every answer, and 429 with
`Retry-After` past the limit.

`advance(steps)` (or `POST /__sandbox/advance?steps=N`) moves the firm
through numbered steps of change (see `timeline`); `changes` lists what each step did.

`stats()` (or `GET /__sandbox/stats`) says what the sandbox has served:
API requests by endpoint (ids folded, e.g. `/api/v1/client/{uuid}/goal`), answers by status
(401, 403, 429 and 500 included) and the total. The sandbox's own controls are not counted.

The controls answer only on loopback, only with the sandbox's token (`Authorization: Bearer`),
and never to a browser: any local process or web page could otherwise move the firm on, and a
page's request carries an `Origin` (and `Sec-Fetch-Site`) header a program's does not.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from plannr_pipeline.sandbox import people, routes, timeline
from plannr_pipeline.sandbox.firm import FirmSize, generate_firm
from plannr_pipeline.sandbox.firm_cache import firm_from_cache
from plannr_pipeline.sandbox.import_plans import ImportPlan, live_import
from plannr_pipeline.sandbox.listing import CHECK_EVERY_RECORD_UP_TO, Listing, ListingError, paginate

log = logging.getLogger(__name__)
DEFAULT_TOKEN = "sandbox-token"
ADMIN_PREFIX = "/__sandbox/"
MAX_STEPS_PER_CALL = 1000
DROPPED = "dropped"  # the "status" of a connection closed without an answer (drop_rate)
_ROUTE_ID = re.compile(r"\{[^}]+\}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SandboxOptions:
    seed: int = 42
    size: FirmSize = field(default_factory=FirmSize)
    token: str = DEFAULT_TOKEN
    reference: datetime | None = None
    rate_limit_per_minute: int = 500  # the documented Plannr limit
    # Tests shorten the window to exercise 429s quickly; `sandbox --time-scale K` makes it 60/K s.
    rate_window_seconds: float = 60.0
    send_retry_after: bool = True  # Plannr does not document Retry-After; clients must cope without
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # up to this much more, at random: requests arrive out of step
    error_rate: float = 0.0  # share of requests answered 500
    drop_rate: float = 0.0  # share of connections closed without an answer
    live_import_interval: timedelta = timedelta(minutes=20)
    clock: Callable[[], datetime] = _utc_now
    # Where the generated firm is kept between starts (firm_cache); None: generated every time.
    firm_cache_dir: Path | None = None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    # orjson: a page of 500 tasks (1.2 MB) costs the sandbox's one core 1-2 ms instead of ~20.
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _endpoint(request: web.Request) -> str:
    """The route a request matched, ids folded to `{uuid}`; the path itself if none matched."""
    resource = request.match_info.route.resource
    return _ROUTE_ID.sub("{uuid}", resource.canonical) if resource is not None else request.path


def _from_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def _from_a_browser(request: web.Request) -> bool:
    """A request a web page made: browsers add Origin to every cross-site POST (and fetch), and
    Sec-Fetch-Site to everything; only a request the user typed in the address bar says `none`."""
    site = request.headers.get("Sec-Fetch-Site")
    return "Origin" in request.headers or (site is not None and site != "none")


class _Dropped(web.HTTPInternalServerError):
    """Raised after closing a connection on purpose (drop_rate): nothing was answered."""


class SandboxServer:
    """`with SandboxServer(options) as sandbox: sandbox.url`"""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        if self.options.firm_cache_dir is not None:
            self.firm = firm_from_cache(
                self.options.seed,
                self.options.size,
                self.options.reference,
                self.options.firm_cache_dir,
                log.warning,
            )
        else:
            self.firm = generate_firm(self.options.seed, self.options.size, self.options.reference)
        self.requests: Counter[str] = Counter()  # path -> count, for tests and benchmarks
        self.endpoints: Counter[str] = Counter()  # route (ids folded) -> count; see stats()
        self.statuses: Counter[int | str] = Counter()  # status of every answer (or DROPPED) -> count
        self.step = 0  # steps of change applied so far (see advance)
        self.changes: list[dict[str, Any]] = []  # what each step changed, in order
        self._import_clients = list(self.firm.clients[:50])  # live imports name these, whatever steps delete
        self._faults = random.Random(self.options.seed)
        self._windows: dict[str, deque[float]] = {}
        # The most requests the token had in one rate window, as this server counted them: what a
        # shared budget must keep under the limit (bench/bench_cluster.py, tests/test_cluster.py).
        self.peak_in_window = 0
        self._live_imports: dict[int, ImportPlan] = {}
        # subtask visibility -> (the firm's tasks version, the tasks it shows); see _tasks_visible
        self._visible: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._reindex()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def _reindex(self) -> None:
        """Rebuild the lookups from `self.firm` (after generation and after every change to it)."""
        self._task_by_uuid = {t["uuid"]: t for t in self.firm.tasks}
        self._staff_uuids = {s["uuid"] for s in self.firm.staff}
        self._account_by_uuid = {a["uuid"]: a for a in self.firm.accounts}

    # -- time -----------------------------------------------------------------------------

    def advance(self, steps: int = 1) -> list[dict[str, Any]]:
        """Apply the next `steps` steps of change (step n at `firm.reference + n hours`); return them.

        Safe while serving: the change runs on the server's own loop, between requests.
        """
        if steps < 0:
            raise ValueError("steps must be 0 or more")
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return self._advance_now(steps)

        async def on_loop() -> list[dict[str, Any]]:
            return self._advance_now(steps)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=120)

    def _advance_now(self, steps: int) -> list[dict[str, Any]]:
        done = []
        for _ in range(steps):
            self.step += 1
            done.append(
                timeline.apply_step(
                    self.firm, self.options.seed, self.step, self.options.size.max_goals_per_client
                )
            )
        self.changes.extend(done)
        self._reindex()
        return done

    def stats(self) -> dict[str, Any]:
        """What has been served: `{"requests": total, "by_endpoint": {...}, "by_status": {"200": n, ...}}`.

        Every API request is in `requests` and `by_endpoint` once it has arrived, and in `by_status`
        once it has been answered (a dropped connection counts as "dropped"). Safe while serving.
        """
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return self._stats_now()

        async def on_loop() -> dict[str, Any]:
            return self._stats_now()

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=30)

    def _stats_now(self) -> dict[str, Any]:
        return {
            "requests": sum(self.endpoints.values()),
            "peak_in_window": self.peak_in_window,
            "by_endpoint": dict(sorted(self.endpoints.items())),
            "by_status": {
                str(status): count
                for status, count in sorted(self.statuses.items(), key=lambda item: str(item[0]))
            },
        }

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> SandboxServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_site(port))
            except BaseException as error:  # report bind errors to the caller
                failure.append(error)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="plannr-sandbox", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise failure[0]
        return self

    async def _start_site(self, port: int) -> None:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/api/v1/account", self._accounts)
        app.router.add_get("/api/v1/client", self._clients)
        app.router.add_get("/api/v1/client/{uuid}", self._client)
        app.router.add_get("/api/v1/client/{client_uuid}/goal", self._goals)
        app.router.add_get("/api/v1/circles", self._circles)
        app.router.add_get("/api/v1/task", self._tasks)
        app.router.add_get("/api/v1/task/{uuid}", self._task)
        app.router.add_get("/api/v1/import", self._imports)
        app.router.add_get("/api/v1/import/{uuid}", self._import)
        app.router.add_get("/file/{uuid}/download", self._error_report)
        app.router.add_post("/__sandbox/advance", self._admin_advance)
        app.router.add_get("/__sandbox/stats", self._admin_stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=512)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)  # type: ignore[union-attr]
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- every request --------------------------------------------------------------------

    def _rate_window(self, token: str) -> tuple[int, float]:
        """Requests left for this token in the last 60 s, and seconds until one frees up."""
        now = time.monotonic()
        window = self._windows.setdefault(token, deque())
        span = self.options.rate_window_seconds
        while window and now - window[0] >= span:
            window.popleft()
        left = self.options.rate_limit_per_minute - len(window)
        return left, (span - (now - window[0])) if window else 0.0

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            # The sandbox's own controls: no budget, not counted; never from off this machine or
            # from a web page, and only with the sandbox's token.
            if not _from_loopback(request):
                return _json(403, {"message": "Sandbox controls answer on loopback only."})
            if _from_a_browser(request):
                return _json(403, {"message": "Sandbox controls do not answer requests from web pages."})
            if not self._token_matches(request):
                return _json(
                    401, {"message": "Sandbox controls need the sandbox's token (Authorization: Bearer)."}
                )
            return await handler(request)
        self.requests[request.path] += 1
        self.endpoints[_endpoint(request)] += 1
        try:
            response = await self._answer(request, handler)
        except _Dropped:
            self.statuses[DROPPED] += 1
            raise
        except web.HTTPException as error:  # an unknown path (404) or method (405)
            self.statuses[error.status] += 1
            raise
        except Exception:
            self.statuses[500] += 1  # aiohttp answers an unhandled error with a 500
            raise
        self.statuses[response.status] += 1
        return response

    def _token_matches(self, request: web.Request) -> bool:
        sent = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(sent, f"Bearer {self.options.token}".encode())

    async def _answer(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """An API request: latency, auth, acting account, rate limit, faults, then the route."""
        latency = self.options.latency_ms
        if self.options.latency_jitter_ms:
            latency += self._faults.uniform(0, self.options.latency_jitter_ms)
        if latency:
            await asyncio.sleep(latency / 1000)
        if not self._token_matches(request):
            return _json(401, {"message": "Unauthenticated."})
        token = self.options.token
        acting = request.headers.get("X-PLANNR-ACCOUNT-UUID")
        if acting is not None and acting not in self._staff_uuids:
            # Plannr scopes data by the acting account; a client account may not read the firm.
            return _json(403, {"message": "This action is unauthorized."})
        left, frees_in = self._rate_window(token)
        limit = str(self.options.rate_limit_per_minute)
        if left <= 0:
            headers = {"X-RateLimit-Limit": limit, "X-Ratelimit-Remaining": "0"}
            if self.options.send_retry_after:
                headers["Retry-After"] = str(max(1, int(frees_in + 0.999)))
            return _json(429, {"message": "Too Many Attempts."}, headers)
        self._windows[token].append(time.monotonic())
        self.peak_in_window = max(self.peak_in_window, len(self._windows[token]))
        if self.options.drop_rate and self._faults.random() < self.options.drop_rate:
            assert request.transport is not None
            request.transport.abort()  # a dropped connection: no status line at all
            raise _Dropped()
        if self.options.error_rate and self._faults.random() < self.options.error_rate:
            return _json(500, {"message": "Server Error"})
        try:
            response = await handler(request)
        except ListingError as error:
            response = _json(error.status, error.body)
        response.headers["X-RateLimit-Limit"] = limit
        response.headers["X-Ratelimit-Remaining"] = str(left - 1)
        return response

    def _page(
        self,
        request: web.Request,
        records: list[dict[str, Any]],
        listing: Listing,
        expand: Callable[[dict[str, Any], frozenset[str]], dict[str, Any]] | None = None,
        collection: str | None = None,
    ) -> web.Response:
        """A page of `records`; `collection` names them in the firm (e.g. "tasks") so a large
        listing is filtered and sorted once per version of the firm, not on every page."""
        version = self.firm.version_of(collection) if collection is not None else None
        body = paginate(records, dict(request.query), listing, f"{self.url}{request.path}", version)
        includes = people.requested(request.query)
        if expand is not None and includes:  # only the page sent is expanded
            body["data"] = [expand(record, includes) for record in body["data"]]
        return _json(200, body)

    def _expand_account(self, record: dict[str, Any], includes: frozenset[str]) -> dict[str, Any]:
        return people.expand_account(record, includes, self.firm.assignments, self._account_by_uuid)

    def _expand_goal(self, goal: dict[str, Any], includes: frozenset[str]) -> dict[str, Any]:
        return people.expand_goal(goal, includes, self.firm.goal_owners, self._account_by_uuid)

    @staticmethod
    def _not_found(model: str, uuid: str) -> web.Response:
        return _json(404, {"message": f"No query results for model [App\\Models\\{model}] {uuid}"})

    # -- routes ---------------------------------------------------------------------------

    async def _accounts(self, request: web.Request) -> web.Response:
        return self._page(request, self.firm.accounts, routes.ACCOUNTS, self._expand_account, "accounts")

    async def _clients(self, request: web.Request) -> web.Response:
        return self._page(request, self.firm.clients, routes.CLIENTS, self._expand_account, "clients")

    async def _client(self, request: web.Request) -> web.Response:
        # Looked up in the list itself, not the index: a test may change the firm's lists directly.
        uuid = request.match_info["uuid"]
        client = next((c for c in self.firm.clients if c["uuid"] == uuid), None)
        if client is None:
            return self._not_found("Client", uuid)
        return _json(200, self._expand_account(client, frozenset()))

    async def _goals(self, request: web.Request) -> web.Response:
        client_uuid = request.match_info["client_uuid"]
        goals = self.firm.goals_by_client.get(client_uuid)
        if goals is None:
            return self._not_found("Account", client_uuid)
        return self._page(request, goals, routes.GOALS, self._expand_goal, f"goals of {client_uuid}")

    async def _circles(self, request: web.Request) -> web.Response:
        return self._page(request, self.firm.circles, routes.CIRCLES, collection="circles")

    async def _tasks(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        return self._page(request, self._tasks_visible(query), routes.TASKS, collection="tasks")

    def _tasks_visible(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """routes.tasks_visible, kept while the firm stays the same version: at 500,000 tasks,
        picking out the top-level ones would cost every page ~30 ms."""
        if len(self.firm.tasks) <= CHECK_EVERY_RECORD_UP_TO:
            return routes.tasks_visible(self.firm.tasks, query)  # as the firm's list is now
        visibility = routes.subtask_visibility(query)
        version = self.firm.version_of("tasks")
        cached = self._visible.get(visibility)
        if cached is None or cached[0] != version:
            self._visible[visibility] = cached = (version, routes.tasks_visible(self.firm.tasks, query))
        return cached[1]

    async def _task(self, request: web.Request) -> web.Response:
        task = self._task_by_uuid.get(request.match_info["uuid"])
        if task is None:
            return self._not_found("Task", request.match_info["uuid"])
        return _json(200, {**task, "workflow_task": None})

    async def _admin_advance(self, request: web.Request) -> web.Response:
        raw = request.query.get("steps", "1")
        if not raw.isdigit() or not 0 <= int(raw) <= MAX_STEPS_PER_CALL:
            message = f"steps must be a whole number from 0 to {MAX_STEPS_PER_CALL}."
            return _json(422, {"message": message, "errors": {"steps": [message]}})
        done = self._advance_now(int(raw))  # on the loop already: between requests
        return _json(200, {"step": self.step, "steps": done, "counts": timeline.totals(done)})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return _json(200, self._stats_now())  # on the loop already: between requests

    def import_plans(self, now: datetime) -> Iterator[ImportPlan]:
        """Finished history, then the live imports created up to `now`."""
        yield from self.firm.imports
        interval = self.options.live_import_interval
        count = int((now - self.firm.reference) / interval) + 1 if now >= self.firm.reference else 0
        for index in range(count):
            if index not in self._live_imports:
                self._live_imports[index] = live_import(
                    self.options.seed,
                    index,
                    self.firm.reference,
                    interval,
                    self.firm.staff,
                    self._import_clients,
                )
            yield self._live_imports[index]

    async def _imports(self, request: web.Request) -> web.Response:
        now = self.options.clock()
        states = [
            state
            for plan in self.import_plans(now)
            if (state := plan.state_at(now, base_url=self.url)) is not None
        ]
        return self._page(request, states, routes.IMPORTS)

    async def _import(self, request: web.Request) -> web.Response:
        now = self.options.clock()
        for plan in self.import_plans(now):
            if plan.uuid == request.match_info["uuid"] and (
                state := plan.state_at(now, detail=True, base_url=self.url)
            ):
                return _json(200, state)
        return self._not_found("Import", request.match_info["uuid"])

    async def _error_report(self, request: web.Request) -> web.Response:
        """An import's error report, the file its `error_report.download_url` names."""
        now = self.options.clock()
        for plan in self.import_plans(now):
            if plan.report_uuid == request.match_info["uuid"] and plan.has_error_report(now):
                return web.Response(
                    status=200,
                    text=plan.error_report_csv(),
                    content_type="text/csv",
                    charset="utf-8",
                    headers={"Content-Disposition": f'attachment; filename="import-errors-{plan.uuid}.csv"'},
                )
        return self._not_found("File", request.match_info["uuid"])


# One embedded sandbox per (seed, size): several sandbox firms in one process (a run of two
# firms' assets, the UI's code server) each get their own imitation firm, never another's.
_embedded: dict[tuple[int, int], SandboxServer] = {}
_embedded_lock = threading.Lock()


def embedded_sandbox(seed: int = 42, clients: int = 250) -> SandboxServer:
    """The process-wide sandbox for this seed the pipeline uses when no credentials are set
    (started once). Each seed but the default has its own token, so one firm's token never
    opens another firm's sandbox."""
    with _embedded_lock:
        if (seed, clients) not in _embedded:
            token = {} if seed == 42 else {"token": f"{DEFAULT_TOKEN}-seed-{seed}"}
            options = SandboxOptions(seed=seed, size=FirmSize(clients=clients), **token)
            _embedded[(seed, clients)] = server = SandboxServer(options).start()
            log.info(
                "No PLANNR_API_TOKEN or PLANNR_BASE_URL set: serving the embedded sandbox at %s",
                server.url,
            )
        return _embedded[(seed, clients)]
