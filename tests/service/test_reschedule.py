"""Rescheduling over HTTP: `POST /v1/reservations/{id}/reschedule` moves a held or confirmed
reservation to another slot of its own site, with its visitors.

Against the real app, SQLite and Redis. Every test counts exactly: the `used` of each slot
and of each day in Redis, the visitors' units in SQL, the answers, the outbox; and after
every move the reconciler finds Redis and SQL in agreement (no drift).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking import repository
from booking.ids import IdType
from booking.models import OutboxEvent, Reservation, Visitor
from capacity.clock import ManualClock
from capacity.keys import SiteDay, open_holds
from service.app import create_app
from service.runtime import Runtime
from tests.conftest import NOW, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"
BEIJING = ZoneInfo("Asia/Shanghai")
HOLD_TTL = timedelta(minutes=15)
TODAY = date(2026, 12, 1)
TOMORROW = date(2026, 12, 2)
YONGHE = SiteDay("yonghe-temple", TODAY)
YONGHE_TOMORROW = SiteDay("yonghe-temple", TOMORROW)
YONGHE_GATE = "yonghe-temple.south-gate"
SLOT_KEYS = ("0900", "1000", "1100", "1200", "1300", "1400", "1500")


def yonghe(hhmm: str, day: date = TODAY) -> str:
    return f"yonghe-temple.{day.isoformat()}.{hhmm}"


def beijing(month: int, day: int, hour: int) -> str:
    return datetime(2026, month, day, hour, tzinfo=BEIJING).isoformat()


# asking ----------------------------------------------------------------------------------


async def held(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slot_id: str = yonghe("1000"),
    party: int = 2,
    visitors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Hold places and insist that it worked; returns the reservation."""
    response = await hold(client, headers, slot_id, visitors or [visitor() for _ in range(party)])
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def act(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str, action: str
) -> dict[str, Any]:
    """Confirm or cancel, and insist that it worked."""
    response = await client.post(f"/v1/reservations/{reservation_id}/{action}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def reschedule(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    reservation_id: str,
    slot_id: str,
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return await client.post(
        f"/v1/reservations/{reservation_id}/reschedule", json={"slot_id": slot_id}, headers=headers
    )


async def moved(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str, slot_id: str
) -> dict[str, Any]:
    """Reschedule and insist that it worked."""
    response = await reschedule(client, headers, reservation_id, slot_id)
    assert response.status_code == 200, response.text
    assert "Idempotent-Replayed" not in response.headers
    body: dict[str, Any] = response.json()
    return body


async def read(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/reservations/{reservation_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_capacity(
    client: httpx.AsyncClient, admin: dict[str, str], slot_id: str, capacity: int
) -> None:
    response = await client.patch(
        f"/v1/slots/{slot_id}", json={"capacity": capacity}, headers=admin
    )
    assert response.status_code == 200, response.text


async def tourists(client: httpx.AsyncClient, n: int) -> list[dict[str, str]]:
    return [await new_tourist(client) for _ in range(n)]


# what the answers say --------------------------------------------------------------------


def instance(reservation_id: str) -> str:
    return f"/v1/reservations/{reservation_id}/reschedule"


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    title: str,
    detail: str,
    reservation_id: str,
    **extra: Any,
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": instance(reservation_id),
        **extra,
    }


def assert_invalid_transition(response: httpx.Response, reservation_id: str, status: str) -> None:
    assert_problem(
        response,
        409,
        "invalid-transition",
        "The reservation cannot do that now",
        f"a {status} reservation cannot be rescheduled",
        reservation_id,
    )


def assert_rule(response: httpx.Response, reservation_id: str, rule: str, message: str) -> None:
    assert_problem(
        response,
        422,
        "validation-failed",
        "The request is not valid",
        f"slot_id: {message} ({rule})",
        reservation_id,
        errors=[{"in": "body", "field": "slot_id", "rule": rule, "message": message}],
    )


# what Redis and SQL hold -----------------------------------------------------------------


def usage(day: int, **slots: int) -> dict[str, int]:
    """A day's `used` counts: the day's, then every slot's (`at_1300=2`; the rest 0)."""
    counts = {"day": day, **dict.fromkeys(SLOT_KEYS, 0)}
    for name, used in slots.items():
        counts[name.removeprefix("at_")] = used
    return counts


async def redis_usage(runtime: Runtime, site_day: SiteDay = YONGHE) -> dict[str, int]:
    """The `used` of a site-day and of each of its slots, as Redis counts them."""
    load = await runtime.counters.load(site_day)
    assert load is not None, f"no counters for {site_day}"
    assert sorted(load.slots) == list(SLOT_KEYS)
    return {"day": load.day.used, **{key: load.slots[key].used for key in SLOT_KEYS}}


async def sql_usage(runtime: Runtime, site_day: SiteDay = YONGHE) -> dict[str, int]:
    """The same counts from SQL: active visitors of the day and of each slot."""
    async with runtime.sessions() as session:
        query = sa.select(col(Visitor.slot_id)).where(
            col(Visitor.site_id) == site_day.site,
            col(Visitor.visit_date) == site_day.visit_date,
            col(Visitor.active),
        )
        slots = Counter(str(row[0]).rsplit(".", 1)[1] for row in await session.execute(query))
    return {"day": sum(slots.values()), **{key: slots[key] for key in SLOT_KEYS}}


async def assert_usage(
    runtime: Runtime, expected: dict[str, int], site_day: SiteDay = YONGHE
) -> None:
    """Redis and SQL both count exactly `expected`."""
    assert await redis_usage(runtime, site_day) == expected
    assert await sql_usage(runtime, site_day) == expected


async def assert_no_drift(runtime: Runtime, *site_days: SiteDay) -> None:
    """The reconciler finds Redis as SQL proves it: nothing missing, nothing leaked."""
    for site_day in site_days or (YONGHE,):
        drift = await runtime.reconciler.reconcile_day(site_day)
        assert (drift.missing, drift.leaked, drift.returned, drift.rebuilt) == (
            0,
            0,
            0,
            False,
        ), drift


async def visitor_rows(runtime: Runtime, reservation_id: str) -> list[tuple[Any, ...]]:
    """(slot_id, visit_date, slot_unit, day_unit, active) of a reservation's visitors."""
    async with runtime.sessions() as session:
        query = (
            sa.select(Visitor)
            .where(col(Visitor.reservation_id) == reservation_id)
            .order_by(col(Visitor.position))
        )
        visitors = (await session.execute(query)).scalars().all()
    return [(v.slot_id, v.visit_date, v.slot_unit, v.day_unit, v.active) for v in visitors]


async def reservation_row(runtime: Runtime, reservation_id: str) -> tuple[Any, ...]:
    """(slot_id, visit_date, status, hold_expires_at) of a reservation in SQL."""
    async with runtime.sessions() as session:
        reservation = await session.get(Reservation, reservation_id)
        assert reservation is not None
        return (
            reservation.slot_id,
            reservation.visit_date,
            str(reservation.status),
            reservation.hold_expires_at,
        )


async def outbox(runtime: Runtime) -> list[tuple[Any, ...]]:
    """(at, site, account, moved from, the reservation as its owner sees it) of every
    `reservation.rescheduled` event, in order."""
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic) == "reservation.rescheduled")
            .order_by(col(OutboxEvent.id))
        )
        events = (await session.execute(query)).scalars().all()
    rows = []
    for event in events:
        payload = dict(event.payload)
        moved_from, reservation = payload.pop("moved_from"), payload.pop("reservation")
        assert payload == {}, payload
        rows.append((event.at, event.site_id, event.account_id, moved_from, reservation))
    return rows


