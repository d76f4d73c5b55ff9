"""Per-account limits over HTTP: reservations per site-day and open holds per site.

Against the real app, SQLite and Redis. With the demo defaults an account may keep two holds
open at once at a site (`account_hold_limit`) and hold three active reservations for one
site-day (`account_day_limit`); a refusal is a 409 `account-limit` naming which limit and how
many it allows, and it takes nothing: no places, no claim against either limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.ledger import PendingHold
from booking.models import Reservation, ReservationStatus, Visitor
from booking.schemas import VisitorIn
from capacity.clock import ManualClock
from capacity.keys import SiteDay, open_holds
from service.background import sweep_once
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"
TODAY = date(2026, 12, 1)
YONGHE = SiteDay("yonghe-temple", TODAY)
YONGHE_TOMORROW = SiteDay("yonghe-temple", date(2026, 12, 2))
YONGHE_TOMORROW_10 = "yonghe-temple.2026-12-02.1000"
HEAVEN_MORNING = "temple-of-heaven.2026-12-01.0900"


def yonghe(hhmm: str) -> str:
    return f"yonghe-temple.2026-12-01.{hhmm}"


# asking ----------------------------------------------------------------------------------


async def held(
    client: httpx.AsyncClient, headers: dict[str, str], slot_id: str = YONGHE_10, party: int = 1
) -> str:
    """Hold places and insist that it worked; returns the reservation id."""
    response = await hold(client, headers, slot_id, visitors=[visitor() for _ in range(party)])
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["id"]
    return reservation_id


async def confirm(client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str) -> None:
    response = await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "confirmed"


async def cancel(client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str) -> None:
    response = await client.post(f"/v1/reservations/{reservation_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


async def booked(
    client: httpx.AsyncClient, headers: dict[str, str], slot_id: str = YONGHE_10
) -> str:
    """A confirmed reservation (no longer an open hold)."""
    reservation_id = await held(client, headers, slot_id)
    await confirm(client, headers, reservation_id)
    return reservation_id


async def patch_site(client: httpx.AsyncClient, admin: dict[str, str], **changes: int) -> None:
    response = await client.patch("/v1/sites/yonghe-temple", json=changes, headers=admin)
    assert response.status_code == 200, response.text
    for name, value in changes.items():
        assert response.json()[name] == value


# what the answers say --------------------------------------------------------------------


def assert_open_holds_limit(
    response: httpx.Response, limit: int, site: str = "yonghe-temple"
) -> None:
    assert_account_limit(
        response,
        detail=(
            f"this account has reached its limit of {limit} open holds at {site}: "
            "confirm or cancel one first"
        ),
        per="open-holds",
        limit=limit,
    )


def assert_day_limit(response: httpx.Response, limit: int, site_day: SiteDay = YONGHE) -> None:
    assert_account_limit(
        response,
        detail=(
            f"this account has reached its limit of {limit} reservations at {site_day.site} on "
            f"{site_day.visit_date.isoformat()}"
        ),
        per="site-day",
        limit=limit,
    )


def assert_account_limit(response: httpx.Response, *, detail: str, per: str, limit: int) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:tidegate:problem:account-limit",
        "title": "This account has reached its limit here",
        "status": 409,
        "code": "account-limit",
        "detail": detail,
        "instance": "/v1/reservations",
        "limit": limit,
        "per": per,
    }


# what Redis and SQL hold -----------------------------------------------------------------


async def owner_of(runtime: Runtime, reservation_id: str) -> str:
    async with runtime.sessions() as session:
        reservation = await session.get(Reservation, reservation_id)
        assert reservation is not None
        return reservation.owner_id


async def claims(runtime: Runtime, owner: str) -> list[str]:
    """The account's open-hold claims, "site reservation"."""
    return sorted(str(member) for member in await runtime.redis.zrange(open_holds(owner), 0, -1))


async def counted(runtime: Runtime, owner: str, site_day: SiteDay = YONGHE) -> list[str]:
    """The reservations Redis counts against the account for the site-day."""
    ids = await runtime.redis.hget(site_day.owners, owner)
    return sorted(str(ids or "").split())


async def used(runtime: Runtime, slot_key: str = "1000", site_day: SiteDay = YONGHE) -> int:
    load = await runtime.counters.load(site_day)
    assert load is not None
    return load.slots[slot_key].used


