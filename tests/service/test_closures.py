"""Closures by a site's managers: a slot, a day, a whole site (issue 3, §2).

Over HTTP against the real app, SQLite and Redis. A closure cancels what the closed slots
held (`cancelled_by_site`), gives every place back exactly once, offers each owner
alternatives and writes one outbox event per reservation.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from booking import repository
from booking.models import OutboxEvent, SlotStatus
from capacity.keys import SiteDay
from service.background import sweep_once
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

TODAY = date(2026, 12, 1)
YONGHE = SiteDay("yonghe-temple", TODAY)
YONGHE_11 = "yonghe-temple.2026-12-01.1100"
YONGHE_TOMORROW_10 = "yonghe-temple.2026-12-02.1000"


async def booked(client: httpx.AsyncClient, slot_id: str, party: int, *, confirm: bool) -> str:
    tourist = await new_tourist(client)
    response = await hold(client, tourist, slot_id, visitors=[visitor() for _ in range(party)])
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["id"]
    if confirm:
        answer = await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=tourist)
        assert answer.status_code == 200, answer.text
    return reservation_id


async def owner_of(runtime: Runtime, reservation_id: str) -> dict[str, str]:
    """A fresh token of the reservation's owner, to read it as they would."""
    async with runtime.sessions() as session:
        reservation = await repository.get_reservation(session, reservation_id)
        assert reservation is not None
        owner = reservation.owner_id
    async with runtime.sessions() as session, session.begin():
        token = await runtime.accounts._issue(session, account_id=owner, role="tourist")
    return {"Authorization": f"Bearer {token.token}"}


async def used(runtime: Runtime, site_day: SiteDay, slot_key: str) -> tuple[int, int]:
    load = await runtime.counters.load(site_day)
    assert load is not None
    return load.slots[slot_key].used, load.day.used


async def reservation(
    runtime: Runtime, client: httpx.AsyncClient, reservation_id: str
) -> dict[str, object]:
    """A reservation as its owner reads it over HTTP."""
    headers = await owner_of(runtime, reservation_id)
    response = await client.get(f"/v1/reservations/{reservation_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def day_slots(client: httpx.AsyncClient, day: str) -> list[dict[str, object]]:
    response = await client.get("/v1/sites/yonghe-temple/slots", params={"date": day})
    assert response.status_code == 200, response.text
    slots: list[dict[str, object]] = response.json()
    return slots


async def outbox(runtime: Runtime) -> list[OutboxEvent]:
    """The closure's notifications (holds, confirmations and registrations have theirs)."""
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic) == "reservation.cancelled_by_site")
            .order_by(col(OutboxEvent.id))
        )
        return list((await session.execute(query)).scalars())


