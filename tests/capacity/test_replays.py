"""Idempotent requests in Redis: a retry after a crash between the SQL commit and the answer
reaching Redis must ask SQL, whatever Redis says about its copy being complete."""

from __future__ import annotations

from redis.asyncio import Redis

from capacity.keys import RequestKeys, warm_marker
from capacity.replays import Begun, Replays


async def warm_everything(redis: Redis) -> None:
    for shard in range(16):
        await redis.set(warm_marker(shard), "1")


async def test_a_new_request_on_a_warm_shard_goes_without_asking_sql(redis: Redis) -> None:
    await warm_everything(redis)
    replays = Replays(redis)

    assert await replays.begin("acct", "k1") == Begun(warm=True)
    assert await replays.begin("acct", "k1") == Begun(busy=True)


async def test_a_retry_after_the_first_attempt_died_asks_sql(redis: Redis) -> None:
    await warm_everything(redis)
    replays = Replays(redis)
    assert await replays.begin("acct", "k1") == Begun(warm=True)
    # The process died: its lock runs out, and neither finish nor abandon ran.
    await redis.delete(RequestKeys.of("acct", "k1").in_flight)

    assert await replays.begin("acct", "k1") == Begun(warm=False)


async def test_a_finished_request_replays_and_an_abandoned_one_starts_afresh(
    redis: Redis,
) -> None:
    await warm_everything(redis)
    replays = Replays(redis)
    await replays.begin("acct", "done")
    await replays.finish("acct", "done", "fp:{}")
    await replays.begin("acct", "refused")
    await replays.abandon("acct", "refused")

    assert await replays.begin("acct", "done") == Begun(record="fp:{}")
    assert await replays.begin("acct", "refused") == Begun(warm=True)
    keys = RequestKeys.of("acct", "done")
    assert await redis.exists(keys.in_flight, keys.started) == 0
