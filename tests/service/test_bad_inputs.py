"""Bad inputs, one a row: each gets its exact status and problem `code`, and a 422 names the
field and the rule (issue 8, §3). Nothing a bad request asks for is done: after the table, the
day's places and reservations are what they were."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from booking.ids import resident_id_check_character
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, visitor

PROBLEM = "application/problem+json"
NO_SUCH_RESERVATION = "0123456789abcdef0123456789abcdef"


def resident_id(first17: str) -> str:
    return first17 + resident_id_check_character(first17)


VALID = visitor(900)["id_number"]
WRONG_CHECK_DIGIT = VALID[:17] + ("0" if VALID[17] != "0" else "1")
# 31 February 1999, 1 January 2031 (after the service's today), 1 January 1880.
IMPOSSIBLE_DATE = resident_id("11010519990231001")
BORN_LATER = resident_id("11010520310101001")
TOO_OLD = resident_id("11010518800101001")


def one_visitor(**changes: Any) -> dict[str, Any]:
    return {"slot_id": YONGHE_10, "visitors": [{**visitor(), **changes}]}


@dataclass(frozen=True)
class Bad:
    """One bad request and the exact answer it must get."""

    name: str
    method: str
    path: str
    status: int
    code: str
    who: str = "tourist"  # tourist, admin, nobody
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    # For a 422: the field and the rule of the first error.
    where: tuple[str, str] | None = None


CASES = [
    # real-name visitors
    Bad("id check digit wrong", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=WRONG_CHECK_DIGIT),
        where=("visitors[0].id_number", "check-digit")),
    Bad("id with 31 February", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=IMPOSSIBLE_DATE),
        where=("visitors[0].id_number", "birth-date")),
    Bad("id born before 1900", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=TOO_OLD), where=("visitors[0].id_number", "birth-date")),
    Bad("id born after today", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=BORN_LATER), where=("visitors[0].id_number", "birth-date")),
    Bad("id 17 characters", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=VALID[:17]), where=("visitors[0].id_number", "length")),
    Bad("id with letters", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number="11010519900101A01X"),
        where=("visitors[0].id_number", "characters")),
    Bad("id empty", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_number=""), where=("visitors[0].id_number", "string_too_short")),
    Bad("id type unknown", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_type="library_card"), where=("visitors[0].id_type", "enum")),
    Bad("passport malformed", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(id_type="passport", id_number="!!"),
        where=("visitors[0].id_number", "format")),
    Bad("visitor without a name", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(name=""), where=("visitors[0].name", "string_too_short")),
    # party sizes
    Bad("party of 0", "POST", "/v1/reservations", 422, "validation-failed",
        json={"slot_id": YONGHE_10, "visitors": []}, where=("visitors", "too_short")),
    Bad("party of 51", "POST", "/v1/reservations", 422, "validation-failed",
        json={"slot_id": YONGHE_10, "visitors": [visitor() for _ in range(51)]},
        where=("visitors", "too_long")),
    Bad("party above the site's limit", "POST", "/v1/reservations", 422, "party-too-large",
        json={"slot_id": YONGHE_10, "visitors": [visitor() for _ in range(6)]}),
    Bad("same person twice in a party", "POST", "/v1/reservations", 409, "duplicate-visitor",
        json={"slot_id": YONGHE_10, "visitors": [{**visitor(901)}, {**visitor(901)}]}),
    Bad("party 0 in suggestions", "GET", "/v1/suggestions", 422, "validation-failed",
        who="nobody", params={"site": "yonghe-temple", "party": "0"},
        where=("party", "greater_than_equal")),
    Bad("party negative", "GET", "/v1/suggestions", 422, "validation-failed", who="nobody",
        params={"site": "yonghe-temple", "party": "-3"}, where=("party", "greater_than_equal")),
    Bad("party not an integer", "GET", "/v1/suggestions", 422, "validation-failed",
        who="nobody", params={"site": "yonghe-temple", "party": "2.5"},
        where=("party", "int_parsing")),
    Bad("party huge", "GET", "/v1/suggestions", 422, "validation-failed", who="nobody",
        params={"site": "yonghe-temple", "party": "9" * 40}, where=("party", "less_than_equal")),
    # numbers are JSON numbers
    Bad("capacity as text", "PATCH", f"/v1/slots/{YONGHE_10}", 422, "validation-failed",
        who="admin", json={"capacity": "5"}, where=("capacity", "number_type")),
    Bad("capacity as true", "PATCH", f"/v1/slots/{YONGHE_10}", 422, "validation-failed",
        who="admin", json={"capacity": True}, where=("capacity", "number_type")),
    Bad("capacity negative", "PATCH", f"/v1/slots/{YONGHE_10}", 422, "validation-failed",
        who="admin", json={"capacity": -1}, where=("capacity", "greater_than_equal")),
    Bad("capacity huge", "PATCH", f"/v1/slots/{YONGHE_10}", 422, "validation-failed",
        who="admin", json={"capacity": 10**30}, where=("capacity", "less_than_equal")),
    Bad("capacity fractional", "PATCH", f"/v1/slots/{YONGHE_10}", 422, "validation-failed",
        who="admin", json={"capacity": 2.5}, where=("capacity", "int_from_float")),
    Bad("weekdays as text", "PATCH", "/v1/sites/yonghe-temple", 422, "validation-failed",
        who="admin", json={"closed_weekdays": ["1"]}, where=("closed_weekdays", "number_type")),
    # times at a site
    Bad("opening time with an offset", "PATCH", "/v1/sites/yonghe-temple", 422,
        "validation-failed", who="admin", json={"opens": "09:00+08:00"},
        where=("opens", "local_time")),
    Bad("opening time as seconds", "PATCH", "/v1/sites/yonghe-temple", 422,
        "validation-failed", who="admin", json={"opens": 32400}, where=("opens", "time_type")),
    Bad("opening time 25:00", "PATCH", "/v1/sites/yonghe-temple", 422, "validation-failed",
        who="admin", json={"opens": "25:00"}, where=("opens", "time_parsing")),
    # unknown and malformed ids
    Bad("unknown reservation", "GET", f"/v1/reservations/{NO_SUCH_RESERVATION}", 404,
        "not-found"),
    Bad("malformed reservation id", "GET", "/v1/reservations/..%2F..%2Fetc", 404, "not-found"),
    Bad("unknown slot", "POST", "/v1/reservations", 404, "not-found",
        json={"slot_id": "atlantis.2026-12-01.1000", "visitors": [visitor()]}),
    Bad("malformed slot id", "POST", "/v1/reservations", 422, "validation-failed",
        json={"slot_id": "yonghe-temple/1000", "visitors": [visitor()]},
        where=("slot_id", "string_pattern_mismatch")),
    Bad("slot id of a day that cannot be", "GET", "/v1/slots/yonghe-temple.2026-02-30.1000",
        404, "not-found", who="nobody"),
    Bad("unknown site", "GET", "/v1/sites/atlantis", 404, "not-found", who="nobody"),
    # Row ids are 32-bit integers in PostgreSQL: one more is refused before the database.
    Bad("template id beyond 32 bits", "DELETE",
        f"/v1/sites/yonghe-temple/slot-templates/{2**31}", 422, "validation-failed",
        who="admin", where=("template_id", "less_than_equal")),
    Bad("template id beyond 64 bits", "DELETE",
        f"/v1/sites/yonghe-temple/slot-templates/{2**70}", 422, "validation-failed",
        who="admin", where=("template_id", "less_than_equal")),
    Bad("largest template id", "DELETE",
        f"/v1/sites/yonghe-temple/slot-templates/{2**31 - 1}", 404, "not-found", who="admin"),
    Bad("outbox after beyond 32 bits", "GET", "/v1/outbox", 422, "validation-failed",
        who="admin", params={"after": str(2**31)}, where=("after", "less_than_equal")),
    Bad("delivery id beyond 32 bits", "POST", f"/v1/webhooks/any/deliveries/{2**31}/replay",
        422, "validation-failed", where=("delivery_id", "less_than_equal")),
    # NUL characters (PostgreSQL text cannot hold one): refused before the database
    Bad("NUL in a query parameter", "GET", "/v1/audit", 422, "validation-failed", who="admin",
        params={"site": "yonghe\x00temple"}, where=("site", "string_nul")),
    Bad("NUL in a path", "GET", "/v1/sites/yonghe%00temple", 422, "validation-failed",
        who="nobody", where=("path", "string_nul")),
    Bad("NUL in a visitor's name", "POST", "/v1/reservations", 422, "validation-failed",
        json={"slot_id": YONGHE_10, "visitors": [visitor(name="Li\x00Wei")]},
        where=("visitors[0].name", "string_nul")),
    # slots that cannot be sold
    Bad("slot in the past", "POST", "/v1/reservations", 409, "outside-booking-window",
        json={"slot_id": "yonghe-temple.2026-12-01.0900", "visitors": [visitor()]}),
    Bad("slot not yet on sale", "POST", "/v1/reservations", 409, "outside-booking-window",
        json={"slot_id": "palace-museum.2026-12-08.0830", "visitors": [visitor()]}),
    Bad("slot of a day the site is shut", "POST", "/v1/reservations", 404, "not-found",
        json={"slot_id": "palace-museum.2026-12-07.0830", "visitors": [visitor()]}),
    Bad("slot more than a year ahead", "POST", "/v1/reservations", 404, "not-found",
        json={"slot_id": "yonghe-temple.2099-12-01.1000", "visitors": [visitor()]}),
    # tokens
    Bad("no token", "POST", "/v1/reservations", 401, "unauthorized", who="nobody",
        json=one_visitor()),
    Bad("malformed token", "POST", "/v1/reservations", 401, "unauthorized", who="nobody",
        json=one_visitor(), headers={"Authorization": "Bearer not-a-token"}),
    Bad("basic auth instead of a bearer", "POST", "/v1/reservations", 401, "unauthorized",
        who="nobody", json=one_visitor(), headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    Bad("a tourist on a manager's route", "PATCH", f"/v1/slots/{YONGHE_10}", 403, "forbidden",
        json={"capacity": 5}),
    Bad("staff token booking", "POST", "/v1/reservations", 403, "forbidden", who="admin",
        json=one_visitor()),
    # idempotency keys
    Bad("idempotency key empty", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(), headers={"Idempotency-Key": ""},
        where=("Idempotency-Key", "string_too_short")),
    Bad("idempotency key too long", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(), headers={"Idempotency-Key": "k" * 300},
        where=("Idempotency-Key", "string_too_long")),
    Bad("idempotency key with spaces", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(), headers={"Idempotency-Key": "two words"},
        where=("Idempotency-Key", "string_pattern_mismatch")),
    # bodies
    Bad("body too large", "POST", "/v1/reservations", 413, "payload-too-large",
        content=b'{"slot_id": "' + b"x" * 300_000 + b'"}',
        headers={"Content-Type": "application/json"}),
    Bad("body of another type", "POST", "/v1/reservations", 415, "unsupported-media-type",
        content=b"slot_id=yonghe-temple.2026-12-01.1000",
        headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Bad("body not JSON", "POST", "/v1/reservations", 422, "validation-failed",
        content=b"{slot_id: 1", headers={"Content-Type": "application/json"},
        where=("body", "json_invalid")),
    Bad("body not UTF-8", "POST", "/v1/reservations", 422, "validation-failed",
        content=b'{"slot_id": "\xff\xfe"}', headers={"Content-Type": "application/json"},
        where=("body", "json_invalid")),
    Bad("body a list", "POST", "/v1/reservations", 422, "validation-failed", json=[1, 2],
        where=("body", "model_attributes_type")),
    Bad("body empty", "POST", "/v1/reservations", 422, "validation-failed",
        content=b"", headers={"Content-Type": "application/json"},
        where=("body", "missing")),
    Bad("unknown field", "POST", "/v1/reservations", 422, "validation-failed",
        json={**one_visitor(), "vip": True}, where=("vip", "extra_forbidden")),
    Bad("unknown field in a visitor", "POST", "/v1/reservations", 422, "validation-failed",
        json=one_visitor(seat="A1"), where=("visitors[0].seat", "extra_forbidden")),
    Bad("unknown query parameter", "GET", "/v1/reservations", 422, "validation-failed",
        params={"limt": "5"}, where=("limt", "extra_forbidden")),
    # limits
    Bad("limit huge", "GET", "/v1/reservations", 422, "validation-failed",
        params={"limit": "1000000000"}, where=("limit", "less_than_equal")),
    Bad("limit zero", "GET", "/v1/reservations", 422, "validation-failed",
        params={"limit": "0"}, where=("limit", "greater_than_equal")),
    Bad("offset negative", "GET", "/v1/reservations", 422, "validation-failed",
        params={"offset": "-1"}, where=("offset", "greater_than_equal")),
    Bad("audit limit huge", "GET", "/v1/audit", 422, "validation-failed", who="admin",
        params={"site": "yonghe-temple", "limit": str(10**12)},
        where=("limit", "less_than_equal")),
]  # fmt: skip


@pytest.fixture
async def callers(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> dict[str, dict[str, str]]:
    return {"tourist": tourist, "admin": admin, "nobody": {}}


async def send(
    client: httpx.AsyncClient, case: Bad, callers: dict[str, dict[str, str]]
) -> httpx.Response:
    return await client.request(
        case.method,
        case.path,
        json=case.json if case.content is None else None,
        content=case.content,
        params=case.params,
        headers=callers[case.who] | case.headers,
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_a_bad_input_gets_its_exact_problem(
    client: httpx.AsyncClient, runtime: Runtime, callers: dict[str, dict[str, str]], case: Bad
) -> None:
    before = (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"]

    response = await send(client, case, callers)

    assert (response.status_code, response.headers["content-type"]) == (case.status, PROBLEM), (
        response.text
    )
    problem = response.json()
    assert (problem["status"], problem["code"]) == (case.status, case.code), problem
    assert problem["type"] == f"urn:tidegate:problem:{case.code}"
    if case.where is not None:
        first = problem["errors"][0]
        assert (first["field"], first["rule"]) == case.where, problem
        assert problem["detail"].startswith(f"{case.where[0]}: "), problem
    # Nothing was taken, nothing booked.
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == before
    mine = await client.get("/v1/reservations", headers=callers["tourist"])
    assert mine.json() == []


# the ones that need a reservation first ------------------------------------------------------


async def test_confirming_an_expired_hold_is_410_and_gives_nothing_back_twice(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    held = (await hold(client, tourist)).json()
    left = (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"]
    clock.advance(timedelta(minutes=16))

    response = await client.post(f"/v1/reservations/{held['id']}/confirm", headers=tourist)

    assert response.status_code == 410, response.text
    assert response.json()["code"] == "hold-expired"
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == left + 1
    again = await client.post(f"/v1/reservations/{held['id']}/confirm", headers=tourist)
    assert (again.status_code, again.json()["code"]) == (410, "hold-expired")
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == left + 1


async def test_cancelling_twice_is_409_and_frees_the_places_once(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    before = (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"]
    held = (await hold(client, tourist)).json()
    first = await client.post(f"/v1/reservations/{held['id']}/cancel", headers=tourist)
    assert first.status_code == 200, first.text

    second = await client.post(f"/v1/reservations/{held['id']}/cancel", headers=tourist)

    assert second.status_code == 409, second.text
    assert second.json()["code"] == "invalid-transition"
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == before


async def test_a_closed_slot_is_409_site_closed(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    closed = await client.post(
        f"/v1/slots/{YONGHE_10}/close", json={"reason": "repairs"}, headers=admin
    )
    assert closed.status_code == 200, closed.text

    response = await hold(client, tourist)

    assert (response.status_code, response.json()["code"]) == (409, "site-closed"), response.text
    assert (await client.get("/v1/reservations", headers=tourist)).json() == []


async def test_an_expired_token_is_401(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, tourist: dict[str, str]
) -> None:
    clock.advance(runtime.settings.token_ttl + timedelta(seconds=1))

    response = await client.get("/v1/reservations", headers=tourist)

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_another_accounts_reservation_is_404_not_403(
    client: httpx.AsyncClient, runtime: Runtime, tourist: dict[str, str]
) -> None:
    from tests.conftest import new_tourist

    held = (await hold(client, tourist)).json()
    other = await new_tourist(client)

    for method, path in (
        ("GET", f"/v1/reservations/{held['id']}"),
        ("POST", f"/v1/reservations/{held['id']}/confirm"),
        ("POST", f"/v1/reservations/{held['id']}/cancel"),
    ):
        response = await client.request(method, path, headers=other)
        assert (response.status_code, response.json()["code"]) == (404, "not-found"), path
    mine = await client.get(f"/v1/reservations/{held['id']}", headers=tourist)
    assert mine.json()["status"] == "held"
