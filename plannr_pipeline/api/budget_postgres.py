"""The request budget in Postgres (PLANNR_BUDGET_URL=postgresql+psycopg2://...), for every host.

The sliding-window log is pyrate-limiter's PostgresBucket (one table per token hash, checked and
filled under a table lock, timed by the server's clock); declarations and the 429 pause sit in
two small tables keyed by that hash. Every time here is the server's `clock_timestamp()`, so
hosts whose clocks disagree still agree on when a pause ends and a declaration lapses.
"""

from __future__ import annotations

import zlib

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pyrate_limiter import PostgresBucket, Rate

from plannr_pipeline.api.budget_url import BudgetServer, BudgetServerError, server_failed

# Created once per database, under an advisory lock: concurrent CREATE TABLE IF NOT EXISTS race.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS plannr_budget_declarations (budget TEXT, owner TEXT, host TEXT,"
    " pid INTEGER, per_window INTEGER, seen_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (budget, owner))",
    "CREATE TABLE IF NOT EXISTS plannr_budget_pause (budget TEXT PRIMARY KEY, until TIMESTAMPTZ NOT NULL)",
)
_SCHEMA_LOCK = zlib.crc32(b"plannr_budget_schema") & 0x7FFFFFFF
CONNECT_TIMEOUT_SECONDS = 5


class PostgresStore:
    errors = (psycopg.Error, PoolTimeout)

    def __init__(self, server: BudgetServer, key: str) -> None:
        self.server, self.key, self.where = server, key, server.shown
        try:
            # A direct first connection fails fast with the server's own reason; a pool only times out.
            with psycopg.connect(server.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._pool = ConnectionPool(
                server.conninfo,
                min_size=1,
                max_size=4,  # the limiter's leak thread, the hot path and a heartbeat
                timeout=30,
                kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
                open=True,
            )
        except self.errors as error:
            raise self.failed(error) from None

    def failed(self, error: BaseException) -> BudgetServerError:
        return server_failed(self.server, error)

    def bucket(self, rates: list[Rate]) -> PostgresBucket:
        return PostgresBucket(self._pool, f"plannr_budget_{self.key}", rates)

    def declare(
        self, owner: str, host: str, pid: int, per_window: int, ttl: float
    ) -> list[tuple[str, str, int, int]]:
        with self._pool.connection() as conn:  # one transaction
            conn.execute(
                "INSERT INTO plannr_budget_declarations VALUES (%s, %s, %s, %s, %s, clock_timestamp())"
                " ON CONFLICT (budget, owner) DO UPDATE SET per_window = excluded.per_window,"
                " seen_at = excluded.seen_at",
                (self.key, owner, host, pid, per_window),
            )
            conn.execute(
                "DELETE FROM plannr_budget_declarations"
                " WHERE budget = %s AND seen_at < clock_timestamp() - make_interval(secs => %s)",
                (self.key, ttl),
            )
            return conn.execute(
                "SELECT owner, host, pid, per_window FROM plannr_budget_declarations WHERE budget = %s",
                (self.key,),
            ).fetchall()

    def forget(self, owners: list[str]) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "DELETE FROM plannr_budget_declarations WHERE budget = %s AND owner = ANY(%s)",
                (self.key, owners),
            )

    def pause_left(self) -> float:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT EXTRACT(EPOCH FROM until - clock_timestamp()) FROM plannr_budget_pause WHERE budget = %s",
                (self.key,),
            ).fetchone()
        return float(row[0]) if row else 0.0

    def pause(self, seconds: float) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO plannr_budget_pause VALUES (%s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (budget) DO UPDATE SET until = GREATEST(plannr_budget_pause.until, excluded.until)",
                (self.key, seconds),
            )

    def close(self) -> None:
        self._pool.close()
