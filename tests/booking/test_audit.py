"""Tests for booking.audit: SQL and Redis checked against each other, read-only.

Real SQLite (or PostgreSQL) and a real Redis: places are booked over HTTP, then SQL or Redis
is damaged by hand, and the audit must count exactly what was done, and write nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel, col

from booking import repository
from booking.audit import Auditor, AuditReport
from booking.models import Visitor
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.runtime import Runtime, make_read_only_engine, make_sessions
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

TODAY = date(2026, 12, 1)
YONGHE = SiteDay("yonghe-temple", TODAY)
PALACE = SiteDay("palace-museum", date(2026, 12, 2))
KEY_10 = "1000"
YONGHE_11 = "yonghe-temple.2026-12-01.1100"
PALACE_TOMORROW = "palace-museum.2026-12-02.0830"

CLEAN_DAY = {
    "oversold": 0,
    "over_lowered_cap": 0,
    "missing": 0,
    "leaked": 0,
    "orphaned_holds": 0,
    "not_built": 0,
}


@pytest.fixture
async def read_only(runtime: Runtime) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a read-only engine over the test's database, as `tidegate audit` uses."""
    engine = make_read_only_engine(runtime.settings.db_url)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture
def auditor(
    runtime: Runtime, read_only: async_sessionmaker[AsyncSession], clock: ManualClock
) -> Auditor:
    return Auditor(read_only, runtime.counters, clock)


async def held(client: httpx.AsyncClient, tourist: dict[str, str], **kwargs: Any) -> str:
    response = await hold(client, tourist, **kwargs)
    assert response.status_code == 201, response.text
    reservation: str = response.json()["id"]
    return reservation


def figures(report: AuditReport, site_day: SiteDay) -> dict[str, Any]:
    found = [day.as_dict() for day in report.days if day.site_day == site_day]
    assert len(found) == 1, f"{site_day} not audited"
    return found[0]


def day_report(site_day: SiteDay, active: int, **faults: int) -> dict[str, Any]:
    return {
        "site": site_day.site,
        "date": site_day.visit_date.isoformat(),
        "active": active,
        **CLEAN_DAY,
        **faults,
    }


async def force_visitor(runtime: Runtime, reservation_id: str, *, slot_unit: int) -> None:
    """An active visitor written straight into SQL beside the service, on fresh units."""
    async with runtime.sessions() as session, session.begin():
        template = (
            (
                await session.execute(
                    sa.select(Visitor).where(col(Visitor.reservation_id) == reservation_id)
                )
            )
            .scalars()
            .first()
        )
        assert template is not None
        session.add(
            Visitor(
                reservation_id=reservation_id,
                site_id=template.site_id,
                slot_id=template.slot_id,
                visit_date=template.visit_date,
                position=99,
                name="Forced",
                id_type=template.id_type,
                id_hash="forced-id-hash",
                id_masked=template.id_masked,
                slot_unit=slot_unit,
                day_unit=9_999,
            )
        )


