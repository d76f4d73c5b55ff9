"""Entry tickets and gate scans over HTTP: the code, the QR, entry and exit, races at two
gates, entry windows, refusals and the scan log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.models import ScanEvent, Visitor
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import NOW, YONGHE_10, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"
BEIJING = ZoneInfo("Asia/Shanghai")

YONGHE_GATE = "yonghe-temple.south-gate"
PALACE_ENTRY = "palace-museum.meridian-gate"
PALACE_EXIT = "palace-museum.gate-of-divine-prowess"
CONFUCIUS_10 = "confucius-temple.2026-12-01.1000"
CONFUCIUS_GATES = ("confucius-temple.xianshi-gate", "confucius-temple.jixian-gate")
PALACE_MORNING = "palace-museum.2026-12-02.0830"
PALACE_AFTERNOON = "palace-museum.2026-12-02.1100"

TITLES = {
    "ticket-invalid": "Not a genuine tidegate entry code",
    "ticket-expired": "The entry code expired: show the ticket again",
    "wrong-site": "This ticket is for another site",
    "not-confirmed": "The reservation is not confirmed",
    "outside-entry-window": "Not the time to enter on this ticket",
    "already-entered": "These visitors have already entered (one entry per visitor)",
    "not-inside": "These visitors have not entered, or have left",
    "unknown-visitor": "No such visitor in this party",
    "forbidden": "This token may not do that",
    "unauthorized": "A valid bearer token is required",
    "not-found": "Not found",
}


def beijing(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=BEIJING)


def scans_path(gate: str) -> str:
    return f"/v1/gates/{gate}/scans"


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    instance: str,
    detail: str | None = None,
    **extra: Any,
) -> None:
    """The whole problem+json body; the detail defaults to the title (what a refusal with
    nothing more to say carries)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    title = TITLES.get(code, "The request is not valid")
    assert response.json() == {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail or title,
        "instance": instance,
        **extra,
    }


def assert_refused(
    response: httpx.Response, status: int, code: str, gate: str, detail: str | None = None
) -> None:
    assert_problem(response, status, code, scans_path(gate), detail)


def assert_validation(response: httpx.Response, gate: str, field: str, rule: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation-failed"
    assert body["instance"] == scans_path(gate)
    assert [(e["field"], e["rule"]) for e in body["errors"]] == [(field, rule)]


async def confirmed(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slot_id: str = YONGHE_10,
    people: int = 2,
) -> dict[str, Any]:
    """Hold places and confirm them; returns the confirmed reservation."""
    response = await hold(client, headers, slot_id, [visitor() for _ in range(people)])
    assert response.status_code == 201, response.text
    rid = response.json()["id"]
    confirm = await client.post(f"/v1/reservations/{rid}/confirm", headers=headers)
    assert confirm.status_code == 200, confirm.text
    body: dict[str, Any] = confirm.json()
    assert body["status"] == "confirmed"
    return body


async def ticket(client: httpx.AsyncClient, headers: dict[str, str], rid: str) -> str:
    response = await client.get(f"/v1/reservations/{rid}/ticket", headers=headers)
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


async def gate_token(runtime: Runtime, gate: str) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=gate)
    return {"Authorization": f"Bearer {token.token}"}


async def scan(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    gate: str,
    code: str,
    direction: str = "entry",
    visitors: list[int] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "direction": direction}
    if visitors is not None:
        body["visitors"] = visitors
    return await client.post(scans_path(gate), json=body, headers=headers)


def admitted(
    rid: str,
    site: str,
    gate: str,
    visitors: list[int],
    direction: str = "entry",
) -> dict[str, Any]:
    return {
        "result": "admitted",
        "direction": direction,
        "reservation_id": rid,
        "site": site,
        "gate": gate,
        "people": len(visitors),
        "visitors": visitors,
    }


