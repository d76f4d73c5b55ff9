"""Many real requests at once through the HTTP stack: count, never guess."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.conftest import LIVE_RUNTIMES, YONGHE_10, new_tourist, visitor
from tests.service.processes import serving_shared

# A few accounts stand for many visitors here: the per-account limits are lifted
# (`unlimited_accounts`), so every refusal is the one each test is about.
pytestmark = pytest.mark.slow


@pytest.fixture(params=["in-process", "two-api-processes"])
async def client(
    request: pytest.FixtureRequest, runtime: Runtime, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """Each test twice: through the ASGI app in this process, and over real HTTP against
    `tidegate serve --workers 2` sharing this test's database and Redis, so the requests of
    one rush are decided by two processes at once."""
    if request.param == "in-process":
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as c:
            yield c
        return
    with serving_shared(settings, workers=2) as url:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as live:
            LIVE_RUNTIMES[live] = runtime
            yield live


async def set_capacity(client: httpx.AsyncClient, admin: dict[str, str], capacity: int) -> None:
    response = await client.patch(
        f"/v1/slots/{YONGHE_10}", json={"capacity": capacity}, headers=admin
    )
    assert response.status_code == 200, response.text


async def fire(
    client: httpx.AsyncClient, tourists: list[dict[str, str]], bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    async def one(i: int, body: dict[str, object]) -> httpx.Response:
        return await client.post("/v1/reservations", json=body, headers=tourists[i % len(tourists)])

    return await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))


async def active_in_sql(runtime: Runtime) -> tuple[int, int, int]:
    """Active visitors of the slot, distinct slot units and distinct day units among them."""
    async with runtime.engine.connect() as connection:
        row = (
            await connection.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT slot_unit), count(DISTINCT day_unit) "
                    "FROM visitor WHERE slot_id = :slot AND active"
                ),
                {"slot": YONGHE_10},
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def tourists(client: httpx.AsyncClient, n: int) -> list[dict[str, str]]:
    return [await new_tourist(client) for _ in range(n)]


@pytest.mark.parametrize("round_", range(3))
async def test_one_place_two_hundred_requests_sells_exactly_one(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: Runtime,
    round_: int,
) -> None:
    await set_capacity(client, admin, 1)
    bodies: list[dict[str, object]] = [
        {"slot_id": YONGHE_10, "visitors": [visitor()]} for _ in range(200)
    ]

    responses = await fire(client, await tourists(client, 4), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 199}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"sold-out"}
    assert await active_in_sql(runtime) == (1, 1, 1)


@pytest.mark.parametrize("round_", range(2))
async def test_hundred_places_thousand_requests_sells_exactly_hundred(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: Runtime,
    round_: int,
) -> None:
    await set_capacity(client, admin, 100)
    bodies: list[dict[str, object]] = [
        {"slot_id": YONGHE_10, "visitors": [visitor()]} for _ in range(1000)
    ]

    responses = await fire(client, await tourists(client, 8), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 100, 409: 900}
    assert await active_in_sql(runtime) == (100, 100, 100)
    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert slot["remaining"] == 0


@pytest.mark.parametrize("round_", range(3))
async def test_one_visitor_fifty_requests_gets_exactly_one_place(
    unlimited_accounts: None, client: httpx.AsyncClient, runtime: Runtime, round_: int
) -> None:
    person = visitor()
    bodies: list[dict[str, object]] = [
        {"slot_id": YONGHE_10, "visitors": [person]} for _ in range(50)
    ]

    # Five accounts: the one-person-one-place rule holds across accounts.
    responses = await fire(client, await tourists(client, 5), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 49}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"duplicate-visitor"}
    assert await active_in_sql(runtime) == (1, 1, 1)


async def test_parties_share_the_last_places_without_splitting(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: Runtime,
) -> None:
    await set_capacity(client, admin, 10)
    # 30 parties of 3: at most 3 fit (9 places); a party never gets part of its places.
    bodies: list[dict[str, object]] = [
        {"slot_id": YONGHE_10, "visitors": [visitor(), visitor(), visitor()]} for _ in range(30)
    ]

    responses = await fire(client, await tourists(client, 3), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 3, 409: 27}
    assert await active_in_sql(runtime) == (9, 9, 9)
    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert slot["remaining"] == 1