async def redis_contents(runtime: Runtime) -> dict[str, Any]:
    redis = runtime.redis
    contents: dict[str, Any] = {}
    async for key in redis.scan_iter(match="*"):
        kind = await redis.type(key)
        if kind == "string":
            contents[key] = await redis.get(key)
        elif kind == "hash":
            contents[key] = await redis.hgetall(key)
        elif kind == "set":
            contents[key] = await redis.smembers(key)
        elif kind == "zset":
            contents[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            contents[key] = await redis.lrange(key, 0, -1)
        else:
            contents[key] = kind
    return contents


async def row_counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.sessions() as session:
        return {
            table.name: int(
                (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in SQLModel.metadata.sorted_tables
        }


# a consistent pair -----------------------------------------------------------------------


async def test_a_clean_day_after_real_bookings(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    other = await new_tourist(client)
    await held(client, tourist)
    await held(client, tourist, visitors=[visitor(), visitor()])
    await held(client, other, slot_id=YONGHE_11)
    await held(client, other, slot_id=PALACE_TOMORROW)

    report = await auditor.run([PALACE, YONGHE])

    assert report.as_dict() == {
        "clean": True,
        "site_days": 2,
        **CLEAN_DAY,
        "days": [day_report(YONGHE, 4), day_report(PALACE, 1)],
    }


async def test_every_day_with_counters_is_audited_by_default(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    async with runtime.sessions() as session:
        days = await repository.site_days_from(session, TODAY - timedelta(days=1))
    built = [
        SiteDay(site, day)
        for site, day in days
        if await runtime.counters.is_built(SiteDay(site, day))
    ]

    report = await auditor.run()

    assert len(built) > 20
    assert [day.site_day for day in report.days] == sorted(
        built, key=lambda d: (d.visit_date, d.site)
    )
    assert report.clean
    assert [(d.site_day, d.active) for d in report.days if d.active] == [(YONGHE, 2)]
    only = await auditor.run(site="yonghe-temple", visit_date=TODAY)
    assert [d.as_dict() for d in only.days] == [day_report(YONGHE, 2)]


# drift ------------------------------------------------------------------------------------


async def test_a_unit_lost_by_redis_is_missing(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    # A failover lost the write of slot unit 1: Redis counts it free and could sell it again.
    assert await runtime.redis.zadd(YONGHE.slot_free(KEY_10), {"1": 1}) == 1

    report = await auditor.run([YONGHE])

    assert figures(report, YONGHE) == day_report(YONGHE, 2, missing=1)
    assert not report.clean


async def test_units_taken_only_in_redis_are_leaked(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    await held(client, tourist)
    # A crash between Redis and SQL: a slot unit, a day unit and an ID hash, no reservation.
    await runtime.counters.allocate(YONGHE, KEY_10, ["leaked-id-hash"], now=runtime.clock.now())

    report = await auditor.run([YONGHE])

    assert figures(report, YONGHE) == day_report(YONGHE, 1, leaked=3)
    assert report.as_dict()["leaked"] == 3


# caps -------------------------------------------------------------------------------------


async def test_a_cap_lowered_after_sale_is_not_an_oversell(
    runtime: Runtime,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
    clock: ManualClock,
    auditor: Auditor,
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor(), visitor()])
    clock.advance(timedelta(minutes=1))
    response = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 1}, headers=admin)
    assert response.status_code == 200, response.text

    report = await auditor.run([YONGHE])

    assert figures(report, YONGHE) == day_report(YONGHE, 3, over_lowered_cap=2)
    assert report.clean


async def test_a_row_forced_beyond_the_cap_in_sql_is_oversold(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    async with runtime.sessions() as session, session.begin():
        await repository.set_slot_capacity(session, YONGHE_10, 2)
    assert await runtime.reconciler.rebuild(YONGHE)
    reservation = await held(client, tourist, visitors=[visitor(), visitor()])
    await force_visitor(runtime, reservation, slot_unit=3)

    report = await auditor.run([YONGHE])

    # One place too many; Redis never counted its slot unit, day unit and ID hash either.
    assert figures(report, YONGHE) == day_report(YONGHE, 3, oversold=1, missing=3)
    assert not report.clean


async def test_a_cap_lowered_before_the_sales_explains_nothing(
    runtime: Runtime,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
    clock: ManualClock,
    auditor: Auditor,
) -> None:
    response = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 2}, headers=admin)
    assert response.status_code == 200, response.text
    clock.advance(timedelta(minutes=1))
    reservation = await held(client, tourist, visitors=[visitor(), visitor()])
    await force_visitor(runtime, reservation, slot_unit=3)

    report = await auditor.run([YONGHE])

    assert figures(report, YONGHE) == day_report(YONGHE, 3, oversold=1, missing=3)


async def test_a_unit_held_by_two_active_rows_is_oversold(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    reservation = await held(client, tourist)
    async with runtime.engine.begin() as connection:
        # Only a database without the partial unique indexes could hold this.
        await connection.execute(sa.text("DROP INDEX uq_visitor_slot_unit"))
    await force_visitor(runtime, reservation, slot_unit=1)

    report = await auditor.run([YONGHE])

    # Slot unit 1 twice; the forced row's day unit and ID hash are not in Redis.
    assert figures(report, YONGHE) == day_report(YONGHE, 2, oversold=1, missing=2)


# holds and counters ----------------------------------------------------------------------


async def test_a_hold_past_its_deadline_before_the_sweep_is_orphaned(
    runtime: Runtime,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    clock: ManualClock,
    auditor: Auditor,
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    await held(client, tourist, slot_id=YONGHE_11)
    assert figures(await auditor.run([YONGHE]), YONGHE) == day_report(YONGHE, 3)

    clock.advance(runtime.settings.hold_ttl + timedelta(seconds=1))
    report = await auditor.run([YONGHE])

    assert figures(report, YONGHE) == day_report(YONGHE, 3, orphaned_holds=2)
    assert not report.clean


async def test_flushed_redis_is_not_built_and_not_drift(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], auditor: Auditor
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    await runtime.redis.flushdb()

    report = await auditor.run()

    assert report.as_dict() == {
        "clean": True,
        "site_days": 1,
        **CLEAN_DAY,
        "not_built": 1,
        "days": [day_report(YONGHE, 2, not_built=1)],
    }
    assert not await runtime.counters.is_built(YONGHE)  # and the audit built nothing


# read-only -------------------------------------------------------------------------------


async def test_the_audit_writes_nothing(
    runtime: Runtime,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    clock: ManualClock,
    auditor: Auditor,
) -> None:
    await held(client, tourist, visitors=[visitor(), visitor()])
    await runtime.counters.allocate(YONGHE, KEY_10, ["leaked-id-hash"], now=clock.now())
    assert await runtime.redis.zadd(YONGHE.slot_free(KEY_10), {"1": 1}) == 1
    clock.advance(runtime.settings.hold_ttl + timedelta(minutes=5))
    redis_before, sql_before = await redis_contents(runtime), await row_counts(runtime)

    report = await auditor.run()

    assert figures(report, YONGHE) == day_report(YONGHE, 2, missing=1, leaked=3, orphaned_holds=1)
    assert await redis_contents(runtime) == redis_before
    assert await row_counts(runtime) == sql_before
    assert await runtime.redis.exists(YONGHE.suspects) == 0


async def test_the_audit_engine_cannot_write(read_only: async_sessionmaker[AsyncSession]) -> None:
    async with read_only() as session:
        with pytest.raises(sa.exc.DBAPIError):
            await session.execute(sa.text("DELETE FROM site"))
