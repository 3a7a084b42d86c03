"""Connection settings, read from the environment variables that docs/design.md fixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from plannr_pipeline.api.budget_url import budget_server_from_env
from plannr_pipeline.api.errors import ConfigurationError, redact
from plannr_pipeline.private_files import make_private_dir, not_ours

DEFAULT_BASE_URL = "https://api.plannrcrm.com"
# Plannr documents 500 requests per minute per user. Until the server announces its limit
# (X-RateLimit-Limit) the budget stays a little below that; once it does, the budget follows it
# (api/budget.py), capped by PLANNR_RATE_LIMIT_PER_MINUTE when that is set.
DEFAULT_RATE_LIMIT_PER_MINUTE = 450
DEFAULT_MAX_CONCURRENCY = 16
# Plannr counts its limit over a minute. A sandbox whose clock runs faster (`plannr-pipeline
# sandbox --time-scale K`) counts it over 60/K seconds; PLANNR_RATE_WINDOW_SECONDS says so.
PLANNR_RATE_WINDOW_SECONDS = 60.0


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
    rate_window_seconds: float = PLANNR_RATE_WINDOW_SECONDS

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
        if any(c in self.token for c in "\r\n") or self.token != self.token.strip():
            raise ConfigurationError(
                "PLANNR_API_TOKEN has a line break or surrounding spaces (a copy-paste slip?): set it to the token alone."
            )
        if bad := _first_unprintable(self.token):
            # Never echo the token or the character: position and kind are enough to find it.
            raise ConfigurationError(
                f"PLANNR_API_TOKEN has {bad}: a Plannr token is printable ASCII only; "
                "copy it again from Plannr (Settings -> Account Details -> Personal Access Tokens)."
            )
        check_rate_window(self.rate_window_seconds)
        if self.account_uuid is not None:
            check_account_uuid(self.account_uuid)
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"PLANNR_BASE_URL must start with http:// or https://, got {redact(self.base_url, self.token)!r}."
            )
        url = urlparse(self.base_url)
        if url.username or url.password:
            raise ConfigurationError(
                "PLANNR_BASE_URL carries credentials (user:password@): remove them; the token goes in PLANNR_API_TOKEN."
            )
        loopback = url.hostname in ("localhost", "::1") or (url.hostname or "").startswith("127.")
        # No way around this one: a token sent in clear across a network is a token given away.
        if url.scheme == "http" and not loopback:
            raise ConfigurationError(
                f"PLANNR_BASE_URL is plain http:// to {url.hostname}, which would send the token unencrypted: use "
                "https:// (plain http:// is for 127.0.0.1 and localhost only)."
            )

    @staticmethod
    def wants_sandbox(env: Mapping[str, str] | None = None) -> bool:
        """Whether the environment asks for the embedded sandbox (see `sandbox_wanted`)."""
        env = os.environ if env is None else env
        return sandbox_wanted(env.get("PLANNR_API_TOKEN"), env.get("PLANNR_BASE_URL"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannrSettings:
        env = os.environ if env is None else env
        return cls(
            base_url=(env.get("PLANNR_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            token=env.get("PLANNR_API_TOKEN", ""),
            account_uuid=env.get("PLANNR_ACCOUNT_UUID") or None,
            rate_limit_per_minute=budget_from_env(env),
            max_concurrency=concurrency_from_env(env),
            rate_window_seconds=rate_window_from_env(env),
        )


def _first_unprintable(text: str) -> str | None:
    """Where `text` stops being printable ASCII (a control character, a space, a non-ASCII
    letter), as words; None when it is clean. An HTTP header can carry nothing else anyway."""
    for position, char in enumerate(text, start=1):
        if not ("!" <= char <= "~"):
            kind = "a control character" if ord(char) < 32 or ord(char) == 127 else "a non-ASCII character"
            kind = "a space" if char == " " else kind
            return f"{kind} at position {position}"
    return None


def share_from_env(env: Mapping[str, str], name: str, default: float, most: float, example: str) -> float:
    """A share setting (0 to `most`); a bad value is one line naming it, its range and `example`."""
    raw = env.get(name) or str(default)
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 <= share <= most:
        raise ConfigurationError(f"{name} must be a share from 0 to {most:g} ({example}), got {raw!r}.")
    return share


def check_account_uuid(value: str) -> str:
    """PLANNR_ACCOUNT_UUID must be a uuid (it goes into the X-PLANNR-ACCOUNT-UUID header)."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 36 or _first_unprintable(value):
        shown = (
            repr(value) if not _first_unprintable(value) and len(value) <= 64 else f"{len(value)} characters"
        )
        raise ConfigurationError(
            f"PLANNR_ACCOUNT_UUID must be a uuid like 0b5c0a7e-1f7e-4c4b-9d5e-0e0c6c5a9a11, got {shown}: "
            "take it from GET /api/v1/logins (data[].account.uuid), or unset it."
        )
    return value


