"""Rate limits on requests, counted in Redis by the `limits` library (fixed windows).

Budgets are named ("reads", "holds", "logins", ...) and counted per caller: a token, a client
address, an account's login. Every replica shares the counts, since they live in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from capacity.errors import TidegateError
from capacity.keys import PREFIX
from capacity.store import RedisClient, limits_uri


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one hit on a budget decided (for the 429 answer and its headers)."""

    budget: str
    allowed: bool
    limit: int = 0
    window: int = 0
    remaining: int = 0
    reset_in: int = 0


class Throttle:
    def __init__(
        self,
        redis: RedisClient,
        budgets: Mapping[str, str],
        *,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self._budgets: dict[str, RateLimitItem] = {
            name: parse(text) for name, text in budgets.items()
        }
        storage: Storage
        self._own_client = not isinstance(redis, Redis)
        if isinstance(redis, Redis):
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # typed too narrowly
                key_prefix=f"{PREFIX}:limits",
                wrap_exceptions=True,
            )
        else:
            # `limits` makes its own cluster client (it cannot share one) from the same nodes.
            storage = RedisClusterStorage(
                limits_uri(redis),
                implementation="redispy",
                key_prefix=f"{PREFIX}:limits",
                wrap_exceptions=True,
            )
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)

    async def close(self) -> None:
        """Close the cluster client `limits` made for itself (it has no close of its own; on a
        single Redis the limits share the runtime's pool, which the runtime closes)."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        if self._own_client and client is not None:
            await client.aclose()

    def budget(self, name: str) -> RateLimitItem:
        return self._budgets[name]

    async def hit(self, name: str, *who: str) -> Verdict:
        """Count one request against a budget; over it, raise `RateLimited`."""
        if not self.enabled:
            return Verdict(name, allowed=True)
        item = self._budgets[name]
        try:
            if await self._limiter.hit(item, name, *who):
                return Verdict(name, allowed=True)
            stats = await self._limiter.get_window_stats(item, name, *who)
        except (StorageError, RedisError):
            # Limits protect the service; they must not take it down with Redis. Admission
            # itself fails closed on its own (the booking scripts answer 503).
            return Verdict(name, allowed=True)
        raise RateLimited(
            Verdict(
                name,
                allowed=False,
                limit=item.amount,
                window=item.get_expiry(),
                remaining=stats.remaining,
                reset_in=max(int(stats.reset_time - time.time()) + 1, 1),
            )
        )


class RateLimited(TidegateError):
    """429 with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields."""

    code, status, title = "rate-limited", 429, "Too many requests: slow down"

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(
            f"at most {verdict.limit} {verdict.budget} requests per {verdict.window} s; "
            f"try again in {verdict.reset_in} s"
        )
        self.headers["Retry-After"] = str(verdict.reset_in)
        self.headers["RateLimit-Policy"] = (
            f'"{verdict.budget}";q={verdict.limit};w={verdict.window}'
        )
        self.headers["RateLimit"] = f'"{verdict.budget}";r={verdict.remaining};t={verdict.reset_in}'
