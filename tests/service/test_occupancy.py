"""Live occupancy: people inside each site against its instantaneous cap (issue 4, §2).

Real HTTP, SQLite and Redis. Entries take room atomically against the cap; at the cap the
gate is told to hold the visitors (409 site-full, reservation kept). The counters equal what
SQL recorded, also after Redis lost them.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from booking.models import AlertChange, OutboxEvent, ScanEvent, Site
from booking.repository import get_reservation
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

YONGHE = "yonghe-temple"
TODAY = SiteDay(YONGHE, date(2026, 12, 1))
SOUTH = "yonghe-temple.south-gate"


async def gate_token(runtime: Runtime, gate: str) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=gate)
    return {"Authorization": f"Bearer {token.token}"}


async def yonghe_gates(client: httpx.AsyncClient) -> list[str]:
    site = (await client.get(f"/v1/sites/{YONGHE}")).json()
    return [gate["id"] for gate in site["gates"]]


async def ticket_of_a_party(client: httpx.AsyncClient, party: int) -> tuple[str, str]:
    """A confirmed party at Yonghe 10:00; returns (reservation id, entry code)."""
    tourist = await new_tourist(client)
    held = await hold(client, tourist, YONGHE_10, visitors=[visitor() for _ in range(party)])
    assert held.status_code == 201, held.text
    reservation_id = held.json()["id"]
    confirmed = await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=tourist)
    assert confirmed.status_code == 200, confirmed.text
    ticket = await client.get(f"/v1/reservations/{reservation_id}/ticket", headers=tourist)
    assert ticket.status_code == 200, ticket.text
    code: str = ticket.json()["code"]
    return reservation_id, code


async def fresh_code(client: httpx.AsyncClient, runtime: Runtime, reservation_id: str) -> str:
    """A new code for a reservation (codes live a minute): as its owner's phone would show."""

    async with runtime.sessions() as session:
        reservation = await get_reservation(session, reservation_id)
    assert reservation is not None
    ticket = await runtime.gates.ticket(
        owner_id=reservation.owner_id, reservation_id=reservation_id
    )
    return ticket.code


async def scan(
    client: httpx.AsyncClient, gate: str, headers: dict[str, str], code: str, direction: str
) -> httpx.Response:
    return await client.post(
        f"/v1/gates/{gate}/scans", json={"code": code, "direction": direction}, headers=headers
    )


async def set_instant_cap(runtime: Runtime, cap: int) -> None:
    async with runtime.sessions() as session, session.begin():
        await session.execute(sa.update(Site).where(col(Site.id) == YONGHE).values(instant_cap=cap))