async def owner_of(runtime: Runtime, reservation_id: str) -> str:
    async with runtime.sessions() as session:
        reservation = await session.get(Reservation, reservation_id)
        assert reservation is not None
        return reservation.owner_id


async def counted(runtime: Runtime, owner: str, site_day: SiteDay = YONGHE) -> list[str]:
    """The reservations Redis counts against an account on a site-day."""
    ids = await runtime.redis.hget(site_day.owners, owner)
    return sorted(str(ids or "").split())


async def id_hashes(runtime: Runtime, site_day: SiteDay = YONGHE) -> set[str]:
    return {str(h) for h in await runtime.redis.smembers(site_day.visitor_ids)}


def hash_of(runtime: Runtime, person: dict[str, str]) -> str:
    return runtime.hasher.hash(IdType(person["id_type"]), person["id_number"])


async def redis_dump(runtime: Runtime) -> dict[str, object]:
    """Every counter of Yonghe's days and every account's open holds, whole."""
    redis = runtime.redis
    state: dict[str, object] = {}
    keys = [str(k) for k in await redis.keys("tg:{yonghe-temple:*")]
    keys += [str(k) for k in await redis.keys("tg:{acct:*")]
    for key in sorted(keys):
        kind = await redis.type(key)
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(await redis.smembers(key))
        else:
            state[key] = await redis.get(key)
    return state


async def sql_dump(runtime: Runtime) -> dict[str, object]:
    """Every reservation, every visitor and the outbox's reservation events, whole."""
    queries = {
        "reservation": "SELECT * FROM reservation ORDER BY id",
        "visitor": "SELECT * FROM visitor ORDER BY id",
        "outbox": "SELECT * FROM outbox_event WHERE topic LIKE 'reservation.%' ORDER BY id",
    }
    async with runtime.engine.connect() as connection:
        return {
            table: [tuple(row) for row in await connection.execute(sa.text(query))]
            for table, query in queries.items()
        }


async def everything(runtime: Runtime) -> tuple[dict[str, object], dict[str, object]]:
    """What a refusal must leave exactly as it was: Redis's counters and SQL's rows."""
    return await redis_dump(runtime), await sql_dump(runtime)


# the same day ----------------------------------------------------------------------------


