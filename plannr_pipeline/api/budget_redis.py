"""The request budget in Redis (PLANNR_BUDGET_URL=redis://...), for every host.

The sliding-window log is pyrate-limiter's RedisBucket (a sorted set, checked and filled by one
Lua script, so atomic). Its timestamps are each host's wall clock: keep the hosts on NTP (a
skew of s seconds lets s/60 of a minute's allowance through twice at worst). The 429 pause is a
key that expires when the pause ends, and declarations carry Redis's own TIME, so those two do
not depend on the hosts' clocks. Keys: `plannr:budget:<token hash>:...`.
"""

from __future__ import annotations

import redis
from pyrate_limiter import Rate, RedisBucket

from plannr_pipeline.api.budget_url import BudgetServer, BudgetServerError, server_failed

# Lengthen the pause, never shorten it: a 429 seen elsewhere may already hold everyone for longer.
_PAUSE = """
local wanted = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < wanted then redis.call('SET', KEYS[1], '1', 'PX', wanted) end
"""
TIMEOUT_SECONDS = 5


class RedisStore:
    errors = (redis.RedisError,)

    def __init__(self, server: BudgetServer, key: str) -> None:
        self.server, self.where = server, server.shown
        prefix = f"plannr:budget:{key}"
        self._log, self._declarations, self._pause = (
            f"{prefix}:log",
            f"{prefix}:declarations",
            f"{prefix}:pause",
        )
        try:
            self._redis = redis.Redis.from_url(
                server.url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
            )
            self._redis.ping()
            self._set_pause = self._redis.register_script(_PAUSE)
        except (*self.errors, ValueError) as error:
            raise self.failed(error) from None

    def failed(self, error: BaseException) -> BudgetServerError:
        return server_failed(self.server, error)

    def bucket(self, rates: list[Rate]) -> RedisBucket:
        return RedisBucket.init(rates, self._redis, self._log)

    def _now(self) -> float:
        seconds, micros = self._redis.time()
        return seconds + micros / 1e6

    def declare(
        self, owner: str, host: str, pid: int, per_window: int, ttl: float
    ) -> list[tuple[str, str, int, int]]:
        now = self._now()
        self._redis.hset(self._declarations, owner, f"{host}\t{pid}\t{per_window}\t{now}")
        rows, stale = [], []
        for name, value in self._redis.hgetall(self._declarations).items():
            on, other, limit, seen = value.decode().split("\t")
            if float(seen) < now - ttl:
                stale.append(name)
            else:
                rows.append((name.decode(), on, int(other), int(limit)))
        if stale:
            self._redis.hdel(self._declarations, *stale)
        return rows

    def forget(self, owners: list[str]) -> None:
        if owners:
            self._redis.hdel(self._declarations, *owners)

    def pause_left(self) -> float:
        return self._redis.pttl(self._pause) / 1000  # negative when there is no pause

    def pause(self, seconds: float) -> None:
        self._set_pause(keys=[self._pause], args=[max(1, int(seconds * 1000))])

    def close(self) -> None:
        self._redis.close()
