"""PLANNR_BUDGET_URL: the server that holds every process's request budget, on every machine.

`postgresql+psycopg2://user@host:port/db` (the scheme Dagster's own Postgres settings use; the
budget itself speaks psycopg 3, which pyrate-limiter's PostgresBucket needs) or
`redis://host:port/db` (`rediss://` for TLS). Unset: the per-machine budget file. A URL we
cannot use is one ConfigurationError naming the problem and the fix, never its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from plannr_pipeline.api.errors import ConfigurationError, PlannrError

POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgres")
REDIS_SCHEMES = ("redis", "rediss")
EXAMPLES = "postgresql+psycopg2://user@host:5432/dbname or redis://host:6379/0"


@dataclass(frozen=True)
class BudgetServer:
    kind: str  # "postgres" | "redis"
    shown: str  # the URL without its password, for messages
    url: str = field(repr=False)  # as given: may hold a password
    conninfo: str = field(default="", repr=False)  # libpq keywords, for Postgres

    def store(self, key: str):
        """The budget store for one token's `key` (a hash: the token never reaches the server)."""
        if self.kind == "postgres":
            from plannr_pipeline.api.budget_postgres import PostgresStore

            return PostgresStore(self, key)
        from plannr_pipeline.api.budget_redis import RedisStore

        return RedisStore(self, key)


def _shown(parts) -> str:
    host = parts.hostname or ""
    user = f"{unquote(parts.username)}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def parse_budget_url(url: str) -> BudgetServer:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ConfigurationError(
            f"PLANNR_BUDGET_URL is not a URL (a bad port or bracket?): set it like {EXAMPLES}, or unset it."
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in POSTGRES_SCHEMES + REDIS_SCHEMES:
        raise ConfigurationError(
            f"PLANNR_BUDGET_URL has the scheme {scheme or '(none)'!r}: use {EXAMPLES}, "
            "or unset it to keep the budget in a file on this machine."
        )
    shown = _shown(parts)
    if not parts.hostname:
        raise ConfigurationError(
            f"PLANNR_BUDGET_URL ({shown}) names no host: every machine must reach the same server, e.g. {EXAMPLES}."
        )
    if scheme in REDIS_SCHEMES:
        return BudgetServer("redis", shown, url)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigurationError(
            f"PLANNR_BUDGET_URL ({shown}) must name one database after the host, e.g. {EXAMPLES}."
        )
    from psycopg.conninfo import make_conninfo

    keywords = {"host": parts.hostname, "dbname": database, **dict(parse_qsl(parts.query))}
    if parts.port:
        keywords["port"] = str(parts.port)
    if parts.username:
        keywords["user"] = unquote(parts.username)
    if parts.password:  # or PGPASSWORD / ~/.pgpass, which libpq reads itself
        keywords["password"] = unquote(parts.password)
    return BudgetServer("postgres", shown, url, make_conninfo(**keywords))


def budget_server_from_env(env: Mapping[str, str]) -> BudgetServer | None:
    raw = env.get("PLANNR_BUDGET_URL", "").strip()
    return parse_budget_url(raw) if raw else None


class BudgetServerError(PlannrError):
    """The server PLANNR_BUDGET_URL names cannot hold the budget."""


def server_failed(server: BudgetServer, error: BaseException) -> BudgetServerError:
    """One line naming the server (no password) and the fix."""
    text = " ".join(str(error).split()) or type(error).__name__
    password = urlsplit(server.url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return BudgetServerError(
        f"The request budget server {server.shown} failed ({text}): check that it is up and reachable from "
        "this host, or fix PLANNR_BUDGET_URL (unset, each machine keeps its own budget file)."
    )
