"""Idempotent requests in Redis: who is in flight, and what finished requests answered.

SQL keeps every finished request's record in the same transaction as its change; Redis keeps
a copy for a day so that a retry, or a new request, is answered without asking SQL. After
Redis lost its data a shard is "cold" until `warm` reloads it from SQL; until then callers
ask SQL too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from capacity.errors import CapacityUnavailable
from capacity.keys import REQUEST_SHARDS, RequestKeys, warm_marker
from capacity.store import RedisClient

RETENTION = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Begun:
    """`record` is set when the request finished before; `warm` says Redis knows every
    finished request of the shard (otherwise SQL must be asked)."""

    record: str | None = None
    busy: bool = False
    warm: bool = True


class Replays:
    def __init__(self, redis: RedisClient, *, lock_ms: int = 30_000) -> None:
        self._redis = redis
        self._lock_ms = lock_ms
        script = resources.files("capacity").joinpath("scripts", "begin_request.lua")
        self._begin: AsyncScript = redis.register_script(script.read_text(encoding="utf-8"))

    async def begin(self, owner: str, key: str) -> Begun:
        keys = RequestKeys.of(owner, key)
        try:
            reply = await self._begin(
                keys=[keys.done, keys.in_flight, keys.warm, keys.started],
                args=[self._lock_ms, int(RETENTION.total_seconds() * 1000)],
            )
        except RedisError as error:
            raise CapacityUnavailable("requests cannot be checked right now") from error
        if reply[0] == "done":
            return Begun(record=reply[1])
        if reply[0] == "busy":
            return Begun(busy=True)
        return Begun(warm=bool(int(reply[1])))

    async def finish(self, owner: str, key: str, record: str) -> None:
        """Remember the answer and let go of the lock (after the SQL commit)."""
        keys = RequestKeys.of(owner, key)
        # Committed in SQL already: if Redis is gone, a retry finds the record there.
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.done, record, ex=RETENTION)
                pipe.delete(keys.in_flight, keys.started)
                await pipe.execute()

    async def abandon(self, owner: str, key: str) -> None:
        """The attempt ended without a change to keep (refused, or undone)."""
        keys = RequestKeys.of(owner, key)
        with contextlib.suppress(RedisError):  # if Redis is gone, the lock expires by itself
            await self._redis.delete(keys.in_flight, keys.started)

    async def cold_shards(self) -> list[int]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in range(REQUEST_SHARDS):
                    pipe.exists(warm_marker(shard))
                found = await pipe.execute()
        except RedisError as error:
            raise CapacityUnavailable("requests cannot be checked right now") from error
        return [shard for shard, present in enumerate(found) if not present]

    async def warm(self, records: Iterable[tuple[str, str, str]], shards: list[int]) -> None:
        """Load finished requests (owner, key, record) of cold shards, then mark them warm."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner, key, record in records:
                keys = RequestKeys.of(owner, key)
                if int(keys.digest[0], 16) % REQUEST_SHARDS in shards:
                    pipe.set(keys.done, record, ex=RETENTION, nx=True)
            for shard in shards:
                pipe.set(warm_marker(shard), "1")
            await pipe.execute()