async def test_a_hold_moves_to_another_hour_of_the_day(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    body = await held(client, tourist)
    rid = body["id"]
    before = await visitor_rows(runtime, rid)
    assert before == [
        (yonghe("1000"), TODAY, 1, 1, True),
        (yonghe("1000"), TODAY, 2, 2, True),
    ]
    clock.advance(timedelta(minutes=5))

    answer = await moved(client, tourist, rid, yonghe("1300"))

    assert answer == {
        **body,
        "slot_id": yonghe("1300"),
        "start": "2026-12-01T13:00:00+08:00",
        "end": "2026-12-01T14:00:00+08:00",
        "status": "held",
        "expires_at": "2026-12-01T02:15:00Z",
    }
    assert await read(client, tourist, rid) == answer
    await assert_usage(runtime, usage(2, at_1300=2))
    assert await visitor_rows(runtime, rid) == [
        (yonghe("1300"), TODAY, 1, 1, True),
        (yonghe("1300"), TODAY, 2, 2, True),
    ]
    assert await reservation_row(runtime, rid) == (
        yonghe("1300"),
        TODAY,
        "held",
        NOW + HOLD_TTL,
    )
    owner = await owner_of(runtime, rid)
    assert await outbox(runtime) == [
        (NOW + timedelta(minutes=5), "yonghe-temple", owner, yonghe("1000"), answer)
    ]
    await assert_no_drift(runtime)


async def test_the_places_given_back_go_on_sale_at_once_lowest_unit_first(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    other = await new_tourist(client)
    there = await held(client, other, yonghe("1300"), party=1)
    body = await held(client, tourist)

    await moved(client, tourist, body["id"], yonghe("1300"))

    # 13:00 already had unit 1: the party gets 2 and 3; it keeps its day units.
    assert await visitor_rows(runtime, body["id"]) == [
        (yonghe("1300"), TODAY, 2, 2, True),
        (yonghe("1300"), TODAY, 3, 3, True),
    ]
    again = await held(client, other, yonghe("1000"), party=1)
    assert await visitor_rows(runtime, again["id"]) == [(yonghe("1000"), TODAY, 1, 4, True)]
    assert await visitor_rows(runtime, there["id"]) == [(yonghe("1300"), TODAY, 1, 1, True)]
    await assert_usage(runtime, usage(4, at_1000=1, at_1300=3))
    await assert_no_drift(runtime)


async def test_a_confirmed_reservation_stays_confirmed_and_its_ticket_follows(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    body = await act(client, tourist, (await held(client, tourist))["id"], "confirm")
    rid = body["id"]
    assert body["status"] == "confirmed"

    answer = await moved(client, tourist, rid, yonghe("1300"))

    assert answer == {
        **body,
        "slot_id": yonghe("1300"),
        "start": "2026-12-01T13:00:00+08:00",
        "end": "2026-12-01T14:00:00+08:00",
    }
    assert answer["status"] == "confirmed"
    assert answer["expires_at"] is None
    ticket = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert ticket.status_code == 200, ticket.text
    assert (ticket.json()["entry_from"], ticket.json()["entry_until"]) == (
        "2026-12-01T12:45:00+08:00",
        "2026-12-01T14:15:00+08:00",
    )
    assert (await reservation_row(runtime, rid))[:3] == (yonghe("1300"), TODAY, "confirmed")
    await assert_usage(runtime, usage(2, at_1300=2))
    await assert_no_drift(runtime)


async def test_moving_twice_and_back_counts_each_place_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await held(client, tourist, party=3))["id"]

    await moved(client, tourist, rid, yonghe("1300"))
    await moved(client, tourist, rid, yonghe("1500"))
    await moved(client, tourist, rid, yonghe("1000"))

    await assert_usage(runtime, usage(3, at_1000=3))
    assert await visitor_rows(runtime, rid) == [
        (yonghe("1000"), TODAY, unit, unit, True) for unit in (1, 2, 3)
    ]
    assert [(event[3], event[4]["slot_id"]) for event in await outbox(runtime)] == [
        (yonghe("1000"), yonghe("1300")),
        (yonghe("1300"), yonghe("1500")),
        (yonghe("1500"), yonghe("1000")),
    ]
    await assert_no_drift(runtime)
    # Cancelling after the moves gives back exactly the places held now.
    await act(client, tourist, rid, "cancel")
    await assert_usage(runtime, usage(0))
    await assert_no_drift(runtime)


# another day -----------------------------------------------------------------------------


async def test_a_hold_moves_to_another_day_with_its_visitors(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    people = [visitor(), visitor()]
    body = await held(client, tourist, visitors=people)
    rid = body["id"]
    owner = await owner_of(runtime, rid)
    hashes = {hash_of(runtime, person) for person in people}
    assert await id_hashes(runtime, YONGHE) == hashes
    assert await counted(runtime, owner, YONGHE) == [rid]

    answer = await moved(client, tourist, rid, yonghe("1300", TOMORROW))

    assert answer == {
        **body,
        "slot_id": yonghe("1300", TOMORROW),
        "date": "2026-12-02",
        "start": "2026-12-02T13:00:00+08:00",
        "end": "2026-12-02T14:00:00+08:00",
        "expires_at": "2026-12-01T02:15:00Z",
    }
    await assert_usage(runtime, usage(0), YONGHE)
    await assert_usage(runtime, usage(2, at_1300=2), YONGHE_TOMORROW)
    assert await visitor_rows(runtime, rid) == [
        (yonghe("1300", TOMORROW), TOMORROW, 1, 1, True),
        (yonghe("1300", TOMORROW), TOMORROW, 2, 2, True),
    ]
    assert await reservation_row(runtime, rid) == (
        yonghe("1300", TOMORROW),
        TOMORROW,
        "held",
        NOW + HOLD_TTL,
    )
    assert await id_hashes(runtime, YONGHE) == set()
    assert await id_hashes(runtime, YONGHE_TOMORROW) == hashes
    assert await counted(runtime, owner, YONGHE) == []
    assert await counted(runtime, owner, YONGHE_TOMORROW) == [rid]
    assert await outbox(runtime) == [(NOW, "yonghe-temple", owner, yonghe("1000"), answer)]
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)

    # The visitors' place is now on the 2nd: free again on the 1st, taken on the 2nd.
    other = await new_tourist(client)
    again = await held(client, other, yonghe("1100"), visitors=[people[0]])
    assert again["date"] == "2026-12-01"
    refused = await hold(client, other, yonghe("1100", TOMORROW), visitors=[visitor(), people[1]])
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "duplicate-visitor"
    assert refused.json()["detail"] == (
        "visitor 2 already holds a place at yonghe-temple on 2026-12-02"
    )
    await assert_usage(runtime, usage(1, at_1100=1), YONGHE)
    await assert_usage(runtime, usage(2, at_1300=2), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_confirmed_reservation_moves_to_another_day_and_back(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    other = await new_tourist(client)
    await held(client, other, yonghe("1100", TOMORROW), party=1)
    rid = (await held(client, tourist, party=2))["id"]
    await act(client, tourist, rid, "confirm")

    answer = await moved(client, tourist, rid, yonghe("1100", TOMORROW))
    assert (answer["status"], answer["date"], answer["expires_at"]) == (
        "confirmed",
        "2026-12-02",
        None,
    )
    # The 2nd already had one visitor: units 2 and 3 of the slot and of the day.
    assert await visitor_rows(runtime, rid) == [
        (yonghe("1100", TOMORROW), TOMORROW, 2, 2, True),
        (yonghe("1100", TOMORROW), TOMORROW, 3, 3, True),
    ]
    ticket = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert ticket.status_code == 200, ticket.text
    assert (ticket.json()["entry_from"], ticket.json()["entry_until"]) == (
        "2026-12-02T10:45:00+08:00",
        "2026-12-02T12:15:00+08:00",
    )

    back = await moved(client, tourist, rid, yonghe("1400"))
    assert (back["status"], back["date"], back["slot_id"]) == (
        "confirmed",
        "2026-12-01",
        yonghe("1400"),
    )
    await assert_usage(runtime, usage(2, at_1400=2), YONGHE)
    await assert_usage(runtime, usage(1, at_1100=1), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_the_day_limit_of_the_account_follows_the_reservation(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    # Three reservations on the 1st: the account's limit for the day (confirmed, so that
    # the two open holds allowed at a site do not get in the way).
    rids = []
    for hhmm in ("1000", "1100", "1200"):
        rid = (await held(client, tourist, yonghe(hhmm), party=1))["id"]
        await act(client, tourist, rid, "confirm")
        rids.append(rid)
    owner = await owner_of(runtime, rids[0])
    refused = await hold(client, tourist, yonghe("1300"))
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "account-limit"

    await moved(client, tourist, rids[0], yonghe("1000", TOMORROW))

    assert await counted(runtime, owner, YONGHE) == sorted(rids[1:])
    assert await counted(runtime, owner, YONGHE_TOMORROW) == [rids[0]]
    await held(client, tourist, yonghe("1300"), party=1)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_hold_moved_to_another_day_stays_open_and_expires_there(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    first = (await held(client, tourist))["id"]
    second = (await held(client, tourist, yonghe("1100"), party=1))["id"]
    owner = await owner_of(runtime, first)

    await moved(client, tourist, first, yonghe("1300", TOMORROW))

    # Still one of the two holds the account may keep open at the site.
    claims = await runtime.redis.zrange(open_holds(owner), 0, -1)
    assert sorted(str(c) for c in claims) == sorted(
        [f"yonghe-temple {first}", f"yonghe-temple {second}"]
    )
    refused = await hold(client, tourist, yonghe("1400"))
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["per"]) == ("account-limit", "open-holds")
    # Its deadline passes: the sweeper gives back its places on the day it is on now.
    clock.advance(HOLD_TTL)
    assert await runtime.booking.expire_due() == 2
    assert (await read(client, tourist, first))["status"] == "expired"
    await assert_usage(runtime, usage(0), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)
    assert await counted(runtime, owner, YONGHE_TOMORROW) == []
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_move_into_a_day_where_the_account_is_at_its_limit_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for hhmm in ("1000", "1100", "1200"):
        rid = (await held(client, tourist, yonghe(hhmm, TOMORROW), party=1))["id"]
        await act(client, tourist, rid, "confirm")
    rid = (await held(client, tourist, party=2))["id"]
    before = await everything(runtime)

    response = await reschedule(client, tourist, rid, yonghe("1300", TOMORROW))

    assert_problem(
        response,
        409,
        "account-limit",
        "This account has reached its limit here",
        "this account has reached its limit of 3 reservations at yonghe-temple on 2026-12-02",
        rid,
        limit=3,
        per="site-day",
    )
    assert await everything(runtime) == before
    await assert_usage(runtime, usage(2, at_1000=2), YONGHE)
    await assert_usage(runtime, usage(3, at_1000=1, at_1100=1, at_1200=1), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_move_into_a_day_where_a_visitor_holds_a_place_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    person = visitor()
    await held(client, await new_tourist(client), yonghe("1500", TOMORROW), visitors=[person])
    rid = (await held(client, tourist, visitors=[visitor(), person]))["id"]
    before = await everything(runtime)

    response = await reschedule(client, tourist, rid, yonghe("1300", TOMORROW))

    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 already holds a place at yonghe-temple on 2026-12-02",
        rid,
        visitor_index=1,
    )
    assert await everything(runtime) == before
    await assert_usage(runtime, usage(2, at_1000=2), YONGHE)
    await assert_usage(runtime, usage(1, at_1500=1), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


# refusals: each leaves Redis and SQL exactly as they were ----------------------------------


@pytest.fixture
async def party(client: httpx.AsyncClient, tourist: dict[str, str]) -> dict[str, Any]:
    """A party of two held at 10:00 on the 1st (and one visitor at 12:00 on the 2nd, so
    that both days have something to keep)."""
    await held(client, await new_tourist(client), yonghe("1200", TOMORROW), party=1)
    return await held(client, tourist)


async def assert_unchanged(
    runtime: Runtime, before: tuple[dict[str, object], dict[str, object]]
) -> None:
    assert await everything(runtime) == before
    await assert_usage(runtime, usage(2, at_1000=2), YONGHE)
    await assert_usage(runtime, usage(1, at_1200=1), YONGHE_TOMORROW)
    assert await outbox(runtime) == []
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_slot_of_another_site_or_the_same_slot_is_422_naming_slot_id(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], party: dict[str, Any]
) -> None:
    rid = party["id"]
    before = await everything(runtime)

    for slot_id in ("temple-of-heaven.2026-12-01.0900", "atlantis.2026-12-01.1000"):
        response = await reschedule(client, tourist, rid, slot_id)
        assert_rule(
            response, rid, "same-site", "a reservation moves to another slot of its own site"
        )
    response = await reschedule(client, tourist, rid, yonghe("1000"))
    assert_rule(response, rid, "another-slot", "the reservation is in this slot")

    await assert_unchanged(runtime, before)


MALFORMED: list[tuple[dict[str, Any], tuple[str, str, str]]] = [
    ({"slot_id": "yonghe"}, ("body", "slot_id", "string_pattern_mismatch")),
    ({"slot_id": "Yonghe-Temple.2026-12-01.1300"}, ("body", "slot_id", "string_pattern_mismatch")),
    ({"slot_id": "yonghe-temple.2026-12-01.13:00"}, ("body", "slot_id", "string_pattern_mismatch")),
    ({"slot_id": 1300}, ("body", "slot_id", "string_type")),
    ({"slot_id": None}, ("body", "slot_id", "string_type")),
    ({}, ("body", "slot_id", "missing")),
    ({"slot_id": yonghe("1300"), "party_size": 3}, ("body", "party_size", "extra_forbidden")),
]


async def test_a_malformed_body_is_422_from_the_schema(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], party: dict[str, Any]
) -> None:
    before = await everything(runtime)

    for body, error in MALFORMED:
        response = await client.post(
            instance(party["id"]), json=body, headers={**tourist, "Idempotency-Key": "bad-body"}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        problem = response.json()
        assert (problem["code"], problem["instance"]) == (
            "validation-failed",
            instance(party["id"]),
        )
        assert [(e["in"], e["field"], e["rule"]) for e in problem["errors"]] == [error]

    await assert_unchanged(runtime, before)


async def test_an_unknown_slot_or_somebody_elses_reservation_is_404(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], party: dict[str, Any]
) -> None:
    rid = party["id"]
    before = await everything(runtime)

    for slot_id, detail in (
        (yonghe("0930"), f"no slot {yonghe('0930')}"),
        (yonghe("1600"), f"no slot {yonghe('1600')}"),
        ("yonghe-temple.2026-12-20.1000", "no slot yonghe-temple.2026-12-20.1000"),
        ("yonghe-temple.2026-02-30.1000", "no such slot"),
    ):
        response = await reschedule(client, tourist, rid, slot_id)
        assert_problem(response, 404, "not-found", "Not found", detail, rid)
    # Somebody else's reservation is indistinguishable from a missing one.
    other = await new_tourist(client)
    response = await reschedule(client, other, rid, yonghe("1300"))
    assert_problem(response, 404, "not-found", "Not found", f"no reservation {rid}", rid)
    missing = "0" * 32
    response = await reschedule(client, tourist, missing, yonghe("1300"))
    assert_problem(response, 404, "not-found", "Not found", f"no reservation {missing}", missing)

    await assert_unchanged(runtime, before)


async def test_only_a_tourists_token_may_reschedule(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], party: dict[str, Any]
) -> None:
    before = await everything(runtime)

    response = await reschedule(client, admin, party["id"], yonghe("1300"))
    assert_problem(
        response,
        403,
        "forbidden",
        "This token may not do that",
        "this route is for a tourist's account",
        party["id"],
    )
    response = await reschedule(client, {}, party["id"], yonghe("1300"))
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
        party["id"],
    )

    await assert_unchanged(runtime, before)


async def test_a_full_slot_is_409_sold_out_with_alternatives(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    admin: dict[str, str],
    party: dict[str, Any],
) -> None:
    await set_capacity(client, admin, yonghe("1300"), 1)
    await set_capacity(client, admin, yonghe("1200", TOMORROW), 2)
    before = await everything(runtime)

    response = await reschedule(client, tourist, party["id"], yonghe("1300"))

    assert_problem(
        response,
        409,
        "sold-out",
        "Not enough places left in this slot",
        "2 asked for; left: 1 in this slot, 7498 this day",
        party["id"],
        slot_left=1,
        day_left=7498,
        alternatives=[
            {
                "site": "yonghe-temple",
                "slot_id": yonghe("1200"),
                "start": "2026-12-01T12:00:00+08:00",
                "end": "2026-12-01T13:00:00+08:00",
                "remaining": 1000,
                "comfort": "comfortable",
                "load": 0.0007,
                "distance_km": 0.0,
                "reason": "1000 places left at 12:00",
            },
            {
                "site": "yonghe-temple",
                "slot_id": yonghe("1400"),
                "start": "2026-12-01T14:00:00+08:00",
                "end": "2026-12-01T15:00:00+08:00",
                "remaining": 1000,
                "comfort": "comfortable",
                "load": 0.0,
                "distance_km": 0.0,
                "reason": "1000 places left at 14:00",
            },
            # Not the temple next door (a reservation moves within its site), nor 10:00,
            # where the party already is.
        ],
    )
    # Another day's full slot: the new day's counters refuse (allocate.lua).
    response = await reschedule(client, tourist, party["id"], yonghe("1200", TOMORROW))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert (problem["code"], problem["detail"], problem["slot_left"], problem["day_left"]) == (
        "sold-out",
        "2 asked for; left: 1 in this slot, 7499 this day",
        1,
        7499,
    )
    assert [a["slot_id"] for a in problem["alternatives"]][:2] == [
        yonghe("1100", TOMORROW),
        yonghe("1300", TOMORROW),
    ]

    await assert_unchanged(runtime, before)


async def test_the_alternatives_to_a_full_slot_never_offer_the_slot_it_is_in(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    rid = (await held(client, tourist, yonghe("1200")))["id"]
    await set_capacity(client, admin, yonghe("1300"), 1)

    response = await reschedule(client, tourist, rid, yonghe("1300"))

    assert response.status_code == 409, response.text
    offered = [a["slot_id"] for a in response.json()["alternatives"]]
    assert yonghe("1200") not in offered, offered


async def test_a_slot_not_on_sale_is_409_outside_booking_window(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], party: dict[str, Any]
) -> None:
    before = await everything(runtime)

    for slot_id, opens_at, closes_at in (
        # The 09:00 slot's entry window ended at 10:00, which is now (move.lua refuses).
        (yonghe("0900"), beijing(11, 30, 0), beijing(12, 1, 10)),
        # The 3rd goes on sale one day before, at midnight (allocate.lua refuses).
        (yonghe("1300", date(2026, 12, 3)), beijing(12, 2, 0), beijing(12, 3, 14)),
    ):
        response = await reschedule(client, tourist, party["id"], slot_id)
        assert_problem(
            response,
            409,
            "outside-booking-window",
            "This slot is not on sale now",
            f"on sale from {opens_at} until {closes_at}",
            party["id"],
            sales_open_at=opens_at,
            sales_close_at=closes_at,
        )

    await assert_unchanged(runtime, before)


async def test_a_closed_slot_is_409_site_closed(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    admin: dict[str, str],
    party: dict[str, Any],
) -> None:
    for slot_id in (yonghe("1300"), yonghe("1300", TOMORROW)):
        closed = await client.post(
            f"/v1/slots/{slot_id}/close", json={"reason": "rain"}, headers=admin
        )
        assert closed.status_code == 200, closed.text
    before = await everything(runtime)

    for slot_id in (yonghe("1300"), yonghe("1300", TOMORROW)):
        response = await reschedule(client, tourist, party["id"], slot_id)
        assert_problem(
            response,
            409,
            "site-closed",
            "The site or slot is closed",
            "The site or slot is closed",
            party["id"],
        )

    await assert_unchanged(runtime, before)


async def test_a_closed_day_is_409_site_closed(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    admin: dict[str, str],
) -> None:
    rid = (await held(client, tourist))["id"]
    closed = await client.post(
        "/v1/sites/yonghe-temple/days/2026-12-02/close", json={"reason": "rain"}, headers=admin
    )
    assert closed.status_code == 200, closed.text
    before = await everything(runtime)

    response = await reschedule(client, tourist, rid, yonghe("1300", TOMORROW))

    assert_problem(
        response,
        409,
        "site-closed",
        "The site or slot is closed",
        "The site or slot is closed",
        rid,
    )
    assert await everything(runtime) == before
    await assert_usage(runtime, usage(2, at_1000=2), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_hold_past_its_deadline_is_410_hold_expired(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    clock: ManualClock,
    party: dict[str, Any],
) -> None:
    clock.set(NOW + HOLD_TTL)
    before = await everything(runtime)

    for slot_id in (yonghe("1300"), yonghe("1300", TOMORROW)):
        response = await reschedule(client, tourist, party["id"], slot_id)
        assert_problem(
            response,
            410,
            "hold-expired",
            "The hold expired and its places were released",
            f"the hold of {party['id']} expired",
            party["id"],
        )

    # The sweeper has not come by: the places stay counted until it does.
    await assert_unchanged(runtime, before)
    assert await runtime.booking.expire_due() == 2  # with the other visitor's, on the 2nd
    await assert_usage(runtime, usage(0), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)


async def test_a_hold_one_second_before_its_deadline_moves_and_keeps_it(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    clock: ManualClock,
    party: dict[str, Any],
) -> None:
    clock.set(NOW + HOLD_TTL - timedelta(seconds=1))

    answer = await moved(client, tourist, party["id"], yonghe("1300"))

    assert answer["expires_at"] == "2026-12-01T02:15:00Z"
    await assert_usage(runtime, usage(2, at_1300=2), YONGHE)
    # A second later the sweeper frees its new places (and the other visitor's, on the 2nd).
    clock.advance(timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 2
    await assert_usage(runtime, usage(0), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def check_in(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], reservation_id: str
) -> None:
    ticket = await client.get(f"/v1/reservations/{reservation_id}/ticket", headers=headers)
    assert ticket.status_code == 200, ticket.text
    token = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=YONGHE_GATE)
    response = await client.post(
        f"/v1/gates/{YONGHE_GATE}/scans",
        json={"code": ticket.json()["code"], "direction": "entry"},
        headers={"Authorization": f"Bearer {token.token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "admitted"


async def test_a_reservation_no_longer_held_or_confirmed_is_409_invalid_transition(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    admin: dict[str, str],
    clock: ManualClock,
) -> None:
    expired = (await held(client, tourist, yonghe("1200")))["id"]
    clock.advance(HOLD_TTL)
    assert await runtime.booking.expire_due() == 1
    cancelled = (await held(client, tourist, yonghe("1300")))["id"]
    await act(client, tourist, cancelled, "cancel")
    checked_in = (await held(client, tourist, yonghe("1000")))["id"]
    await act(client, tourist, checked_in, "confirm")
    await check_in(client, runtime, tourist, checked_in)
    by_site = (await held(client, tourist, yonghe("1100")))["id"]
    closed = await client.post(
        f"/v1/slots/{yonghe('1100')}/close", json={"reason": "rain"}, headers=admin
    )
    assert closed.status_code == 200, closed.text
    statuses = {
        expired: "expired",
        cancelled: "cancelled",
        checked_in: "checked_in",
        by_site: "cancelled_by_site",
    }
    for rid, status in statuses.items():
        assert (await read(client, tourist, rid))["status"] == status
    before = await everything(runtime)

    for rid, status in statuses.items():
        for slot_id in (
            yonghe("1400"),
            yonghe("1400", TOMORROW),
            "temple-of-heaven.2026-12-01.0900",
        ):
            response = await reschedule(client, tourist, rid, slot_id)
            assert_invalid_transition(response, rid, status)

    assert await everything(runtime) == before
    # Only the visitors who came in still hold their places.
    await assert_usage(runtime, usage(2, at_1000=2), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


# when SQL refuses the move after Redis made it ----------------------------------------


@pytest.fixture
async def lenient(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 answer instead of the app's exception."""
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as client:
        yield client


async def test_when_sql_refuses_the_move_redis_gives_the_new_places_back(
    lenient: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = await new_tourist(lenient)
    await held(lenient, other, yonghe("1300"), party=1)
    await held(lenient, other, yonghe("1300", TOMORROW), party=1)
    original = repository.reschedule
    moves: list[dict[str, Any]] = []

    async def changed_meanwhile(*args: Any, **kwargs: Any) -> bool:
        return False  # what the guarded UPDATE says when a cancel or a move came first

    async def database_gone(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the database went away")

    for failure, status in ((changed_meanwhile, 409), (database_gone, 500)):
        for target in (yonghe("1400"), yonghe("1400", TOMORROW)):
            people = [visitor(), visitor()]
            rid = (await held(lenient, tourist, visitors=people))["id"]
            owner = await owner_of(runtime, rid)
            before = await everything(runtime)
            monkeypatch.setattr(repository, "reschedule", failure)

            response = await reschedule(lenient, tourist, rid, target)

            monkeypatch.setattr(repository, "reschedule", original)
            assert response.status_code == status, response.text
            if status == 409:
                assert_problem(
                    response,
                    409,
                    "invalid-transition",
                    "The reservation cannot do that now",
                    f"{rid} changed meanwhile: try again",
                    rid,
                )
            assert await sql_dump(runtime) == before[1]
            await assert_usage(runtime, usage(3, at_1000=2, at_1300=1), YONGHE)
            await assert_usage(runtime, usage(1, at_1300=1), YONGHE_TOMORROW)
            hashes = {hash_of(runtime, person) for person in people}
            assert hashes <= await id_hashes(runtime, YONGHE)
            assert not hashes & await id_hashes(runtime, YONGHE_TOMORROW)
            assert rid in await counted(runtime, owner, YONGHE)
            assert rid not in await counted(runtime, owner, YONGHE_TOMORROW)
            await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)
            # And it can move for real afterwards.
            moves.append(await moved(lenient, tourist, rid, target))
            await act(lenient, tourist, rid, "cancel")
    # The four real moves are announced, none of the refused ones.
    owner = await owner_of(runtime, moves[0]["id"])
    assert await outbox(runtime) == [
        (NOW, "yonghe-temple", owner, yonghe("1000"), answer) for answer in moves
    ]


async def test_a_refused_same_day_move_is_undone_even_while_another_rebuild_holds_the_lock(
    lenient: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rid = (await held(lenient, tourist))["id"]

    async def changed_meanwhile(*args: Any, **kwargs: Any) -> bool:
        return False

    monkeypatch.setattr(repository, "reschedule", changed_meanwhile)
    # Another replica has just rebuilt the day from SQL and not yet let go of the lock.
    assert await runtime.counters.try_lock(YONGHE.rebuild_lock, ttl_ms=30_000)

    response = await reschedule(lenient, tourist, rid, yonghe("1300"))

    assert response.status_code == 409, response.text
    await runtime.reconciler.wait_pending()
    # Either counted as SQL proves, or failing closed until rebuilt: never the refused move.
    load = await runtime.counters.load(YONGHE)
    assert load is None or await redis_usage(runtime) == usage(2, at_1000=2)


# Idempotency-Key -------------------------------------------------------------------------


async def test_same_key_and_body_replays_the_first_answer_and_moves_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    for key, target in (("move-1", yonghe("1300")), ("move-2", yonghe("1300", TOMORROW))):
        rid = (await held(client, tourist))["id"]
        first = await reschedule(client, tourist, rid, target, key=key)
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        after = await everything(runtime)

        again = await reschedule(client, tourist, rid, target, key=key)

        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert await everything(runtime) == after
    assert [event[4]["slot_id"] for event in await outbox(runtime)] == [
        yonghe("1300"),
        yonghe("1300", TOMORROW),
    ]
    await assert_usage(runtime, usage(2, at_1300=2), YONGHE)
    await assert_usage(runtime, usage(2, at_1300=2), YONGHE_TOMORROW)

    # Moved on since: the key still answers what it did then, and moves nothing back.
    await moved(client, tourist, rid, yonghe("1400", TOMORROW))
    replay = await reschedule(client, tourist, rid, yonghe("1300", TOMORROW), key="move-2")
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["slot_id"] == yonghe("1300", TOMORROW)
    assert (await read(client, tourist, rid))["slot_id"] == yonghe("1400", TOMORROW)
    await assert_usage(runtime, usage(2, at_1400=2), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_same_key_with_another_body_is_422_and_moves_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await held(client, tourist))["id"]
    other = (await held(client, tourist, yonghe("1100"), party=1))["id"]
    first = await reschedule(client, tourist, rid, yonghe("1300"), key="move-3")
    assert first.status_code == 200, first.text
    after = await everything(runtime)

    for reservation_id, slot_id in (
        (rid, yonghe("1400")),
        (rid, yonghe("1300", TOMORROW)),
        (other, yonghe("1300")),
    ):
        response = await reschedule(client, tourist, reservation_id, slot_id, key="move-3")
        assert_problem(
            response,
            422,
            "idempotency-key-reused",
            "This Idempotency-Key was used for a different request",
            "This Idempotency-Key was used for a different request",
            reservation_id,
        )
    # A cancel under the key of a move is another request too.
    cancel = await client.post(
        f"/v1/reservations/{rid}/cancel", headers={**tourist, "Idempotency-Key": "move-3"}
    )
    assert cancel.status_code == 422, cancel.text
    assert cancel.json()["code"] == "idempotency-key-reused"

    assert await everything(runtime) == after
    await assert_usage(runtime, usage(3, at_1100=1, at_1300=2))
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


async def test_a_refused_move_under_a_key_can_be_retried_with_it(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    rid = (await held(client, tourist))["id"]
    await set_capacity(client, admin, yonghe("1300"), 1)
    refused = await reschedule(client, tourist, rid, yonghe("1300"), key="move-4")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "sold-out"

    await set_capacity(client, admin, yonghe("1300"), 2)
    response = await reschedule(client, tourist, rid, yonghe("1300"), key="move-4")

    assert response.status_code == 200, response.text
    assert "Idempotent-Replayed" not in response.headers
    await assert_usage(runtime, usage(2, at_1300=2))
    await assert_no_drift(runtime)


# concurrency: real requests at once, counted exactly -------------------------------------


def final_usage(slots: list[str], parties: list[int], day: date) -> dict[str, int]:
    """The usage a day must show when each party ends in the slot named."""
    counts = usage(0)
    for slot_id, size in zip(slots, parties, strict=True):
        if slot_id.split(".")[1] == day.isoformat():
            counts["day"] += size
            counts[slot_id.rsplit(".", 1)[1]] += size
    return counts


async def later(yields: int, request: Awaitable[httpx.Response]) -> httpx.Response:
    """Send a request after letting the others run for a while (`yields` turns of the event
    loop): each delay interleaves the racing requests differently."""
    for _ in range(yields):
        await asyncio.sleep(0)
    return await request


def kind(response: httpx.Response) -> str:
    """How a racing request ended: moved, or which refusal."""
    if response.status_code == 200:
        return "ok"
    problem = response.json()
    if "changed meanwhile" in problem["detail"]:
        return "lost the race"  # it had taken the new places: they went back
    if problem["detail"] == "a cancelled reservation cannot be rescheduled":
        return "cancelled first"
    return str(problem["code"])


async def assert_in_one_slot(
    client: httpx.AsyncClient,
    runtime: Runtime,
    headers: dict[str, str],
    rid: str,
    moves: Sequence[httpx.Response],
    size: int,
) -> None:
    """The reservation holds exactly its party in exactly one slot, one that a move answered,
    and Redis and SQL both count exactly that; the reconciler finds no drift."""
    now = await read(client, headers, rid)
    assert now["slot_id"] in {r.json()["slot_id"] for r in moves if r.status_code == 200}
    where = str(now["slot_id"])
    day = date.fromisoformat(where.split(".")[1])
    rows = await visitor_rows(runtime, rid)
    assert [(row[0], row[1], row[4]) for row in rows] == [(where, day, True)] * size
    for site_day in (YONGHE, YONGHE_TOMORROW):
        await assert_usage(runtime, final_usage([where], [size], site_day.visit_date), site_day)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


@pytest.mark.slow
async def test_movers_into_a_slot_with_k_places_left_exactly_k_get_in(
    unlimited_accounts: None, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    await set_capacity(client, admin, yonghe("1300"), 6)
    people = await tourists(client, 4)
    await held(client, people[0], yonghe("1300"), party=2)  # K = 4 places left
    # From every other hour of the day, and from the 2nd (both paths race for 13:00).
    sources = [
        yonghe("1000"),
        yonghe("1100"),
        yonghe("1200"),
        yonghe("1400"),
        yonghe("1500"),
        yonghe("1000", TOMORROW),
        yonghe("1300", TOMORROW),
    ] * 2
    movers = []
    for i, source in enumerate(sources):
        headers = people[i % len(people)]
        movers.append((headers, (await held(client, headers, source, party=1))["id"]))

    responses = await asyncio.gather(
        *(reschedule(client, headers, rid, yonghe("1300")) for headers, rid in movers)
    )

    assert Counter(r.status_code for r in responses) == {200: 4, 409: 10}
    finals = []
    for response, (headers, rid), source in zip(responses, movers, sources, strict=True):
        if response.status_code == 409:
            problem = response.json()
            assert (problem["code"], problem["slot_left"]) == ("sold-out", 0), problem
        where = yonghe("1300") if response.status_code == 200 else source
        assert (await read(client, headers, rid))["slot_id"] == where
        assert {row[0] for row in await visitor_rows(runtime, rid)} == {where}
        finals.append(where)
    today = final_usage([yonghe("1300"), *finals], [2] + [1] * 14, TODAY)
    assert today["1300"] == 6
    await assert_usage(runtime, today, YONGHE)
    await assert_usage(runtime, final_usage(finals, [1] * 14, TOMORROW), YONGHE_TOMORROW)
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)
    async with runtime.sessions() as session:
        units = (
            await session.execute(
                sa.select(col(Visitor.slot_unit)).where(
                    col(Visitor.slot_id) == yonghe("1300"), col(Visitor.active)
                )
            )
        ).scalars()
        assert sorted(units) == [1, 2, 3, 4, 5, 6]


# The event loop interleaves racing requests differently with each delay (SQLite answers
# from its own thread, so which one wins also varies from run to run): every outcome is
# allowed, and each must leave the reservation in exactly one slot, or none once cancelled.
DELAYS = (0, 10, 30, 50, 70, 90, 120, 160)


@pytest.mark.slow
@pytest.mark.parametrize(
    "targets",
    [
        (yonghe("1300"), yonghe("1400")),
        (yonghe("1300", TOMORROW), yonghe("1400", TOMORROW)),
        (yonghe("1300", TOMORROW), yonghe("1400")),
        (yonghe("1400"), yonghe("1300", TOMORROW)),
    ],
    ids=["same-day", "other-day", "other-day-and-same-day", "same-day-and-other-day"],
)
async def test_one_reservation_moved_to_two_slots_at_once_ends_in_one(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], targets: tuple[str, str]
) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for delay in DELAYS:
        rid = (await held(client, tourist, party=3))["id"]

        responses = await asyncio.gather(
            reschedule(client, tourist, rid, targets[0]),
            later(delay, reschedule(client, tourist, rid, targets[1])),
        )

        outcome = (kind(responses[0]), kind(responses[1]))
        seen[outcome] += 1
        # Both moved, one after the other; or one lost the race (or, moving into the day the
        # other had just moved the visitors to, found them there already).
        assert "ok" in outcome, outcome
        assert set(outcome) <= {"ok", "lost the race", "duplicate-visitor"}, outcome
        await runtime.reconciler.wait_pending()
        await assert_in_one_slot(client, runtime, tourist, rid, responses, 3)
        await act(client, tourist, rid, "cancel")
    # Sent at the same instant, both read the reservation before either moved it.
    assert any(outcome != ("ok", "ok") for outcome in seen), seen


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["same-day", "both-days"])
async def test_one_reservation_moved_to_five_slots_at_once_ends_in_one(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], mix: str
) -> None:
    days = [TODAY] * 5 if mix == "same-day" else [TODAY, TOMORROW] * 2 + [TODAY]
    targets = [yonghe(hhmm, day) for hhmm, day in zip(SLOT_KEYS[2:], days, strict=True)]
    for step in (0, 10, 20, 40):
        rid = (await held(client, tourist, party=2))["id"]

        responses = await asyncio.gather(
            *(later(i * step, reschedule(client, tourist, rid, t)) for i, t in enumerate(targets))
        )

        outcomes = Counter(kind(r) for r in responses)
        assert outcomes["ok"] >= 1, outcomes
        # A move that meets the counters being rebuilt (after another lost) is told to retry.
        allowed = {"ok", "lost the race", "duplicate-visitor", "capacity-unavailable"}
        assert set(outcomes) <= allowed, outcomes
        await runtime.reconciler.wait_pending()
        await assert_in_one_slot(client, runtime, tourist, rid, responses, 2)
        await act(client, tourist, rid, "cancel")


async def assert_all_given_back(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], rid: str
) -> None:
    assert (await read(client, headers, rid))["status"] == "cancelled"
    assert {row[4] for row in await visitor_rows(runtime, rid)} == {False}
    await assert_usage(runtime, usage(0), YONGHE)
    await assert_usage(runtime, usage(0), YONGHE_TOMORROW)
    assert await id_hashes(runtime, YONGHE) == await id_hashes(runtime, YONGHE_TOMORROW) == set()
    owner = await owner_of(runtime, rid)
    assert await counted(runtime, owner, YONGHE) == await counted(runtime, owner, YONGHE_TOMORROW)
    assert await counted(runtime, owner, YONGHE) == []
    await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)


@pytest.mark.slow
@pytest.mark.parametrize("target", [yonghe("1300"), yonghe("1300", TOMORROW)])
async def test_a_move_racing_a_cancel_leaves_no_place_at_all(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], target: str
) -> None:
    for i, delay in enumerate(DELAYS):
        rid = (await held(client, tourist, party=2))["id"]
        if i % 2:
            await act(client, tourist, rid, "confirm")

        move, cancel = await asyncio.gather(
            reschedule(client, tourist, rid, target),
            later(delay, client.post(f"/v1/reservations/{rid}/cancel", headers=tourist)),
        )

        assert kind(move) in ("ok", "lost the race", "cancelled first"), move.text
        assert cancel.status_code == 200, cancel.text
        assert cancel.json()["status"] == "cancelled"
        await runtime.reconciler.wait_pending()
        await assert_all_given_back(client, runtime, tourist, rid)


# the same races, each in the one window that matters: between the Redis step and the SQL one


def between_the_two_steps(
    monkeypatch: pytest.MonkeyPatch,
    runtime: Runtime,
    step: str,
    other: Callable[[], Awaitable[httpx.Response]],
) -> list[httpx.Response]:
    """Run `other` (a whole request) right after the next move took its new places in Redis
    (`step`: "move" within a day, "allocate" across days), before it writes SQL."""
    counters = runtime.counters
    original = getattr(counters, step)
    answers: list[httpx.Response] = []

    async def then_the_other(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        if not answers:
            answers.append(httpx.Response(0))  # only once: `other` may move too
            answers[0] = await other()
        return result

    monkeypatch.setattr(counters, step, then_the_other)
    return answers


def step_of(slot_id: str) -> str:
    """The Redis step of a move from the 1st: one script within the day, two across days."""
    return "move" if slot_id.split(".")[1] == TODAY.isoformat() else "allocate"


async def test_a_cancel_between_the_two_steps_of_a_move_wins(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = await new_tourist(client)
    await held(client, other, yonghe("1300"), party=1)
    await held(client, other, yonghe("1300", TOMORROW), party=1)
    for target in (yonghe("1300"), yonghe("1300", TOMORROW)):
        rid = (await held(client, tourist))["id"]
        cancelled = between_the_two_steps(
            monkeypatch,
            runtime,
            step_of(target),
            partial(client.post, f"/v1/reservations/{rid}/cancel", headers=tourist),
        )

        response = await reschedule(client, tourist, rid, target)

        monkeypatch.undo()
        assert kind(response) == "lost the race", response.text
        assert [r.status_code for r in cancelled] == [200]
        assert cancelled[0].json()["slot_id"] == yonghe("1000")
        assert {row[4] for row in await visitor_rows(runtime, rid)} == {False}
        await assert_usage(runtime, usage(1, at_1300=1), YONGHE)
        await assert_usage(runtime, usage(1, at_1300=1), YONGHE_TOMORROW)
        await assert_no_drift(runtime, YONGHE, YONGHE_TOMORROW)
    assert await outbox(runtime) == []


async def test_another_move_between_the_two_steps_of_a_move_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tourist: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Letting it through would mean undoing one of the two by a rebuild from SQL, which, read
    # before the other commits, would count the visitors in the slot they are leaving.
    for first, second in (
        (yonghe("1300"), yonghe("1400")),
        (yonghe("1300"), yonghe("1400", TOMORROW)),
        (yonghe("1300", TOMORROW), yonghe("1400")),
        (yonghe("1300", TOMORROW), yonghe("1400", TOMORROW)),
    ):
        rid = (await held(client, tourist))["id"]
        events = len(await outbox(runtime))
        refused = between_the_two_steps(
            monkeypatch, runtime, step_of(first), partial(reschedule, client, tourist, rid, second)
        )

        response = await reschedule(client, tourist, rid, first)

        monkeypatch.undo()
        assert [r.status_code for r in refused] == [409]
        assert refused[0].json() == {
            "type": "urn:tidegate:problem:invalid-transition",
            "title": "The reservation cannot do that now",
            "status": 409,
            "code": "invalid-transition",
            "detail": f"{rid} changed meanwhile (another request is moving it): try again",
            "instance": f"/v1/reservations/{rid}/reschedule",
        }
        assert kind(response) == "ok", response.text
        await assert_in_one_slot(client, runtime, tourist, rid, [response], 2)
        assert (await read(client, tourist, rid))["slot_id"] == first
        assert [event[4]["slot_id"] for event in (await outbox(runtime))[events:]] == [first]
        # The lease went with the first move: the reservation moves again at once.
        again = await reschedule(client, tourist, rid, second)
        assert kind(again) == "ok", again.text
        await assert_in_one_slot(client, runtime, tourist, rid, [again], 2)
        await act(client, tourist, rid, "cancel")
