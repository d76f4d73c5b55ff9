"""Reservations over HTTP: hold, confirm, cancel, read; the booking rules; expiry; idempotency."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from booking.ids import make_resident_id
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import NOW, YONGHE_10, hold, new_tourist, runtime_of, visitor

PROBLEM_JSON = "application/problem+json"
BEIJING = ZoneInfo("Asia/Shanghai")
HOLD_TTL = timedelta(minutes=15)


def yonghe(hhmm: str, day: str = "2026-12-01") -> str:
    return f"yonghe-temple.{day}.{hhmm}"


def masked(number: str) -> str:
    return number[:4] + "*" * 10 + number[-4:]


def beijing(year: int, month: int, day: int, hour: int = 0) -> str:
    return datetime(year, month, day, hour, tzinfo=BEIJING).isoformat()


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
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
        "instance": instance,
        **extra,
    }


def assert_not_found(response: httpx.Response, detail: str, instance: str) -> None:
    assert_problem(response, 404, "not-found", "Not found", detail, instance)


def assert_outside_window(response: httpx.Response, opens_at: str, closes_at: str) -> None:
    assert_problem(
        response,
        409,
        "outside-booking-window",
        "This slot is not on sale now",
        f"on sale from {opens_at} until {closes_at}",
        "/v1/reservations",
        sales_open_at=opens_at,
        sales_close_at=closes_at,
    )


async def held(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slot_id: str = YONGHE_10,
    visitors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Hold places and insist that it worked."""
    response = await hold(client, headers, slot_id, visitors)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def remaining(client: httpx.AsyncClient, slot_id: str = YONGHE_10) -> int:
    response = await client.get(f"/v1/slots/{slot_id}")
    assert response.status_code == 200, response.text
    left: int = response.json()["remaining"]
    return left