async def scan_log(runtime: Runtime, **where: Any) -> list[tuple[Any, ...]]:
    """The scan log as (gate, site, reservation, direction, people, result, reason), in
    order, filtered on the given columns."""
    async with runtime.sessions() as session:
        query = sa.select(ScanEvent).order_by(col(ScanEvent.id))
        for name, value in where.items():
            query = query.where(getattr(ScanEvent, name) == value)
        rows = (await session.execute(query)).scalars().all()
    return [
        (e.gate_id, e.site_id, e.reservation_id, e.direction, e.people, e.result, e.reason)
        for e in rows
    ]


async def visitors_of(runtime: Runtime, rid: str) -> list[Visitor]:
    async with runtime.sessions() as session:
        query = (
            sa.select(Visitor)
            .where(col(Visitor.reservation_id) == rid)
            .order_by(col(Visitor.position))
        )
        return list((await session.execute(query)).scalars().all())


async def status_of(client: httpx.AsyncClient, headers: dict[str, str], rid: str) -> str:
    response = await client.get(f"/v1/reservations/{rid}", headers=headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


# the ticket --------------------------------------------------------------------------------


async def test_ticket_of_a_confirmed_reservation(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    reservation = await confirmed(client, tourist)
    rid = reservation["id"]

    response = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    code = body.pop("code")
    assert body == {
        "expires_at": "2026-12-01T02:01:00Z",
        "reservation_id": rid,
        "site": "yonghe-temple",
        "entry_from": "2026-12-01T09:45:00+08:00",
        "entry_until": "2026-12-01T11:15:00+08:00",
        # The entry gate with the most room in its flow now (Yonghe has one).
        "suggested_gate": {"gate": "yonghe-temple.south-gate", "name": "South Gate", "load": 0.0},
    }
    assert datetime.fromisoformat(body["expires_at"]) == NOW + timedelta(seconds=60)
    assert code.startswith("TG1.k0.")
    assert len(code.split(".")) == 4


async def test_each_ticket_request_gives_a_fresh_code(
    client: httpx.AsyncClient, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    first = await ticket(client, tourist, rid)
    clock.advance(timedelta(seconds=30))
    response = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert response.json()["expires_at"] == "2026-12-01T02:01:30Z"
    assert response.json()["code"] != first


async def test_a_held_reservation_has_no_ticket(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, YONGHE_10, [visitor()])
    assert response.status_code == 201, response.text
    rid = response.json()["id"]

    refused = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert_problem(
        refused,
        409,
        "not-confirmed",
        f"/v1/reservations/{rid}/ticket",
        "a held reservation has no entry ticket",
    )


async def test_another_tourists_ticket_is_not_found(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    other = await new_tourist(client)

    response = await client.get(f"/v1/reservations/{rid}/ticket", headers=other)
    assert_problem(
        response, 404, "not-found", f"/v1/reservations/{rid}/ticket", f"no reservation {rid}"
    )


async def test_an_unknown_reservation_has_no_ticket(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await client.get("/v1/reservations/nope/ticket", headers=tourist)
    assert_problem(
        response, 404, "not-found", "/v1/reservations/nope/ticket", "no reservation nope"
    )


async def test_a_ticket_needs_a_token(client: httpx.AsyncClient, tourist: dict[str, str]) -> None:
    rid = (await confirmed(client, tourist))["id"]

    response = await client.get(f"/v1/reservations/{rid}/ticket")
    assert_problem(
        response,
        401,
        "unauthorized",
        f"/v1/reservations/{rid}/ticket",
        "send Authorization: Bearer <token>",
    )
    assert response.headers["www-authenticate"] == 'Bearer realm="tidegate"'


async def test_a_ticket_is_for_tourists_only(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    for headers in (admin, await gate_token(runtime, YONGHE_GATE)):
        response = await client.get(f"/v1/reservations/{rid}/ticket", headers=headers)
        assert_problem(
            response,
            403,
            "forbidden",
            f"/v1/reservations/{rid}/ticket",
            "this route is for a tourist's account",
        )


async def test_ticket_as_an_svg_qr_code(client: httpx.AsyncClient, tourist: dict[str, str]) -> None:
    rid = (await confirmed(client, tourist))["id"]

    response = await client.get(f"/v1/reservations/{rid}/ticket?format=svg", headers=tourist)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert "<svg" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-ticket-expires-at"] == "2026-12-01T02:01:00+00:00"


async def test_ticket_as_a_png_qr_code(client: httpx.AsyncClient, tourist: dict[str, str]) -> None:
    rid = (await confirmed(client, tourist))["id"]

    response = await client.get(f"/v1/reservations/{rid}/ticket?format=png", headers=tourist)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert response.headers["cache-control"] == "no-store"


async def test_ticket_as_json_on_request(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    response = await client.get(f"/v1/reservations/{rid}/ticket?format=json", headers=tourist)
    assert response.status_code == 200, response.text
    assert response.json()["reservation_id"] == rid


async def test_ticket_in_an_unknown_format_is_refused(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]

    response = await client.get(f"/v1/reservations/{rid}/ticket?format=gif", headers=tourist)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation-failed"
    assert [(e["in"], e["field"], e["rule"]) for e in body["errors"]] == [
        ("query", "format", "literal_error")
    ]


# entry -------------------------------------------------------------------------------------


async def test_the_whole_party_enters_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)

    response = await scan(client, gate, YONGHE_GATE, code)
    assert response.status_code == 200, response.text
    assert response.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [0, 1])
    assert await status_of(client, tourist, rid) == "checked_in"
    for v in await visitors_of(runtime, rid):
        assert v.entered_at is not None
        assert v.entered_at.replace(tzinfo=NOW.tzinfo) == NOW
        assert v.entry_gate == YONGHE_GATE
        assert v.exited_at is None

    again = await scan(client, gate, YONGHE_GATE, code)
    assert_refused(again, 409, "already-entered", YONGHE_GATE)
    assert await status_of(client, tourist, rid) == "checked_in"

    assert await scan_log(runtime, reservation_id=rid) == [
        (YONGHE_GATE, "yonghe-temple", rid, "entry", 2, "admitted", ""),
        (YONGHE_GATE, "yonghe-temple", rid, "entry", 0, "refused", "already-entered"),
    ]


async def test_a_checked_in_reservation_still_has_a_ticket(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    # One visitor went in; the other still needs the code to follow.
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    first = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "entry", [0])
    assert first.status_code == 200, first.text
    assert await status_of(client, tourist, rid) == "checked_in"

    second = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "entry")
    assert second.status_code == 200, second.text
    assert second.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [1])


@pytest.mark.parametrize("round_", range(5))
async def test_two_gates_scanning_one_code_at_once_let_the_party_in_once(
    client: httpx.AsyncClient, runtime: Runtime, round_: int
) -> None:
    gates = [await gate_token(runtime, g) for g in CONFUCIUS_GATES]
    for _ in range(4):
        owner = await new_tourist(client)
        rid = (await confirmed(client, owner, CONFUCIUS_10, people=3))["id"]
        code = await ticket(client, owner, rid)

        responses = await asyncio.gather(
            *(
                scan(client, headers, g, code)
                for headers, g in zip(gates, CONFUCIUS_GATES, strict=True)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 409], [r.text for r in responses]
        winner, loser = sorted(responses, key=lambda r: r.status_code)
        winning_gate = winner.json()["gate"]
        losing_gate = next(g for g in CONFUCIUS_GATES if g != winning_gate)
        assert winner.json() == admitted(rid, "confucius-temple", winning_gate, [0, 1, 2])
        assert_refused(loser, 409, "already-entered", losing_gate)

        entered = await visitors_of(runtime, rid)
        assert [v.entry_gate for v in entered] == [winning_gate] * 3
        assert all(v.entered_at is not None for v in entered)
        assert await status_of(client, owner, rid) == "checked_in"
        log = await scan_log(runtime, reservation_id=rid)
        assert sorted(row[5:] for row in log) == [("admitted", ""), ("refused", "already-entered")]


async def test_two_devices_at_one_gate_scanning_one_code_at_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    devices = [await gate_token(runtime, YONGHE_GATE) for _ in range(2)]
    for _ in range(3):
        owner = await new_tourist(client)
        rid = (await confirmed(client, owner))["id"]
        code = await ticket(client, owner, rid)
        responses = await asyncio.gather(*(scan(client, d, YONGHE_GATE, code) for d in devices))
        assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
        assert sorted(r.json().get("people", 0) for r in responses) == [0, 2]


async def test_named_visitors_enter_one_by_one(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)

    first = await scan(client, gate, YONGHE_GATE, code, "entry", [0])
    assert first.status_code == 200, first.text
    assert first.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [0])
    entered = await visitors_of(runtime, rid)
    assert entered[0].entered_at is not None
    assert entered[1].entered_at is None

    both = await scan(client, gate, YONGHE_GATE, code, "entry", [0, 1])
    assert both.status_code == 200, both.text
    assert both.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [1])

    again = await scan(client, gate, YONGHE_GATE, code, "entry", [0])
    assert_refused(again, 409, "already-entered", YONGHE_GATE)

    unknown = await scan(client, gate, YONGHE_GATE, code, "entry", [7])
    assert_refused(unknown, 422, "unknown-visitor", YONGHE_GATE, "no visitor 7 in this party")

    assert [row[4:] for row in await scan_log(runtime, reservation_id=rid)] == [
        (1, "admitted", ""),
        (1, "admitted", ""),
        (0, "refused", "already-entered"),
        (0, "refused", "unknown-visitor"),
    ]


async def test_an_unknown_visitor_among_known_ones_lets_nobody_in(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)

    response = await scan(client, gate, YONGHE_GATE, code, "entry", [0, 2])
    assert_refused(response, 422, "unknown-visitor", YONGHE_GATE, "no visitor 2 in this party")
    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await status_of(client, tourist, rid) == "confirmed"


# exit --------------------------------------------------------------------------------------


async def test_exit_only_after_entry_and_only_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)

    early = await scan(client, gate, YONGHE_GATE, code, "exit")
    assert_refused(early, 409, "not-inside", YONGHE_GATE)

    entry = await scan(client, gate, YONGHE_GATE, code, "entry")
    assert entry.status_code == 200, entry.text

    leaving = await scan(client, gate, YONGHE_GATE, code, "exit")
    assert leaving.status_code == 200, leaving.text
    assert leaving.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [0, 1], "exit")
    for v in await visitors_of(runtime, rid):
        assert v.exited_at is not None
        assert v.exit_gate == YONGHE_GATE

    again = await scan(client, gate, YONGHE_GATE, code, "exit")
    assert_refused(again, 409, "not-inside", YONGHE_GATE)

    assert [row[3:] for row in await scan_log(runtime, reservation_id=rid)] == [
        ("exit", 0, "refused", "not-inside"),
        ("entry", 2, "admitted", ""),
        ("exit", 2, "admitted", ""),
        ("exit", 0, "refused", "not-inside"),
    ]


