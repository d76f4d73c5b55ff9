"""Tests for booking.reconcile: Redis brought back to what SQL proves (ARCHITECTURE §2).

Real SQLite and a real Redis: holds are made over HTTP, Redis is damaged by hand the way a
crash or a failover would damage it, and the reconciler must put it back.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking import repository
from booking.catalog import sales_close_at, sales_open_at, slot_key
from booking.ids import IdType
from booking.models import Reservation, Site, Slot, Visitor
from capacity.clock import ManualClock, to_millis
from capacity.counters import Allocation, Settings, Snapshot
from capacity.keys import SiteDay
from service.app import create_app
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

TODAY = date(2026, 12, 1)
YONGHE = SiteDay("yonghe-temple", TODAY)
KEY_10 = "1000"
YONGHE_11 = "yonghe-temple.2026-12-01.1100"
PALACE_TOMORROW = "palace-museum.2026-12-02.0830"


# what SQL proves -------------------------------------------------------------------------


async def active_visitors(runtime: Runtime, site_day: SiteDay) -> list[Visitor]:
    async with runtime.sessions() as session:
        query = sa.select(Visitor).where(
            col(Visitor.site_id) == site_day.site,
            col(Visitor.visit_date) == site_day.visit_date,
            col(Visitor.active),
        )
        return list((await session.execute(query)).scalars())


async def sql_snapshot(runtime: Runtime, site_day: SiteDay) -> Snapshot:
    """The Snapshot Redis must hold for a site-day, computed from SQL alone."""
    visitors = await active_visitors(runtime, site_day)
    async with runtime.sessions() as session:
        site = await session.get(Site, site_day.site)
        assert site is not None
        slots = list(
            (
                await session.execute(
                    sa.select(Slot).where(
                        col(Slot.site_id) == site_day.site,
                        col(Slot.visit_date) == site_day.visit_date,
                    )
                )
            ).scalars()
        )
    return Snapshot(
        day_taken=frozenset(v.day_unit for v in visitors),
        slot_taken={
            slot_key(slot.start): frozenset(v.slot_unit for v in visitors if v.slot_id == slot.id)
            for slot in slots
        },
        visitor_ids=frozenset(v.id_hash for v in visitors),
        settings=Settings(
            day=(
                site.daily_cap,
                to_millis(sales_open_at(site, site_day.visit_date)),
                site_day.visit_date.weekday() in site.closed_weekdays,
                site.party_size_limit,
                site.account_day_limit,
                "",  # released at once
                False,  # no draw
                int((site.group_rules or {}).get("groups_per_day", 0)),
            ),
            slots={
                slot_key(slot.start): (
                    slot.capacity,
                    to_millis(sales_close_at(site, slot.visit_date, slot.end)),
                    slot.status == "closed",
                    "",  # no pools
                    0,
                )
                for slot in slots
            },
        ),
        owners=await sql_owners(runtime, site_day),
    )


async def sql_owners(runtime: Runtime, site_day: SiteDay) -> dict[str, frozenset[str]]:
    async with runtime.sessions() as session:
        query = sa.select(Reservation).where(
            col(Reservation.site_id) == site_day.site,
            col(Reservation.visit_date) == site_day.visit_date,
            col(Reservation.status).in_(["held", "confirmed", "checked_in"]),
        )
        reservations = list((await session.execute(query)).scalars())
    owners: dict[str, set[str]] = {}
    for reservation in reservations:
        owners.setdefault(reservation.owner_id, set()).add(reservation.id)
    return {owner: frozenset(ids) for owner, ids in owners.items()}


async def left_in(runtime: Runtime, site_day: SiteDay, key: str) -> int:
    load = await runtime.counters.load(site_day)
    assert load is not None, f"no counters for {site_day}"
    return load.left_in(key)


async def slot_used(runtime: Runtime, site_day: SiteDay, key: str) -> tuple[str, str]:
    """The raw `used` fields of a slot's hash and of its day's hash."""
    return (
        str(await runtime.redis.hget(site_day.slot(key), "used")),
        str(await runtime.redis.hget(site_day.day, "used")),
    )


async def free_a_taken_slot_unit(runtime: Runtime, site_day: SiteDay, key: str, unit: int) -> None:
    """Make Redis forget a unit SQL holds, as a failover that lost a write would."""
    assert await runtime.redis.zadd(site_day.slot_free(key), {str(unit): unit}) == 1
    await runtime.redis.hincrby(site_day.slot(key), "used", -1)


async def held(client: httpx.AsyncClient, tourist: dict[str, str], **kwargs: Any) -> None:
    response = await hold(client, tourist, **kwargs)
    assert response.status_code == 201, response.text


def day_of(report: Any, site_day: SiteDay) -> Any:
    found = [day for day in report.days if day.site_day == site_day]
    assert len(found) == 1, f"{site_day} not reconciled"
    return found[0]


# a consistent pair -----------------------------------------------------------------------


async def test_after_holds_reconcile_finds_no_drift(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    other = await new_tourist(client)  # two open holds a site per account: a second one
    await held(client, tourist)
    await held(client, tourist, visitors=[visitor(), visitor()])
    await held(client, other, slot_id=YONGHE_11)
    await held(client, tourist, slot_id=PALACE_TOMORROW)
    report = await runtime.reconciler.reconcile()
    assert report.drift == 0
    assert len(report.days) > 2
    for day in report.days:
        assert (day.missing, day.leaked, day.returned, day.rebuilt) == (0, 0, 0, False), day
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)


# leaks: Redis took units that SQL never proved --------------------------------------------


async def leak_one(runtime: Runtime, clock: ManualClock) -> Allocation:
    """A crash between Redis and SQL: units taken in Redis, no reservation written."""
    return await runtime.counters.allocate(YONGHE, KEY_10, ["leaked-id-hash"], now=clock.now())


async def test_leaked_units_are_reported_but_kept_within_the_grace_period(
    runtime: Runtime, clock: ManualClock
) -> None:
    assert await leak_one(runtime, clock) == Allocation((1,), (1,))
    first = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert (first.leaked, first.missing, first.returned, first.rebuilt) == (3, 0, 0, False)
    clock.advance(timedelta(seconds=59))
    second = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert (second.leaked, second.returned) == (3, 0)
    assert await left_in(runtime, YONGHE, KEY_10) == 999


async def test_leaked_units_are_returned_after_the_grace_period(
    runtime: Runtime, clock: ManualClock
) -> None:
    await leak_one(runtime, clock)
    first = await runtime.reconciler.reconcile()
    assert first.drift == 3
    clock.advance(timedelta(seconds=61))
    second = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert (second.leaked, second.returned, second.rebuilt) == (3, 2, False)
    assert await left_in(runtime, YONGHE, KEY_10) == 1000
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)
    third = await runtime.reconciler.reconcile()
    assert third.drift == 0


async def test_a_returned_leak_lets_the_same_visitor_book(
    runtime: Runtime,
    clock: ManualClock,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
) -> None:
    person = visitor()
    id_hash = runtime.hasher.hash(IdType(person["id_type"]), person["id_number"])
    await runtime.counters.allocate(YONGHE, KEY_10, [id_hash], now=clock.now())
    refused = await hold(client, tourist, visitors=[person])
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "duplicate-visitor"
    await runtime.reconciler.reconcile()
    clock.advance(timedelta(seconds=61))
    await runtime.reconciler.reconcile()
    await held(client, tourist, visitors=[person])


async def test_a_leak_resolved_by_sql_is_not_returned(
    runtime: Runtime,
    clock: ManualClock,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
) -> None:
    """A unit first seen without SQL proof that SQL proves later (a slow commit) stays taken."""
    await held(client, tourist)
    async with runtime.sessions() as session:
        rows = await repository.active_units(session, "yonghe-temple", TODAY)
    assert len(rows) == 1
    await runtime.redis.hset(YONGHE.suspects, "s:1000:1", "0")  # seen as a leak long ago
    report = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert (report.leaked, report.returned) == (0, 0)
    assert await runtime.redis.hgetall(YONGHE.suspects) == {}
    assert await left_in(runtime, YONGHE, KEY_10) == 999


# missing units: SQL holds units that Redis counts free -------------------------------------


async def test_missing_unit_rebuilds_the_day_from_sql(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    await held(client, tourist, slot_id=YONGHE_11)
    await free_a_taken_slot_unit(runtime, YONGHE, KEY_10, 1)
    assert await left_in(runtime, YONGHE, KEY_10) == 999
    report = await runtime.reconciler.reconcile()
    day = day_of(report, YONGHE)
    assert (day.missing, day.rebuilt) == (1, True)
    assert report.drift == 1
    expected = await sql_snapshot(runtime, YONGHE)
    assert expected.slot_taken[KEY_10] == frozenset({1, 2})
    assert await runtime.counters.snapshot(YONGHE) == expected
    assert await left_in(runtime, YONGHE, KEY_10) == 998


async def test_changed_cap_in_sql_rebuilds_the_day(runtime: Runtime) -> None:
    async with runtime.sessions() as session, session.begin():
        await repository.set_slot_capacity(session, YONGHE_10, 10)
    day = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert (day.missing, day.rebuilt) == (0, True)
    assert await left_in(runtime, YONGHE, KEY_10) == 10


async def cap_changed_while_another_process_rebuilds(runtime: Runtime) -> None:
    """Another process holds the day's rebuild, from SQL it may have read before the cap of
    10:00 went down to 10."""
    assert await runtime.counters.try_lock(YONGHE.rebuild_lock, ttl_ms=30_000)
    async with runtime.sessions() as session, session.begin():
        await repository.set_slot_capacity(session, YONGHE_10, 10)


async def test_a_change_made_while_another_process_rebuilds_the_day_is_counted(
    runtime: Runtime,
) -> None:
    await cap_changed_while_another_process_rebuilds(runtime)
    after = asyncio.create_task(runtime.reconciler.rebuild_after_change(YONGHE))
    # The day fails closed while the other rebuild runs, and this one waits for it.
    for _ in range(500):
        if await runtime.counters.load(YONGHE) is None:
            break
        await asyncio.sleep(0.01)
    assert await runtime.counters.load(YONGHE) is None
    await asyncio.sleep(0.2)
    assert not after.done()
    await runtime.counters.unlock(YONGHE.rebuild_lock)
    assert await asyncio.wait_for(after, 5) is True
    assert await left_in(runtime, YONGHE, KEY_10) == 10
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)


async def test_a_rebuild_that_outlasts_the_wait_leaves_the_day_closed_until_rebuilt(
    runtime: Runtime,
) -> None:
    await cap_changed_while_another_process_rebuilds(runtime)
    waited = timedelta(milliseconds=300)
    assert await runtime.reconciler.rebuild_after_change(YONGHE, wait=waited) is False
    await runtime.reconciler.wait_pending()
    assert await runtime.counters.load(YONGHE) is None  # closed: no sale on old counters
    await runtime.counters.unlock(YONGHE.rebuild_lock)
    day = day_of(await runtime.reconciler.reconcile(), YONGHE)
    assert day.rebuilt is True
    assert await left_in(runtime, YONGHE, KEY_10) == 10


async def test_flushed_redis_is_rebuilt_for_every_active_day_by_reconcile(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor(), visitor()])
    await held(client, tourist, slot_id=YONGHE_11)
    await held(client, tourist, slot_id=PALACE_TOMORROW)
    await runtime.redis.flushdb()
    report = await runtime.reconciler.reconcile()
    assert len(report.days) > 2
    assert all(day.rebuilt for day in report.days)
    for day in report.days:
        assert await runtime.counters.is_built(day.site_day), day.site_day
    palace = SiteDay("palace-museum", date(2026, 12, 2))
    for site_day in (YONGHE, palace):
        assert await runtime.counters.snapshot(site_day) == await sql_snapshot(runtime, site_day)
    assert await left_in(runtime, YONGHE, KEY_10) == 997
    assert await left_in(runtime, YONGHE, "1100") == 999
    assert await left_in(runtime, YONGHE, "0900") == 1000
    assert await left_in(runtime, palace, "0830") == 19999


async def test_flushed_redis_is_rebuilt_by_rebuild_missing(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    days = len((await runtime.reconciler.reconcile()).days)
    await runtime.redis.flushdb()
    assert await runtime.counters.load(YONGHE) is None
    assert await runtime.reconciler.rebuild_missing() == days
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)
    assert await left_in(runtime, YONGHE, KEY_10) == 998
    assert await runtime.reconciler.rebuild_missing() == 0


# the booking path meets a stale Redis -----------------------------------------------------


async def test_hold_on_a_stale_unit_rebuilds_and_retries(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist)
    await free_a_taken_slot_unit(runtime, YONGHE, KEY_10, 1)
    response = await hold(client, tourist)
    assert response.status_code == 201, response.text
    visitors = await active_visitors(runtime, YONGHE)
    pairs = Counter((v.slot_id, v.slot_unit) for v in visitors)
    assert max(pairs.values()) == 1
    assert sorted(pairs) == [(YONGHE_10, 1), (YONGHE_10, 2)]
    assert len(visitors) == 2
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)


async def test_holds_on_a_stale_slot_never_double_allocate(
    runtime: Runtime,
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
) -> None:
    created = 0
    for _ in range(3):
        response = await hold(client, tourist)
        assert response.status_code == 201, response.text
        created += 1
    for unit in (1, 3):
        await free_a_taken_slot_unit(runtime, YONGHE, KEY_10, unit)
    for _ in range(3):
        response = await hold(client, tourist)
        assert response.status_code == 201, response.text
        created += 1
    visitors = [v for v in await active_visitors(runtime, YONGHE) if v.slot_id == YONGHE_10]
    pairs = Counter((v.slot_id, v.slot_unit) for v in visitors)
    assert max(pairs.values()) == 1
    assert len(visitors) == created == 6
    assert len({v.day_unit for v in visitors}) == 6
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)


# a failed SQL insert gives its units back --------------------------------------------------


@pytest.fixture
async def lenient(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 answer instead of the app's exception."""
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as client:
        yield client