async def reservation(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/reservations/{reservation_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def act(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    reservation_id: str,
    action: str,
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return await client.post(f"/v1/reservations/{reservation_id}/{action}", headers=headers)


async def set_capacity(
    client: httpx.AsyncClient, admin: dict[str, str], slot_id: str, capacity: int
) -> None:
    response = await client.patch(
        f"/v1/slots/{slot_id}", json={"capacity": capacity}, headers=admin
    )
    assert response.status_code == 200, response.text


# holding -----------------------------------------------------------------------------------


async def test_hold_answers_201_with_the_whole_reservation(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    first = make_resident_id("110105", date(1990, 5, 17), 123)
    second = make_resident_id("310104", date(2001, 11, 2), 42)
    visitors = [
        {"name": "Li Lei", "id_type": "resident_id", "id_number": first},
        {"name": "Han Meimei", "id_type": "resident_id", "id_number": second},
    ]
    response = await hold(client, tourist, visitors=visitors)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Idempotent-Replayed" not in response.headers
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"]), body["id"]
    assert body == {
        "id": body["id"],
        "status": "held",
        "site": "yonghe-temple",
        "slot_id": YONGHE_10,
        "date": "2026-12-01",
        "start": "2026-12-01T10:00:00+08:00",
        "end": "2026-12-01T11:00:00+08:00",
        "party_size": 2,
        "visitors": [
            {"name": "Li Lei", "id_type": "resident_id", "id_number_masked": masked(first)},
            {"name": "Han Meimei", "id_type": "resident_id", "id_number_masked": masked(second)},
        ],
        "expires_at": "2026-12-01T02:15:00Z",
        "created_at": "2026-12-01T02:00:00Z",
        "cancel_reason": None,
        "alternatives": None,
    }
    assert first not in response.text
    assert second not in response.text


async def test_hold_takes_the_places_of_the_whole_party(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist, visitors=[visitor() for _ in range(3)])
    assert await remaining(client) == 997


async def test_hold_of_five_the_party_limit_is_accepted(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist, visitors=[visitor() for _ in range(5)])
    assert body["party_size"] == 5
    assert await remaining(client) == 995


async def test_held_reservation_reads_back_as_it_was_answered(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    assert await reservation(client, tourist, body["id"]) == body


# confirming and cancelling -----------------------------------------------------------------


async def test_confirm_turns_a_hold_into_a_confirmed_reservation(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)

    response = await act(client, tourist, body["id"], "confirm")
    assert response.status_code == 200, response.text
    assert response.json() == {**body, "status": "confirmed", "expires_at": None}
    assert await reservation(client, tourist, body["id"]) == response.json()
    assert await remaining(client) == 999


async def test_confirm_twice_is_harmless(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    first = await act(client, tourist, body["id"], "confirm")

    again = await act(client, tourist, body["id"], "confirm")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.json()["status"] == "confirmed"
    assert await remaining(client) == 999


async def test_confirm_one_second_before_the_hold_ends_succeeds(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    body = await held(client, tourist)
    clock.advance(HOLD_TTL - timedelta(seconds=1))

    response = await act(client, tourist, body["id"], "confirm")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "confirmed"


async def test_cancel_a_hold_puts_its_places_back_on_sale(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist, visitors=[visitor(), visitor()])
    assert await remaining(client) == 998

    response = await act(client, tourist, body["id"], "cancel")
    assert response.status_code == 200, response.text
    assert response.json() == {**body, "status": "cancelled", "expires_at": None}
    assert await remaining(client) == 1000
    assert (await reservation(client, tourist, body["id"]))["status"] == "cancelled"


async def test_cancel_a_confirmed_reservation_puts_its_places_back_on_sale(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    assert (await act(client, tourist, body["id"], "confirm")).status_code == 200

    response = await act(client, tourist, body["id"], "cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert await remaining(client) == 1000


async def test_cancelled_visitor_can_book_the_day_again(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    body = await held(client, tourist, visitors=[person])
    assert (await act(client, tourist, body["id"], "cancel")).status_code == 200

    again = await held(client, tourist, yonghe("1100"), visitors=[person])
    assert again["status"] == "held"


async def test_cancel_twice_is_an_invalid_transition(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    assert (await act(client, tourist, body["id"], "cancel")).status_code == 200

    response = await act(client, tourist, body["id"], "cancel")
    assert_problem(
        response,
        409,
        "invalid-transition",
        "The reservation cannot do that now",
        "a cancelled reservation cannot be cancelled",
        f"/v1/reservations/{body['id']}/cancel",
    )
    assert await remaining(client) == 1000


async def test_confirm_a_cancelled_reservation_is_an_invalid_transition(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    assert (await act(client, tourist, body["id"], "cancel")).status_code == 200

    response = await act(client, tourist, body["id"], "confirm")
    assert_problem(
        response,
        409,
        "invalid-transition",
        "The reservation cannot do that now",
        "a cancelled reservation cannot be confirmed",
        f"/v1/reservations/{body['id']}/confirm",
    )


# reading, and nobody else's ----------------------------------------------------------------


async def test_list_shows_the_callers_own_reservations_newest_first(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    other = await new_tourist(client)
    older = await held(client, tourist)
    clock.advance(timedelta(minutes=1))
    theirs = await held(client, other)
    clock.advance(timedelta(minutes=1))
    newer = await held(client, tourist, yonghe("1100"))

    mine = await client.get("/v1/reservations", headers=tourist)
    assert mine.status_code == 200, mine.text
    assert mine.json() == [newer, older]
    response = await client.get("/v1/reservations", headers=other)
    assert response.json() == [theirs]


async def test_list_of_a_new_tourist_is_empty(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await held(client, tourist)
    response = await client.get("/v1/reservations", headers=await new_tourist(client))
    assert response.status_code == 200, response.text
    assert response.json() == []


async def test_reservations_read_and_confirm_in_a_process_that_never_saw_their_slot(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    # As after a restart: the process has not looked up the slot's times yet. On SQLite the
    # pool has one connection, so looking them up must not need a second one.
    runtime_of(client).catalog._times.clear()

    listed = await asyncio.wait_for(client.get("/v1/reservations", headers=tourist), 10)
    assert (listed.status_code, listed.json()) == (200, [body])
    runtime_of(client).catalog._times.clear()
    read = await asyncio.wait_for(client.get(f"/v1/reservations/{body['id']}", headers=tourist), 10)
    assert (read.status_code, read.json()) == (200, body)
    runtime_of(client).catalog._times.clear()
    path = f"/v1/reservations/{body['id']}/confirm"
    confirmed = await asyncio.wait_for(client.post(path, headers=tourist), 10)
    assert (confirmed.status_code, confirmed.json()["status"]) == (200, "confirmed")


async def test_get_another_tourists_reservation_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    other = await new_tourist(client)

    response = await client.get(f"/v1/reservations/{body['id']}", headers=other)
    assert_not_found(response, f"no reservation {body['id']}", f"/v1/reservations/{body['id']}")


async def test_confirm_another_tourists_reservation_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    other = await new_tourist(client)

    response = await act(client, other, body["id"], "confirm")
    assert_not_found(
        response, f"no reservation {body['id']}", f"/v1/reservations/{body['id']}/confirm"
    )
    assert (await reservation(client, tourist, body["id"]))["status"] == "held"


async def test_cancel_another_tourists_reservation_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)
    other = await new_tourist(client)

    response = await act(client, other, body["id"], "cancel")
    assert_not_found(
        response, f"no reservation {body['id']}", f"/v1/reservations/{body['id']}/cancel"
    )
    assert (await reservation(client, tourist, body["id"]))["status"] == "held"
    assert await remaining(client) == 999


@pytest.mark.parametrize("action", ["", "/confirm", "/cancel"])
async def test_unknown_reservation_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str], action: str
) -> None:
    path = f"/v1/reservations/{'0' * 32}{action}"
    response = await (client.get if not action else client.post)(path, headers=tourist)
    assert_not_found(response, f"no reservation {'0' * 32}", path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/reservations"),
        ("GET", f"/v1/reservations/{'0' * 32}"),
        ("POST", f"/v1/reservations/{'0' * 32}/confirm"),
        ("POST", f"/v1/reservations/{'0' * 32}/cancel"),
    ],
)
async def test_reservations_without_a_token_are_401(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
        path,
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'


async def test_hold_without_a_token_is_401_and_takes_nothing(client: httpx.AsyncClient) -> None:
    response = await hold(client, {})
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
        "/v1/reservations",
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    assert await remaining(client) == 1000


async def test_hold_with_a_garbage_token_is_401(client: httpx.AsyncClient) -> None:
    response = await hold(client, {"Authorization": "Bearer not-a-token"})
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "the token is unknown, expired or revoked",
        "/v1/reservations",
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    assert await remaining(client) == 1000


async def test_list_with_a_garbage_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/reservations", headers={"Authorization": "Bearer garbage"})
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "the token is unknown, expired or revoked",
        "/v1/reservations",
    )


async def test_a_staff_token_cannot_hold_places(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await hold(client, admin)
    assert_problem(
        response,
        403,
        "forbidden",
        "This token may not do that",
        "this route is for a tourist's account",
        "/v1/reservations",
    )
    assert await remaining(client) == 1000


# the booking rules -------------------------------------------------------------------------


async def test_party_of_six_is_too_large(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[visitor() for _ in range(6)])
    assert_problem(
        response,
        422,
        "party-too-large",
        "Too many visitors in one reservation",
        "6 visitors asked for; at most 5 per reservation here",
        "/v1/reservations",
        max_party_size=5,
    )
    assert await remaining(client) == 1000


async def test_same_visitor_from_another_account_is_a_duplicate(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    await held(client, tourist, visitors=[person])
    other = await new_tourist(client)

    # Another account, another slot, same site and day: still one place per person.
    response = await hold(client, other, yonghe("1100"), visitors=[visitor(), person])
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 already holds a place at yonghe-temple on 2026-12-01",
        "/v1/reservations",
        visitor_index=1,
    )
    assert person["id_number"] not in response.text
    assert await remaining(client, yonghe("1100")) == 1000


async def test_same_visitor_in_a_second_reservation_of_one_account_is_a_duplicate(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    await held(client, tourist, visitors=[person])

    response = await hold(client, tourist, visitors=[person])
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "duplicate-visitor"
    assert response.json()["visitor_index"] == 0
    assert await remaining(client) == 999


async def test_same_visitor_twice_in_one_party_is_a_duplicate_and_takes_nothing(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    response = await hold(client, tourist, visitors=[person, dict(person, name="Twin")])
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 is named twice in this party",
        "/v1/reservations",
        visitor_index=1,
    )
    assert await remaining(client) == 1000
    # Nothing was recorded for the refused party: the person can still book.
    await held(client, tourist, visitors=[person])


async def test_same_visitor_may_book_another_site_the_same_day(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    await held(client, tourist, visitors=[person])
    body = await held(client, tourist, "temple-of-heaven.2026-12-01.0900", visitors=[person])
    assert body["site"] == "temple-of-heaven"


async def test_same_visitor_may_book_the_same_site_another_day(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    person = visitor()
    await held(client, tourist, visitors=[person])
    body = await held(client, tourist, yonghe("1000", "2026-12-02"), visitors=[person])
    assert body["date"] == "2026-12-02"


async def test_palace_museum_today_is_outside_the_booking_window(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, "palace-museum.2026-12-01.1100")
    # No same-day sales: sales of 1 December ran from 24 November 20:00 to midnight.
    assert_outside_window(response, beijing(2026, 11, 24, 20), beijing(2026, 12, 1))


async def test_palace_museum_tomorrow_is_on_sale(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist, "palace-museum.2026-12-02.0830")
    assert (body["start"], body["end"]) == (
        "2026-12-02T08:30:00+08:00",
        "2026-12-02T12:00:00+08:00",
    )


async def test_palace_museum_day_not_yet_released_is_outside_the_booking_window(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, "palace-museum.2026-12-09.0830")
    # 9 December goes on sale 7 days before, at 20:00 on 2 December.
    assert_outside_window(response, beijing(2026, 12, 2, 20), beijing(2026, 12, 9))


async def test_palace_museum_day_is_still_closed_one_second_before_its_release(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    clock.set(datetime(2026, 12, 2, 19, 59, 59, tzinfo=BEIJING))
    response = await hold(client, tourist, "palace-museum.2026-12-09.0830")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "outside-booking-window"


async def test_palace_museum_day_goes_on_sale_at_its_release_time(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    clock.set(datetime(2026, 12, 2, 20, 0, tzinfo=BEIJING))
    body = await held(client, tourist, "palace-museum.2026-12-09.0830")
    assert body["date"] == "2026-12-09"


async def test_slot_whose_entry_window_ended_is_outside_the_booking_window(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    # The 09:00 slot ended at 10:00, which is exactly now.
    response = await hold(client, tourist, yonghe("0900"))
    assert_outside_window(response, beijing(2026, 11, 30), beijing(2026, 12, 1, 10))
    assert await remaining(client, yonghe("0900")) == 1000


async def test_hold_on_an_unknown_slot_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, yonghe("0930"))
    assert_not_found(response, f"no slot {yonghe('0930')}", "/v1/reservations")


async def test_hold_on_a_slot_of_an_unknown_site_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, "atlantis.2026-12-01.1000")
    assert_not_found(response, "no slot atlantis.2026-12-01.1000", "/v1/reservations")


@pytest.mark.parametrize(
    "slot_id", ["yonghe", "Yonghe-Temple.2026-12-01.1000", "yonghe-temple.2026-12-01.10:00"]
)
async def test_hold_with_a_malformed_slot_id_is_422_naming_slot_id(
    client: httpx.AsyncClient, tourist: dict[str, str], slot_id: str
) -> None:
    response = await hold(client, tourist, slot_id)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation-failed"
    assert [(e["in"], e["field"], e["rule"]) for e in body["errors"]] == [
        ("body", "slot_id", "string_pattern_mismatch")
    ]


# sold out ----------------------------------------------------------------------------------


async def test_sold_out_offers_the_nearest_slots_of_the_day_that_did_not_end(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    await set_capacity(client, admin, YONGHE_10, 2)
    await held(client, tourist, visitors=[visitor(), visitor()])

    response = await hold(client, tourist)
    # 09:00 is as near as 11:00 but it ended: it is no alternative.
    assert_problem(
        response,
        409,
        "sold-out",
        "Not enough places left in this slot",
        "1 asked for; left: 0 in this slot, 7498 this day",
        "/v1/reservations",
        slot_left=0,
        day_left=7498,
        # The ranking of GET /v1/suggestions: the next hour here, the same hour at the
        # temple next door (another site costs more than an hour), then noon here.
        alternatives=[
            {
                "site": "yonghe-temple",
                "slot_id": yonghe("1100"),
                "start": "2026-12-01T11:00:00+08:00",
                "end": "2026-12-01T12:00:00+08:00",
                "remaining": 1000,
                "comfort": "comfortable",
                "load": 0.0013,  # the two at 10:00 are expected inside until 11:30
                "distance_km": 0.0,
                "reason": "1000 places left at 11:00",
            },
            {
                "site": "confucius-temple",
                "slot_id": "confucius-temple.2026-12-01.1000",
                "start": "2026-12-01T10:00:00+08:00",
                "end": "2026-12-01T11:00:00+08:00",
                "remaining": 1000,
                "comfort": "comfortable",
                "load": 0.0,
                "distance_km": 0.31,
                "reason": "Confucius Temple and Imperial Academy Museum, 0.3 km away: "
                "comfortable at 10:00",
            },
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
        ],
    )


async def test_sold_out_alternatives_rank_other_hours_here_before_other_sites(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    await held(client, tourist, yonghe("1100"))
    await set_capacity(client, admin, yonghe("1200"), 1)
    await held(client, tourist, yonghe("1200"))

    # `tourist` keeps the two open holds a site allows an account: another one asks.
    response = await hold(client, await new_tourist(client), yonghe("1200"))
    assert response.status_code == 409, response.text
    offered = response.json()["alternatives"]
    assert [(a["slot_id"], a["remaining"], a["reason"]) for a in offered] == [
        (yonghe("1100"), 999, "999 places left at 11:00"),
        (yonghe("1300"), 1000, "1000 places left at 13:00"),
        (
            "confucius-temple.2026-12-01.1200",
            1000,
            "Confucius Temple and Imperial Academy Museum, 0.3 km away: comfortable at 12:00",
        ),
    ]


async def test_sold_out_alternatives_have_room_for_the_whole_party(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    await set_capacity(client, admin, yonghe("1100"), 1)
    await set_capacity(client, admin, yonghe("1200"), 2)
    await held(client, tourist, yonghe("1200"), visitors=[visitor(), visitor()])

    response = await hold(client, tourist, yonghe("1200"), visitors=[visitor(), visitor()])
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "sold-out"
    # 11:00 has one place: not for a party of two.
    assert [a["slot_id"] for a in response.json()["alternatives"]] == [
        yonghe("1300"),
        "confucius-temple.2026-12-01.1200",
        yonghe("1000"),
    ]


async def test_party_that_does_not_fit_gets_no_place_at_all(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    await set_capacity(client, admin, YONGHE_10, 3)
    await held(client, tourist, visitors=[visitor(), visitor()])

    response = await hold(client, tourist, visitors=[visitor(), visitor()])
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "sold-out"
    assert response.json()["slot_left"] == 1
    assert response.json()["detail"] == "2 asked for; left: 1 in this slot, 7498 this day"
    assert await remaining(client) == 1


# hold expiry -------------------------------------------------------------------------------


async def test_confirm_after_the_hold_ended_is_410_and_frees_the_places(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    body = await held(client, tourist, visitors=[visitor(), visitor()])
    clock.advance(HOLD_TTL + timedelta(seconds=1))

    response = await act(client, tourist, body["id"], "confirm")
    assert_problem(
        response,
        410,
        "hold-expired",
        "The hold expired and its places were released",
        f"the hold of {body['id']} expired",
        f"/v1/reservations/{body['id']}/confirm",
    )
    assert await remaining(client) == 1000
    assert await reservation(client, tourist, body["id"]) == {
        **body,
        "status": "expired",
        "expires_at": None,
    }


async def test_confirm_at_the_exact_end_of_the_hold_is_410(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    body = await held(client, tourist)
    clock.set(NOW + HOLD_TTL)

    response = await act(client, tourist, body["id"], "confirm")
    assert response.status_code == 410, response.text
    assert response.json()["code"] == "hold-expired"


async def test_sweeper_expires_a_due_hold(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    body = await held(client, tourist)
    clock.advance(HOLD_TTL + timedelta(seconds=1))

    assert await runtime.booking.expire_due() == 1
    assert (await reservation(client, tourist, body["id"]))["status"] == "expired"
    assert await remaining(client) == 1000


async def test_sweeper_leaves_live_holds_and_confirmed_reservations_alone(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    live = await held(client, tourist)
    confirmed = await held(client, tourist)
    assert (await act(client, tourist, confirmed["id"], "confirm")).status_code == 200
    clock.advance(HOLD_TTL - timedelta(seconds=1))

    assert await runtime.booking.expire_due() == 0
    assert (await reservation(client, tourist, live["id"]))["status"] == "held"
    assert (await reservation(client, tourist, confirmed["id"]))["status"] == "confirmed"
    assert await remaining(client) == 998


async def test_visitor_of_an_expired_hold_can_book_again(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    person = visitor()
    await held(client, tourist, visitors=[person])
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 1

    again = await held(client, tourist, visitors=[person])
    assert again["status"] == "held"
    assert await remaining(client) == 999


async def test_confirm_a_hold_the_sweeper_expired_is_410(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    body = await held(client, tourist)
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 1

    response = await act(client, tourist, body["id"], "confirm")
    assert response.status_code == 410, response.text
    assert response.json()["code"] == "hold-expired"
    assert await remaining(client) == 1000


async def test_cancel_an_expired_hold_is_an_invalid_transition(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    body = await held(client, tourist)
    clock.advance(HOLD_TTL + timedelta(seconds=1))
    assert await runtime.booking.expire_due() == 1

    response = await act(client, tourist, body["id"], "cancel")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "invalid-transition"
    assert await remaining(client) == 1000


# Idempotency-Key ---------------------------------------------------------------------------


async def test_same_key_and_body_replays_the_first_hold(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    headers = {**tourist, "Idempotency-Key": "order-1"}
    visitors = [visitor(), visitor()]
    first = await hold(client, headers, visitors=visitors)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers

    again = await hold(client, headers, visitors=visitors)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = await client.get("/v1/reservations", headers=tourist)
    assert listed.json() == [first.json()]
    assert await remaining(client) == 998


async def test_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    headers = {**tourist, "Idempotency-Key": "order-2"}
    person = visitor()
    assert (await hold(client, headers, visitors=[person])).status_code == 201

    response = await hold(client, headers, yonghe("1100"), visitors=[person])
    assert_problem(
        response,
        422,
        "idempotency-key-reused",
        "This Idempotency-Key was used for a different request",
        "This Idempotency-Key was used for a different request",
        "/v1/reservations",
    )
    assert await remaining(client, yonghe("1100")) == 1000
    assert len((await client.get("/v1/reservations", headers=tourist)).json()) == 1


async def test_same_key_from_two_tourists_makes_two_reservations(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    other = await new_tourist(client)
    mine = await hold(client, {**tourist, "Idempotency-Key": "shared"})
    theirs = await hold(client, {**other, "Idempotency-Key": "shared"})

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert await remaining(client) == 998


async def test_cancel_with_the_same_key_twice_answers_the_same(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = await held(client, tourist)

    first = await act(client, tourist, body["id"], "cancel", key="cancel-1")
    again = await act(client, tourist, body["id"], "cancel", key="cancel-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert first.json()["status"] == "cancelled"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await remaining(client) == 1000


async def test_an_idempotency_key_of_300_characters_is_422_naming_the_header(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, {**tourist, "Idempotency-Key": "k" * 300})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation-failed"
    assert [(e["in"], e["field"], e["rule"]) for e in body["errors"]] == [
        ("header", "Idempotency-Key", "string_too_long")
    ]
    assert await remaining(client) == 1000


async def test_an_idempotency_key_with_a_space_is_422_naming_the_header(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, {**tourist, "Idempotency-Key": "order 1"})
    assert response.status_code == 422, response.text
    assert [(e["in"], e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("header", "Idempotency-Key", "string_pattern_mismatch")
    ]
