"""An async client for the Plannr REST API.

Speed comes from three things: pages of 500, the remaining pages of a listing fetched
concurrently once page 1 tells `meta.last_page`, and aiohttp under httpx (httpx's own pool was
4x slower at high concurrency, docs/design.md). Politeness comes from the shared request budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from plannr_pipeline.api import limits
from plannr_pipeline.api.budget import RequestBudget, budget_of
from plannr_pipeline.api.config import PlannrSettings
from plannr_pipeline.api.endpoints import PAGE_SIZE
from plannr_pipeline.api.errors import (
    ERRORS_BY_STATUS,
    MalformedResponseError,
    NotFoundError,
    PlannrHTTPError,
    ResponseLimitError,
    RetriesExhaustedError,
    TransientHTTPError,
    UnreachableError,
    redact,
)
from plannr_pipeline.api.seen import SeenRecords, Shown
from plannr_pipeline.api.stats import RequestStats, endpoint_of

USER_AGENT = "plannr-pipeline/0.1"
# A Retry-After longer than this is taken as this: a server asking for an hour would otherwise
# hang the run; the request is retried, and fails in the usual way if the server still refuses.
MAX_RETRY_AFTER_SECONDS = 15 * 60
# Refused connections are tried this many times before the API is called unreachable.
UNREACHABLE_ATTEMPTS = 3
# Listing pages in flight at once (fan-outs use the whole PLANNR_MAX_CONCURRENCY). A page of 500
# tasks decodes to ~7 MB of Python objects, and one that arrives while another is being staged
# waits decoded: with 32 in flight a quick server piled them up (10,000 clients: a peak ~25 MB
# higher). Four keep a server busy; under Plannr's 500 a minute the budget paces them anyway.
LISTING_PAGES_IN_FLIGHT = 4


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    number: int
    last_page: int | None  # None when the API did not say and it cannot be worked out
    total: int | None
    has_next: bool | None = None  # from links.next, when the API sent links
    # Records shown earlier in this listing that came again with a newer `updated_at`: they
    # replace the earlier copy (not counted again against the total).
    newer_copies: list[dict[str, Any]] = field(default_factory=list)
    # When this page was asked for: the API's answer holds at some moment after it, so a record
    # on it is known to have looked like this no earlier than this (see storage/commit.py).
    requested_at: datetime | None = None


def _page_of(body: Any, endpoint: str, number: int, per_page: int) -> Page:
    """Read one page of a Laravel listing, trusting no single field.

    `data` must be a list (a null or an object is an error, not an empty page); the last page
    comes from `meta.last_page`, else from `meta.total`/`per_page`, else from `links.next`.
    """
    if not isinstance(body, dict) or ("data" not in body and "meta" not in body):
        raise MalformedResponseError(endpoint, number, "the body has neither `data` nor `meta`")
    data = body.get("data")
    if not isinstance(data, list):
        raise MalformedResponseError(endpoint, number, f"`data` is {type(data).__name__}, not a list")
    # One doc snapshot shows `data` as an array of arrays; flatten rather than choke.
    records: list[dict[str, Any]] = []
    for item in data:
        if isinstance(item, list):
            records.extend(x for x in item if isinstance(x, dict))
        elif isinstance(item, dict):
            records.append(item)
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    total = _whole(meta.get("total"))
    last_page = _whole(meta.get("last_page"))
    if last_page is None and total is not None:
        last_page = max(1, -(-total // per_page))
    links = body.get("links")
    has_next = bool(links.get("next")) if isinstance(links, dict) and "next" in links else None
    return Page(records, number, last_page, total, has_next)


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date), capped so a run never hangs."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _reset_seconds(headers: httpx.Headers) -> float | None:
    """X-RateLimit-Reset as seconds from now: a Unix time (Laravel, GitHub) or, if small, a delay."""
    raw = headers.get("X-RateLimit-Reset")
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    if value is None or math.isnan(value):
        return None
    seconds = value - time.time() if value > 1_000_000_000 else value
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    return int(raw) if raw is not None and raw.strip().isdigit() else None


async def bounded_as_completed(jobs: Iterable[Awaitable[Any]], limit: int) -> AsyncIterator[Any]:
    """Run awaitables with at most `limit` in flight; yield results as they finish.

    Jobs are started lazily, so memory holds at most `limit` results at a time however many
    jobs there are.
    """
    iterator = iter(jobs)
    pending: set[asyncio.Task] = set()
    try:
        while True:
            for job in iterator:
                pending.add(asyncio.ensure_future(job))
                if len(pending) >= limit:
                    break
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield task.result()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


class PlannrClient:
    """Use as `async with PlannrClient(settings) as client:`."""

    def __init__(
        self,
        settings: PlannrSettings,
        *,
        stats: RequestStats | None = None,
        budget: RequestBudget | None = None,
        max_attempts: int = 6,
        timeout_seconds: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_warning: Callable[[str], None] | None = None,
        deadline_seconds: float = limits.REQUEST_DEADLINE_SECONDS,
    ) -> None:
        self.settings = settings
        self._deadline = deadline_seconds
        self.stats = stats or RequestStats()
        self.budget = budget or budget_of(settings)
        self._max_attempts = max_attempts
        self._timeout = timeout_seconds
        self._backoff = wait_exponential_jitter(initial=backoff_initial, max=backoff_max)
        self._on_warning = on_warning
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> PlannrClient:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.settings.token}",
            "User-Agent": USER_AGENT,
            # Only encodings read_body can decode within its limits (httpx would add br or zstd).
            "Accept-Encoding": limits.ENCODINGS,
        }
        if self.settings.account_uuid:
            headers["X-PLANNR-ACCOUNT-UUID"] = self.settings.account_uuid
        pool = httpx.Limits(max_connections=self.settings.max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url,
            headers=headers,
            timeout=self._timeout,
            transport=AiohttpTransport(limits=pool, trust_env=False),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _warn(self, message: str) -> None:
        self.stats.warnings.append(message)
        if self._on_warning:
            self._on_warning(message)

    # -- single requests ------------------------------------------------------------------

    def _wait_before_retry(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, TransientHTTPError) and error.retry_after is not None:
            # The budget already holds every caller until the server's window has passed; add jitter
            # so the callers do not all return in the same instant.
            return random.uniform(0.0, 0.25)
        return self._backoff(retry_state)

    def _stop_retrying(self, retry_state: RetryCallState) -> bool:
        """Give up after max_attempts, or after a few refused connections: nobody is there."""
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, TransientHTTPError) and error.unreachable:
            return retry_state.attempt_number >= UNREACHABLE_ATTEMPTS
        return retry_state.attempt_number >= self._max_attempts

    def _count_retry(self, _: RetryCallState) -> None:
        self.stats.retries += 1

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET a path; retry what is transient; raise a specific error for what is not."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientHTTPError),
            wait=self._wait_before_retry,
            stop=self._stop_retrying,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params)
        except TransientHTTPError as error:
            if error.unreachable:
                raise UnreachableError(self.settings.base_url, str(error)) from None
            raise RetriesExhaustedError(endpoint_of(path), self._max_attempts, str(error)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_one(self, path: str) -> dict[str, Any]:
        """A single record. Plannr's show routes return a bare object; accept a `data` wrapper too."""
        body = await self.get(path)
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            return body["data"]
        return body

    async def _get_once(self, path: str, params: dict[str, Any] | None) -> Any:
        assert self._http is not None, "use PlannrClient inside `async with`"
        self.stats.budget_wait_seconds += await self.budget.acquire()
        endpoint = endpoint_of(path)
        # One deadline over connecting, the headers and every chunk of the body.
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                status, headers, body = await self._fetch(path, params, endpoint)
        except TimeoutError:
            if not deadline.expired():  # a read timeout of the transport's own: retried
                raise TransientHTTPError(f"timed out talking to {self.settings.base_url}") from None
            raise ResponseLimitError(
                endpoint, f"the answer took over {self._deadline:g} s from request to last byte"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            # The aiohttp transport reports every lost connection as a ConnectTimeout: one the
            # server closed without answering is a dropped connection, retried like any other.
            if _caused_by(error, aiohttp.ServerDisconnectedError):
                raise TransientHTTPError(
                    f"{self.settings.base_url} closed the connection without answering"
                ) from None
            # Refused, unresolvable or silent: nobody is answering there (a retry or two covers a blip).
            why = "connection refused" if _caused_by(error, ConnectionRefusedError) else type(error).__name__
            raise TransientHTTPError(
                f"could not connect to {self.settings.base_url} ({why})", unreachable=True
            ) from None
        except (httpx.TransportError, httpx.DecodingError, aiohttp.ClientError, zlib.error) as error:
            # Timeouts, bad status lines, oversized headers, bad gzip (the aiohttp transport lets
            # some of these through as aiohttp's own errors): name the kind, never echo the request.
            raise TransientHTTPError(f"{type(error).__name__} talking to {self.settings.base_url}") from None
        self.stats.record(path, status, len(body))
        self.budget.observe_remaining(_int_header(headers, "X-Ratelimit-Remaining"))
        self.budget.observe_server_limit(_int_header(headers, "X-RateLimit-Limit"))
        # Per minute of real time, beside the requests a minute the progress lines count: a
        # window other than Plannr's minute (the sandbox's scaled clock) allows limit x 60 / window.
        self.stats.budget_per_minute = round(self.budget.limit * 60 / self.budget.window_seconds)
        if status == 429:
            # Hold every process of this token (the pause is in the shared budget file) until the
            # server's window has passed: Retry-After, else X-RateLimit-Reset, else a whole window
            # (the server counts requests we cannot see, so take the window as spent). The budget
            # then paces the retries; no backoff on top.
            hold = _retry_after_seconds(headers)
            if hold is None:
                hold = _reset_seconds(headers)
            if hold is None:
                hold = self.budget.window_seconds
            self.budget.pause_everyone(hold)
            raise TransientHTTPError("429 Too Many Requests", retry_after=hold, status=429)
        if status >= 500:
            raise TransientHTTPError(f"{status} server error", status=status)
        if status >= 400:
            self._raise_for_client_error(path, status, body)
        try:
            return limits.parse_json(endpoint, body)
        except ValueError:
            # A 2xx with a body cut short is a transport fault in disguise.
            raise TransientHTTPError(f"{status} with a body that is not JSON") from None

    async def _fetch(
        self, path: str, params: dict[str, Any] | None, endpoint: str
    ) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and the decoded body, read within the size limits."""
        assert self._http is not None
        async with self._http.stream("GET", path, params=params) as response:
            length = response.headers.get("Content-Length", "").strip()
            body = await limits.read_body(
                endpoint,
                response.aiter_raw(),
                response.headers.get("Content-Encoding", ""),
                int(length) if length.isdigit() else None,
            )
            return response.status_code, response.headers, body

    def _raise_for_client_error(self, path: str, status: int, body: bytes) -> None:
        try:
            payload = limits.parse_json(endpoint_of(path), body)
        except (ValueError, ResponseLimitError):
            payload = {}
        message = payload.get("message") if isinstance(payload, dict) else None
        if message is not None:
            message = redact(str(message), self.settings.token)[:300]
        endpoint = endpoint_of(path)
        error_class = ERRORS_BY_STATUS.get(status)
        if status == 422 and error_class is not None:
            field_errors = payload.get("errors") if isinstance(payload, dict) else None
            if isinstance(field_errors, dict):  # an API may echo what it was sent: never the token
                field_errors = {
                    redact(str(name), self.settings.token): [
                        redact(str(m), self.settings.token)[:300]
                        for m in (messages if isinstance(messages, list) else [messages])
                    ]
                    for name, messages in field_errors.items()
                }
            raise error_class(endpoint, message, field_errors)
        if error_class is not None:
            raise error_class(endpoint, message)
        unexpected = PlannrHTTPError(endpoint, message, " Unexpected status.")
        unexpected.status = status
        raise unexpected

    # -- listings -------------------------------------------------------------------------

    async def _get_page(self, path: str, params: dict[str, Any], number: int) -> Page:
        requested_at = datetime.now(UTC)
        body = await self.get(path, {**params, "page": number})
        page = _page_of(body, endpoint_of(path), number, int(params.get("per_page", PAGE_SIZE)))
        return dataclasses.replace(page, requested_at=requested_at)

    async def iter_pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Page]:
        """Every page of a listing, each record once; the last page yielded carries the final total.

        Once the page count is known the rest are fetched concurrently. Page-number paging over
        a list that changes while it is read can skip a record even when the total stays the
        same, so a sign of a shift (a uuid seen twice, a total that moved, a short page before
        the last, fewer records than the total) triggers one sequential re-read that yields
        whatever the first pass missed.
        """
        params = {**(params or {}), "per_page": PAGE_SIZE}
        listing = _ListingPass(endpoint_of(path))
        first = await self._get_page(path, params, 1)
        if first.last_page is not None:
            limits.check_page_count(listing.endpoint, first.last_page)
        yield listing.take(first)
        if first.last_page is None:  # no meta: follow links.next one page at a time
            async for page in self._follow_next(path, params, first):
                yield listing.take(page)
        else:
            last_page, fetched_up_to = first.last_page, 1
            while fetched_up_to < last_page:
                numbers = range(fetched_up_to + 1, last_page + 1)
                fetched_up_to = last_page
                jobs = (self._get_page(path, params, n) for n in numbers)
                in_flight = min(self.settings.max_concurrency, LISTING_PAGES_IN_FLIGHT)
                async for page in bounded_as_completed(jobs, in_flight):
                    last_page = max(last_page, page.last_page or last_page)
                    limits.check_page_count(listing.endpoint, last_page)
                    yield listing.take(page)
        if listing.shifted():
            self._warn(
                f"GET {listing.endpoint}: {listing.shift_reason()}; reading the listing again to catch skipped records"
            )
            listing.rereading = True
            async for page in self._follow_next(path, params, None):
                yield listing.take(page)

    async def _follow_next(
        self, path: str, params: dict[str, Any], after: Page | None
    ) -> AsyncIterator[Page]:
        """Pages after `after` (from page 1 when None), one at a time, until the listing ends."""
        page = after
        # An empty page ends the walk even if the API claims there is more (no endless loop).
        while page is None or (
            page.records and (page.has_next or (page.has_next is None and len(page.records) >= PAGE_SIZE))
        ):
            number = 1 if page is None else page.number + 1
            limits.check_page_count(endpoint_of(path), number)
            page = await self._get_page(path, params, number)
            yield page

    async def walk_pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Page]:
        """Pages one after another, for walks that stop early (newest first, down to a watermark)."""
        params = {**(params or {}), "per_page": PAGE_SIZE}
        listing = _ListingPass(endpoint_of(path))
        async for page in self._follow_next(path, params, None):
            yield listing.take(page)

    async def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        async for page in self.iter_pages(path, params):
            records.extend(page.records)
            records = with_newer_copies(records, page.newer_copies)
        return records

    async def fan_out(
        self,
        parent_uuids: Iterable[str],
        path_for: Callable[[str], str],
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]], int | None, datetime]]:
        """For per-parent endpoints (goals of each client): each parent's records, the listing's
        total and when it was asked for, concurrently. A parent deleted since it was listed (404)
        has none."""

        async def one(parent_uuid: str) -> tuple[str, list[dict[str, Any]], int | None, datetime]:
            records: list[dict[str, Any]] = []
            total: int | None = None
            requested_at = datetime.now(UTC)
            try:
                async for page in self.iter_pages(path_for(parent_uuid), params):
                    records.extend(page.records)
                    records = with_newer_copies(records, page.newer_copies)
                    total = page.total if page.total is not None else total
            except NotFoundError:
                self._warn(
                    f"{endpoint_of(path_for(parent_uuid))}: 404 for {parent_uuid}; deleted since it was listed, so it has none"
                )
                return parent_uuid, [], 0, requested_at
            return parent_uuid, records, total, requested_at

        jobs = (one(uuid) for uuid in parent_uuids)
        async for result in bounded_as_completed(jobs, self.settings.max_concurrency):
            yield result


async def _exists(api: PlannrClient, uuid: str, path: str) -> tuple[str, bool]:
    try:
        await api.get_one(path)
    except NotFoundError:
        return uuid, False
    return uuid, True


async def gone(api: PlannrClient, uuids: Iterable[str], path_of: Callable[[str], str]) -> set[str]:
    """Which of `uuids` the API's show route answers 404 for (one request each, concurrently)."""
    jobs = (_exists(api, uuid, path_of(uuid)) for uuid in uuids)
    return {
        uuid async for uuid, exists in bounded_as_completed(jobs, api.settings.max_concurrency) if not exists
    }


def with_newer_copies(records: list[dict[str, Any]], newer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` with each record that has a newer copy replaced by it (same uuid)."""
    if not newer:
        return records
    newest = {record["uuid"]: record for record in newer}
    return [newest.get(record.get("uuid"), record) for record in records]


class _ListingPass:
    """What one listing has shown so far: seen uuids, the total, and signs that it shifted."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.seen = SeenRecords()
        self.first_total: int | None = None
        self.total: int | None = None
        self.duplicates = 0
        self.short_pages = 0
        self.without_uuid = 0
        self.rereading = False  # a second pass yields only records the first did not show

    def take(self, page: Page) -> Page:
        if page.total is not None:
            self.first_total = page.total if self.first_total is None else self.first_total
            self.total = page.total
        if page.last_page is not None and page.number < page.last_page and len(page.records) < PAGE_SIZE:
            self.short_pages += 1
        fresh, newer = [], []
        for record in page.records:
            uuid = record.get("uuid")
            if uuid is None:
                if self.rereading:
                    continue  # no way to tell it from the one the first pass showed
                self.without_uuid += 1
            elif (shown := self.seen.show(uuid, record.get("updated_at"))) is not Shown.FIRST:
                if not self.rereading:
                    self.duplicates += 1
                if shown is Shown.NEWER:
                    newer.append(record)
                continue
            fresh.append(record)
        if len(fresh) == len(page.records) and page.total == self.total:
            return page
        return Page(fresh, page.number, page.last_page, self.total, page.has_next, newer, page.requested_at)

    def shifted(self) -> bool:
        return bool(
            self.duplicates
            or self.short_pages
            or self.total != self.first_total
            or (self.total is not None and self.received < self.total)
        )

    @property
    def received(self) -> int:
        return len(self.seen) + self.without_uuid

    def shift_reason(self) -> str:
        if self.total != self.first_total:
            return f"total changed from {self.first_total} to {self.total} during the listing"
        if self.duplicates:
            return f"{self.duplicates} record(s) appeared on two pages"
        if self.short_pages:
            return f"{self.short_pages} page(s) before the last were short"
        return f"{self.received} records received but the API reported {self.total}"