async def test_only_those_inside_leave(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)
    assert (await scan(client, gate, YONGHE_GATE, code, "entry", [1])).status_code == 200

    leaving = await scan(client, gate, YONGHE_GATE, code, "exit")
    assert leaving.status_code == 200, leaving.text
    assert leaving.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [1], "exit")

    outside = await scan(client, gate, YONGHE_GATE, code, "exit", [0])
    assert_refused(outside, 409, "not-inside", YONGHE_GATE)


async def test_the_palace_exit_gate_lets_visitors_out(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist, PALACE_MORNING, people=1))["id"]
    clock.set(beijing(2, 9))
    code = await ticket(client, tourist, rid)
    entry = await scan(client, await gate_token(runtime, PALACE_ENTRY), PALACE_ENTRY, code)
    assert entry.status_code == 200, entry.text

    leaving = await scan(client, await gate_token(runtime, PALACE_EXIT), PALACE_EXIT, code, "exit")
    assert leaving.status_code == 200, leaving.text
    assert leaving.json() == admitted(rid, "palace-museum", PALACE_EXIT, [0], "exit")


async def test_a_one_way_gate_refuses_the_other_direction(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist, PALACE_MORNING, people=1))["id"]
    clock.set(beijing(2, 9))
    code = await ticket(client, tourist, rid)
    exit_gate = await gate_token(runtime, PALACE_EXIT)
    entry_gate = await gate_token(runtime, PALACE_ENTRY)

    wrong_way_in = await scan(client, exit_gate, PALACE_EXIT, code)
    assert (wrong_way_in.status_code, wrong_way_in.json()["code"]) == (409, "wrong-gate-direction")
    assert wrong_way_in.json()["detail"] == f"{PALACE_EXIT} is an exit gate"
    assert (await scan(client, entry_gate, PALACE_ENTRY, code)).status_code == 200
    wrong_way_out = await scan(client, entry_gate, PALACE_ENTRY, code, "exit")
    assert (wrong_way_out.status_code, wrong_way_out.json()["code"]) == (
        409,
        "wrong-gate-direction",
    )
    assert await scan_log(runtime, reason="wrong-gate-direction") == [
        (PALACE_EXIT, "palace-museum", None, "entry", 0, "refused", "wrong-gate-direction"),
        (PALACE_ENTRY, "palace-museum", None, "exit", 0, "refused", "wrong-gate-direction"),
    ]


