"""The Plannr HTTP client: paging, request budget, retries and errors.

Knows nothing of Dagster or DuckDB, so it can be used and tested on its own.
"""

from plannr_pipeline.api.client import Page, PlannrClient
from plannr_pipeline.api.config import PlannrSettings
from plannr_pipeline.api.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    PlannrError,
    ResponseLimitError,
    RetriesExhaustedError,
    UnreachableError,
    ValidationError,
)
from plannr_pipeline.api.stats import RequestStats

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "MalformedResponseError",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "PlannrClient",
    "PlannrError",
    "PlannrSettings",
    "RequestStats",
    "ResponseLimitError",
    "RetriesExhaustedError",
    "UnreachableError",
    "ValidationError",
]
