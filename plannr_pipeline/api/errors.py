"""Errors the client raises. Every message says what went wrong and what to do next.

Messages are built from the status, the endpoint and the API's own `message`; the token is
never part of them (`redact` scrubs it from any text taken from a response, just in case).
"""

from __future__ import annotations


class PlannrError(Exception):
    """Base of every error this package raises about the Plannr API."""


class ConfigurationError(PlannrError):
    """A setting is missing or malformed."""


class PlannrHTTPError(PlannrError):
    """The API answered with a status we do not retry."""

    status: int = 0
    advice: str = ""

    def __init__(self, endpoint: str, api_message: str | None, details: str = "") -> None:
        self.endpoint = endpoint
        self.api_message = api_message
        said = f' Plannr said: "{api_message}".' if api_message else ""
        super().__init__(f"{self.status} from GET {endpoint}.{said}{details} {self.advice}".strip())


class BadRequestError(PlannrHTTPError):
    status = 400
    advice = "A filter or sort this client sent is not accepted by this endpoint; this is a bug in plannr-pipeline, please report it with this message."


class AuthenticationError(PlannrHTTPError):
    status = 401
    advice = (
        "The API token was rejected. Check PLANNR_API_TOKEN: it may be mistyped, expired or "
        "revoked. Create a new Personal Access Token in Plannr under Settings -> Account "
        "Details -> Personal Access Tokens."
    )


class PermissionDeniedError(PlannrHTTPError):
    status = 403
    advice = (
        "The token is valid but this account may not read this data. Set PLANNR_ACCOUNT_UUID "
        "to an owner or admin account (see GET /api/v1/logins, data[].account.uuid)."
    )


class NotFoundError(PlannrHTTPError):
    status = 404
    advice = (
        "The record or route does not exist for this account. Check PLANNR_BASE_URL and "
        "PLANNR_ACCOUNT_UUID; a record deleted since it was listed also gives this."
    )


class ValidationError(PlannrHTTPError):
    status = 422
    advice = "The API rejected the request parameters; this is a bug in plannr-pipeline, please report it with this message."

    def __init__(self, endpoint: str, api_message: str | None, field_errors: dict | None = None) -> None:
        self.field_errors = field_errors or {}
        details = ""
        if self.field_errors:
            parts = [f"{name}: {'; '.join(map(str, msgs))}" for name, msgs in self.field_errors.items()]
            details = " Fields: " + ", ".join(parts) + "."
        super().__init__(endpoint, api_message, details)


class RetriesExhaustedError(PlannrError):
    """A transient failure (429, 5xx, timeout, dropped connection) outlasted every retry."""

    def __init__(self, endpoint: str, attempts: int, last_problem: str) -> None:
        self.endpoint = endpoint
        self.attempts = attempts
        super().__init__(
            f"GET {endpoint} failed {attempts} times; last problem: {last_problem}. "
            "The Plannr API may be down or overloaded: try again later, or lower "
            "PLANNR_MAX_CONCURRENCY / PLANNR_RATE_LIMIT_PER_MINUTE."
        )


class TransientHTTPError(PlannrError):
    """Internal: a failure worth retrying. A 429 carries how long the budget holds every caller."""

    def __init__(
        self,
        problem: str,
        retry_after: float | None = None,
        status: int | None = None,
        unreachable: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.status = status
        self.unreachable = unreachable
        super().__init__(problem)


class UnreachableError(PlannrError):
    """Nobody answers at the base URL: retrying the step later would only make the sync slow."""

    def __init__(self, base_url: str, last_problem: str) -> None:
        self.base_url = base_url
        super().__init__(
            f"{last_problem}. Check PLANNR_BASE_URL and that "
            "the API is up; unset PLANNR_BASE_URL and PLANNR_API_TOKEN to use the embedded sandbox."
        )


ERRORS_BY_STATUS: dict[int, type[PlannrHTTPError]] = {
    cls.status: cls
    for cls in (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ValidationError)
}


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


class MalformedResponseError(PlannrError):
    """A 2xx whose body is not a listing page: an API that lies is an error, never an empty page."""

    def __init__(self, endpoint: str, page: int, problem: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"GET {endpoint} page {page}: {problem}. Nothing was stored from this listing; "
            "if it persists, the API has changed or a proxy is answering for it."
        )


class ResponseLimitError(PlannrError):
    """An answer past a limit no real Plannr answer comes near (api/limits.py): a hostile or broken
    server, or a proxy answering for it. Not retried: asking again would only spend the budget."""

    def __init__(self, endpoint: str, problem: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"GET {endpoint}: {problem}. Nothing was stored from this answer; Plannr never sends one "
            "like it: check that PLANNR_BASE_URL points at the Plannr API."
        )