# refusals ----------------------------------------------------------------------------------


async def test_an_expired_code_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)

    clock.advance(timedelta(seconds=59))
    still = await scan(client, gate, YONGHE_GATE, code, "entry", [0])
    assert still.status_code == 200, still.text

    clock.advance(timedelta(seconds=1))
    response = await scan(client, gate, YONGHE_GATE, code, "entry", [1])
    assert_refused(
        response, 410, "ticket-expired", YONGHE_GATE, "the code expired: show the ticket again"
    )
    assert (await visitors_of(runtime, rid))[1].entered_at is None

    fresh = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "entry")
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["visitors"] == [1]

    assert await scan_log(runtime, reason="ticket-expired") == [
        (YONGHE_GATE, "yonghe-temple", None, "entry", 0, "refused", "ticket-expired")
    ]


async def test_a_tampered_code_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    prefix, kid, body, signature = (await ticket(client, tourist, rid)).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    for code, detail in [
        (f"{prefix}.{kid}.{body}.{flipped}", "the code's signature does not match"),
        (f"{prefix}.{kid}.{body[:-2]}.{signature}", "the code's signature does not match"),
        (f"{prefix}.k9.{body}.{signature}", "the code is signed with an unknown key"),
        ("hello", "not a tidegate entry code"),
    ]:
        response = await scan(client, gate, YONGHE_GATE, code)
        assert_refused(response, 422, "ticket-invalid", YONGHE_GATE, detail)

    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await status_of(client, tourist, rid) == "confirmed"
    assert (
        await scan_log(runtime, gate_id=YONGHE_GATE)
        == [(YONGHE_GATE, "yonghe-temple", None, "entry", 0, "refused", "ticket-invalid")] * 4
    )