async def test_failed_sql_insert_returns_its_units(
    runtime: Runtime,
    lenient: httpx.AsyncClient,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await held(lenient, tourist)
    before_used = await slot_used(runtime, YONGHE, KEY_10)
    before = await runtime.counters.snapshot(YONGHE)
    original = repository.add_holds
    calls = 0

    async def fail_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database went away")
        await original(*args, **kwargs)

    monkeypatch.setattr(repository, "add_holds", fail_once)
    response = await hold(lenient, tourist)
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "internal-error"
    assert calls == 1
    assert await slot_used(runtime, YONGHE, KEY_10) == before_used == ("1", "1")
    assert await runtime.counters.snapshot(YONGHE) == before
    assert len(await active_visitors(runtime, YONGHE)) == 1

    await held(lenient, tourist)
    assert calls == 2
    assert await slot_used(runtime, YONGHE, KEY_10) == ("2", "2")
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)


async def test_concurrent_holds_on_a_stale_slot_never_oversell(
    runtime: Runtime,
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
) -> None:
    """Batched inserts meet stale units: each hold still gets its own verdict."""
    await runtime.catalog.change_slot(YONGHE_10, {"capacity": 30}, actor="test")
    for _ in range(10):
        await held(client, tourist)
    for unit in (2, 4, 6, 8, 10):
        await free_a_taken_slot_unit(runtime, YONGHE, KEY_10, unit)

    responses = await asyncio.gather(*(hold(client, tourist) for _ in range(40)))
    await runtime.reconciler.wait_pending()

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409, 503}
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 503)
    visitors = [v for v in await active_visitors(runtime, YONGHE) if v.slot_id == YONGHE_10]
    assert max(Counter(v.slot_unit for v in visitors).values()) == 1
    assert len({v.day_unit for v in visitors}) == len(visitors)
    assert len(visitors) == 10 + statuses[201] <= 30
    await runtime.reconciler.rebuild(YONGHE)
    assert await runtime.counters.snapshot(YONGHE) == await sql_snapshot(runtime, YONGHE)