async def occupancy(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, object]:
    response = await client.get(f"/v1/sites/{YONGHE}/occupancy", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_entries_and_exits_move_the_count_and_the_gates_flow(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    south = await gate_token(runtime, SOUTH)
    _, three = await ticket_of_a_party(client, 3)
    pair, two = await ticket_of_a_party(client, 2)
    assert (await scan(client, SOUTH, south, three, "entry")).status_code == 200
    assert (await scan(client, SOUTH, south, two, "entry")).status_code == 200
    clock.advance(timedelta(minutes=1))
    two = await fresh_code(client, runtime, pair)
    assert (await scan(client, SOUTH, south, two, "exit")).status_code == 200
    clock.advance(timedelta(minutes=1))

    body = await occupancy(client, admin)

    assert (body["inside"], body["instant_cap"]) == (3, 1500)
    assert (body["entries_today"], body["exits_today"]) == (5, 2)
    assert (body["entries_last_minute"], body["exits_last_minute"]) == (0, 2)
    gates = {g["gate"]: g for g in body["gates"]}  # type: ignore[attr-defined]
    assert gates[SOUTH] == {
        "gate": SOUTH,
        "entries_today": 5,
        "exits_today": 2,
        "entries_last_minute": 0,
        "exits_last_minute": 2,
    }
    assert body["load"] == 0.002
    curve: Any = body["curve"]
    times = ["09:00", "09:15", "09:30", "09:45", "10:00", "10:02"]
    assert [point["at"][11:16] for point in curve] == times
    assert [point["inside"] for point in curve] == [0, 0, 0, 0, 0, 3]


async def test_at_the_instant_cap_the_gate_holds_visitors_who_keep_their_reservation(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await set_instant_cap(runtime, 4)
    south = await gate_token(runtime, SOUTH)
    _, three = await ticket_of_a_party(client, 3)
    waiting_id, two = await ticket_of_a_party(client, 2)
    assert (await scan(client, SOUTH, south, three, "entry")).status_code == 200

    full = await scan(client, SOUTH, south, two, "entry")

    assert full.status_code == 409, full.text
    assert full.headers["Retry-After"] == "30"
    body = full.json()
    assert (body["code"], body["inside"], body["instant_cap"]) == ("site-full", 3, 4)
    assert body["reservation_id"] == waiting_id
    async with runtime.sessions() as session:
        log = (
            await session.execute(
                sa.select(col(ScanEvent.result), col(ScanEvent.reason)).where(
                    col(ScanEvent.reservation_id) == waiting_id
                )
            )
        ).all()
    assert [tuple(row) for row in log] == [("refused", "site-full")]
    # An exit makes room: the same code now lets the party in.
    left = await scan(client, SOUTH, south, three, "exit")
    assert left.status_code == 200
    admitted = await scan(client, SOUTH, south, two, "entry")
    assert admitted.status_code == 200, admitted.text
    assert (await occupancy(client, admin))["inside"] == 2


async def test_many_gates_at_once_never_let_the_site_overflow(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await set_instant_cap(runtime, 5)
    gates = await yonghe_gates(client)
    tokens = {gate: await gate_token(runtime, gate) for gate in gates}
    codes = [(await ticket_of_a_party(client, 2))[1] for _ in range(6)]

    answers = await asyncio.gather(
        *(
            scan(client, gates[i % len(gates)], tokens[gates[i % len(gates)]], code, "entry")
            for i, code in enumerate(codes)
        )
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 409, 409, 409, 409]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"site-full"}
    assert (await occupancy(client, admin))["inside"] == 4


async def test_counts_equal_sql_after_redis_lost_them(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    south = await gate_token(runtime, SOUTH)
    tickets = [await ticket_of_a_party(client, party) for party in (1, 2, 3)]
    for _, code in tickets:
        assert (await scan(client, SOUTH, south, code, "entry")).status_code == 200
    clock.advance(timedelta(minutes=1))
    again = await fresh_code(client, runtime, tickets[1][0])
    assert (await scan(client, SOUTH, south, again, "exit")).status_code == 200
    clock.advance(timedelta(minutes=1))
    before = await occupancy(client, admin)

    await runtime.redis.flushall()
    after = await occupancy(client, admin)

    assert after == before
    assert (after["inside"], after["entries_today"], after["exits_today"]) == (4, 6, 2)


async def test_an_entry_after_redis_lost_the_counts_counts_from_sql_first(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await set_instant_cap(runtime, 3)
    south = await gate_token(runtime, SOUTH)
    _, first = await ticket_of_a_party(client, 2)
    _, second = await ticket_of_a_party(client, 2)
    assert (await scan(client, SOUTH, south, first, "entry")).status_code == 200
    await runtime.redis.flushall()
    await runtime.reconciler.rebuild(TODAY)  # the booking counters, not the occupancy

    refused = await scan(client, SOUTH, south, second, "entry")

    # Two are inside by SQL's record: two more would make four, over the cap of three.
    assert (refused.status_code, refused.json()["code"], refused.json()["inside"]) == (
        409,
        "site-full",
        2,
    )


async def test_occupancy_is_for_the_sites_staff(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    operator = await runtime.accounts.create_staff_token(role="operator", sites=[YONGHE])
    other = await runtime.accounts.create_staff_token(role="operator", sites=["palace-museum"])
    url = f"/v1/sites/{YONGHE}/occupancy"
    ok = await client.get(url, headers={"Authorization": f"Bearer {operator.token}"})
    assert ok.status_code == 200, ok.text
    elsewhere = await client.get(url, headers={"Authorization": f"Bearer {other.token}"})
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (403, "forbidden")
    assert (await client.get(url, headers=tourist)).status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_after_the_last_entry_unused_tickets_are_no_shows_and_at_closing_all_leave(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    south = await gate_token(runtime, SOUTH)
    unused, _ = await ticket_of_a_party(client, 2)
    came, code = await ticket_of_a_party(client, 3)
    assert (await scan(client, SOUTH, south, code, "entry")).status_code == 200

    clock.advance(timedelta(hours=5, minutes=59))  # 15:59 in Beijing: entry still possible
    assert await runtime.gates.end_of_day() == (0, 0)
    clock.advance(timedelta(minutes=1))  # 16:00, the last entry
    assert await runtime.gates.end_of_day() == (1, 0)
    assert (await occupancy(client, admin))["inside"] == 3
    clock.advance(timedelta(minutes=30))  # 16:30, closing
    assert await runtime.gates.end_of_day() == (0, 3)
    assert await runtime.gates.end_of_day() == (0, 0)  # once

    assert (await occupancy(client, admin))["inside"] == 0
    async with runtime.sessions() as session:
        first = await get_reservation(session, unused)
        second = await get_reservation(session, came)
    assert first is not None
    assert second is not None
    assert (first.status, second.status) == ("no_show", "completed")
    report = await client.get(
        f"/v1/sites/{YONGHE}/reports", params={"from": "2026-12-01"}, headers=admin
    )
    row = report.json()[0]
    assert (row["no_show"], row["entered"], row["confirmed"]) == (2, 3, 0)


async def alert_changes(runtime: Runtime) -> list[tuple[str, str, float, float, str]]:
    async with runtime.sessions() as session:
        rows = (
            (await session.execute(sa.select(AlertChange).order_by(col(AlertChange.id))))
            .scalars()
            .all()
        )
    return [(r.level_from, r.level_to, r.instant_load, r.day_load, r.action) for r in rows]


async def level_events(runtime: Runtime) -> list[dict[str, object]]:
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic) == "site.alert_level")
            .order_by(col(OutboxEvent.id))
        )
        return [event.payload for event in (await session.execute(query)).scalars()]


async def test_alert_levels_follow_the_instantaneous_load_and_are_recorded_once(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    await set_instant_cap(runtime, 20)
    south = await gate_token(runtime, SOUTH)
    parties = [await ticket_of_a_party(client, n) for n in (5, 5, 5, 1, 2, 1, 1)]

    async def enter(index: int) -> None:
        code = await fresh_code(client, runtime, parties[index][0])
        assert (await scan(client, SOUTH, south, code, "entry")).status_code == 200

    for index in range(3):  # 15 of 20: 75 %
        await enter(index)
    assert (await occupancy(client, admin))["level"] == "green"
    await enter(3)  # 16: 80 %
    body = await occupancy(client, admin)
    assert (body["level"], body["action"]) == (
        "yellow",
        "announce the crowding; stop selling the rest of the day",
    )
    # Yellow stops selling the rest of the day; other days sell on.
    late = await hold(client, await new_tourist(client), "yonghe-temple.2026-12-01.1400")
    assert (late.status_code, late.json()["code"]) == (409, "site-closed")
    tomorrow = await hold(client, await new_tourist(client), "yonghe-temple.2026-12-02.1400")
    assert tomorrow.status_code == 201, tomorrow.text
    site = (await client.get(f"/v1/sites/{YONGHE}")).json()
    assert site["today"]["open"] is False
    await enter(4)  # 18: 90 %
    assert (await occupancy(client, admin))["level"] == "orange"
    await enter(5)  # 19: 95 %
    assert (await occupancy(client, admin))["level"] == "red"
    await enter(6)  # 20: 100 %
    assert (await occupancy(client, admin))["level"] == "pause"
    code = await fresh_code(client, runtime, parties[0][0])
    assert (await scan(client, SOUTH, south, code, "exit")).status_code == 200  # 15: 75 %

    changes = await alert_changes(runtime)
    assert [c[:2] for c in changes] == [
        ("green", "yellow"),
        ("yellow", "orange"),
        ("orange", "red"),
        ("red", "pause"),
        ("pause", "green"),
    ]
    assert [c[4] for c in changes] == [
        "announce the crowding; stop selling the rest of the day",
        "send visitors to less crowded areas and gates; staff the gates",
        "limit entry to the flow that exits allow; prepare the emergency plan",
        "pause entry until exits make room",
        "normal operation",
    ]
    assert (await alert_changes(runtime))[0][2:4] == (0.8, 0.0021)
    events = await level_events(runtime)
    assert [(e["from"], e["to"]) for e in events] == [c[:2] for c in changes]
    assert events[3]["action"] == "pause entry until exits make room"


async def test_a_site_may_set_its_own_thresholds(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await set_instant_cap(runtime, 10)
    changed = await client.patch(
        f"/v1/sites/{YONGHE}",
        json={"alert_thresholds": {"yellow": 0.5, "orange": 0.6, "red": 0.7, "pause": 1.0}},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    south = await gate_token(runtime, SOUTH)
    _, code = await ticket_of_a_party(client, 5)
    assert (await scan(client, SOUTH, south, code, "entry")).status_code == 200
    assert (await occupancy(client, admin))["level"] == "yellow"

    bad = await client.patch(
        f"/v1/sites/{YONGHE}",
        json={"alert_thresholds": {"yellow": 0.9, "orange": 0.6, "red": 0.7, "pause": 1.0}},
        headers=admin,
    )
    assert bad.status_code == 422
    assert [(e["field"], e["rule"]) for e in bad.json()["errors"]] == [
        ("alert_thresholds", "rising")
    ]


async def test_a_sales_stop_outlives_a_redis_restart(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await set_instant_cap(runtime, 4)
    south = await gate_token(runtime, SOUTH)
    _, code = await ticket_of_a_party(client, 4)  # 100 %: pause, and sales stop
    assert (await scan(client, SOUTH, south, code, "entry")).status_code == 200

    await runtime.redis.flushall()
    await runtime.reconciler.rebuild(TODAY)

    late = await hold(client, await new_tourist(client), "yonghe-temple.2026-12-01.1400")
    assert (late.status_code, late.json()["code"]) == (409, "site-closed")
