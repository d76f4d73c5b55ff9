"""Waitlists over HTTP: joining a full slot, the strict line, offers when places come back
(a cancellation, a raised cap, an expired hold, a refused head), the line closing, leaving,
privacy, and Redis still equal to SQL afterwards."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.ids import make_resident_id
from booking.models import OutboxEvent, Reservation, WaitlistEntry
from booking.schemas import VisitorIn
from booking.service import Named
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.background import sweep_once
from service.runtime import Runtime
from tests.conftest import NOW, TODAY, YONGHE_10, new_tourist, visitor
from tests.service.test_reservations_api import (
    BEIJING,
    HOLD_TTL,
    act,
    assert_problem,
    held,
    masked,
    remaining,
    reservation,
    set_capacity,
    yonghe,
)

SLOT = YONGHE_10
YONGHE_TODAY = SiteDay("yonghe-temple", TODAY)
Headers = dict[str, str]
Body = dict[str, Any]


# helpers -----------------------------------------------------------------------------------


async def join(
    client: httpx.AsyncClient,
    headers: Headers,
    visitors: list[dict[str, str]] | None = None,
    slot_id: str = SLOT,
) -> httpx.Response:
    body = {"slot_id": slot_id, "visitors": visitors or [visitor()]}
    return await client.post("/v1/waitlist", json=body, headers=headers)


async def joined(
    client: httpx.AsyncClient,
    headers: Headers,
    visitors: list[dict[str, str]] | None = None,
    slot_id: str = SLOT,
) -> Body:
    response = await join(client, headers, visitors, slot_id)
    assert response.status_code == 201, response.text
    body: Body = response.json()
    return body


async def entry(client: httpx.AsyncClient, headers: Headers, entry_id: str) -> Body:
    response = await client.get(f"/v1/waitlist/{entry_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def leave(client: httpx.AsyncClient, headers: Headers, entry_id: str) -> httpx.Response:
    return await client.delete(f"/v1/waitlist/{entry_id}", headers=headers)


async def fill(
    client: httpx.AsyncClient,
    admin: Headers,
    parties: Sequence[int],
    slot_id: str = SLOT,
) -> tuple[Headers, list[Body]]:
    """Make a slot exactly as large as `parties` and sell all of it to one new tourist (one
    hold per party: at most two, the demo's limit of open holds)."""
    await set_capacity(client, admin, slot_id, sum(parties))
    filler = await new_tourist(client)
    holds = [
        await held(client, filler, slot_id, [visitor() for _ in range(size)]) for size in parties
    ]
    assert await remaining(client, slot_id) == 0
    return filler, holds


async def cancel(client: httpx.AsyncClient, headers: Headers, reservation_id: str) -> None:
    response = await act(client, headers, reservation_id, "cancel")
    assert response.status_code == 200, response.text


def waiting(body: Body, position: int) -> Body:
    """What an entry reads as while it waits at `position`."""
    return {
        **body,
        "status": "waiting",
        "position": position,
        "reservation_id": None,
        "offer_expires_at": None,
    }


def offered(body: Body, reservation_id: str, expires_at: str | None) -> Body:
    return {
        **body,
        "status": "offered",
        "position": None,
        "reservation_id": reservation_id,
        "offer_expires_at": expires_at,
    }


def ended(body: Body, status: str) -> Body:
    return {**body, "status": status, "position": None}


def instant(delta: timedelta) -> str:
    """NOW + delta as the API writes instants."""
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


async def row_of(runtime: Runtime, entry_id: str) -> WaitlistEntry:
    async with runtime.sessions() as session:
        row = (
            await session.execute(
                sa.select(WaitlistEntry).where(col(WaitlistEntry.public_id) == entry_id)
            )
        ).scalar_one()
    return row


async def entry_count(runtime: Runtime) -> int:
    async with runtime.sessions() as session:
        return int(
            (
                await session.execute(sa.select(sa.func.count()).select_from(WaitlistEntry))
            ).scalar_one()
        )


async def events(runtime: Runtime, topic: str) -> list[OutboxEvent]:
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic) == topic)
            .order_by(col(OutboxEvent.id))
        )
        return list((await session.execute(query)).scalars())


async def reservations_in(runtime: Runtime, slot_id: str = SLOT) -> list[Reservation]:
    async with runtime.sessions() as session:
        query = (
            sa.select(Reservation)
            .where(col(Reservation.slot_id) == slot_id)
            .order_by(col(Reservation.created_at), col(Reservation.id))
        )
        return list((await session.execute(query)).scalars())