async def test_a_code_for_another_site_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    palace = await gate_token(runtime, PALACE_ENTRY)
    code = await ticket(client, tourist, rid)

    response = await scan(client, palace, PALACE_ENTRY, code)
    assert_refused(
        response,
        409,
        "wrong-site",
        PALACE_ENTRY,
        "this ticket is for yonghe-temple, not a gate of palace-museum",
    )
    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await scan_log(runtime, reservation_id=rid) == [
        (PALACE_ENTRY, "palace-museum", rid, "entry", 0, "refused", "wrong-site")
    ]


async def test_a_cancelled_reservations_code_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    code = await ticket(client, tourist, rid)
    cancel = await client.post(f"/v1/reservations/{rid}/cancel", headers=tourist)
    assert cancel.status_code == 200, cancel.text

    response = await scan(client, gate, YONGHE_GATE, code)
    assert_refused(
        response, 409, "not-confirmed", YONGHE_GATE, "the reservation is cancelled, not confirmed"
    )
    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await status_of(client, tourist, rid) == "cancelled"
    assert await scan_log(runtime, reservation_id=rid) == [
        (YONGHE_GATE, "yonghe-temple", rid, "entry", 0, "refused", "not-confirmed")
    ]

    no_ticket = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    assert_problem(
        no_ticket,
        409,
        "not-confirmed",
        f"/v1/reservations/{rid}/ticket",
        "a cancelled reservation has no entry ticket",
    )


