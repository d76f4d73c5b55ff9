"""Redis losing its data: fail closed (503 + Retry-After), rebuild from SQL, never oversell."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from redis.asyncio import Redis

from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import TODAY, YONGHE_10, hold, new_tourist, visitor

YONGHE_TODAY = SiteDay("yonghe-temple", TODAY)


async def sql_used(runtime: Runtime) -> int:
    return sum(1 for row in await _rows(runtime) if row[0] == YONGHE_10)


async def _rows(runtime: Runtime) -> list[tuple[str, int, int, str]]:
    from booking import repository

    async with runtime.sessions() as session:
        rows = await repository.active_units(session, "yonghe-temple", TODAY)
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_flushed_redis_answers_503_with_retry_after_until_rebuilt(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    for _ in range(3):
        assert (await hold(client, tourist)).status_code == 201
    await redis.flushdb()

    refused = await hold(client, tourist)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "capacity-unavailable"

    await runtime.reconciler.wait_pending()
    assert (await hold(client, tourist)).status_code == 201
    load = await runtime.counters.load(YONGHE_TODAY)
    assert load is not None
    assert load.slots["1000"].used == await sql_used(runtime) == 4
    assert load.day.used == len(await _rows(runtime)) == 4


@pytest.mark.slow
async def test_flush_during_a_rush_never_oversells_and_counts_equal_sql(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    response = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 50}, headers=admin)
    assert response.status_code == 200
    accounts = [await new_tourist(client) for _ in range(4)]

    async def one(i: int) -> httpx.Response:
        body = {"slot_id": YONGHE_10, "visitors": [visitor()]}
        return await client.post("/v1/reservations", json=body, headers=accounts[i % 4])

    first = [asyncio.create_task(one(i)) for i in range(150)]
    await asyncio.sleep(0)  # let some of them reach Redis before it loses everything
    await redis.flushdb()
    during = await asyncio.gather(*first)
    await runtime.reconciler.wait_pending()
    await runtime.reconciler.rebuild_missing()
    after = await asyncio.gather(*(one(i) for i in range(100)))

    statuses = Counter(r.status_code for r in [*during, *after])
    assert set(statuses) <= {201, 409, 503}
    sold = statuses[201]
    assert sold == await sql_used(runtime) == 50  # every success is in SQL, none beyond the cap
    report = await runtime.reconciler.reconcile()
    assert report.drift == 0
    load = await runtime.counters.load(YONGHE_TODAY)
    assert load is not None
    assert load.slots["1000"].used == 50


async def test_unreachable_redis_answers_503_not_500(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime
) -> None:
    from capacity.counters import Counters

    runtime.booking._counters = Counters(Redis.from_url("redis://127.0.0.1:1/0"))

    response = await hold(client, tourist)

    assert response.status_code == 503
    assert response.json()["code"] == "capacity-unavailable"
    assert response.headers["Retry-After"] == "1"


async def test_retry_after_redis_lost_its_data_replays_from_sql(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime, redis: Redis
) -> None:
    key = {"Idempotency-Key": "rush-hour-1"}
    body = {"slot_id": YONGHE_10, "visitors": [visitor()]}
    first = await client.post("/v1/reservations", json=body, headers=tourist | key)
    assert first.status_code == 201
    await redis.flushdb()

    retry = await client.post("/v1/reservations", json=body, headers=tourist | key)

    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()


async def test_warmed_replays_answer_without_asking_sql(
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    runtime: Runtime,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from booking import repository

    key = {"Idempotency-Key": "rush-hour-2"}
    body = {"slot_id": YONGHE_10, "visitors": [visitor()]}
    first = await client.post("/v1/reservations", json=body, headers=tourist | key)
    await redis.flushdb()
    assert await runtime.booking.warm_replays() == 1

    async def no_sql(*args: object, **kwargs: object) -> None:
        raise AssertionError("SQL was asked")

    monkeypatch.setattr(repository, "idempotency_record", no_sql)
    retry = await client.post("/v1/reservations", json=body, headers=tourist | key)

    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert await runtime.booking.warm_replays() == 0  # every shard is warm now


async def test_retry_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime
) -> None:
    from capacity.replays import Replays

    principal = await runtime.accounts.authenticate(tourist["Authorization"].split()[1])
    assert principal.account_id is not None
    # The first request took the lock and is still working.
    begun = await Replays(runtime.redis).begin(principal.account_id, "slow-one")
    assert begun.busy is False

    response = await hold(client, tourist | {"Idempotency-Key": "slow-one"})

    assert response.status_code == 409
    assert response.json()["code"] == "request-in-flight"
    assert response.headers["Retry-After"] == "1"


async def test_catalog_counts_from_sql_while_redis_has_no_counters(
    client: httpx.AsyncClient, tourist: dict[str, str], redis: Redis
) -> None:
    for _ in range(2):
        assert (await hold(client, tourist)).status_code == 201
    await redis.flushdb()

    slots = await client.get("/v1/sites/yonghe-temple/slots", params={"date": "2026-12-01"})
    site = (await client.get("/v1/sites/yonghe-temple")).json()

    assert slots.status_code == 200
    remaining = {slot["id"]: slot["remaining"] for slot in slots.json()}
    assert remaining[YONGHE_10] == 998
    assert remaining["yonghe-temple.2026-12-01.1100"] == 1000
    assert site["today"]["remaining"] == 7498


async def test_catalog_stays_readable_when_redis_is_unreachable(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime
) -> None:
    from capacity.counters import Counters

    assert (await hold(client, tourist)).status_code == 201
    runtime.catalog._counters = Counters(Redis.from_url("redis://127.0.0.1:1/0"))

    response = await client.get(f"/v1/slots/{YONGHE_10}")

    assert response.status_code == 200
    assert response.json()["remaining"] == 999
