"""Fair release over HTTP: entries in the pre-queue window, the day refusing every other sale
until the draw is served, the shuffle anyone can replay from its seed, entries served in order
(best choice with room, else lost), late entries behind the drawn ones, one entry per account
and per person, two sweepers at once, Redis lost mid-draw, and who may enter.

Yonghe Temple sells a date one day ahead at 00:00 in Beijing: the 3rd goes on sale at 16:00
UTC on the 1st, the test clock's day. With a pre-queue of 60 minutes its draw takes entries
from 15:00 UTC.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlmodel import col

from booking import draws as draws_module
from booking.draws import draw_order
from booking.models import Draw, DrawEntry, DrawPerson, OutboxEvent, Reservation
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.background import sweep_once
from service.runtime import Runtime
from tests.conftest import hold, new_tourist, runtime_of, visitor
from tests.service.test_manage_api import manager
from tests.service.test_reservations_api import (
    BEIJING,
    act,
    assert_problem,
    masked,
    remaining,
    reservation,
    set_capacity,
)

SITE = "yonghe-temple"
DAY = "2026-12-03"
SITE_DAY = SiteDay(SITE, date(2026, 12, 3))
RELEASE = datetime(2026, 12, 2, tzinfo=BEIJING).astimezone(UTC)  # 16:00 UTC on the 1st
PREQUEUE = timedelta(minutes=60)
PREQUEUE_OPENS = RELEASE - PREQUEUE
HOLD_TTL = timedelta(minutes=15)
ENTRIES = "/v1/draws/entries"
DRAW = f"/v1/draws/{SITE}/{DAY}"
Headers = dict[str, str]
Body = dict[str, Any]


# helpers -----------------------------------------------------------------------------------


def slot(hhmm: str) -> str:
    return f"{SITE}.{DAY}.{hhmm}"


def instant(at: datetime) -> str:
    """An instant as the API writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def release_fairly(client: httpx.AsyncClient, headers: Headers, minutes: int = 60) -> None:
    response = await client.patch(
        f"/v1/sites/{SITE}", json={"fair_release": {"prequeue_minutes": minutes}}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["fair_release"] == {"prequeue_minutes": minutes}


async def enter(
    client: httpx.AsyncClient,
    headers: Headers,
    choices: Sequence[str],
    visitors: list[dict[str, str]] | None = None,
) -> httpx.Response:
    body = {"choices": list(choices), "visitors": visitors or [visitor()]}
    return await client.post(ENTRIES, json=body, headers=headers)


async def entered(
    client: httpx.AsyncClient,
    headers: Headers,
    choices: Sequence[str],
    visitors: list[dict[str, str]] | None = None,
) -> Body:
    response = await enter(client, headers, choices, visitors)
    assert response.status_code == 201, response.text
    body: Body = response.json()
    return body


async def entry_of(client: httpx.AsyncClient, headers: Headers, entry_id: str) -> Body:
    response = await client.get(f"{ENTRIES}/{entry_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def the_draw(client: httpx.AsyncClient) -> Body:
    """The draw as anyone audits it: no token."""
    response = await client.get(DRAW)
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def account_of(runtime: Runtime, headers: Headers) -> str:
    principal = await runtime.accounts.authenticate(headers["Authorization"].split()[1])
    assert principal.account_id is not None
    return principal.account_id


def visitors_public(visitors: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {"name": v["name"], "id_type": v["id_type"], "id_number_masked": masked(v["id_number"])}
        for v in visitors
    ]


def queued(
    entry_id: str,
    choices: Sequence[str],
    visitors: list[dict[str, str]],
    *,
    early: bool,
    created_at: datetime,
) -> Body:
    """An entry as it reads before it is served."""
    return {
        "id": entry_id,
        "status": "queued",
        "site": SITE,
        "date": DAY,
        "choices": list(choices),
        "party_size": len(visitors),
        "early": early,
        "position": None,
        "slot_id": None,
        "choice": None,
        "reservation_id": None,
        "offer_expires_at": None,
        "visitors": visitors_public(visitors),
        "created_at": instant(created_at),
    }


@dataclass
class Entrant:
    headers: Headers
    account: str
    choices: list[str]
    visitors: list[dict[str, str]]
    body: Body

    @property
    def id(self) -> str:
        entry_id: str = self.body["id"]
        return entry_id


async def entrant(client: httpx.AsyncClient, choices: Sequence[str], party: int = 1) -> Entrant:
    """A new tourist entering the draw."""
    headers = await new_tourist(client)
    visitors = [visitor() for _ in range(party)]
    body = await entered(client, headers, choices, visitors)
    return Entrant(
        headers, await account_of(runtime_of(client), headers), list(choices), visitors, body
    )


def expected_outcome(
    order: Sequence[str], entrants: dict[str, Entrant], capacities: dict[str, int]
) -> dict[str, tuple[str, int] | None]:
    """What serving `order` must give each entry: its first choice with room for the whole
    party (the slot, which choice), else None (lost). Computed here, not by tidegate."""
    left = dict(capacities)
    outcome: dict[str, tuple[str, int] | None] = {}
    for entry_id in order:
        e = entrants[entry_id]
        outcome[entry_id] = None
        for rank, choice in enumerate(e.choices, start=1):
            if left[choice] >= len(e.visitors):
                left[choice] -= len(e.visitors)
                outcome[entry_id] = (choice, rank)
                break
    return outcome


async def draw_events(runtime: Runtime) -> list[tuple[str, str | None, str | None, Body]]:
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic).in_(["draw.won", "draw.lost"]))
            .order_by(col(OutboxEvent.id))
        )
        return [
            (e.topic, e.site_id, e.account_id, e.payload)
            for e in (await session.execute(query)).scalars()
        ]


