"""Two workers at once, each with its own engine and Redis client as two `tidegate worker`
processes would have: a hold is expired once and its places returned once, and each event
is delivered once. Every step is guarded in SQL (`held → expired` is an update from `held`
only; a delivery is taken under a lease), so whichever worker loses a race does nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.models import OutboxEvent
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.background import sweep_once, webhooks_once
from service.runtime import Runtime
from service.settings import Settings
from tests.conftest import TODAY, YONGHE_10, hold, lift_account_limits, new_tourist, visitor
from tests.service.test_webhooks import Receiver, receiver, receiver_server, subscribe

__all__ = ["receiver", "receiver_server"]  # fixtures, used by name

YONGHE = SiteDay("yonghe-temple", TODAY)


@pytest.fixture
async def second_worker(settings: Settings, clock: ManualClock) -> AsyncIterator[Runtime]:
    """Another worker on the same database and Redis, with connections of its own."""
    worker = Runtime.build(settings, clock=clock)
    yield worker
    await worker.close()


async def held_places(client: httpx.AsyncClient, runtime: Runtime, n: int) -> list[str]:
    await lift_account_limits(runtime)
    tourists = [await new_tourist(client) for _ in range(4)]
    made = await asyncio.gather(
        *(hold(client, tourists[i % 4], visitors=[visitor()]) for i in range(n))
    )
    assert [response.status_code for response in made] == [201] * n
    return [response.json()["id"] for response in made]


async def topics(runtime: Runtime, topic: str) -> Counter[str]:
    async with runtime.sessions() as session:
        query = sa.select(OutboxEvent).where(col(OutboxEvent.topic) == topic)
        events = (await session.execute(query)).scalars().all()
    return Counter(event.payload["reservation"]["id"] for event in events)


async def test_two_workers_sweeping_at_once_expire_each_hold_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    second_worker: Runtime,
    clock: ManualClock,
) -> None:
    before = (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"]
    reservations = await held_places(client, runtime, 24)
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == before - 24
    clock.advance(timedelta(minutes=15, seconds=1))

    expired = await asyncio.gather(sweep_once(runtime), sweep_once(second_worker))

    assert sum(expired) == 24
    assert await topics(runtime, "reservation.expired") == Counter(
        {reservation: 1 for reservation in reservations}
    )
    # Each hold's place came back once: not lost, not counted twice.
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == before
    load = await runtime.counters.load(YONGHE)
    assert load is not None
    assert load.day.used == 0
    assert (await runtime.reconciler.reconcile()).drift == 0


async def test_two_workers_delivering_at_once_send_each_event_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    second_worker: Runtime,
    receiver: Receiver,
) -> None:
    await lift_account_limits(runtime)
    tourist = await new_tourist(client)
    await subscribe(client, tourist, receiver.url("/hooks/two-workers"))
    for n in range(5):
        response = await hold(client, tourist, visitors=[visitor()])
        assert response.status_code == 201, (n, response.text)

    sent = 0
    for _ in range(3):  # a few turns of both loops at once, as two workers would take them
        turns = await asyncio.gather(webhooks_once(runtime), webhooks_once(second_worker))
        sent += sum(turns)

    received = receiver.at("/hooks/two-workers")
    assert sent == 5
    assert len(received) == 5
    assert len({request.headers["tidegate-event-id"] for request in received}) == 5