async def test_closing_a_slot_cancels_its_reservations_and_releases_their_places_once(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    held = await booked(client, YONGHE_10, 2, confirm=False)
    confirmed = await booked(client, YONGHE_10, 3, confirm=True)
    elsewhere = await booked(client, YONGHE_11, 1, confirm=True)
    assert await used(runtime, YONGHE, "1000") == (5, 6)

    response = await client.post(
        f"/v1/slots/{YONGHE_10}/close", json={"reason": "storm warning"}, headers=admin
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "site": "yonghe-temple",
        "slots": [YONGHE_10],
        "reason": "storm warning",
        "cancelled_reservations": 2,
        "released_places": 5,
    }
    assert await used(runtime, YONGHE, "1000") == (0, 1)
    for reservation_id in (held, confirmed):
        body: Any = await reservation(runtime, client, reservation_id)
        assert body["status"] == "cancelled_by_site"
        assert body["cancel_reason"] == "storm warning"
        offered = [a["slot_id"] for a in body["alternatives"]]
        assert offered[0] in (YONGHE_11, "yonghe-temple.2026-12-01.0900")
        assert YONGHE_10 not in offered
        assert all(a["remaining"] >= body["party_size"] for a in body["alternatives"])
    kept = await client.get(
        f"/v1/reservations/{elsewhere}", headers=await owner_of(runtime, elsewhere)
    )
    assert kept.json()["status"] == "confirmed"

    events = await outbox(runtime)
    assert [e.topic for e in events] == ["reservation.cancelled_by_site"] * 2
    assert {e.payload["reservation_id"] for e in events} == {held, confirmed}
    assert all(e.payload["reason"] == "storm warning" for e in events)

    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert (slot["status"], slot["remaining"], slot["closed_reason"]) == (
        "closed",
        0,
        "storm warning",
    )
    refused = await hold(client, await new_tourist(client), YONGHE_10)
    assert (refused.status_code, refused.json()["code"]) == (409, "site-closed")

    # Closing again changes nothing and releases nothing twice.
    again = await client.post(
        f"/v1/slots/{YONGHE_10}/close", json={"reason": "storm warning"}, headers=admin
    )
    assert again.json()["cancelled_reservations"] == again.json()["released_places"] == 0
    assert await used(runtime, YONGHE, "1000") == (0, 1)
    report = await runtime.reconciler.reconcile_day(YONGHE)
    assert (report.missing, report.leaked, report.rebuilt) == (0, 0, False)


async def test_the_closure_is_audited(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post(f"/v1/slots/{YONGHE_10}/close", json={"reason": "state event"}, headers=admin)
    audit = (await client.get("/v1/audit", params={"site": "yonghe-temple"}, headers=admin)).json()
    assert audit[0]["action"] == "slot.close"
    assert audit[0]["target"] == YONGHE_10
    assert audit[0]["before"] == {"status": "open", "slots": [YONGHE_10]}
    assert audit[0]["after"] == {"status": "closed", "reason": "state event", "slots": [YONGHE_10]}


async def test_reopening_a_slot_sells_it_again_but_keeps_cancellations(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    cancelled = await booked(client, YONGHE_10, 1, confirm=True)
    await client.post(f"/v1/slots/{YONGHE_10}/close", json={"reason": "rain"}, headers=admin)
    response = await client.post(f"/v1/slots/{YONGHE_10}/reopen", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["slots"] == [YONGHE_10]
    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert (slot["status"], slot["remaining"], slot["closed_reason"]) == ("open", 1000, None)
    assert (await hold(client, await new_tourist(client), YONGHE_10)).status_code == 201
    body = await reservation(runtime, client, cancelled)
    assert body["status"] == "cancelled_by_site"


async def test_closing_a_day_offers_the_next_days(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    reservation_id = await booked(client, YONGHE_10, 2, confirm=True)
    response = await client.post(
        "/v1/sites/yonghe-temple/days/2026-12-01/close",
        json={"reason": "state event"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["cancelled_reservations"] == 1
    assert len(response.json()["slots"]) == 7  # 09:00 to 16:00, hourly
    body: Any = await reservation(runtime, client, reservation_id)
    # The same hour at the temple next door, then the same hour tomorrow; nothing of the day
    # closed.
    offered = [a["slot_id"] for a in body["alternatives"]]
    assert offered[:2] == ["confucius-temple.2026-12-01.1000", YONGHE_TOMORROW_10]
    assert not any(s.startswith("yonghe-temple.2026-12-01") for s in offered)
    slots = await day_slots(client, "2026-12-01")
    assert {s["status"] for s in slots} == {"closed"}
    assert [s["remaining"] for s in slots] == [0] * len(slots)


async def test_closing_a_site_closes_days_made_later_until_reopened(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await booked(client, YONGHE_10, 1, confirm=True)
    response = await client.post(
        "/v1/sites/yonghe-temple/close", json={"reason": "renovation"}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["cancelled_reservations"] == 1
    site = (await client.get("/v1/sites/yonghe-temple")).json()
    assert site["closed_reason"] == "renovation"
    assert site["today"]["remaining"] == 0 or site["today"]["open"] is False

    # Days generated while the site is closed are closed too.
    generated = await client.post(
        "/v1/sites/yonghe-temple/slots/generate",
        json={"from": "2026-12-20", "to": "2026-12-20"},
        headers=admin,
    )
    assert generated.status_code == 200, generated.text
    assert generated.json()["created"] == 7
    later = await day_slots(client, "2026-12-20")
    assert {s["status"] for s in later} == {"closed"}

    reopened = await client.post("/v1/sites/yonghe-temple/reopen", headers=admin)
    assert reopened.status_code == 200, reopened.text
    assert (await client.get("/v1/sites/yonghe-temple")).json()["closed_reason"] is None
    assert (await hold(client, await new_tourist(client), YONGHE_10)).status_code == 201


async def test_the_sweeper_cancels_a_hold_written_after_its_slot_closed(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    # The race: a hold admitted by Redis just before the closure, written to SQL just after
    # the closure looked for reservations to cancel.
    straggler = await booked(client, YONGHE_10, 2, confirm=False)
    async with runtime.sessions() as session, session.begin():
        await repository.set_slot_status(
            session, [YONGHE_10], SlotStatus.closed, closed_reason="flood"
        )
    await sweep_once(runtime)
    async with runtime.sessions() as session:
        reservation = await repository.get_reservation(session, straggler)
    assert reservation is not None
    assert (reservation.status, reservation.cancel_reason) == ("cancelled_by_site", "flood")
    assert await used(runtime, YONGHE, "1000") == (0, 0)
    assert len(await outbox(runtime)) == 1


async def test_a_manager_closes_only_its_own_sites(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    token = await runtime.accounts.create_staff_token(role="manager", sites=["palace-museum"])
    manager = {"Authorization": f"Bearer {token.token}"}
    response = await client.post(
        f"/v1/slots/{YONGHE_10}/close", json={"reason": "rain"}, headers=manager
    )
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert slot["status"] == "open"


async def test_a_closure_needs_a_reason(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(f"/v1/slots/{YONGHE_10}/close", json={}, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reason"