async def day_used(runtime: Runtime, site_day: SiteDay = YONGHE) -> int:
    load = await runtime.counters.load(site_day)
    assert load is not None
    return load.day.used


async def active_in_sql(runtime: Runtime, slot_id: str = YONGHE_10) -> int:
    async with runtime.sessions() as session:
        query = sa.select(sa.func.count()).where(
            col(Visitor.slot_id) == slot_id, col(Visitor.active)
        )
        return int((await session.execute(query)).scalar_one())


async def statuses(runtime: Runtime, owner: str) -> Counter[str]:
    async with runtime.sessions() as session:
        query = sa.select(col(Reservation.status)).where(col(Reservation.owner_id) == owner)
        return Counter(str(row[0]) for row in await session.execute(query))


# the open-holds limit --------------------------------------------------------------------


async def test_a_third_open_hold_at_a_site_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))
    owner = await owner_of(runtime, first)

    refused = await hold(client, tourist, yonghe("1200"))

    assert_open_holds_limit(refused, 2)
    assert await claims(runtime, owner) == sorted(
        [f"yonghe-temple {first}", f"yonghe-temple {second}"]
    )
    assert await counted(runtime, owner) == sorted([first, second])
    assert await used(runtime, "1200") == 0
    assert await day_used(runtime) == 2
    assert await statuses(runtime, owner) == Counter({"held": 2})


async def test_confirming_a_hold_makes_room_for_another_open_hold(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1200")), 2)

    await confirm(client, tourist, first)
    third = await held(client, tourist, yonghe("1200"))

    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == sorted(
        [f"yonghe-temple {second}", f"yonghe-temple {third}"]
    )
    assert await counted(runtime, owner) == sorted([first, second, third])


async def test_a_fourth_reservation_of_the_site_day_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))
    await confirm(client, tourist, first)
    third = await held(client, tourist, yonghe("1200"))
    await confirm(client, tourist, second)
    await confirm(client, tourist, third)
    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == []

    refused = await hold(client, tourist, yonghe("1300"))

    assert_day_limit(refused, 3)
    # Nothing taken, and the claim on an open hold was given back.
    assert await claims(runtime, owner) == []
    assert await counted(runtime, owner) == sorted([first, second, third])
    assert await used(runtime, "1300") == 0
    assert await day_used(runtime) == 3
    assert await statuses(runtime, owner) == Counter({"confirmed": 3})


async def test_the_day_limit_counts_reservations_not_visitors(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        reservation_id = await held(client, tourist, yonghe(hhmm), party=5)
        await confirm(client, tourist, reservation_id)
    assert await day_used(runtime) == 15

    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)
    assert await day_used(runtime) == 15


async def test_the_day_limit_does_not_reach_another_day_or_another_site(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        await booked(client, tourist, yonghe(hhmm))
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)

    tomorrow = await held(client, tourist, YONGHE_TOMORROW_10)
    elsewhere = await held(client, tourist, HEAVEN_MORNING)

    owner = await owner_of(runtime, tomorrow)
    assert await counted(runtime, owner, YONGHE_TOMORROW) == [tomorrow]
    assert await counted(runtime, owner, SiteDay("temple-of-heaven", TODAY)) == [elsewhere]
    assert len(await counted(runtime, owner)) == 3


async def test_the_open_holds_limit_spans_the_days_of_a_site_but_not_other_sites(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    await held(client, tourist, yonghe("1100"))

    assert_open_holds_limit(await hold(client, tourist, YONGHE_TOMORROW_10), 2)
    assert await used(runtime, "1000", YONGHE_TOMORROW) == 0

    await held(client, tourist, HEAVEN_MORNING)
    await held(client, tourist, "temple-of-heaven.2026-12-01.1200")
    assert_open_holds_limit(
        await hold(client, tourist, "temple-of-heaven.2026-12-01.1500"), 2, "temple-of-heaven"
    )

    owner = await owner_of(runtime, first)
    assert Counter(claim.split()[0] for claim in await claims(runtime, owner)) == Counter(
        {"yonghe-temple": 2, "temple-of-heaven": 2}
    )


# giving places back ----------------------------------------------------------------------


async def test_cancelling_a_hold_frees_both_limits(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))
    await cancel(client, tourist, first)

    third = await held(client, tourist, yonghe("1200"))

    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == sorted(
        [f"yonghe-temple {second}", f"yonghe-temple {third}"]
    )
    assert await counted(runtime, owner) == sorted([second, third])