# entry windows -----------------------------------------------------------------------------


async def test_the_yonghe_window_opens_fifteen_minutes_before_the_slot(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist, "yonghe-temple.2026-12-01.1500"))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)
    window = "entry from 2026-12-01T06:45:00+00:00 until 2026-12-01T08:15:00+00:00"

    now = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid))
    assert_refused(now, 409, "outside-entry-window", YONGHE_GATE, window)

    clock.set(beijing(1, 14, 44, 59))
    early = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid))
    assert_refused(early, 409, "outside-entry-window", YONGHE_GATE, window)

    clock.set(beijing(1, 14, 45))
    response = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid))
    assert response.status_code == 200, response.text
    assert response.json() == admitted(rid, "yonghe-temple", YONGHE_GATE, [0, 1])

    reasons = [row[6] for row in await scan_log(runtime, reservation_id=rid)]
    assert reasons == ["outside-entry-window", "outside-entry-window", ""]


async def test_the_yonghe_window_closes_fifteen_minutes_after_the_slot(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    rid = (await confirmed(client, tourist, "yonghe-temple.2026-12-01.1500"))["id"]
    gate = await gate_token(runtime, YONGHE_GATE)

    clock.set(beijing(1, 16, 14, 59))
    inside = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "entry", [0])
    assert inside.status_code == 200, inside.text

    clock.set(beijing(1, 16, 15, 1))
    late = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "entry", [1])
    assert_refused(
        late,
        409,
        "outside-entry-window",
        YONGHE_GATE,
        "entry from 2026-12-01T06:45:00+00:00 until 2026-12-01T08:15:00+00:00",
    )

    # Leaving is not bound to the entry window.
    leaving = await scan(client, gate, YONGHE_GATE, await ticket(client, tourist, rid), "exit")
    assert leaving.status_code == 200, leaving.text
    assert leaving.json()["visitors"] == [0]


async def test_palace_tickets_have_no_grace_around_their_sessions(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], clock: ManualClock
) -> None:
    morning = (await confirmed(client, tourist, PALACE_MORNING))["id"]
    afternoon = (await confirmed(client, tourist, PALACE_AFTERNOON, people=1))["id"]
    gate = await gate_token(runtime, PALACE_ENTRY)

    tickets = await client.get(f"/v1/reservations/{morning}/ticket", headers=tourist)
    assert tickets.json()["entry_from"] == "2026-12-02T08:30:00+08:00"
    assert tickets.json()["entry_until"] == "2026-12-02T12:00:00+08:00"
    tickets = await client.get(f"/v1/reservations/{afternoon}/ticket", headers=tourist)
    assert tickets.json()["entry_from"] == "2026-12-02T11:00:00+08:00"
    assert tickets.json()["entry_until"] == "2026-12-02T16:00:00+08:00"

    clock.set(beijing(2, 8, 29, 59))
    code = await ticket(client, tourist, morning)
    too_early = await scan(client, gate, PALACE_ENTRY, code, "entry", [0])
    assert_refused(
        too_early,
        409,
        "outside-entry-window",
        PALACE_ENTRY,
        "entry from 2026-12-02T00:30:00+00:00 until 2026-12-02T04:00:00+00:00",
    )

    clock.set(beijing(2, 10, 59, 59))
    code = await ticket(client, tourist, afternoon)
    early = await scan(client, gate, PALACE_ENTRY, code)
    assert_refused(
        early,
        409,
        "outside-entry-window",
        PALACE_ENTRY,
        "entry from 2026-12-02T03:00:00+00:00 until 2026-12-02T08:00:00+00:00",
    )

    clock.set(beijing(2, 11))
    code = await ticket(client, tourist, afternoon)
    response = await scan(client, gate, PALACE_ENTRY, code)
    assert response.status_code == 200, response.text
    assert response.json() == admitted(afternoon, "palace-museum", PALACE_ENTRY, [0])

    clock.set(beijing(2, 11, 59, 59))
    code = await ticket(client, tourist, morning)
    response = await scan(client, gate, PALACE_ENTRY, code, "entry", [0])
    assert response.status_code == 200, response.text
    assert response.json() == admitted(morning, "palace-museum", PALACE_ENTRY, [0])

    clock.set(beijing(2, 12, 0, 1))
    code = await ticket(client, tourist, morning)
    late = await scan(client, gate, PALACE_ENTRY, code, "entry", [1])
    assert_refused(
        late,
        409,
        "outside-entry-window",
        PALACE_ENTRY,
        "entry from 2026-12-02T00:30:00+00:00 until 2026-12-02T04:00:00+00:00",
    )
    assert [v.entered_at is not None for v in await visitors_of(runtime, morning)] == [
        True,
        False,
    ]


