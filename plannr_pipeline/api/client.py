"""An async client for the Plannr REST API.

Speed comes from three things: pages of 500, the remaining pages of a listing fetched
concurrently once page 1 tells `meta.last_page`, and aiohttp under httpx (httpx's own pool was
4x slower at high concurrency, docs/design.md). Politeness comes from the shared request budget.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from plannr_pipeline.api.budget import RequestBudget, budget_for
from plannr_pipeline.api.config import PlannrSettings
from plannr_pipeline.api.errors import (
    ERRORS_BY_STATUS,
    PlannrHTTPError,
    RetriesExhaustedError,
    TransientHTTPError,
    redact,
)
from plannr_pipeline.api.stats import RequestStats, endpoint_of

PAGE_SIZE = 500  # the documented maximum
USER_AGENT = "plannr-pipeline/0.1"


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    number: int
    last_page: int
    total: int | None


def _records_of(body: Any) -> list[dict[str, Any]]:
    data = body.get("data", []) if isinstance(body, dict) else body
    # One doc snapshot shows `data` as an array of arrays; flatten rather than choke.
    flat: list[dict[str, Any]] = []
    for item in data or []:
        if isinstance(item, list):
            flat.extend(x for x in item if isinstance(x, dict))
        elif isinstance(item, dict):
            flat.append(item)
    return flat


def _retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(float(raw), 0.0) if raw is not None else None
    except ValueError:
        return None


def _int_header(response: httpx.Response, name: str) -> int | None:
    raw = response.headers.get(name)
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
    ) -> None:
        self.settings = settings
        self.stats = stats or RequestStats()
        self.budget = budget or budget_for(settings.token, settings.base_url, settings.rate_limit_per_minute)
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
        }
        if self.settings.account_uuid:
            headers["X-PLANNR-ACCOUNT-UUID"] = self.settings.account_uuid
        limits = httpx.Limits(max_connections=self.settings.max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url,
            headers=headers,
            timeout=self._timeout,
            transport=AiohttpTransport(limits=limits, trust_env=False),
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
            # The budget already holds every caller until Retry-After has passed; add jitter
            # so the callers do not all return in the same instant.
            return random.uniform(0.0, 0.25)
        return self._backoff(retry_state)

    def _count_retry(self, _: RetryCallState) -> None:
        self.stats.retries += 1

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET a path; retry what is transient; raise a specific error for what is not."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientHTTPError),
            wait=self._wait_before_retry,
            stop=stop_after_attempt(self._max_attempts),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params)
        except TransientHTTPError as error:
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
        try:
            response = await self._http.get(path, params=params)
        except httpx.TransportError as error:
            # Timeouts and dropped connections: name the kind, never echo the request (headers).
            raise TransientHTTPError(f"{type(error).__name__} talking to {self.settings.base_url}") from None
        body = response.content
        self.stats.record(path, response.status_code, len(body))
        self.budget.observe_remaining(_int_header(response, "X-Ratelimit-Remaining"))
        status = response.status_code
        if status == 429:
            retry_after = _retry_after_seconds(response)
            self.budget.pause_for(retry_after if retry_after is not None else self.budget.window_seconds / self.budget.limit)
            # Without Retry-After, this caller falls back to exponential backoff.
            raise TransientHTTPError("429 Too Many Requests", retry_after=retry_after, status=429)
        if status >= 500:
            raise TransientHTTPError(f"{status} server error", status=status)
        if status >= 400:
            self._raise_for_client_error(path, status, body)
        try:
            return json.loads(body)
        except ValueError:
            # A 2xx with a body cut short is a transport fault in disguise.
            raise TransientHTTPError(f"{status} with a body that is not JSON") from None

    def _raise_for_client_error(self, path: str, status: int, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        message = payload.get("message") if isinstance(payload, dict) else None
        if message is not None:
            message = redact(str(message), self.settings.token)[:300]
        endpoint = endpoint_of(path)
        error_class = ERRORS_BY_STATUS.get(status)
        if status == 422 and error_class is not None:
            raise error_class(endpoint, message, payload.get("errors") if isinstance(payload, dict) else None)
        if error_class is not None:
            raise error_class(endpoint, message)
        unexpected = PlannrHTTPError(endpoint, message, " Unexpected status.")
        unexpected.status = status
        raise unexpected

    # -- listings -------------------------------------------------------------------------

    async def _get_page(self, path: str, params: dict[str, Any], number: int) -> Page:
        body = await self.get(path, {**params, "page": number})
        meta = body.get("meta", {}) if isinstance(body, dict) else {}
        return Page(
            records=_records_of(body),
            number=number,
            last_page=int(meta.get("last_page") or number),
            total=int(meta["total"]) if meta.get("total") is not None else None,
        )

    async def iter_pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Page]:
        """Every page of a listing, in completion order, each record once.

        Records are deduplicated on `uuid`, because page-number paging over a list that changes
        while we read it can show a record twice. A total that changes mid-listing is reported
        as a warning, and pages that appear because the list grew are fetched too.
        """
        params = {**(params or {}), "per_page": PAGE_SIZE}
        first = await self._get_page(path, params, 1)
        seen: set[str] = set()
        yield self._dedupe(first, seen)
        reported_total = first.total
        last_page, fetched_up_to = first.last_page, 1
        while fetched_up_to < last_page:
            numbers = range(fetched_up_to + 1, last_page + 1)
            fetched_up_to = last_page
            jobs = (self._get_page(path, params, n) for n in numbers)
            async for page in bounded_as_completed(jobs, self.settings.max_concurrency):
                if page.total is not None and reported_total is not None and page.total != reported_total:
                    self._warn(
                        f"GET {endpoint_of(path)}: total changed from {reported_total} to "
                        f"{page.total} during the listing (records were added or removed)"
                    )
                    reported_total = page.total
                last_page = max(last_page, page.last_page)
                yield self._dedupe(page, seen)

    async def walk_pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Page]:
        """Pages one after another, for walks that stop early (newest first, down to a watermark)."""
        params = {**(params or {}), "per_page": PAGE_SIZE}
        seen: set[str] = set()
        number, last_page = 1, 1
        while number <= last_page:
            page = await self._get_page(path, params, number)
            last_page = page.last_page
            yield self._dedupe(page, seen)
            number += 1

    def _dedupe(self, page: Page, seen: set[str]) -> Page:
        fresh = []
        for record in page.records:
            uuid = record.get("uuid")
            if uuid is not None and uuid in seen:
                continue
            if uuid is not None:
                seen.add(uuid)
            fresh.append(record)
        return page if len(fresh) == len(page.records) else Page(fresh, page.number, page.last_page, page.total)

    async def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [record async for page in self.iter_pages(path, params) for record in page.records]

    async def fan_out(
        self,
        parent_uuids: Iterable[str],
        path_for: Callable[[str], str],
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """For per-parent endpoints (goals of each client): each parent's records, concurrently."""

        async def one(parent_uuid: str) -> tuple[str, list[dict[str, Any]]]:
            return parent_uuid, await self.list_all(path_for(parent_uuid), params)

        jobs = (one(uuid) for uuid in parent_uuids)
        async for result in bounded_as_completed(jobs, self.settings.max_concurrency):
            yield result