def check_settings(env: Mapping[str, str] | None = None) -> None:
    """Every connection setting, checked before anything runs: one ConfigurationError naming the
    variable. The sandbox ignores the token and account, but a malformed one is still a mistake
    to hear about now rather than on the day the real API is used."""
    env = os.environ if env is None else env
    if not PlannrSettings.wants_sandbox(env):
        PlannrSettings.from_env(env)
        budget_server_from_env(env)
        return
    if account := env.get("PLANNR_ACCOUNT_UUID"):
        check_account_uuid(account)
    budget_from_env(env)
    concurrency_from_env(env)
    rate_window_from_env(env)
    budget_server_from_env(env)


def sandbox_wanted(token: str | None, base_url: str | None) -> bool:
    """The one rule: with neither a token nor a base URL, the embedded sandbox serves."""
    return not token and not base_url


def budget_from_env(env: Mapping[str, str]) -> int | None:
    """PLANNR_RATE_LIMIT_PER_MINUTE, or None: follow the limit the server announces."""
    return positive_int(env, "PLANNR_RATE_LIMIT_PER_MINUTE", 0) or None


def concurrency_from_env(env: Mapping[str, str]) -> int:
    return positive_int(env, "PLANNR_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)


def rate_window_from_env(env: Mapping[str, str]) -> float:
    """PLANNR_RATE_WINDOW_SECONDS: the span the API counts its limit over (Plannr's: a minute)."""
    raw = env.get("PLANNR_RATE_WINDOW_SECONDS", "").strip()
    if not raw:
        return PLANNR_RATE_WINDOW_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    return check_rate_window(seconds, raw)


def check_rate_window(seconds: float, shown: object = None) -> float:
    """A rate window of 0.5 s to an hour; anything else is one line naming the variable."""
    if not 0.5 <= seconds <= 3600:  # NaN fails this too
        raise ConfigurationError(
            f"PLANNR_RATE_WINDOW_SECONDS must be seconds from 0.5 to 3600, got {shown if shown is not None else seconds!r}: "
            "unset it for Plannr's minute, or set 60/K to match a sandbox started with --time-scale K."
        )
    return seconds


def default_budget_dir(env: Mapping[str, str]) -> Path:
    """The user's own state folder: `$XDG_STATE_HOME/plannr-pipeline/budget`, else
    `~/.local/state/plannr-pipeline/budget`. Not the shared temp folder, where whoever creates
    the folder first decides what is in it (another user could pause our syncs for years)."""
    state = env.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "plannr-pipeline" / "budget"


def budget_dir_from_env(env: Mapping[str, str]) -> Path:
    """PLANNR_BUDGET_DIR, or the user's state folder (`default_budget_dir`): where the request
    budget file lives (api/budget.py). Every process using one token must see the same directory.

    Created 0700 if needed. One line naming the variable (or the default path) and the fix if it
    cannot be used, or cannot be trusted: a symlink, another user's, or writable by others.
    """
    raw = env.get("PLANNR_BUDGET_DIR", "").strip()
    path = Path(raw).expanduser() if raw else default_budget_dir(env)
    where = f"PLANNR_BUDGET_DIR ({path})" if raw else f"The request budget directory {path}"
    fix = (
        "set PLANNR_BUDGET_DIR to a directory you can write"
        if raw
        else "make it writable, or set PLANNR_BUDGET_DIR to a directory you can write"
    )
    if raw and not path.is_absolute():
        raise ConfigurationError(
            f"PLANNR_BUDGET_DIR must be an absolute path, got {raw!r}: every process using the token must find the same directory."
        )
    if problem := not_ours(path):
        raise ConfigurationError(
            f"{where} {problem}, so it cannot be trusted with the budget: remove it, or set "
            "PLANNR_BUDGET_DIR to a directory of your own that only you can write."
        )
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{where} is a file, not a directory: {fix}.")
    try:
        make_private_dir(path)
    except OSError as error:
        raise ConfigurationError(f"{where} cannot be created ({error.strerror or error}): {fix}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{where} is not writable: {fix}.")
    return path
