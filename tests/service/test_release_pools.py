"""Release schedules, channel pools, refund policies and window sales over HTTP (issue 6 §1).

Against the real app, SQLite and Redis, with the test clock moved by hand. Every test counts
exactly: the places that sell before the next one is refused, `remaining` in the catalog,
what SQL holds per sales channel, and that the reconciler finds Redis as SQL proves it.

- A release schedule puts each batch's share of every cap (slot, day, each pool) on sale at
  its moment: floor(cap × the shares released so far).
- A slot's pools keep places for the `window` and `group` channels; the other channels share
  the rest until the site's pool roll-over, after which any channel takes any place.
- A refund policy keeps a cancelled confirmed reservation's places off sale for a while
  (`delay`, `random-batch`); a cancelled hold and an expiry give them back at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlmodel import col

from booking.models import OutboxEvent, Reservation
from booking.service import window_account_id
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import NOW, hold, visitor
from tests.service.test_reservations_api import (
    BEIJING,
    HOLD_TTL,
    act,
    assert_problem,
    held,
    masked,
    remaining,
    set_capacity,
)

YONGHE = "yonghe-temple"  # horizon 1 day, daily cap 7,500, hourly slots 09:00-16:00
TODAY = date(2026, 12, 1)
YONGHE_TODAY = SiteDay(YONGHE, TODAY)
AT_14 = f"{YONGHE}.2026-12-01.1400"  # on sale until 15:00 (the clock starts at 10:00)
AT_15 = f"{YONGHE}.2026-12-01.1500"  # on sale until 16:00

CONFUCIUS = "confucius-temple"  # horizon 7 days, daily cap 7,000, closed on Mondays
VISIT = date(2026, 12, 8)  # a Tuesday a week ahead
CONFUCIUS_VISIT = SiteDay(CONFUCIUS, VISIT)
VISIT_10 = f"{CONFUCIUS}.2026-12-08.1000"  # sales close at 11:00 on the 8th

# 60% a week before at 20:00, the other 40% held back until the day before at 20:00.
TWO_BATCHES = [
    {"days_before": 7, "at": "20:00", "share": 0.6},
    {"days_before": 1, "at": "20:00", "share": 0.4},
]
FIRST_BATCH = datetime(2026, 12, 1, 20, 0, tzinfo=BEIJING)
SECOND_BATCH = datetime(2026, 12, 7, 20, 0, tzinfo=BEIJING)
SECOND = timedelta(seconds=1)

Headers = dict[str, str]


# asking ------------------------------------------------------------------------------------


async def staff(runtime: Runtime, role: str, *sites: str) -> Headers:
    token = await runtime.accounts.create_staff_token(role=role, sites=list(sites))
    return {"Authorization": f"Bearer {token.token}"}


async def change_site(
    client: httpx.AsyncClient, admin: Headers, site: str, **settings: Any
) -> dict[str, Any]:
    response = await client.patch(f"/v1/sites/{site}", json=settings, headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_pools(
    client: httpx.AsyncClient,
    admin: Headers,
    slot_id: str,
    pools: dict[str, int] | None,
    capacity: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"pools": pools}
    if capacity is not None:
        body["capacity"] = capacity
    response = await client.patch(f"/v1/slots/{slot_id}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    slot: dict[str, Any] = response.json()
    return slot


async def release_in_two_batches(client: httpx.AsyncClient, admin: Headers) -> None:
    """Sell the Confucius Temple's days in two batches (the PATCH rebuilds its counters)."""
    await change_site(client, admin, CONFUCIUS, release_batches=TWO_BATCHES)