# who may scan where ------------------------------------------------------------------------


async def test_a_gate_token_scans_at_its_own_gate_only(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    code = await ticket(client, tourist, rid)
    palace = await gate_token(runtime, PALACE_ENTRY)
    confucius = await gate_token(runtime, CONFUCIUS_GATES[0])

    for headers in (palace, confucius):
        response = await scan(client, headers, YONGHE_GATE, code)
        assert_problem(
            response,
            403,
            "forbidden",
            scans_path(YONGHE_GATE),
            f"this token is not for gate {YONGHE_GATE}",
        )

    # Another gate of the same site is another device too.
    other_gate = await scan(client, confucius, CONFUCIUS_GATES[1], code)
    assert_problem(
        other_gate,
        403,
        "forbidden",
        scans_path(CONFUCIUS_GATES[1]),
        f"this token is not for gate {CONFUCIUS_GATES[1]}",
    )

    unknown = await scan(client, palace, "no-such-gate", code)
    assert_problem(
        unknown,
        403,
        "forbidden",
        scans_path("no-such-gate"),
        "this token is not for gate no-such-gate",
    )

    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await scan_log(runtime) == []


async def test_only_gate_devices_scan(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    code = await ticket(client, tourist, rid)
    manager = await runtime.accounts.create_staff_token(role="manager", sites=["yonghe-temple"])

    for headers in (tourist, admin, {"Authorization": f"Bearer {manager.token}"}):
        response = await scan(client, headers, YONGHE_GATE, code)
        assert_problem(
            response,
            403,
            "forbidden",
            scans_path(YONGHE_GATE),
            "this route is for the gate's own device",
        )

    anonymous = await scan(client, {}, YONGHE_GATE, code)
    assert_problem(
        anonymous,
        401,
        "unauthorized",
        scans_path(YONGHE_GATE),
        "send Authorization: Bearer <token>",
    )
    bad_token = await scan(client, {"Authorization": "Bearer nonsense"}, YONGHE_GATE, code)
    assert bad_token.status_code == 401, bad_token.text

    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await scan_log(runtime) == []


async def test_the_scope_is_checked_before_the_body(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    palace = await gate_token(runtime, PALACE_ENTRY)
    response = await client.post(
        scans_path(YONGHE_GATE), json={"direction": "sideways"}, headers=palace
    )
    assert response.status_code == 403, response.text


# request validation ------------------------------------------------------------------------


async def test_scan_bodies_are_validated(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    rid = (await confirmed(client, tourist))["id"]
    code = await ticket(client, tourist, rid)
    gate = await gate_token(runtime, YONGHE_GATE)

    for body, field, rule in [
        ({"code": code, "direction": "sideways"}, "direction", "literal_error"),
        ({"code": code, "direction": "entry", "lane": 3}, "lane", "extra_forbidden"),
        ({"code": code, "direction": "entry", "visitors": []}, "visitors", "too_short"),
        (
            {"code": code, "direction": "entry", "visitors": [-1]},
            "visitors[0]",
            "greater_than_equal",
        ),
        ({"code": code}, "direction", "missing"),
        ({"direction": "entry"}, "code", "missing"),
        ({"code": "", "direction": "entry"}, "code", "string_too_short"),
    ]:
        response = await client.post(scans_path(YONGHE_GATE), json=body, headers=gate)
        assert_validation(response, YONGHE_GATE, field, rule)

    assert all(v.entered_at is None for v in await visitors_of(runtime, rid))
    assert await scan_log(runtime) == []
