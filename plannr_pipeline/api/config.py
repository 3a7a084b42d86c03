"""Connection settings, read from the environment variables that docs/design.md fixes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from plannr_pipeline.api.errors import ConfigurationError

DEFAULT_BASE_URL = "https://api.plannrcrm.com"
# Plannr documents 500 requests per minute per user. Until the server announces its limit
# (X-RateLimit-Limit) the budget stays a little below that; once it does, the budget follows it
# (api/budget.py), capped by PLANNR_RATE_LIMIT_PER_MINUTE when that is set.
DEFAULT_RATE_LIMIT_PER_MINUTE = 450
DEFAULT_MAX_CONCURRENCY = 16


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """An environment variable that must be a whole number above zero, or its default."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be a whole number, got {raw!r}. Unset it to use the default ({default})."
        ) from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than 0, got {value}.")
    return value


@dataclass(frozen=True)
class PlannrSettings:
    """Where the API is and who we are to it.

    `token` is excluded from repr so that a settings object in a log line or a traceback
    never shows the secret.
    """

    base_url: str = DEFAULT_BASE_URL
    token: str = field(default="", repr=False)
    account_uuid: str | None = None
    rate_limit_per_minute: int | None = None  # set: a ceiling; unset: follow the server's limit
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @property
    def starting_budget(self) -> int:
        return self.rate_limit_per_minute or DEFAULT_RATE_LIMIT_PER_MINUTE

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigurationError(
                "No Plannr API token. Set PLANNR_API_TOKEN to a Personal Access Token "
                "(Plannr: Settings -> Account Details -> Personal Access Tokens), or unset both "
                "PLANNR_API_TOKEN and PLANNR_BASE_URL to use the embedded sandbox."
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"PLANNR_BASE_URL must start with http:// or https://, got {self.base_url!r}."
            )

    @staticmethod
    def wants_sandbox(env: Mapping[str, str] | None = None) -> bool:
        """With neither a token nor a base URL, the embedded sandbox serves."""
        env = os.environ if env is None else env
        return not env.get("PLANNR_API_TOKEN") and not env.get("PLANNR_BASE_URL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannrSettings:
        env = os.environ if env is None else env
        return cls(
            base_url=(env.get("PLANNR_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            token=env.get("PLANNR_API_TOKEN", ""),
            account_uuid=env.get("PLANNR_ACCOUNT_UUID") or None,
            rate_limit_per_minute=budget_from_env(env),
            max_concurrency=concurrency_from_env(env),
        )


def budget_from_env(env: Mapping[str, str]) -> int | None:
    """PLANNR_RATE_LIMIT_PER_MINUTE, or None: follow the limit the server announces."""
    return positive_int(env, "PLANNR_RATE_LIMIT_PER_MINUTE", 0) or None


def concurrency_from_env(env: Mapping[str, str]) -> int:
    return positive_int(env, "PLANNR_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)