def parties(places: int) -> list[int]:
    """Places as parties of at most five."""
    return [5] * (places // 5) + ([places % 5] if places % 5 else [])


async def sell_online(
    client: httpx.AsyncClient, tourist: Headers, slot_id: str, places: int
) -> list[str]:
    """Hold and confirm exactly `places` places, in parties of at most five."""
    ids = []
    for size in parties(places):
        body = await held(client, tourist, slot_id, [visitor() for _ in range(size)])
        confirmed = await act(client, tourist, body["id"], "confirm")
        assert confirmed.status_code == 200, confirmed.text
        ids.append(body["id"])
    return ids


async def window_sale(
    client: httpx.AsyncClient,
    headers: Headers,
    slot_id: str,
    visitors: list[dict[str, str]] | None = None,
    *,
    site: str = YONGHE,
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    body = {"slot_id": slot_id, "visitors": visitors or [visitor()]}
    return await client.post(f"/v1/sites/{site}/window-sales", json=body, headers=headers)


async def sell_at_window(
    client: httpx.AsyncClient, operator: Headers, slot_id: str, places: int, site: str = YONGHE
) -> list[str]:
    """Sell exactly `places` places at the window, in parties of at most five."""
    ids = []
    for size in parties(places):
        response = await window_sale(
            client, operator, slot_id, [visitor() for _ in range(size)], site=site
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


# what the answers say ----------------------------------------------------------------------


def assert_sold_out(
    response: httpx.Response,
    *,
    slot_left: int,
    day_left: int,
    party: int = 1,
    instance: str = "/v1/reservations",
) -> None:
    """409 sold-out with exactly these places left (the alternatives are another feature's)."""
    assert response.status_code == 409, response.text
    body = response.json()
    assert isinstance(body.get("alternatives"), list), body
    assert body == {
        "type": "urn:tidegate:problem:sold-out",
        "title": "Not enough places left in this slot",
        "status": 409,
        "code": "sold-out",
        "detail": f"{party} asked for; left: {slot_left} in this slot, {day_left} this day",
        "instance": instance,
        "slot_left": slot_left,
        "day_left": day_left,
        "alternatives": body["alternatives"],
    }


async def online_sold_out(
    client: httpx.AsyncClient, tourist: Headers, slot_id: str, *, day_left: int
) -> None:
    """One more online place is refused: the online channel has nothing left in the slot."""
    assert_sold_out(await hold(client, tourist, slot_id), slot_left=0, day_left=day_left)


async def window_sold_out(
    client: httpx.AsyncClient,
    operator: Headers,
    slot_id: str,
    *,
    day_left: int,
    site: str = YONGHE,
) -> None:
    response = await window_sale(client, operator, slot_id, site=site)
    assert_sold_out(
        response, slot_left=0, day_left=day_left, instance=f"/v1/sites/{site}/window-sales"
    )


def assert_invalid(
    response: httpx.Response, instance: str, field: str, rule: str, message: str
) -> None:
    assert_problem(
        response,
        422,
        "validation-failed",
        "The request is not valid",
        f"{field}: {message} ({rule})",
        instance,
        errors=[{"in": "body", "field": field, "rule": rule, "message": message}],
    )


# what SQL and Redis hold -------------------------------------------------------------------


async def sold_by_channel(runtime: Runtime, slot_id: str) -> dict[str, int]:
    """Places of the slot's active (held or confirmed) reservations, per sales channel."""
    async with runtime.sessions() as session:
        query = (
            sa.select(col(Reservation.channel), sa.func.sum(col(Reservation.party_size)))
            .where(
                col(Reservation.slot_id) == slot_id,
                col(Reservation.status).in_(["held", "confirmed"]),
            )
            .group_by(col(Reservation.channel))
        )
        return {str(row[0]): int(row[1]) for row in await session.execute(query)}


async def stored(runtime: Runtime, reservation_id: str) -> Reservation:
    async with runtime.sessions() as session:
        reservation = await session.get(Reservation, reservation_id)
    assert reservation is not None
    return reservation


async def places_back_at(runtime: Runtime, reservation_id: str) -> datetime | None:
    return (await stored(runtime, reservation_id)).places_back_at


async def slot_use(runtime: Runtime, site_day: SiteDay, key: str) -> tuple[int, int]:
    """A slot's places used and, of them, in its pools, as Redis counts them."""
    load = await runtime.counters.load(site_day)
    assert load is not None
    return load.slots[key].used, load.slots[key].pool_used


async def assert_no_drift(runtime: Runtime, site_day: SiteDay) -> None:
    """The reconciler finds Redis as SQL proves it: nothing missing or leaked, no rebuild."""
    drift = await runtime.reconciler.reconcile_day(site_day)
    assert (drift.missing, drift.leaked, drift.returned, drift.rebuilt) == (0, 0, 0, False), drift


# release schedules -------------------------------------------------------------------------


async def test_a_day_is_not_on_sale_before_its_first_release_batch(
    client: httpx.AsyncClient,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    await release_in_two_batches(client, admin)
    clock.set(FIRST_BATCH - SECOND)

    response = await hold(client, tourist, VISIT_10)

    opens, closes = "2026-12-01T20:00:00+08:00", "2026-12-08T11:00:00+08:00"
    assert_problem(
        response,
        409,
        "outside-booking-window",
        "This slot is not on sale now",
        f"on sale from {opens} until {closes}",
        "/v1/reservations",
        sales_open_at=opens,
        sales_close_at=closes,
    )
    slot = (await client.get(f"/v1/slots/{VISIT_10}")).json()
    assert (slot["on_sale"], slot["remaining"], slot["sales_open_at"]) == (False, 0, opens)


async def test_the_first_batch_sells_exactly_its_share_of_the_cap(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    await set_capacity(client, admin, VISIT_10, 7)
    await release_in_two_batches(client, admin)
    clock.set(FIRST_BATCH)
    assert await remaining(client, VISIT_10) == 4  # floor(7 × 0.6)

    await sell_online(client, tourist, VISIT_10, 4)

    # The day's cap is released in the same share: floor(7,000 × 0.6) − 4.
    await online_sold_out(client, tourist, VISIT_10, day_left=4196)
    assert await remaining(client, VISIT_10) == 0
    assert await sold_by_channel(runtime, VISIT_10) == {"online": 4}


async def test_the_held_back_share_goes_on_sale_at_the_last_batch(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    await set_capacity(client, admin, VISIT_10, 7)
    await release_in_two_batches(client, admin)
    clock.set(FIRST_BATCH)
    await sell_online(client, tourist, VISIT_10, 4)
    clock.set(SECOND_BATCH - SECOND)
    await online_sold_out(client, tourist, VISIT_10, day_left=4196)

    clock.set(SECOND_BATCH)
    assert await remaining(client, VISIT_10) == 3
    await sell_online(client, tourist, VISIT_10, 3)

    await online_sold_out(client, tourist, VISIT_10, day_left=6993)
    assert await sold_by_channel(runtime, VISIT_10) == {"online": 7}
    await assert_no_drift(runtime, CONFUCIUS_VISIT)


async def test_each_batch_releases_its_share_of_the_pools_too(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", CONFUCIUS)
    await release_in_two_batches(client, admin)
    await set_pools(client, admin, VISIT_10, {"window": 5}, capacity=20)
    clock.set(FIRST_BATCH)
    # Released: floor(20 × 0.6) = 12, of which the window keeps floor(5 × 0.6) = 3.
    assert await remaining(client, VISIT_10) == 9

    await sell_at_window(client, operator, VISIT_10, 3, site=CONFUCIUS)
    await window_sold_out(client, operator, VISIT_10, day_left=4197, site=CONFUCIUS)
    await sell_online(client, tourist, VISIT_10, 9)
    await online_sold_out(client, tourist, VISIT_10, day_left=4188)

    clock.set(SECOND_BATCH)
    await sell_at_window(client, operator, VISIT_10, 2, site=CONFUCIUS)
    await window_sold_out(client, operator, VISIT_10, day_left=6986, site=CONFUCIUS)
    await sell_online(client, tourist, VISIT_10, 6)
    await online_sold_out(client, tourist, VISIT_10, day_left=6980)
    assert await sold_by_channel(runtime, VISIT_10) == {"online": 15, "window": 5}


async def test_release_shares_that_do_not_add_up_to_one_are_422(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    batches = [{**TWO_BATCHES[0]}, {**TWO_BATCHES[1], "share": 0.3}]

    response = await client.patch(
        f"/v1/sites/{CONFUCIUS}", json={"release_batches": batches}, headers=admin
    )

    assert_invalid(
        response,
        f"/v1/sites/{CONFUCIUS}",
        "release_batches",
        "shares-add-up",
        "the batches' shares add up to 1",
    )
    assert (await client.get(f"/v1/sites/{CONFUCIUS}")).json()["release_batches"] is None


async def test_two_release_batches_at_the_same_moment_are_422(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    # "20:00" and "20:00:00" a week before are one moment.
    batches = [
        {"days_before": 7, "at": "20:00", "share": 0.5},
        {"days_before": 7, "at": "20:00:00", "share": 0.5},
    ]

    response = await client.patch(
        f"/v1/sites/{CONFUCIUS}", json={"release_batches": batches}, headers=admin
    )

    assert_invalid(
        response,
        f"/v1/sites/{CONFUCIUS}",
        "release_batches",
        "distinct",
        "two batches at the same moment",
    )


async def test_release_batches_are_kept_in_time_order_and_null_resets_them(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers
) -> None:
    site = await change_site(client, admin, CONFUCIUS, release_batches=TWO_BATCHES[::-1])
    assert site["release_batches"] == [
        {"days_before": 7, "at": "20:00:00", "share": 0.6},
        {"days_before": 1, "at": "20:00:00", "share": 0.4},
    ]

    site = await change_site(client, admin, CONFUCIUS, release_batches=None)

    assert site["release_batches"] is None
    # Back to the site's horizon: a week ahead from midnight, everything at once.
    slot = (await client.get(f"/v1/slots/{VISIT_10}")).json()
    assert (slot["on_sale"], slot["sales_open_at"], slot["remaining"]) == (
        True,
        "2026-12-01T00:00:00+08:00",
        1000,
    )
    assert (await hold(client, tourist, VISIT_10)).status_code == 201


# pools -------------------------------------------------------------------------------------


async def test_online_sells_only_what_the_pools_do_not_keep(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    slot = await set_pools(client, admin, AT_14, {"window": 10, "group": 5}, capacity=30)
    assert (slot["capacity"], slot["pools"], slot["remaining"]) == (
        30,
        {"window": 10, "group": 5},
        15,
    )

    await sell_online(client, tourist, AT_14, 15)

    await online_sold_out(client, tourist, AT_14, day_left=7485)
    assert await remaining(client, AT_14) == 0
    assert await sold_by_channel(runtime, AT_14) == {"online": 15}
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (15, 0)


async def test_the_window_sells_exactly_its_pool_when_online_sold_out(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_pools(client, admin, AT_14, {"window": 10, "group": 5}, capacity=30)
    await sell_online(client, tourist, AT_14, 15)

    await sell_at_window(client, operator, AT_14, 10)

    await window_sold_out(client, operator, AT_14, day_left=7475)
    await online_sold_out(client, tourist, AT_14, day_left=7475)
    # The group pool's 5 places are still kept: 25 of 30 sold.
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (25, 10)
    assert await sold_by_channel(runtime, AT_14) == {"online": 15, "window": 10}
    await assert_no_drift(runtime, YONGHE_TODAY)


async def test_a_rush_of_both_channels_sells_exactly_each_share(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_pools(client, admin, AT_14, {"window": 10}, capacity=30)

    online = [hold(client, tourist, AT_14) for _ in range(40)]
    window = [window_sale(client, operator, AT_14) for _ in range(20)]
    answers = await asyncio.gather(*online, *window)

    outcomes = Counter(
        ("online" if i < 40 else "window", r.status_code, r.json().get("code", r.json()["status"]))
        for i, r in enumerate(answers)
    )
    assert outcomes == {
        ("online", 201, "held"): 20,
        ("online", 409, "sold-out"): 20,
        ("window", 201, "confirmed"): 10,
        ("window", 409, "sold-out"): 10,
    }
    assert await sold_by_channel(runtime, AT_14) == {"online": 20, "window": 10}
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (30, 10)
    await assert_no_drift(runtime, YONGHE_TODAY)


async def test_pools_beyond_the_capacity_are_422_within_capacity(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    await set_pools(client, admin, AT_14, None, capacity=30)

    response = await client.patch(
        f"/v1/slots/{AT_14}", json={"pools": {"window": 20, "group": 11}}, headers=admin
    )

    assert_invalid(
        response,
        f"/v1/slots/{AT_14}",
        "pools",
        "within-capacity",
        "the pools keep 31 places of a slot of 30",
    )
    slot = (await client.get(f"/v1/slots/{AT_14}")).json()
    assert (slot["pools"], slot["remaining"]) == (None, 30)


async def test_a_capacity_under_the_pools_is_422_within_capacity(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    await set_pools(client, admin, AT_14, {"window": 10, "group": 5}, capacity=30)

    response = await client.patch(f"/v1/slots/{AT_14}", json={"capacity": 14}, headers=admin)

    assert_invalid(
        response,
        f"/v1/slots/{AT_14}",
        "pools",
        "within-capacity",
        "the pools keep 15 places of a slot of 14",
    )
    assert (await client.get(f"/v1/slots/{AT_14}")).json()["capacity"] == 30


async def test_a_template_with_pools_makes_slots_that_keep_them(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers, tourist: Headers
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    templates = f"/v1/sites/{YONGHE}/slot-templates"
    evening = {"label": "evening", "start": "16:00", "end": "16:30", "capacity": 8}
    too_many = await client.post(templates, json={**evening, "pools": {"window": 9}}, headers=admin)
    assert_invalid(
        too_many, templates, "pools", "within-capacity", "the pools keep 9 places of a slot of 8"
    )

    response = await client.post(templates, json={**evening, "pools": {"window": 3}}, headers=admin)

    assert response.status_code == 201, response.text
    assert response.json()["pools"] == {"window": 3}
    slot_id = f"{YONGHE}.2026-12-01.1600"
    slot = (await client.get(f"/v1/slots/{slot_id}")).json()
    assert (slot["capacity"], slot["pools"], slot["remaining"]) == (8, {"window": 3}, 5)
    await sell_online(client, tourist, slot_id, 5)
    await online_sold_out(client, tourist, slot_id, day_left=7495)
    await sell_at_window(client, operator, slot_id, 3)
    await window_sold_out(client, operator, slot_id, day_left=7492)


async def test_changing_the_pools_after_sales_keeps_what_each_channel_sold(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_pools(client, admin, AT_14, {"window": 10}, capacity=30)
    await sell_at_window(client, operator, AT_14, 4)
    await sell_online(client, tourist, AT_14, 6)

    # The day is rebuilt from SQL: the window's 4 count in its new, smaller pool.
    await set_pools(client, admin, AT_14, {"window": 6, "group": 4})

    assert await remaining(client, AT_14) == 14  # 30 − 6 − 4 kept − 6 sold online
    await sell_at_window(client, operator, AT_14, 2)
    await window_sold_out(client, operator, AT_14, day_left=7488)
    await sell_online(client, tourist, AT_14, 14)
    await online_sold_out(client, tourist, AT_14, day_left=7474)
    assert await sold_by_channel(runtime, AT_14) == {"online": 20, "window": 6}
    await assert_no_drift(runtime, YONGHE_TODAY)


async def test_remaining_of_a_slot_with_an_online_pool_is_that_pool(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers
) -> None:
    await set_pools(client, admin, AT_14, {"online": 6, "window": 4}, capacity=10)

    assert await remaining(client, AT_14) == 6
    await sell_online(client, tourist, AT_14, 6)
    await online_sold_out(client, tourist, AT_14, day_left=7494)


async def test_remaining_after_a_pool_shrank_under_its_sales_is_what_sells(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_pools(client, admin, AT_14, {"window": 10, "group": 10}, capacity=30)
    await sell_at_window(client, operator, AT_14, 10)
    await set_pools(client, admin, AT_14, {"window": 5, "group": 10})

    assert await remaining(client, AT_14) == 10
    await sell_online(client, tourist, AT_14, 10)
    await online_sold_out(client, tourist, AT_14, day_left=7480)


# pool roll-over ----------------------------------------------------------------------------


ROLLOVER = datetime(2026, 12, 1, 12, 0, tzinfo=BEIJING)


async def window_kept_until_noon(
    client: httpx.AsyncClient, admin: Headers, operator: Headers, tourist: Headers
) -> None:
    """Slot 15:00 of 30 keeps 10 for the window until noon; the window sells 3 of them and
    online its 20."""
    await change_site(client, admin, YONGHE, pool_rollover={"days_before": 0, "at": "12:00"})
    await set_pools(client, admin, AT_15, {"window": 10}, capacity=30)  # rebuilds the day
    await sell_at_window(client, operator, AT_15, 3)
    await sell_online(client, tourist, AT_15, 20)


async def test_at_the_pool_rollover_online_takes_the_unsold_window_places(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await window_kept_until_noon(client, admin, operator, tourist)
    clock.set(ROLLOVER - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7477)
    assert await remaining(client, AT_15) == 0

    clock.set(ROLLOVER)
    assert await remaining(client, AT_15) == 7

    await sell_online(client, tourist, AT_15, 7)

    await online_sold_out(client, tourist, AT_15, day_left=7470)
    await window_sold_out(client, operator, AT_15, day_left=7470)
    assert await sold_by_channel(runtime, AT_15) == {"online": 27, "window": 3}
    await assert_no_drift(runtime, YONGHE_TODAY)


async def test_a_new_pool_rollover_takes_effect_at_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
    unlimited_accounts: None,
) -> None:
    await set_pools(client, admin, AT_15, {"window": 10}, capacity=30)
    await sell_online(client, tourist, AT_15, 20)
    await change_site(client, admin, YONGHE, pool_rollover={"days_before": 0, "at": "12:00"})
    clock.set(ROLLOVER - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7480)

    clock.set(ROLLOVER)
    await sell_online(client, tourist, AT_15, 10)

    await online_sold_out(client, tourist, AT_15, day_left=7470)
    assert await sold_by_channel(runtime, AT_15) == {"online": 30}


# refund policies ---------------------------------------------------------------------------


async def sold_and_refunded(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, policy: dict[str, Any] | None
) -> str:
    """Slot 15:00 of two places sold out to one confirmed party of two, then cancelled by
    its owner under the refund policy; returns the reservation."""
    if policy is not None:
        await change_site(client, admin, YONGHE, refund_policy=policy)
    await set_capacity(client, admin, AT_15, 2)
    (reservation_id,) = await sell_online(client, tourist, AT_15, 2)
    cancelled = await act(client, tourist, reservation_id, "cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    return reservation_id


async def test_a_delay_keeps_refunded_places_off_sale_until_places_back_at(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    refunded = await sold_and_refunded(client, admin, tourist, {"mode": "delay", "minutes": 30})
    assert await places_back_at(runtime, refunded) == NOW + timedelta(minutes=30)

    # The day's count keeps them off sale too: 7,500 − 2.
    await online_sold_out(client, tourist, AT_15, day_left=7498)
    clock.set(NOW + timedelta(minutes=30) - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7498)

    clock.set(NOW + timedelta(minutes=30))
    await sell_online(client, tourist, AT_15, 2)
    await online_sold_out(client, tourist, AT_15, day_left=7498)
    await assert_no_drift(runtime, YONGHE_TODAY)


async def test_remaining_is_zero_while_refunded_places_are_off_sale(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers
) -> None:
    await sold_and_refunded(client, admin, tourist, {"mode": "delay", "minutes": 30})

    assert await remaining(client, AT_15) == 0


async def test_by_default_refunded_places_go_back_on_sale_at_once(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers, tourist: Headers
) -> None:
    refunded = await sold_and_refunded(client, admin, tourist, None)

    assert await places_back_at(runtime, refunded) is None
    assert await remaining(client, AT_15) == 2
    await sell_online(client, tourist, AT_15, 2)
    await online_sold_out(client, tourist, AT_15, day_left=7498)


async def test_a_null_refund_policy_is_the_immediate_default_again(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers, tourist: Headers
) -> None:
    await change_site(client, admin, YONGHE, refund_policy={"mode": "delay", "minutes": 30})
    site = await change_site(client, admin, YONGHE, refund_policy=None)
    assert site["refund_policy"] is None

    refunded = await sold_and_refunded(client, admin, tourist, None)

    assert await places_back_at(runtime, refunded) is None
    await sell_online(client, tourist, AT_15, 2)


async def test_cancelling_a_hold_gives_its_places_back_at_once_under_a_delay(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers, tourist: Headers
) -> None:
    await change_site(client, admin, YONGHE, refund_policy={"mode": "delay", "minutes": 30})
    await set_capacity(client, admin, AT_15, 2)
    body = await held(client, tourist, AT_15, [visitor(), visitor()])

    cancelled = await act(client, tourist, body["id"], "cancel")

    assert cancelled.status_code == 200, cancelled.text
    assert await places_back_at(runtime, body["id"]) is None
    assert await remaining(client, AT_15) == 2
    await sell_online(client, tourist, AT_15, 2)
    await online_sold_out(client, tourist, AT_15, day_left=7498)


async def test_an_expired_hold_gives_its_places_back_at_once_under_a_delay(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    await change_site(client, admin, YONGHE, refund_policy={"mode": "delay", "minutes": 30})
    await set_capacity(client, admin, AT_15, 2)
    body = await held(client, tourist, AT_15, [visitor(), visitor()])
    clock.advance(HOLD_TTL + SECOND)

    assert await runtime.booking.expire_due() == 1

    assert await places_back_at(runtime, body["id"]) is None
    await sell_online(client, tourist, AT_15, 2)
    await online_sold_out(client, tourist, AT_15, day_left=7498)


async def test_random_batch_puts_places_back_at_the_only_batch_before_sales_close(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    # At 10:00: 09:00 has passed, 20:00 and tomorrow's times come after sales close at 16:00.
    policy = {"mode": "random-batch", "batches": ["09:00", "12:00", "20:00"]}
    refunded = await sold_and_refunded(client, admin, tourist, policy)
    noon = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    assert await places_back_at(runtime, refunded) == noon

    clock.set(noon - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7498)

    clock.set(noon)
    await sell_online(client, tourist, AT_15, 2)
    await online_sold_out(client, tourist, AT_15, day_left=7498)


async def test_random_batch_draws_among_the_batches_left_before_sales_close(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws: list[int] = []

    def last(k: int) -> int:
        draws.append(k)
        return k - 1

    monkeypatch.setattr(secrets, "randbelow", last)  # booking.service draws with it
    policy = {"mode": "random-batch", "batches": ["13:00", "11:00", "12:00", "08:00"]}

    refunded = await sold_and_refunded(client, admin, tourist, policy)

    # 11:00, 12:00 and 13:00 today, in time order: the draw took the last.
    assert draws == [3]
    one_pm = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert await places_back_at(runtime, refunded) == one_pm
    clock.set(one_pm - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7498)
    clock.set(one_pm)
    await sell_online(client, tourist, AT_15, 2)


async def test_random_batch_without_a_batch_before_sales_close_keeps_places_off_sale(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
) -> None:
    refunded = await sold_and_refunded(
        client, admin, tourist, {"mode": "random-batch", "batches": ["18:00"]}
    )

    sales_close = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 16:00 in Beijing
    assert await places_back_at(runtime, refunded) == sales_close
    clock.set(sales_close - SECOND)
    await online_sold_out(client, tourist, AT_15, day_left=7498)


# a rebuild keeps it all --------------------------------------------------------------------


async def test_a_flushed_redis_rebuilt_keeps_pools_held_back_share_and_refunds(
    client: httpx.AsyncClient,
    runtime: Runtime,
    redis: Redis,
    admin: Headers,
    tourist: Headers,
    clock: ManualClock,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", CONFUCIUS)
    await change_site(client, admin, CONFUCIUS, refund_policy={"mode": "delay", "minutes": 30})
    await release_in_two_batches(client, admin)
    await set_pools(client, admin, VISIT_10, {"window": 5}, capacity=20)
    clock.set(FIRST_BATCH)
    # Released: 12 of 20, the window keeping 3 of them. Sold: the window 2, online 2 + 2,
    # then a confirmed party of 2 refunded: off sale until 20:30.
    await sell_at_window(client, operator, VISIT_10, 2, site=CONFUCIUS)
    (refunded,) = await sell_online(client, tourist, VISIT_10, 2)
    await sell_online(client, tourist, VISIT_10, 2)
    assert (await act(client, tourist, refunded, "cancel")).status_code == 200

    await redis.flushdb()
    assert await runtime.reconciler.rebuild_missing() > 0

    await sell_at_window(client, operator, VISIT_10, 1, site=CONFUCIUS)
    await window_sold_out(client, operator, VISIT_10, day_left=4193, site=CONFUCIUS)
    await sell_online(client, tourist, VISIT_10, 5)  # 9 − 2 sold − 2 off sale
    await online_sold_out(client, tourist, VISIT_10, day_left=4188)
    await assert_no_drift(runtime, CONFUCIUS_VISIT)
    assert (await runtime.reconciler.reconcile()).drift == 0

    clock.set(FIRST_BATCH + timedelta(minutes=30))
    await sell_online(client, tourist, VISIT_10, 2)
    await online_sold_out(client, tourist, VISIT_10, day_left=4188)

    clock.set(SECOND_BATCH)
    await sell_at_window(client, operator, VISIT_10, 2, site=CONFUCIUS)
    await window_sold_out(client, operator, VISIT_10, day_left=6986, site=CONFUCIUS)
    await sell_online(client, tourist, VISIT_10, 6)
    await online_sold_out(client, tourist, VISIT_10, day_left=6980)
    assert await sold_by_channel(runtime, VISIT_10) == {"online": 15, "window": 5}


async def test_the_reconciler_rebuilds_a_day_whose_pools_differ_from_sql(
    client: httpx.AsyncClient,
    runtime: Runtime,
    redis: Redis,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    await set_pools(client, admin, AT_14, {"window": 10}, capacity=30)
    # Redis lost the pools (a write it acknowledged, then failed over without).
    await redis.hset(YONGHE_TODAY.slot("1400"), "pools", "")
    assert await remaining(client, AT_14) == 30

    drift = await runtime.reconciler.reconcile_day(YONGHE_TODAY)

    assert drift.rebuilt
    assert await remaining(client, AT_14) == 20
    await sell_online(client, tourist, AT_14, 20)
    await online_sold_out(client, tourist, AT_14, day_left=7480)


# window sales ------------------------------------------------------------------------------


async def test_a_window_sale_is_201_confirmed_with_a_ticket_under_the_window_account(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_pools(client, admin, AT_14, {"window": 10}, capacity=30)
    people = [visitor(), visitor()]

    response = await window_sale(client, operator, AT_14, people)

    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    body = response.json()
    assert body == {
        "id": body["id"],
        "status": "confirmed",
        "site": YONGHE,
        "slot_id": AT_14,
        "date": "2026-12-01",
        "start": "2026-12-01T14:00:00+08:00",
        "end": "2026-12-01T15:00:00+08:00",
        "party_size": 2,
        "visitors": [
            {
                "name": p["name"],
                "id_type": "resident_id",
                "id_number_masked": masked(p["id_number"]),
            }
            for p in people
        ],
        "expires_at": None,
        "created_at": "2026-12-01T02:00:00Z",
        "cancel_reason": None,
        "alternatives": None,
    }
    row = await stored(runtime, body["id"])
    assert (row.owner_id, row.channel, str(row.status)) == (
        window_account_id(YONGHE),
        "window",
        "confirmed",
    )
    assert row.ticket_secret is not None
    assert len(row.ticket_secret) >= 32
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (2, 2)
    assert await remaining(client, AT_14) == 20  # taken from the window's pool
    async with runtime.sessions() as session:
        query = sa.select(OutboxEvent).where(
            col(OutboxEvent.topic) == "reservation.confirmed",
            col(OutboxEvent.account_id) == window_account_id(YONGHE),
        )
        events = (await session.execute(query)).scalars().all()
    assert [(e.payload["reservation"], e.payload["channel"]) for e in events] == [(body, "window")]


async def test_the_sites_managers_and_admins_may_sell_at_the_window(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers
) -> None:
    manager = await staff(runtime, "manager", YONGHE)

    answers = [await window_sale(client, headers, AT_14) for headers in (manager, admin)]

    assert [(r.status_code, r.json()["status"]) for r in answers] == [(201, "confirmed")] * 2
    assert await sold_by_channel(runtime, AT_14) == {"window": 2}


async def test_a_tourist_may_not_sell_at_the_window(
    client: httpx.AsyncClient, runtime: Runtime, tourist: Headers
) -> None:
    response = await window_sale(client, tourist, AT_14)

    assert_problem(
        response,
        403,
        "forbidden",
        "This token may not do that",
        "this route is for admins and the site's managers and operators",
        f"/v1/sites/{YONGHE}/window-sales",
    )
    assert await sold_by_channel(runtime, AT_14) == {}


async def test_an_operator_of_another_site_may_not_sell_at_this_window(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await staff(runtime, "operator", CONFUCIUS)

    response = await window_sale(client, operator, AT_14)

    assert_problem(
        response,
        403,
        "forbidden",
        "This token may not do that",
        f"this token is not for site {YONGHE}",
        f"/v1/sites/{YONGHE}/window-sales",
    )
    assert await sold_by_channel(runtime, AT_14) == {}


async def test_window_sales_have_no_per_account_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await staff(runtime, "operator", YONGHE)  # the site allows 3 per account-day

    ids = [
        (await window_sale(client, operator, slot)).json()["id"]
        for slot in (AT_14, AT_14, AT_14, AT_15, AT_15, AT_15)
    ]

    assert len(set(ids)) == 6
    assert await sold_by_channel(runtime, AT_14) == {"window": 3}
    assert await sold_by_channel(runtime, AT_15) == {"window": 3}
    owners = {(await stored(runtime, i)).owner_id for i in ids}
    assert owners == {window_account_id(YONGHE)}


async def test_a_window_sale_with_the_same_idempotency_key_is_replayed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    people = [visitor(), visitor()]
    first = await window_sale(client, operator, AT_14, people, key="window-1")
    assert first.status_code == 201, first.text

    again = await window_sale(client, operator, AT_14, people, key="window-1")

    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await sold_by_channel(runtime, AT_14) == {"window": 2}
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (2, 0)


async def test_a_window_sale_of_another_sites_slot_is_422_this_site(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    elsewhere = f"{CONFUCIUS}.2026-12-01.1400"

    response = await window_sale(client, operator, elsewhere)

    assert_invalid(
        response,
        f"/v1/sites/{YONGHE}/window-sales",
        "slot_id",
        "this-site",
        f"a slot of {YONGHE} is sold here",
    )
    assert await sold_by_channel(runtime, elsewhere) == {}


async def test_a_window_sale_of_a_visitor_booked_that_day_is_a_duplicate(
    client: httpx.AsyncClient, runtime: Runtime, tourist: Headers
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    person = visitor()
    await held(client, tourist, AT_15, [person])

    response = await window_sale(client, operator, AT_14, [visitor(), person])

    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        f"visitor 2 already holds a place at {YONGHE} on 2026-12-01",
        f"/v1/sites/{YONGHE}/window-sales",
        visitor_index=1,
    )
    assert await sold_by_channel(runtime, AT_14) == {}


# rescheduling within the day ---------------------------------------------------------------


async def test_a_window_reservation_moved_within_the_day_stays_in_the_window_pool(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: Headers,
    tourist: Headers,
    unlimited_accounts: None,
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    for slot_id in (AT_14, AT_15):
        await set_pools(client, admin, slot_id, {"window": 4}, capacity=10)
    (sold,) = await sell_at_window(client, operator, AT_14, 3)

    # No route reschedules the window's own reservations: the domain's, as the route does.
    receipt = await runtime.booking.reschedule(
        owner_id=window_account_id(YONGHE), reservation_id=sold, slot_id=AT_15
    )

    assert receipt.reservation.slot_id == AT_15
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (0, 0)
    assert await slot_use(runtime, YONGHE_TODAY, "1500") == (3, 3)
    await assert_no_drift(runtime, YONGHE_TODAY)
    # The old slot's window pool is whole again, the new one's has 1 left; online keeps 6.
    await sell_at_window(client, operator, AT_14, 4)
    await window_sold_out(client, operator, AT_14, day_left=7493)
    await sell_at_window(client, operator, AT_15, 1)
    await window_sold_out(client, operator, AT_15, day_left=7492)
    await sell_online(client, tourist, AT_15, 6)
    await online_sold_out(client, tourist, AT_15, day_left=7486)
    assert await sold_by_channel(runtime, AT_15) == {"online": 6, "window": 4}


async def test_an_online_pool_reservation_moved_gives_its_pool_places_back(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers, tourist: Headers
) -> None:
    for slot_id in (AT_14, AT_15):
        await set_pools(client, admin, slot_id, {"online": 5, "window": 5}, capacity=10)
    body = await held(client, tourist, AT_14, [visitor(), visitor()])

    response = await client.post(
        f"/v1/reservations/{body['id']}/reschedule", json={"slot_id": AT_15}, headers=tourist
    )

    assert response.status_code == 200, response.text
    assert await slot_use(runtime, YONGHE_TODAY, "1400") == (0, 0)
    await sell_online(client, tourist, AT_14, 5)


async def test_a_rebuild_after_moving_a_window_reservation_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, admin: Headers
) -> None:
    operator = await staff(runtime, "operator", YONGHE)
    await set_capacity(client, admin, AT_14, 10)
    await set_pools(client, admin, AT_15, {"window": 4}, capacity=10)
    (sold,) = await sell_at_window(client, operator, AT_14, 2)  # no window pool at 14:00
    await runtime.booking.reschedule(
        owner_id=window_account_id(YONGHE), reservation_id=sold, slot_id=AT_15
    )
    moved = (await remaining(client, AT_15), await slot_use(runtime, YONGHE_TODAY, "1500"))

    assert await runtime.reconciler.rebuild(YONGHE_TODAY)

    assert (await remaining(client, AT_15), await slot_use(runtime, YONGHE_TODAY, "1500")) == moved