async def reservations_of_day(runtime: Runtime) -> list[Reservation]:
    async with runtime.sessions() as session:
        query = (
            sa.select(Reservation)
            .where(
                col(Reservation.site_id) == SITE,
                col(Reservation.visit_date) == SITE_DAY.visit_date,
            )
            .order_by(col(Reservation.created_at), col(Reservation.id))
        )
        return list((await session.execute(query)).scalars())


async def count(runtime: Runtime, table: type[Any]) -> int:
    async with runtime.sessions() as session:
        return int(
            (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        )


def as_read(entry: DrawEntry) -> DrawEntry:
    """A copy of an entry as it was read, whatever is written to the row later."""
    return DrawEntry(**{name: getattr(entry, name) for name in DrawEntry.model_fields})


async def assert_counted(runtime: Runtime, used: dict[str, int], day_used: int) -> None:
    """Redis counts exactly these places, and SQL proves every one of them."""
    load = await runtime.counters.load(SITE_DAY)
    assert load is not None
    assert {key: load.slots[key].used for key in used} == used
    assert load.day.used == day_used
    drift = await runtime.reconciler.reconcile_day(SITE_DAY)
    assert (drift.missing, drift.leaked, drift.returned, drift.rebuilt) == (0, 0, 0, False)


def assert_pending(response: httpx.Response) -> None:
    """A direct hold refused while the draw is not served."""
    title = "This date is released by a draw: join it with POST /v1/draws/entries"
    assert_problem(response, 409, "fair-release-pending", title, title, "/v1/reservations")


def assert_already_in_draw(response: httpx.Response) -> None:
    assert_problem(
        response,
        409,
        "already-in-draw",
        "This account or one of these visitors already has an entry in this draw",
        "one entry per account and per person in a draw: this one changes nothing",
        ENTRIES,
    )


def assert_draw_over(response: httpx.Response) -> None:
    assert_problem(
        response,
        409,
        "draw-not-open",
        "This draw takes no entries now",
        "the draw is over: the date is on general sale, book it directly",
        ENTRIES,
    )


@pytest.fixture
async def fair(client: httpx.AsyncClient, runtime: Runtime) -> Headers:
    """Yonghe Temple releases its dates fairly, set by its own manager; returns the manager."""
    headers = await manager(runtime, SITE)
    await release_fairly(client, headers)
    return headers


# the whole flow ----------------------------------------------------------------------------


async def test_a_fair_release_draws_its_entries_and_serves_each_its_best_choice_with_room(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
) -> None:
    capacities = {slot("0900"): 2, slot("1000"): 2, slot("1100"): 2}
    for slot_id, capacity in capacities.items():
        await set_capacity(client, admin, slot_id, capacity)
    choices = list(capacities)
    clock.set(PREQUEUE_OPENS)

    # Eight entrants for six places, all wanting 09:00, then 10:00, then 11:00.
    entrants = [await entrant(client, choices) for _ in range(8)]

    first = entrants[0]
    assert re.fullmatch(r"[0-9a-f]{32}", first.id), first.id
    assert first.body == queued(
        first.id, choices, first.visitors, early=True, created_at=PREQUEUE_OPENS
    )
    for e in entrants:
        assert await entry_of(client, e.headers, e.id) == e.body
    assert len({e.id for e in entrants}) == 8
    assert await the_draw(client) == {
        "site": SITE,
        "date": DAY,
        "prequeue_opens_at": instant(PREQUEUE_OPENS),
        "opens_at": instant(RELEASE),
        "status": "open",
        "seed": None,
        "drawn_at": None,
        "served_at": None,
        "entries": [e.id for e in entrants],
        "order": None,
        "late_entries": 0,
    }
    # Nobody books around the draw: not in the pre-queue window, not after the release time
    # until the draw is served.
    booker = await new_tourist(client)
    assert (await hold(client, booker, slot("0900"))).status_code == 409
    clock.set(RELEASE)
    assert_pending(await hold(client, booker, slot("0900")))
    assert_pending(await hold(client, booker, slot("1200")))  # nobody chose it: refused too
    assert await reservations_of_day(runtime) == []
    assert [await remaining(client, s) for s in choices] == [2, 2, 2]

    await sweep_once(runtime)

    audit = await the_draw(client)
    seed = audit["seed"]
    assert isinstance(seed, str)
    assert re.fullmatch(r"[0-9a-f]{32}", seed), seed
    order = [e.id for e in entrants]
    random.Random(seed).shuffle(order)
    assert audit == {
        "site": SITE,
        "date": DAY,
        "prequeue_opens_at": instant(PREQUEUE_OPENS),
        "opens_at": instant(RELEASE),
        "status": "served",
        "seed": seed,
        "drawn_at": instant(RELEASE),
        "served_at": instant(RELEASE),
        "entries": [e.id for e in entrants],
        "order": order,
        "late_entries": 0,
    }
    # In the drawn order: two get 09:00, two 10:00 (their second choice), two 11:00 (their
    # third), two lose.
    by_id = {e.id: e for e in entrants}
    expected = [(slot("0900"), 1)] * 2 + [(slot("1000"), 2)] * 2 + [(slot("1100"), 3)] * 2
    outcome = expected_outcome(order, by_id, capacities)
    assert [outcome[entry_id] for entry_id in order] == [*expected, None, None]

    won: dict[str, str] = {}  # entry id -> its hold
    for position, entry_id in enumerate(order, start=1):
        e = by_id[entry_id]
        got = await entry_of(client, e.headers, entry_id)
        result = outcome[entry_id]
        if result is None:
            assert got == {**e.body, "status": "lost", "position": position}
            continue
        reservation_id = got["reservation_id"]
        assert isinstance(reservation_id, str)
        won[entry_id] = reservation_id
        assert got == {
            **e.body,
            "status": "won",
            "position": position,
            "slot_id": result[0],
            "choice": result[1],
            "reservation_id": reservation_id,
            "offer_expires_at": instant(RELEASE + HOLD_TTL),
        }
        # The hold is the entrant's own, with the entrant's visitors.
        hhmm = result[0][-4:]
        start = f"{DAY}T{hhmm[:2]}:{hhmm[2:]}:00+08:00"
        end = f"{DAY}T{int(hhmm[:2]) + 1:02d}:{hhmm[2:]}:00+08:00"
        assert await reservation(client, e.headers, reservation_id) == {
            "id": reservation_id,
            "status": "held",
            "site": SITE,
            "slot_id": result[0],
            "date": DAY,
            "start": start,
            "end": end,
            "party_size": 1,
            "visitors": visitors_public(e.visitors),
            "expires_at": instant(RELEASE + HOLD_TTL),
            "created_at": instant(RELEASE),
            "cancel_reason": None,
            "alternatives": None,
        }
    assert len(won) == 6

    # Exactly the capacity sold, no slot oversold, and SQL holds exactly the won entries.
    assert [await remaining(client, s) for s in choices] == [0, 0, 0]
    rows = await reservations_of_day(runtime)
    assert sorted((r.id, r.owner_id, r.slot_id, r.status, r.party_size) for r in rows) == sorted(
        (won[i], by_id[i].account, result[0], "held", 1)
        for i, result in outcome.items()
        if result is not None
    )
    await assert_counted(runtime, {"0900": 2, "1000": 2, "1100": 2, "1200": 0}, 6)

    # One event per entry, in the drawn order.
    events: list[tuple[str, str | None, str | None, Body]] = []
    for position, entry_id in enumerate(order, start=1):
        e = by_id[entry_id]
        payload: Body = {
            "draw_entry": entry_id,
            "account": e.account,
            "choices": choices,
            "position": position,
        }
        result = outcome[entry_id]
        if result is None:
            events.append(("draw.lost", SITE, e.account, {**payload, "reason": "sold-out"}))
        else:
            payload |= {"reservation": won[entry_id], "slot_id": result[0], "choice": result[1]}
            events.append(("draw.won", SITE, e.account, payload))
    assert await draw_events(runtime) == events

    # A won hold is confirmed like any hold.
    winner = by_id[order[0]]
    confirmed = await act(client, winner.headers, won[winner.id], "confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed"
    assert (await entry_of(client, winner.headers, winner.id))["offer_expires_at"] is None

    # Served: the day is on general sale, and the draw takes no more entries.
    direct = await hold(client, booker, slot("1200"))
    assert direct.status_code == 201, direct.text
    assert await remaining(client, slot("1200")) == 999
    assert_draw_over(await enter(client, await new_tourist(client), [slot("1200")]))
    assert await count(runtime, DrawEntry) == 8
    # Another sweep changes nothing.
    await sweep_once(runtime)
    assert await draw_events(runtime) == events
    assert await the_draw(client) == audit


async def test_a_direct_hold_in_the_prequeue_window_is_told_to_join_the_draw(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock
) -> None:
    clock.set(PREQUEUE_OPENS + timedelta(minutes=30))
    await entrant(client, [slot("0900")])

    assert_pending(await hold(client, await new_tourist(client), slot("0900")))


# the audit ---------------------------------------------------------------------------------


async def test_anyone_can_replay_the_order_from_the_seed_and_check_who_won(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
) -> None:
    capacities = {slot("0900"): 3, slot("1000"): 2, slot("1100"): 4, slot("1200"): 1}
    for slot_id, capacity in capacities.items():
        await set_capacity(client, admin, slot_id, capacity)
    a, b, c, d = capacities
    wishes = [
        ([a, b, c], 2),
        ([a], 3),
        ([b, a], 1),
        ([c, d, a], 3),
        ([d], 1),
        ([b, c], 2),
        ([a, d], 1),
        ([c], 2),
        ([d, b, c], 1),
        ([a, b], 2),
    ]
    clock.set(PREQUEUE_OPENS)
    entrants = []
    for choices, party in wishes:
        entrants.append(await entrant(client, choices, party))
        clock.advance(timedelta(seconds=7))
    clock.set(RELEASE)
    await sweep_once(runtime)

    audit = await the_draw(client)
    entries = [e.id for e in entrants]
    assert audit["entries"] == entries
    assert audit["order"] == draw_order(entries, audit["seed"])
    replayed = list(entries)
    random.Random(audit["seed"]).shuffle(replayed)
    assert audit["order"] == replayed

    # The winners are exactly the first in that order whose choices still had room.
    by_id = {e.id: e for e in entrants}
    outcome = expected_outcome(replayed, by_id, capacities)
    sold: Counter[str] = Counter()
    for position, entry_id in enumerate(replayed, start=1):
        e = by_id[entry_id]
        got = await entry_of(client, e.headers, entry_id)
        result = outcome[entry_id]
        assert (got["status"], got["position"], got["slot_id"], got["choice"]) == (
            ("lost", position, None, None)
            if result is None
            else ("won", position, result[0], result[1])
        )
        if result is not None:
            sold[result[0]] += len(e.visitors)
            row = await reservation(client, e.headers, got["reservation_id"])
            assert (row["slot_id"], row["party_size"]) == (result[0], len(e.visitors))
    for slot_id, capacity in capacities.items():
        assert sold[slot_id] <= capacity
        assert await remaining(client, slot_id) == capacity - sold[slot_id]
    rows = await reservations_of_day(runtime)
    assert sorted((r.owner_id, r.slot_id, r.party_size) for r in rows) == sorted(
        (by_id[i].account, result[0], len(by_id[i].visitors))
        for i, result in outcome.items()
        if result is not None
    )
    await assert_counted(runtime, {s[-4:]: sold[s] for s in capacities}, sum(sold.values()))


async def test_the_draw_of_a_day_nobody_entered_is_not_found(
    client: httpx.AsyncClient, fair: Headers
) -> None:
    for path, detail in (
        (DRAW, f"no draw of {SITE} on {DAY}"),
        (f"/v1/draws/{SITE}/2026-12-02", f"no draw of {SITE} on 2026-12-02"),
        (f"/v1/draws/no-such-site/{DAY}", f"no draw of no-such-site on {DAY}"),
    ):
        assert_problem(await client.get(path), 404, "not-found", "Not found", detail, path)


# late entries ------------------------------------------------------------------------------


async def test_entries_after_the_release_time_are_served_after_the_drawn_ones_in_arrival_order(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
) -> None:
    # Four places: the three drawn entries and the first late one.
    await set_capacity(client, admin, slot("1000"), 4)
    choices = [slot("1000")]
    clock.set(PREQUEUE_OPENS + timedelta(minutes=59))
    early = [await entrant(client, choices) for _ in range(3)]
    clock.set(RELEASE)
    late = []
    for _ in range(3):
        late.append(await entrant(client, choices))
        clock.advance(timedelta(seconds=1))
    assert [e.body for e in late] == [
        queued(e.id, choices, e.visitors, early=False, created_at=RELEASE + timedelta(seconds=i))
        for i, e in enumerate(late)
    ]
    audit = await the_draw(client)
    assert (audit["status"], audit["entries"], audit["late_entries"]) == (
        "open",
        [e.id for e in early],
        3,
    )

    await sweep_once(runtime)

    audit = await the_draw(client)
    assert (audit["status"], audit["entries"], audit["late_entries"]) == (
        "served",
        [e.id for e in early],
        3,
    )
    order = draw_order([e.id for e in early], audit["seed"])
    assert audit["order"] == order
    # Served: the drawn ones in the drawn order, then the late ones as they came.
    served = [payload["draw_entry"] for _, _, _, payload in await draw_events(runtime)]
    assert served == [*order, *(e.id for e in late)]
    outcomes = [(topic, payload["position"]) for topic, _, _, payload in await draw_events(runtime)]
    assert outcomes == [
        ("draw.won", 1),
        ("draw.won", 2),
        ("draw.won", 3),
        ("draw.won", None),
        ("draw.lost", None),
        ("draw.lost", None),
    ]
    got = [await entry_of(client, e.headers, e.id) for e in late]
    assert [(g["status"], g["early"], g["position"]) for g in got] == [
        ("won", False, None),
        ("lost", False, None),
        ("lost", False, None),
    ]
    assert await remaining(client, slot("1000")) == 0
    await assert_counted(runtime, {"1000": 4}, 4)


# entering: the rules -----------------------------------------------------------------------


async def test_entering_before_the_prequeue_window_is_409_outside_booking_window(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS - timedelta(seconds=1))
    tourist = await new_tourist(client)

    assert_problem(
        await enter(client, tourist, [slot("0900")]),
        409,
        "outside-booking-window",
        "This slot is not on sale now",
        "the draw takes entries from 2026-12-01T23:00:00+08:00",
        ENTRIES,
        sales_open_at="2026-12-01T23:00:00+08:00",
        sales_close_at="2026-12-02T00:00:00+08:00",
    )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)
    clock.set(PREQUEUE_OPENS)
    assert (await entered(client, tourist, [slot("0900")]))["early"] is True


async def test_entering_at_a_site_without_fair_release_is_409_not_a_fair_release(
    client: httpx.AsyncClient, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    response = await enter(client, await new_tourist(client), [slot("0900")])

    assert_problem(
        response,
        409,
        "not-a-fair-release",
        "This date is not released by a draw",
        f"{SITE} sells its dates first come, first served",
        ENTRIES,
    )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)


async def test_entering_after_the_release_time_of_a_day_nobody_entered_is_409_draw_not_open(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(RELEASE)
    tourist = await new_tourist(client)

    assert_problem(
        await enter(client, tourist, [slot("0900")]),
        409,
        "draw-not-open",
        "This draw takes no entries now",
        "nobody entered before the release: book the date directly",
        ENTRIES,
    )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)
    # Nothing to wait for: the day is on general sale.
    assert (await hold(client, tourist, slot("0900"))).status_code == 201


async def test_choices_from_two_site_days_are_422_one_site_day(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    tourist = await new_tourist(client)
    message = "the choices are slots of one site on one day"
    for choices in (
        [slot("0900"), f"{SITE}.2026-12-02.0900"],
        [slot("0900"), "confucius-temple.2026-12-03.0900"],
    ):
        assert_problem(
            await enter(client, tourist, choices),
            422,
            "validation-failed",
            "The request is not valid",
            f"choices: {message} (one-site-day)",
            ENTRIES,
            errors=[{"in": "body", "field": "choices", "rule": "one-site-day", "message": message}],
        )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)


async def test_a_slot_chosen_twice_or_four_choices_are_422(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    tourist = await new_tourist(client)

    twice = await enter(client, tourist, [slot("0900"), slot("1000"), slot("0900")])
    assert_problem(
        twice,
        422,
        "validation-failed",
        "The request is not valid",
        "choices: a slot is chosen once (distinct)",
        ENTRIES,
        errors=[
            {
                "in": "body",
                "field": "choices",
                "rule": "distinct",
                "message": "a slot is chosen once",
            }
        ],
    )
    four = await enter(client, tourist, [slot(h) for h in ("0900", "1000", "1100", "1200")])
    assert four.status_code == 422, four.text
    assert [(e["field"], e["rule"]) for e in four.json()["errors"]] == [("choices", "too_long")]
    none = await enter(client, tourist, [])
    assert none.status_code == 422, none.text
    assert [(e["field"], e["rule"]) for e in none.json()["errors"]] == [("choices", "too_short")]
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)


async def test_choosing_a_slot_that_does_not_exist_is_404(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    tourist = await new_tourist(client)
    for missing in (slot("0930"), "no-such-site.2026-12-03.0900"):
        assert_problem(
            await enter(client, tourist, [missing]),
            404,
            "not-found",
            "Not found",
            f"no slot {missing}" if missing.startswith(SITE) else "no site no-such-site",
            ENTRIES,
        )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)


async def test_a_party_larger_than_the_sites_limit_is_422_party_too_large(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    tourist = await new_tourist(client)

    assert_problem(
        await enter(client, tourist, [slot("0900")], [visitor() for _ in range(6)]),
        422,
        "party-too-large",
        "Too many visitors in one reservation",
        "6 visitors asked for; at most 5 here",
        ENTRIES,
        max_party_size=5,
    )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)
    assert (await entered(client, tourist, [slot("0900")], [visitor() for _ in range(5)]))[
        "party_size"
    ] == 5


async def test_one_person_named_twice_in_a_party_is_409_duplicate_visitor(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    person = visitor()

    response = await enter(
        client, await new_tourist(client), [slot("0900")], [visitor(), person, dict(person)]
    )

    # As a hold and a waitlist answer it (capacity/errors.py DuplicateVisitor).
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 3 is named twice in this party",
        ENTRIES,
        visitor_index=2,
    )
    assert await count(runtime, DrawEntry) == 0


# fairness ----------------------------------------------------------------------------------


async def test_a_thousand_requests_from_one_account_make_one_entry(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock, runtime: Runtime
) -> None:
    clock.set(PREQUEUE_OPENS)
    bot = await new_tourist(client)
    parties = [[visitor()] for _ in range(1000)]
    responses: list[httpx.Response] = []
    for start in range(0, 1000, 100):
        responses += await asyncio.gather(
            *(enter(client, bot, [slot("0900")], party) for party in parties[start : start + 100])
        )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 999}
    for response in responses:
        if response.status_code == 409:
            assert_already_in_draw(response)
    (won,) = [i for i, r in enumerate(responses) if r.status_code == 201]
    body = responses[won].json()
    assert body == queued(
        body["id"], [slot("0900")], parties[won], early=True, created_at=PREQUEUE_OPENS
    )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (1, 1)
    assert await count(runtime, DrawPerson) == 1
    assert (await the_draw(client))["entries"] == [body["id"]]

    # The bot's person under another account, alone or in a party: refused, nothing kept.
    other = await new_tourist(client)
    stranger = visitor()
    assert_already_in_draw(await enter(client, other, [slot("1000")], parties[won]))
    assert_already_in_draw(await enter(client, other, [slot("1000")], [stranger, *parties[won]]))
    assert (await count(runtime, DrawEntry), await count(runtime, DrawPerson)) == (1, 1)
    # The stranger was not kept by the refused party: it may enter.
    assert (await entered(client, other, [slot("1000")], [stranger]))["party_size"] == 1
    assert (await count(runtime, DrawEntry), await count(runtime, DrawPerson)) == (2, 2)