async def assert_counted(runtime: Runtime, used: dict[str, int], day_used: int) -> None:
    """Redis counts exactly these places, and SQL proves every one of them."""
    load = await runtime.counters.load(YONGHE_TODAY)
    assert load is not None
    assert {key: load.slots[key].used for key in used} == used
    assert load.day.used == day_used
    drift = await runtime.reconciler.reconcile_day(YONGHE_TODAY)
    assert (drift.missing, drift.leaked, drift.returned, drift.rebuilt) == (0, 0, 0, False)


def visitors_public(visitors: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {
            "name": v["name"],
            "id_type": v["id_type"],
            "id_number_masked": masked(v["id_number"]),
        }
        for v in visitors
    ]


# joining -----------------------------------------------------------------------------------


async def test_join_answers_201_with_the_entry_at_the_end_of_the_line(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    await fill(client, admin, [2])
    first = make_resident_id("110105", date(1990, 5, 17), 123)
    second = make_resident_id("310104", date(2001, 11, 2), 42)
    party = [
        {"name": "Li Lei", "id_type": "resident_id", "id_number": first},
        {"name": "Han Meimei", "id_type": "resident_id", "id_number": second},
    ]
    tourists = [await new_tourist(client) for _ in range(3)]

    response = await join(client, tourists[0], party)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"]), body["id"]
    assert body == {
        "id": body["id"],
        "status": "waiting",
        "site": "yonghe-temple",
        "slot_id": SLOT,
        "date": "2026-12-01",
        "party_size": 2,
        "position": 1,
        "reservation_id": None,
        "offer_expires_at": None,
        "visitors": [
            {"name": "Li Lei", "id_type": "resident_id", "id_number_masked": masked(first)},
            {"name": "Han Meimei", "id_type": "resident_id", "id_number_masked": masked(second)},
        ],
        "created_at": "2026-12-01T02:00:00Z",
    }
    assert first not in response.text
    assert second not in response.text
    assert await entry(client, tourists[0], body["id"]) == body

    second_in_line = await joined(client, tourists[1])
    third_in_line = await joined(client, tourists[2], [visitor(), visitor()])
    assert (second_in_line["position"], third_in_line["position"]) == (2, 3)
    assert third_in_line["party_size"] == 2
    assert len({body["id"], second_in_line["id"], third_in_line["id"]}) == 3
    # Joining takes no place.
    assert await remaining(client) == 0


async def test_join_a_slot_with_room_for_the_party_is_409_slot_has_room(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    response = await join(client, tourist)
    assert_problem(
        response,
        409,
        "slot-has-room",
        "The slot has places: book them instead",
        "1000 places left: hold them instead",
        "/v1/waitlist",
        remaining=1000,
    )

    # Two of three places sold: one left holds a single, not a pair.
    await set_capacity(client, admin, SLOT, 3)
    await held(client, await new_tourist(client), visitors=[visitor(), visitor()])
    response = await join(client, tourist)
    assert_problem(
        response,
        409,
        "slot-has-room",
        "The slot has places: book them instead",
        "1 places left: hold them instead",
        "/v1/waitlist",
        remaining=1,
    )
    assert await entry_count(runtime) == 0
    pair = await joined(client, tourist, [visitor(), visitor()])
    assert (pair["status"], pair["position"]) == ("waiting", 1)


async def test_join_a_slot_closed_by_the_site_is_409_waitlist_closed(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    closed = await client.post(f"/v1/slots/{SLOT}/close", json={"reason": "rite"}, headers=admin)
    assert closed.status_code == 200, closed.text

    response = await join(client, tourist)
    assert_problem(
        response,
        409,
        "waitlist-closed",
        "This slot takes no waitlist now",
        "the slot is closed",
        "/v1/waitlist",
    )
    assert await entry_count(runtime) == 0


async def test_join_a_slot_not_on_sale_is_409_waitlist_closed(
    client: httpx.AsyncClient, tourist: Headers, runtime: Runtime
) -> None:
    for slot_id in (
        yonghe("0900"),  # its sales ended at 10:00, which is now
        "palace-museum.2026-12-01.1100",  # no same-day sales
        "palace-museum.2026-12-09.0830",  # not released yet
    ):
        response = await join(client, tourist, slot_id=slot_id)
        assert_problem(
            response,
            409,
            "waitlist-closed",
            "This slot takes no waitlist now",
            "the slot is not on sale now",
            "/v1/waitlist",
        )
    assert await entry_count(runtime) == 0


async def test_join_an_unknown_slot_is_404(client: httpx.AsyncClient, tourist: Headers) -> None:
    for slot_id in (yonghe("0930"), "no-such-site.2026-12-01.1000"):
        response = await join(client, tourist, slot_id=slot_id)
        assert_problem(
            response, 404, "not-found", "Not found", f"no slot {slot_id}", "/v1/waitlist"
        )


async def test_join_with_a_party_of_six_is_422_party_too_large(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    response = await join(client, tourist, [visitor() for _ in range(6)])
    assert_problem(
        response,
        422,
        "party-too-large",
        "Too many visitors in one reservation",
        "6 visitors asked for; at most 5 per reservation",
        "/v1/waitlist",
        max_party_size=5,
    )
    assert await entry_count(runtime) == 0
    assert (await joined(client, tourist, [visitor() for _ in range(5)]))["party_size"] == 5


async def test_join_with_one_person_twice_in_the_party_is_a_duplicate_visitor(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    person = visitor()
    response = await join(client, tourist, [visitor(), person, dict(person, name="Twin")])
    # The status of DuplicateVisitor (capacity/errors.py) for holds and waitlists alike.
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 3 is named twice in this party",
        "/v1/waitlist",
        visitor_index=2,
    )
    assert person["id_number"] not in response.text
    assert await entry_count(runtime) == 0


async def test_join_twice_for_one_slot_is_409_already_waiting(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1], SLOT)
    await fill(client, admin, [1], yonghe("1100"))
    await joined(client, tourist)

    response = await join(client, tourist, [visitor(), visitor()])
    assert_problem(
        response,
        409,
        "already-waiting",
        "This account already waits for this slot",
        f"this account already waits for {SLOT}",
        "/v1/waitlist",
    )
    assert await entry_count(runtime) == 1
    # Another slot is another line.
    assert (await joined(client, tourist, slot_id=yonghe("1100")))["position"] == 1


async def test_join_with_a_visitor_born_after_today_is_422_like_a_hold(
    client: httpx.AsyncClient, admin: Headers, tourist: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    unborn = make_resident_id("110105", date(2099, 1, 1), 7)
    response = await join(
        client, tourist, [{"name": "Zhang San", "id_type": "resident_id", "id_number": unborn}]
    )
    message = "The resident ID number does not contain a plausible date of birth."
    field = "visitors[0].id_number"
    assert_problem(
        response,
        422,
        "validation-failed",
        "The request is not valid",
        f"{field}: {message} (birth-date)",
        "/v1/waitlist",
        errors=[{"in": "body", "field": field, "rule": "birth-date", "message": message}],
    )
    assert await entry_count(runtime) == 0


async def test_waitlist_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    body = {"slot_id": SLOT, "visitors": [visitor()]}
    for response in (
        await client.post("/v1/waitlist", json=body),
        await client.get(f"/v1/waitlist/{'0' * 32}"),
        await client.delete(f"/v1/waitlist/{'0' * 32}"),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"


# offers after a cancellation -----------------------------------------------------------------


async def test_a_cancellation_offers_the_place_to_the_first_in_line_only(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourists = [await new_tourist(client) for _ in range(3)]
    parties = [[visitor()] for _ in range(3)]
    entries = [await joined(client, t, p) for t, p in zip(tourists, parties, strict=True)]
    assert [e["position"] for e in entries] == [1, 2, 3]

    await cancel(client, filler, filled["id"])

    first = await entry(client, tourists[0], entries[0]["id"])
    reservation_id = first["reservation_id"]
    assert isinstance(reservation_id, str)
    assert first == offered(entries[0], reservation_id, "2026-12-01T02:15:00Z")
    assert await entry(client, tourists[1], entries[1]["id"]) == waiting(entries[1], 1)
    assert await entry(client, tourists[2], entries[2]["id"]) == waiting(entries[2], 2)

    # The offer is a hold of the entrant's own account, with the entrant's visitors.
    hold = await reservation(client, tourists[0], reservation_id)
    assert hold == {
        "id": reservation_id,
        "status": "held",
        "site": "yonghe-temple",
        "slot_id": SLOT,
        "date": "2026-12-01",
        "start": "2026-12-01T10:00:00+08:00",
        "end": "2026-12-01T11:00:00+08:00",
        "party_size": 1,
        "visitors": visitors_public(parties[0]),
        "expires_at": "2026-12-01T02:15:00Z",
        "created_at": "2026-12-01T02:00:00Z",
        "cancel_reason": None,
        "alternatives": None,
    }
    others = await client.get(f"/v1/reservations/{reservation_id}", headers=tourists[1])
    assert others.status_code == 404, others.text
    assert await remaining(client) == 0

    # One waitlist.offered event, for the first in line, as an admin reads the outbox.
    owner = (await row_of(runtime, entries[0]["id"])).owner_id
    outbox = await client.get("/v1/outbox", params={"topic": "waitlist.offered"}, headers=admin)
    assert outbox.status_code == 200, outbox.text
    assert [(e["topic"], e["site"], e["account_id"], e["payload"]) for e in outbox.json()] == [
        (
            "waitlist.offered",
            "yonghe-temple",
            owner,
            {
                "waitlist_entry": entries[0]["id"],
                "account": owner,
                "reservation": reservation_id,
                "slot_id": SLOT,
                "party_size": 1,
                "confirm_before": "2026-12-01T02:15:00+00:00",
            },
        )
    ]

    # SQL: the filler's cancelled hold and exactly one new hold, the entrant's.
    rows = await reservations_in(runtime)
    assert {(r.id, r.status) for r in rows} == {
        (filled["id"], "cancelled"),
        (reservation_id, "held"),
    }
    assert [r.owner_id for r in rows if r.id == reservation_id] == [owner]
    await assert_counted(runtime, {"1000": 1}, 1)

    # Confirming the offered hold works like any hold's.
    confirmed = await act(client, tourists[0], reservation_id, "confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {**hold, "status": "confirmed", "expires_at": None}
    assert await entry(client, tourists[0], entries[0]["id"]) == offered(
        entries[0], reservation_id, None
    )
    await assert_counted(runtime, {"1000": 1}, 1)


async def test_strict_line_a_single_behind_never_jumps_a_party_of_three(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (one, two) = await fill(client, admin, [1, 2])
    head_tourist, single_tourist = await new_tourist(client), await new_tourist(client)
    family = [visitor() for _ in range(3)]
    head = await joined(client, head_tourist, family)
    single = await joined(client, single_tourist)

    # One place back: the head needs three, and the single behind it waits too.
    await cancel(client, filler, one["id"])
    assert await entry(client, head_tourist, head["id"]) == waiting(head, 1)
    assert await entry(client, single_tourist, single["id"]) == waiting(single, 2)
    assert await runtime.waitlist.offer() == 0
    assert await remaining(client) == 1
    assert await events(runtime, "waitlist.offered") == []
    await assert_counted(runtime, {"1000": 2}, 2)

    # Two more: the party of three is served, the single still waits.
    await cancel(client, filler, two["id"])
    served = await entry(client, head_tourist, head["id"])
    assert served == offered(head, served["reservation_id"], "2026-12-01T02:15:00Z")
    assert await entry(client, single_tourist, single["id"]) == waiting(single, 1)
    hold = await reservation(client, head_tourist, served["reservation_id"])
    assert (hold["status"], hold["party_size"], hold["visitors"]) == (
        "held",
        3,
        visitors_public(family),
    )
    assert await remaining(client) == 0
    assert len(await events(runtime, "waitlist.offered")) == 1
    await assert_counted(runtime, {"1000": 3}, 3)


# offers after a raised cap -----------------------------------------------------------------


async def test_a_raised_cap_offers_the_new_places_in_line_order(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [2])
    pair_tourist, single_tourist = await new_tourist(client), await new_tourist(client)
    pair = await joined(client, pair_tourist, [visitor(), visitor()])
    single = await joined(client, single_tourist)

    await set_capacity(client, admin, SLOT, 3)  # one new place: not enough for the pair
    assert await entry(client, pair_tourist, pair["id"]) == waiting(pair, 1)
    assert await entry(client, single_tourist, single["id"]) == waiting(single, 2)
    assert await remaining(client) == 1

    await set_capacity(client, admin, SLOT, 4)
    got = await entry(client, pair_tourist, pair["id"])
    assert got == offered(pair, got["reservation_id"], "2026-12-01T02:15:00Z")
    assert await entry(client, single_tourist, single["id"]) == waiting(single, 1)
    assert await remaining(client) == 0

    await set_capacity(client, admin, SLOT, 5)
    got = await entry(client, single_tourist, single["id"])
    assert got == offered(single, got["reservation_id"], "2026-12-01T02:15:00Z")
    assert await remaining(client) == 0
    held_rows = [r for r in await reservations_in(runtime) if r.status == "held"]
    assert sorted(r.party_size for r in held_rows) == [1, 2, 2]
    await assert_counted(runtime, {"1000": 5}, 5)


# offers after expiries ---------------------------------------------------------------------


async def test_an_expired_hold_is_offered_to_the_first_in_line_by_the_sweeper(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    first_tourist, second_tourist = await new_tourist(client), await new_tourist(client)
    first = await joined(client, first_tourist)
    second = await joined(client, second_tourist)

    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await sweep_once(runtime) == 1

    got = await entry(client, first_tourist, first["id"])
    assert got == offered(
        first, got["reservation_id"], instant(2 * HOLD_TTL + timedelta(seconds=1))
    )
    assert await entry(client, second_tourist, second["id"]) == waiting(second, 1)
    await assert_counted(runtime, {"1000": 1}, 1)

    # The offered hold expires unconfirmed: its place goes to the next in line.
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await sweep_once(runtime) == 1

    assert (await reservation(client, first_tourist, got["reservation_id"]))["status"] == "expired"
    assert await entry(client, first_tourist, first["id"]) == offered(
        first, got["reservation_id"], None
    )
    then = await entry(client, second_tourist, second["id"])
    assert then == offered(
        second, then["reservation_id"], instant(3 * HOLD_TTL + timedelta(seconds=2))
    )
    assert then["reservation_id"] != got["reservation_id"]
    assert [r.status for r in await reservations_in(runtime)] == ["expired", "expired", "held"]
    assert len(await events(runtime, "waitlist.offered")) == 2
    await assert_counted(runtime, {"1000": 1}, 1)


async def test_expire_due_then_offer_serves_the_line(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    await fill(client, admin, [2])
    tourists = [await new_tourist(client) for _ in range(3)]
    entries = [await joined(client, t) for t in tourists]

    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 1
    assert await runtime.waitlist.offer() == 2

    for tourist_, body in zip(tourists[:2], entries[:2], strict=True):
        got = await entry(client, tourist_, body["id"])
        assert got == offered(
            body, got["reservation_id"], instant(2 * HOLD_TTL + timedelta(seconds=1))
        )
    assert await entry(client, tourists[2], entries[2]["id"]) == waiting(entries[2], 1)
    assert await runtime.waitlist.offer() == 0
    await assert_counted(runtime, {"1000": 2}, 2)


# the head refused --------------------------------------------------------------------------


async def test_a_head_whose_visitor_booked_elsewhere_that_day_is_closed_and_the_next_served(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [2])
    head_tourist, next_tourist = await new_tourist(client), await new_tourist(client)
    person, companion = visitor(), visitor()
    head = await joined(client, head_tourist, [companion, person])
    following = await joined(client, next_tourist)
    # Meanwhile the person books another hour of the same site and day, from another account.
    await held(client, await new_tourist(client), yonghe("1100"), [person])

    await cancel(client, filler, filled["id"])

    assert await entry(client, head_tourist, head["id"]) == ended(head, "closed")
    got = await entry(client, next_tourist, following["id"])
    assert got == offered(following, got["reservation_id"], "2026-12-01T02:15:00Z")
    owner = (await row_of(runtime, head["id"])).owner_id
    assert [
        (e.site_id, e.account_id, e.payload) for e in await events(runtime, "waitlist.closed")
    ] == [
        (
            "yonghe-temple",
            owner,
            {
                "waitlist_entry": head["id"],
                "account": owner,
                "slot_id": SLOT,
                "reason": "duplicate-visitor",
            },
        )
    ]
    assert [e.payload["waitlist_entry"] for e in await events(runtime, "waitlist.offered")] == [
        following["id"]
    ]
    # The refused party took nothing: its other visitor can still book that day.
    assert await remaining(client) == 1
    await assert_counted(runtime, {"1000": 1, "1100": 1}, 2)
    await held(client, head_tourist, yonghe("1200"), [companion])
    # A closed entry cannot be left, and the account may join again.
    response = await leave(client, head_tourist, head["id"])
    assert_problem(
        response,
        409,
        "invalid-transition",
        "The reservation cannot do that now",
        "a closed waitlist entry cannot be left",
        f"/v1/waitlist/{head['id']}",
    )


async def test_offer_counts_only_the_holds_it_made(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    person = visitor()
    head = await joined(client, await new_tourist(client), [person])
    following = await joined(client, await new_tourist(client))
    elsewhere = await new_tourist(client)
    booked = await held(client, elsewhere, yonghe("1100"), [person])
    confirmed = await client.post(f"/v1/reservations/{booked['id']}/confirm", headers=elsewhere)
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 1  # the filler's hold, not the confirmed one

    served = await runtime.waitlist.offer()

    assert (await row_of(runtime, head["id"])).status == "closed"
    assert (await row_of(runtime, following["id"])).status == "offered"
    assert served == 1  # "Returns the number of holds offered"


async def test_a_head_at_its_accounts_day_limit_is_closed_and_the_next_served(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    busy, patient = await new_tourist(client), await new_tourist(client)
    head = await joined(client, busy)
    following = await joined(client, patient)
    # Three reservations at the site that day: the demo's per-account limit.
    for hhmm in ("1100", "1200", "1300"):
        body = await held(client, busy, yonghe(hhmm))
        assert (await act(client, busy, body["id"], "confirm")).status_code == 200

    await cancel(client, filler, filled["id"])

    assert await entry(client, busy, head["id"]) == ended(head, "closed")
    assert [e.payload["reason"] for e in await events(runtime, "waitlist.closed")] == [
        "account-limit"
    ]
    got = await entry(client, patient, following["id"])
    assert got == offered(following, got["reservation_id"], "2026-12-01T02:15:00Z")
    await assert_counted(runtime, {"1000": 1, "1100": 1, "1200": 1, "1300": 1}, 4)


async def test_an_offer_does_not_count_against_the_accounts_open_holds(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourist = await new_tourist(client)
    head = await joined(client, tourist)
    # Two open holds elsewhere that day: the most the account may ask for itself.
    await held(client, tourist, yonghe("1100"))
    await held(client, tourist, yonghe("1200"))
    refused = await client.post(
        "/v1/reservations",
        json={"slot_id": yonghe("1300"), "visitors": [visitor()]},
        headers=tourist,
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "account-limit"

    await cancel(client, filler, filled["id"])

    got = await entry(client, tourist, head["id"])
    assert got == offered(head, got["reservation_id"], "2026-12-01T02:15:00Z")
    await assert_counted(runtime, {"1000": 1, "1100": 1, "1200": 1}, 3)


# the line closing --------------------------------------------------------------------------


async def test_the_line_closes_when_the_slots_sales_end(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    assert (await act(client, filler, filled["id"], "confirm")).status_code == 200
    tourist = await new_tourist(client)
    body = await joined(client, tourist)

    clock.set(datetime(2026, 12, 1, 10, 59, 59, tzinfo=BEIJING))
    assert await runtime.waitlist.offer() == 0
    assert await entry(client, tourist, body["id"]) == waiting(body, 1)

    clock.set(datetime(2026, 12, 1, 11, 0, tzinfo=BEIJING))
    assert await runtime.waitlist.offer() == 0
    assert await entry(client, tourist, body["id"]) == ended(body, "closed")
    # Places that come back after the end serve nobody.
    await cancel(client, filler, filled["id"])
    assert await entry(client, tourist, body["id"]) == ended(body, "closed")
    assert await events(runtime, "waitlist.offered") == []
    response = await join(client, await new_tourist(client))
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == "the slot is not on sale now"
    await assert_counted(runtime, {"1000": 0}, 0)


async def test_the_line_closes_when_the_site_closes_the_slot(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    tourist = await new_tourist(client)
    body = await joined(client, tourist)

    closed = await client.post(f"/v1/slots/{SLOT}/close", json={"reason": "rite"}, headers=admin)
    assert closed.status_code == 200, closed.text
    assert closed.json()["cancelled_reservations"] == 1
    await sweep_once(runtime)

    assert await entry(client, tourist, body["id"]) == ended(body, "closed")
    assert [r.status for r in await reservations_in(runtime)] == ["cancelled_by_site"]
    assert await events(runtime, "waitlist.offered") == []
    await assert_counted(runtime, {"1000": 0}, 0)


# leaving -----------------------------------------------------------------------------------


async def test_leave_the_line_moves_those_behind_up(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourists = [await new_tourist(client) for _ in range(3)]
    entries = [await joined(client, t) for t in tourists]

    response = await leave(client, tourists[0], entries[0]["id"])
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await entry(client, tourists[0], entries[0]["id"]) == ended(entries[0], "left")
    assert await entry(client, tourists[1], entries[1]["id"]) == waiting(entries[1], 1)
    assert await entry(client, tourists[2], entries[2]["id"]) == waiting(entries[2], 2)

    # Leaving twice is harmless.
    again = await leave(client, tourists[0], entries[0]["id"])
    assert again.status_code == 204, again.text
    assert await entry(client, tourists[0], entries[0]["id"]) == ended(entries[0], "left")

    # The place goes to the new head, not to the one who left.
    await cancel(client, filler, filled["id"])
    assert await entry(client, tourists[0], entries[0]["id"]) == ended(entries[0], "left")
    got = await entry(client, tourists[1], entries[1]["id"])
    assert got == offered(entries[1], got["reservation_id"], "2026-12-01T02:15:00Z")
    assert await entry(client, tourists[2], entries[2]["id"]) == waiting(entries[2], 1)

    # An offered entry is a hold: cancel that instead.
    response = await leave(client, tourists[1], entries[1]["id"])
    assert_problem(
        response,
        409,
        "invalid-transition",
        "The reservation cannot do that now",
        "a offered waitlist entry cannot be left: cancel its reservation instead",
        f"/v1/waitlist/{entries[1]['id']}",
    )
    assert await entry(client, tourists[1], entries[1]["id"]) == got

    # Who left may join again, at the end of the line.
    rejoined = await joined(client, tourists[0])
    assert (rejoined["status"], rejoined["position"]) == ("waiting", 2)
    assert rejoined["id"] != entries[0]["id"]
    await assert_counted(runtime, {"1000": 1}, 1)


# privacy -----------------------------------------------------------------------------------


async def test_somebody_elses_entry_is_not_found(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    owner, stranger = await new_tourist(client), await new_tourist(client)
    body = await joined(client, owner)
    instance = f"/v1/waitlist/{body['id']}"

    for response in (
        await client.get(instance, headers=stranger),
        await client.delete(instance, headers=stranger),
    ):
        assert_problem(
            response, 404, "not-found", "Not found", f"no waitlist entry {body['id']}", instance
        )
    unknown = "0" * 32
    assert_problem(
        await client.get(f"/v1/waitlist/{unknown}", headers=owner),
        404,
        "not-found",
        "Not found",
        f"no waitlist entry {unknown}",
        f"/v1/waitlist/{unknown}",
    )
    # The stranger's DELETE changed nothing.
    assert await entry(client, owner, body["id"]) == waiting(body, 1)
    assert (await row_of(runtime, body["id"])).status == "waiting"


async def test_id_numbers_never_reach_the_table_the_answers_or_the_outbox(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [2])
    tourist = await new_tourist(client)
    party = [visitor(name="Private"), visitor(name="Private")]
    numbers = [v["id_number"] for v in party]
    answers = [await join(client, tourist, party)]
    body = answers[0].json()
    answers.append(await client.get(f"/v1/waitlist/{body['id']}", headers=tourist))
    await cancel(client, filler, filled["id"])
    answers.append(await client.get(f"/v1/waitlist/{body['id']}", headers=tourist))
    answers.append(await client.get("/v1/outbox", headers=admin))
    assert answers[2].json()["status"] == "offered"

    for response in answers:
        assert response.status_code in (200, 201), response.text
        for number in numbers:
            assert number not in response.text

    # The table keeps a keyed hash and the masked number, as a reservation's visitors do.
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(sa.text("SELECT * FROM waitlist_entry"))).all()
    assert len(rows) == 1
    raw = json.dumps([list(row) for row in rows], default=str)
    for number in numbers:
        assert number not in raw
    hashes = runtime.booking.hash_ids([VisitorIn.model_validate(v) for v in party])
    stored = (await row_of(runtime, body["id"])).visitors
    assert stored == [
        {
            "name": v["name"],
            "id_type": "resident_id",
            "id_hash": id_hash,
            "id_masked": masked(v["id_number"]),
        }
        for v, id_hash in zip(party, hashes, strict=True)
    ]
    async with runtime.engine.connect() as connection:
        outbox = (await connection.execute(sa.text("SELECT * FROM outbox_event"))).all()
    raw_outbox = json.dumps([list(row) for row in outbox], default=str)
    for number in numbers:
        assert number not in raw_outbox


# races -------------------------------------------------------------------------------------


async def test_two_offers_at_once_make_one_hold_per_served_entry(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    await fill(client, admin, [2, 1])
    tourists = [await new_tourist(client) for _ in range(4)]
    entries = [await joined(client, t) for t in tourists]
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 2  # three places back

    counts = await asyncio.gather(runtime.waitlist.offer(), runtime.waitlist.offer())

    owners = [(await row_of(runtime, e["id"])).owner_id for e in entries]
    statuses = [(await row_of(runtime, e["id"])).status for e in entries]
    assert statuses == ["offered", "offered", "offered", "waiting"]
    assert sum(counts) == 3
    held_rows = [r for r in await reservations_in(runtime) if r.status == "held"]
    assert sorted(r.owner_id for r in held_rows) == sorted(owners[:3])
    assert {(await row_of(runtime, e["id"])).reservation_id for e in entries[:3]} == {
        r.id for r in held_rows
    }
    assert len(await events(runtime, "waitlist.offered")) == 3
    assert await entry(client, tourists[3], entries[3]["id"]) == waiting(entries[3], 1)
    await assert_counted(runtime, {"1000": 3}, 3)


async def test_an_entry_left_offering_by_a_dead_worker_goes_back_in_line_after_two_minutes(
    client: httpx.AsyncClient, admin: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    await fill(client, admin, [1])
    tourist = await new_tourist(client)
    body = await joined(client, tourist)
    # A worker took the entry a minute ago and died before making its hold.
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            sa.update(WaitlistEntry)
            .where(col(WaitlistEntry.public_id) == body["id"])
            .values(status="offering", updated_at=NOW - timedelta(minutes=1))
        )

    await set_capacity(client, admin, SLOT, 2)  # a place back, but the entry is taken
    assert await entry(client, tourist, body["id"]) == {**waiting(body, 1), "status": "offering"}
    assert await remaining(client) == 1

    clock.advance(timedelta(minutes=1, seconds=1))  # two minutes and a second since
    assert await runtime.waitlist.offer() == 1
    got = await entry(client, tourist, body["id"])
    assert got == offered(
        body, got["reservation_id"], instant(HOLD_TTL + timedelta(minutes=1, seconds=1))
    )
    assert len([r for r in await reservations_in(runtime) if r.status == "held"]) == 2
    await assert_counted(runtime, {"1000": 2}, 2)


async def test_leaving_while_the_offer_is_being_made_is_honoured(
    client: httpx.AsyncClient,
    admin: Headers,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourist = await new_tourist(client)
    body = await joined(client, tourist)
    answers: list[int] = []
    hold_offered = runtime.booking.hold_offered

    async def leave_first(*, owner_id: str, slot_id: str, visitors: Sequence[Named]) -> Any:
        # The entrant's DELETE arrives while the worker makes the hold.
        answers.append((await leave(client, tourist, body["id"])).status_code)
        return await hold_offered(owner_id=owner_id, slot_id=slot_id, visitors=visitors)

    monkeypatch.setattr(runtime.booking, "hold_offered", leave_first)
    await cancel(client, filler, filled["id"])

    got = await entry(client, tourist, body["id"])
    active = [r for r in await reservations_in(runtime) if r.status == "held"]
    if answers == [204]:
        # Told "you left": no hold for that account, the place stays on sale.
        assert got == ended(body, "left")
        assert active == []
        assert await remaining(client) == 1
    else:
        assert answers == [409]
        assert got["status"] == "offered"


# moves -------------------------------------------------------------------------------------


async def test_a_move_out_of_a_full_slot_offers_its_places_at_once(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourist = await new_tourist(client)
    body = await joined(client, tourist)

    moved = await client.post(
        f"/v1/reservations/{filled['id']}/reschedule",
        json={"slot_id": yonghe("1100")},
        headers=filler,
    )
    assert moved.status_code == 200, moved.text

    got = await entry(client, tourist, body["id"])
    assert got == offered(body, got["reservation_id"], "2026-12-01T02:15:00Z")


async def test_a_move_out_of_a_full_slot_serves_the_line_at_the_next_sweep(
    client: httpx.AsyncClient, admin: Headers, runtime: Runtime
) -> None:
    filler, (filled,) = await fill(client, admin, [1])
    tourist = await new_tourist(client)
    body = await joined(client, tourist)
    moved = await client.post(
        f"/v1/reservations/{filled['id']}/reschedule",
        json={"slot_id": yonghe("1100")},
        headers=filler,
    )
    assert moved.status_code == 200, moved.text

    assert await sweep_once(runtime) == 0
    got = await entry(client, tourist, body["id"])
    assert got == offered(body, got["reservation_id"], "2026-12-01T02:15:00Z")
    await assert_counted(runtime, {"1000": 1, "1100": 1}, 2)