async def test_cancelling_a_confirmed_reservation_frees_the_day_limit(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    second = await booked(client, tourist, yonghe("1100"))
    third = await booked(client, tourist, yonghe("1200"))
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)

    await cancel(client, tourist, second)
    fourth = await held(client, tourist, yonghe("1300"))

    owner = await owner_of(runtime, first)
    assert await counted(runtime, owner) == sorted([first, third, fourth])
    assert_day_limit(await hold(client, tourist, yonghe("1400")), 3)


async def test_cancelling_twice_frees_the_day_limit_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    second = await booked(client, tourist, yonghe("1100"))
    await cancel(client, tourist, first)

    again = await client.post(f"/v1/reservations/{first}/cancel", headers=tourist)

    assert again.status_code == 409, again.text
    owner = await owner_of(runtime, first)
    assert await counted(runtime, owner) == [second]
    await booked(client, tourist, yonghe("1200"))
    await booked(client, tourist, yonghe("1300"))
    assert_day_limit(await hold(client, tourist, yonghe("1400")), 3)


async def test_an_expired_hold_frees_both_limits_once_swept(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    await held(client, tourist, yonghe("1100"))
    await held(client, tourist, yonghe("1200"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1300")), 2)

    clock.advance(runtime.settings.hold_ttl + timedelta(seconds=1))
    assert await sweep_once(runtime) == 2

    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == []
    assert await counted(runtime, owner) == [first]
    assert await statuses(runtime, owner) == Counter({"confirmed": 1, "expired": 2})
    fourth = await held(client, tourist, yonghe("1300"))
    fifth = await held(client, tourist, yonghe("1400"))
    assert await counted(runtime, owner) == sorted([first, fourth, fifth])
    assert_open_holds_limit(await hold(client, tourist, yonghe("1500")), 2)
    await confirm(client, tourist, fourth)
    assert_day_limit(await hold(client, tourist, yonghe("1500")), 3)


async def test_an_expired_hold_is_no_longer_open_even_before_the_sweep(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    await held(client, tourist, yonghe("1100"))

    clock.advance(runtime.settings.hold_ttl)
    third = await held(client, tourist, yonghe("1200"))

    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == [f"yonghe-temple {third}"]
    # Until the sweeper comes by, the expired holds still count against the day.
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)


async def test_a_hold_that_expires_on_confirm_frees_both_limits(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    clock.advance(runtime.settings.hold_ttl)

    response = await client.post(f"/v1/reservations/{first}/confirm", headers=tourist)

    assert response.status_code == 410, response.text
    assert response.json()["code"] == "hold-expired"
    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == []
    assert await counted(runtime, owner) == []


async def test_a_closure_frees_both_limits(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    await booked(client, tourist, yonghe("1000"))
    third = await held(client, tourist, yonghe("1100"))

    closed = await client.post(
        f"/v1/slots/{YONGHE_10}/close", json={"reason": "storm warning"}, headers=admin
    )

    assert closed.status_code == 200, closed.text
    assert closed.json()["cancelled_reservations"] == 2
    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == [f"yonghe-temple {third}"]
    assert await counted(runtime, owner) == [third]
    await held(client, tourist, yonghe("1200"))


# refusals for other reasons take nothing -------------------------------------------------


async def test_sold_out_refusals_take_nothing_from_the_limits(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    response = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 0}, headers=admin)
    assert response.status_code == 200, response.text

    for _ in range(4):
        refused = await hold(client, tourist, YONGHE_10)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "sold-out"

    first = await held(client, tourist, yonghe("1100"))
    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == [f"yonghe-temple {first}"]
    assert await counted(runtime, owner) == [first]
    await confirm(client, tourist, first)
    await held(client, tourist, yonghe("1200"))
    await held(client, tourist, yonghe("1300"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1400")), 2)


async def test_duplicate_visitor_refusals_take_nothing_from_the_limits(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    somebody = visitor()
    first = await hold(client, tourist, yonghe("1000"), visitors=[somebody])
    assert first.status_code == 201, first.text
    owner = await owner_of(runtime, first.json()["id"])

    again = await hold(client, tourist, yonghe("1100"), visitors=[somebody])
    second_of_two = await hold(client, tourist, yonghe("1100"), visitors=[visitor(), somebody])
    named_twice = await hold(client, tourist, yonghe("1100"), visitors=[somebody, somebody])

    for refused in (again, second_of_two, named_twice):
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "duplicate-visitor"
    assert await claims(runtime, owner) == [f"yonghe-temple {first.json()['id']}"]
    assert await counted(runtime, owner) == [first.json()["id"]]
    await held(client, tourist, yonghe("1100"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1200")), 2)


async def test_a_closed_slot_refusal_takes_nothing_from_the_limits(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    closed = await client.post(
        f"/v1/slots/{yonghe('1500')}/close", json={"reason": "rain"}, headers=admin
    )
    assert closed.status_code == 200, closed.text

    for _ in range(3):
        refused = await hold(client, tourist, yonghe("1500"))
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "site-closed"

    first = await held(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))
    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == sorted(
        [f"yonghe-temple {first}", f"yonghe-temple {second}"]
    )


async def test_a_day_limit_refusal_gives_its_open_hold_claim_back(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await patch_site(client, admin, account_day_limit=1)
    first = await held(client, tourist, yonghe("1000"))

    for _ in range(3):
        assert_day_limit(await hold(client, tourist, yonghe("1100")), 1)

    owner = await owner_of(runtime, first)
    assert await claims(runtime, owner) == [f"yonghe-temple {first}"]
    # The day limit refused; the hold limit still has room for one more elsewhere.
    await held(client, tourist, YONGHE_TOMORROW_10)
    assert_open_holds_limit(await hold(client, tourist, yonghe("1100")), 2)


async def test_a_replayed_hold_is_answered_even_at_the_limit(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    body = {"slot_id": YONGHE_10, "visitors": [visitor()]}
    headers = {**tourist, "Idempotency-Key": "hold-once"}
    first = await client.post("/v1/reservations", json=body, headers=headers)
    assert first.status_code == 201, first.text
    await held(client, tourist, yonghe("1100"))

    replay = await client.post("/v1/reservations", json=body, headers=headers)

    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_open_holds_limit(await hold(client, tourist, yonghe("1200")), 2)


# at once ---------------------------------------------------------------------------------


async def fire(
    client: httpx.AsyncClient, headers: dict[str, str], slot_ids: list[str]
) -> list[httpx.Response]:
    return await asyncio.gather(*(hold(client, headers, slot_id) for slot_id in slot_ids))


def outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, Any]]:
    return Counter(
        (r.status_code, r.json().get("per") if r.status_code == 409 else None) for r in responses
    )


async def test_ten_holds_at_once_open_exactly_two(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    responses = await fire(client, tourist, [YONGHE_10] * 10)

    assert outcomes(responses) == Counter({(201, None): 2, (409, "open-holds"): 8})
    for refused in (r for r in responses if r.status_code == 409):
        assert_open_holds_limit(refused, 2)
    created = sorted(r.json()["id"] for r in responses if r.status_code == 201)
    owner = await owner_of(runtime, created[0])
    assert await claims(runtime, owner) == [f"yonghe-temple {rid}" for rid in created]
    assert await counted(runtime, owner) == created
    assert await used(runtime) == 2 == await active_in_sql(runtime)
    assert await day_used(runtime) == 2
    assert await statuses(runtime, owner) == Counter({"held": 2})


async def test_ten_holds_at_once_make_exactly_three_reservations_of_a_day(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await patch_site(client, admin, account_hold_limit=100)

    responses = await fire(client, tourist, [YONGHE_10] * 10)

    assert outcomes(responses) == Counter({(201, None): 3, (409, "site-day"): 7})
    for refused in (r for r in responses if r.status_code == 409):
        assert_day_limit(refused, 3)
    created = sorted(r.json()["id"] for r in responses if r.status_code == 201)
    owner = await owner_of(runtime, created[0])
    assert await claims(runtime, owner) == [f"yonghe-temple {rid}" for rid in created]
    assert await counted(runtime, owner) == created
    assert await used(runtime) == 3 == await active_in_sql(runtime)


async def test_many_accounts_at_once_are_each_held_to_their_own_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tourists = [await new_tourist(client) for _ in range(4)]

    per_tourist = await asyncio.gather(
        *(fire(client, headers, [YONGHE_10] * 5) for headers in tourists)
    )

    for responses in per_tourist:
        assert outcomes(responses) == Counter({(201, None): 2, (409, "open-holds"): 3})
    assert await used(runtime) == 8 == await active_in_sql(runtime)


# managers change the limits --------------------------------------------------------------


async def test_a_lower_day_limit_applies_to_the_next_hold(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))

    await patch_site(client, admin, account_day_limit=1)

    assert_day_limit(await hold(client, tourist, yonghe("1100")), 1)
    load = await runtime.counters.load(YONGHE)
    assert load is not None
    assert load.owner_max == 1
    owner = await owner_of(runtime, first)
    assert await counted(runtime, owner) == [first]
    # Other days of the site follow the new limit too.
    await booked(client, tourist, YONGHE_TOMORROW_10)
    assert_day_limit(
        await hold(client, tourist, "yonghe-temple.2026-12-02.1100"), 1, YONGHE_TOMORROW
    )


async def test_a_higher_day_limit_applies_to_the_next_hold(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        await booked(client, tourist, yonghe(hhmm))
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)

    await patch_site(client, admin, account_day_limit=4)

    await booked(client, tourist, yonghe("1300"))
    assert_day_limit(await hold(client, tourist, yonghe("1400")), 4)


async def test_a_lower_hold_limit_applies_to_the_next_hold(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await held(client, tourist, yonghe("1000"))  # the limit of 2 is read and cached here

    await patch_site(client, admin, account_hold_limit=1)

    assert_open_holds_limit(await hold(client, tourist, yonghe("1100")), 1)


async def test_a_higher_hold_limit_applies_to_the_next_hold(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await held(client, tourist, yonghe("1000"))
    await held(client, tourist, yonghe("1100"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1200")), 2)

    await patch_site(client, admin, account_hold_limit=3)

    await held(client, tourist, yonghe("1200"))
    assert_open_holds_limit(await hold(client, tourist, yonghe("1300")), 3)


async def test_a_lower_day_limit_cancels_nobody(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    second = await held(client, tourist, yonghe("1100"))

    await patch_site(client, admin, account_day_limit=1)

    owner = await owner_of(runtime, first)
    assert await statuses(runtime, owner) == Counter({"confirmed": 1, "held": 1})
    assert await counted(runtime, owner) == sorted([first, second])
    await confirm(client, tourist, second)
    await cancel(client, tourist, first)
    assert_day_limit(await hold(client, tourist, yonghe("1200")), 1)
    await cancel(client, tourist, second)
    await held(client, tourist, yonghe("1200"))


# Redis lost, SQL remembers ---------------------------------------------------------------


async def test_the_day_limit_survives_a_rebuild_from_sql(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    second = await booked(client, tourist, yonghe("1100"))
    third = await held(client, tourist, yonghe("1200"))
    owner = await owner_of(runtime, first)

    await runtime.redis.flushall()
    assert await runtime.reconciler.rebuild(YONGHE)

    assert await counted(runtime, owner) == sorted([first, second, third])
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)
    await cancel(client, tourist, third)
    await held(client, tourist, yonghe("1300"))


async def test_the_day_limit_survives_a_rebuild_the_booking_path_asked_for(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        await booked(client, tourist, yonghe(hhmm))
    await runtime.redis.flushall()

    unavailable = await hold(client, tourist, yonghe("1300"))
    assert unavailable.status_code == 503, unavailable.text
    await runtime.reconciler.wait_pending()

    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)


async def test_the_reconciler_restores_an_owner_count_redis_lost(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    reservations = sorted([await booked(client, tourist, yonghe(h)) for h in ("1000", "1100")])
    owner = await owner_of(runtime, reservations[0])
    await runtime.redis.hdel(YONGHE.owners, owner)

    drift = await runtime.reconciler.reconcile_day(YONGHE)

    assert (drift.missing, drift.rebuilt) == (2, True)
    assert await counted(runtime, owner) == reservations
    await booked(client, tourist, yonghe("1200"))
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)


async def test_the_reconciler_returns_an_owner_count_sql_does_not_prove(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    first = await booked(client, tourist, yonghe("1000"))
    second = await booked(client, tourist, yonghe("1100"))
    owner = await owner_of(runtime, first)
    await runtime.redis.hset(YONGHE.owners, owner, f"{first} {second} ghost")
    assert_day_limit(await hold(client, tourist, yonghe("1200")), 3)

    seen = await runtime.reconciler.reconcile_day(YONGHE)
    assert (seen.missing, seen.leaked, seen.rebuilt) == (0, 1, False)
    assert await counted(runtime, owner) == sorted([first, second, "ghost"])

    clock.advance(timedelta(seconds=runtime.settings.reconcile_grace_seconds + 1))
    returned = await runtime.reconciler.reconcile_day(YONGHE)

    assert (returned.missing, returned.leaked, returned.rebuilt) == (0, 1, False)
    assert await counted(runtime, owner) == sorted([first, second])
    await held(client, tourist, yonghe("1200"))
    again = await runtime.reconciler.reconcile_day(YONGHE)
    assert (again.missing, again.leaked) == (0, 0)


# accounts are independent ----------------------------------------------------------------


async def test_another_account_is_not_held_to_the_first_ones_limits(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        await booked(client, tourist, yonghe(hhmm))
    assert_day_limit(await hold(client, tourist, yonghe("1300")), 3)
    await held(client, tourist, YONGHE_TOMORROW_10)
    await held(client, tourist, "yonghe-temple.2026-12-02.1100")
    assert_open_holds_limit(await hold(client, tourist, "yonghe-temple.2026-12-02.1200"), 2)

    other = await new_tourist(client)
    first = await held(client, other, yonghe("1000"))
    second = await held(client, other, yonghe("1100"))
    assert_open_holds_limit(await hold(client, other, yonghe("1200")), 2)
    await confirm(client, other, first)
    await confirm(client, other, second)
    await booked(client, other, yonghe("1300"))
    assert_day_limit(await hold(client, other, yonghe("1400")), 3)

    owner = await owner_of(runtime, first)
    assert len(await counted(runtime, owner)) == 3
    assert await statuses(runtime, owner) == Counter({"confirmed": 3})


async def test_refusing_one_account_does_not_refuse_another_at_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    busy, calm = await new_tourist(client), await new_tourist(client)
    await held(client, busy, yonghe("1000"))
    await held(client, busy, yonghe("1100"))

    responses = await asyncio.gather(
        *(hold(client, busy, YONGHE_10) for _ in range(3)), hold(client, calm, YONGHE_10)
    )

    assert [r.status_code for r in responses] == [409, 409, 409, 201]
    assert await statuses(runtime, await owner_of(runtime, responses[3].json()["id"])) == (
        Counter({str(ReservationStatus.held): 1})
    )


# a request cancelled while its hold is being written -------------------------------------


async def test_a_cancelled_request_whose_hold_commits_keeps_its_claim(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await held(client, tourist, yonghe("1000"))
    owner = await owner_of(runtime, first)
    ledger = runtime.booking._ledger
    insert = ledger._insert
    writing, go_on = asyncio.Event(), asyncio.Event()

    async def slow_insert(batch: list[PendingHold]) -> None:
        writing.set()
        await go_on.wait()
        await insert(batch)

    monkeypatch.setattr(ledger, "_insert", slow_insert)
    request = asyncio.create_task(
        runtime.booking.hold(
            owner_id=owner, slot_id=yonghe("1100"), visitors=[VisitorIn(**visitor())]
        )
    )
    await writing.wait()
    request.cancel()  # the client went away while its hold was being written
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await request

    # SQL proves two open holds, and Redis counts both places and both reservations...
    assert await statuses(runtime, owner) == Counter({"held": 2})
    assert len(await counted(runtime, owner)) == 2
    assert await day_used(runtime) == 2
    # ...so the account is at its limit of two open holds.
    assert len(await claims(runtime, owner)) == 2
    assert_open_holds_limit(await hold(client, tourist, yonghe("1200")), 2)