SEEDS = [f"{n:032x}" for n in range(20_000)]  # fixed: the test is reproducible
CHI2_99_9 = {9: 27.877, 5: 20.515}  # chi-square critical values at p = 0.001, by dof


def chi_square(counts: Sequence[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def test_the_first_to_arrive_is_at_each_position_of_the_order_equally_often() -> None:
    entries = [f"e{i}" for i in range(10)]  # e0 is the fastest bot's entry
    positions = Counter(draw_order(entries, seed).index("e0") for seed in SEEDS)

    counts = [positions[p] for p in range(10)]
    assert sum(counts) == 20_000
    assert chi_square(counts) < CHI2_99_9[9], counts
    # And the draw is a plain shuffle: a permutation, the same for the same seed.
    assert sorted(draw_order(entries, SEEDS[7])) == entries
    assert draw_order(entries, SEEDS[7]) == draw_order(entries, SEEDS[7])
    assert draw_order(entries, SEEDS[7]) != draw_order(entries, SEEDS[8])


def test_every_order_of_three_entries_is_equally_likely() -> None:
    orders = Counter(tuple(draw_order(["a", "b", "c"], seed)) for seed in SEEDS)

    assert len(orders) == 6
    assert chi_square(list(orders.values())) < CHI2_99_9[5], orders


@pytest.mark.parametrize("places", [1, 3])
def test_one_entry_wins_with_probability_places_over_entries_whenever_it_arrived(
    places: int,
) -> None:
    entries = [f"e{i}" for i in range(10)]
    wins: Counter[str] = Counter()
    for seed in SEEDS:
        wins.update(draw_order(entries, seed)[:places])

    expected = places / len(entries)
    # Within 4.5 standard deviations of places/N for 20,000 draws.
    tolerance = 4.5 * (expected * (1 - expected) / len(SEEDS)) ** 0.5
    bot, person = wins["e0"] / len(SEEDS), wins["e9"] / len(SEEDS)
    assert abs(bot - expected) < tolerance, (bot, expected)
    assert abs(person - expected) < tolerance, (person, expected)
    assert chi_square([wins[e] for e in entries]) < CHI2_99_9[9], wins


# races -------------------------------------------------------------------------------------


async def test_two_sweepers_at_once_draw_once_and_serve_each_entry_once(
    client: httpx.AsyncClient,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(PREQUEUE_OPENS)
    entrants = [
        await entrant(client, [slot("0900"), slot("1000")], party=1 + i % 3) for i in range(8)
    ]
    clock.set(RELEASE)
    # Both sweepers find the draw open before either draws it; and the second one reads the
    # first entry as it was before the first one took it (what a concurrent reader sees on
    # PostgreSQL; SQLite's single connection would hide it). Only the guarded updates keep
    # them apart.
    found_open = asyncio.Barrier(2)
    shuffle, head = runtime.draws._shuffle, draws_module._head
    first_read: dict[asyncio.Task[Any] | None, DrawEntry] = {}
    seeds: list[str] = []

    async def both_shuffle(draw: Draw, now: datetime) -> None:
        await found_open.wait()
        await shuffle(draw, now)

    async def stale_read(session: Any, draw_id: int) -> DrawEntry | None:
        found = await head(session, draw_id)
        task = asyncio.current_task()
        if task in first_read or found is None:
            return found
        first_read[task] = as_read(found)
        if len(first_read) == 2:
            stale, _ = first_read.values()
            return as_read(stale)
        return found

    def recorded(entry_ids: Sequence[str], seed: str) -> list[str]:
        seeds.append(seed)
        return draw_order(entry_ids, seed)

    monkeypatch.setattr(runtime.draws, "_shuffle", both_shuffle)
    monkeypatch.setattr(draws_module, "_head", stale_read)
    monkeypatch.setattr(draws_module, "draw_order", recorded)

    await asyncio.gather(sweep_once(runtime), sweep_once(runtime))
    monkeypatch.undo()

    assert len(first_read) == 2
    audit = await the_draw(client)
    assert audit["status"] == "served"
    assert seeds == [audit["seed"]]  # drawn once
    order = draw_order([e.id for e in entrants], audit["seed"])
    assert audit["order"] == order
    async with runtime.sessions() as session:
        draws = list((await session.execute(sa.select(Draw))).scalars())
        rows = list((await session.execute(sa.select(DrawEntry))).scalars())
    assert [(d.seed, d.status) for d in draws] == [(audit["seed"], "served")]
    # Positions from that one seed, written once.
    assert sorted((r.position, r.public_id) for r in rows) == [
        (position, entry_id) for position, entry_id in enumerate(order, start=1)
    ]
    # Every party fits its first choice: each entry won once, with exactly one hold.
    assert {r.status for r in rows} == {"won"}
    holds = await reservations_of_day(runtime)
    assert len(holds) == 8
    assert sorted((r.id, r.owner_id) for r in holds) == sorted(
        (r.reservation_id, r.owner_id) for r in rows
    )
    events = await draw_events(runtime)
    assert sorted(p["draw_entry"] for _, _, _, p in events) == sorted(e.id for e in entrants)
    assert {topic for topic, _, _, _ in events} == {"draw.won"}
    places = sum(len(e.visitors) for e in entrants)
    assert await remaining(client, slot("0900")) == 1000 - places
    await assert_counted(runtime, {"0900": places, "1000": 0}, places)


async def test_a_second_sweeper_does_not_serve_an_entry_before_the_one_drawn_ahead_of_it(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One place, two entries: the one drawn first must get it.
    await set_capacity(client, admin, slot("0900"), 1)
    clock.set(PREQUEUE_OPENS)
    entrants = [await entrant(client, [slot("0900")]) for _ in range(2)]
    clock.set(RELEASE)
    hold_offered = runtime.booking.hold_offered
    raced: list[str] = []

    async def another_sweeper_first(**kwargs: Any) -> Any:
        # Another replica's sweeper runs while this one is about to hold for its entry.
        if not raced:
            raced.append(kwargs["owner_id"])
            await runtime.draws.run_due()
        return await hold_offered(**kwargs)

    monkeypatch.setattr(runtime.booking, "hold_offered", another_sweeper_first)
    await sweep_once(runtime)

    order = (await the_draw(client))["order"]
    by_id = {e.id: e for e in entrants}
    assert raced == [by_id[order[0]].account]
    got = [await entry_of(client, by_id[i].headers, i) for i in order]
    assert [(g["position"], g["status"]) for g in got] == [(1, "won"), (2, "lost")]
    await assert_counted(runtime, {"0900": 1}, 1)


async def test_an_entry_that_arrives_while_the_draw_is_served_is_served_or_refused(
    client: httpx.AsyncClient,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(PREQUEUE_OPENS)
    await entrant(client, [slot("0900")])
    clock.set(RELEASE)
    draw_for = runtime.draws._draw_for

    async def sweeper_meanwhile(*args: Any) -> Any:
        found = await draw_for(*args)
        # The sweeper draws and serves every entry between this read and the insert.
        await runtime.draws.run_due()
        return found

    monkeypatch.setattr(runtime.draws, "_draw_for", sweeper_meanwhile)
    late = await new_tourist(client)
    response = await enter(client, late, [slot("1000")])
    monkeypatch.undo()
    await sweep_once(runtime)

    assert (await the_draw(client))["status"] == "served"
    if response.status_code == 201:
        # Taken: then it is served like any late entry, not left queued for ever.
        got = await entry_of(client, late, response.json()["id"])
        assert (got["status"], got["slot_id"]) == ("won", slot("1000"))
    else:
        assert_draw_over(response)
        assert await count(runtime, DrawEntry) == 1


# Redis lost ----------------------------------------------------------------------------------


async def test_counters_rebuilt_after_redis_is_flushed_still_refuse_direct_holds(
    client: httpx.AsyncClient,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
    redis: Redis,
) -> None:
    clock.set(PREQUEUE_OPENS)
    e = await entrant(client, [slot("0900")])
    load = await runtime.counters.load(SITE_DAY)
    assert load is not None
    assert load.drawing is True

    # Redis loses everything in the pre-queue window; the day is built again from SQL.
    await redis.flushdb()
    assert await runtime.counters.load(SITE_DAY) is None
    assert await runtime.reconciler.rebuild_missing() > 0
    load = await runtime.counters.load(SITE_DAY)
    assert load is not None
    assert load.drawing is True

    # And again after the release time, before the draw is served.
    clock.set(RELEASE)
    await redis.flushdb()
    assert await runtime.reconciler.rebuild(SITE_DAY) is True
    booker = await new_tourist(client)
    assert_pending(await hold(client, booker, slot("0900")))
    assert await reservations_of_day(runtime) == []

    await sweep_once(runtime)
    assert (await entry_of(client, e.headers, e.id))["status"] == "won"
    load = await runtime.counters.load(SITE_DAY)
    assert load is not None
    assert load.drawing is False
    assert (await hold(client, booker, slot("0900"))).status_code == 201
    await assert_counted(runtime, {"0900": 2}, 2)


async def test_a_sweep_without_counters_serves_nobody_and_the_next_serves_in_order(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
    redis: Redis,
) -> None:
    await set_capacity(client, admin, slot("0900"), 2)
    clock.set(PREQUEUE_OPENS)
    entrants = [await entrant(client, [slot("0900")]) for _ in range(3)]
    clock.set(RELEASE)
    await redis.flushdb()

    await sweep_once(runtime)

    audit = await the_draw(client)
    assert audit["status"] == "drawn"
    order = draw_order([e.id for e in entrants], audit["seed"])
    by_id = {e.id: e for e in entrants}
    got = [await entry_of(client, by_id[i].headers, i) for i in order]
    assert [(g["status"], g["position"]) for g in got] == [
        ("queued", 1),
        ("queued", 2),
        ("queued", 3),
    ]
    assert await draw_events(runtime) == []
    assert await reservations_of_day(runtime) == []

    # The counters are rebuilt (the refused hold scheduled it), still refusing other sales.
    await runtime.reconciler.wait_pending()
    assert_pending(await hold(client, await new_tourist(client), slot("0900")))
    await sweep_once(runtime)

    assert (await the_draw(client))["status"] == "served"
    got = [await entry_of(client, by_id[i].headers, i) for i in order]
    assert [(g["status"], g["position"]) for g in got] == [
        ("won", 1),
        ("won", 2),
        ("lost", 3),
    ]
    assert [(topic, p["draw_entry"]) for topic, _, _, p in await draw_events(runtime)] == [
        ("draw.won", order[0]),
        ("draw.won", order[1]),
        ("draw.lost", order[2]),
    ]
    await assert_counted(runtime, {"0900": 2}, 2)


# who may enter -----------------------------------------------------------------------------


async def test_entering_needs_a_tourists_token(
    client: httpx.AsyncClient,
    admin: Headers,
    fair: Headers,
    clock: ManualClock,
    runtime: Runtime,
) -> None:
    clock.set(PREQUEUE_OPENS)
    body = {"choices": [slot("0900")], "visitors": [visitor()]}

    response = await client.post(ENTRIES, json=body)
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
        ENTRIES,
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    operator = await runtime.accounts.create_staff_token(role="operator", sites=[SITE])
    for staff in (admin, fair, {"Authorization": f"Bearer {operator.token}"}):
        assert_problem(
            await client.post(ENTRIES, json=body, headers=staff),
            403,
            "forbidden",
            "This token may not do that",
            "this route is for a tourist's account",
            ENTRIES,
        )
    assert (await count(runtime, Draw), await count(runtime, DrawEntry)) == (0, 0)


async def test_somebody_elses_entry_is_not_found(
    client: httpx.AsyncClient, fair: Headers, clock: ManualClock
) -> None:
    clock.set(PREQUEUE_OPENS)
    owner = await entrant(client, [slot("0900")])
    stranger = await new_tourist(client)
    instance = f"{ENTRIES}/{owner.id}"

    assert_problem(
        await client.get(instance, headers=stranger),
        404,
        "not-found",
        "Not found",
        f"no draw entry {owner.id}",
        instance,
    )
    unknown = "0" * 32
    assert_problem(
        await client.get(f"{ENTRIES}/{unknown}", headers=owner.headers),
        404,
        "not-found",
        "Not found",
        f"no draw entry {unknown}",
        f"{ENTRIES}/{unknown}",
    )
    assert (await client.get(instance)).status_code == 401
    assert await entry_of(client, owner.headers, owner.id) == owner.body
