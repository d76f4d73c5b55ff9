"""Problem details (RFC 9457) over HTTP, and ID numbers that never come back in an answer."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx

from booking.ids import make_resident_id, resident_id_check_character
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"

VALID = make_resident_id("110105", date(1990, 5, 17), 123)
_WRONG_CHECK = next(c for c in "0123456789X" if c != VALID[-1])
BAD_CHECK_DIGIT = VALID[:-1] + _WRONG_CHECK
# 30 February 1999, with the right check character: only the date is wrong.
BAD_BIRTH_DATE = "11010519990230123" + resident_id_check_character("11010519990230123")
# Born in 2099: after today by the service's clock and by the host's (the rule follows the clock).
FUTURE_BIRTH = make_resident_id("110105", date(2099, 1, 1), 7)
TOO_SHORT = VALID[:-1]
LETTERS_INSIDE = VALID[:10] + "AB" + VALID[12:]

CHECK_DIGIT_MESSAGE = (
    "The resident ID number's check character does not match; please check it for typos."
)
BIRTH_DATE_MESSAGE = "The resident ID number does not contain a plausible date of birth."
LENGTH_MESSAGE = "A resident ID number must be exactly 18 characters."
CHARACTERS_MESSAGE = "A resident ID number must be 17 digits followed by a digit or the letter X."
PASSPORT_MESSAGE = "A passport number must be 5 to 17 letters or digits."
HK_MACAU_MESSAGE = "A Hong Kong/Macau permit number must be H or M followed by 8 or 10 digits."


def person(number: str, id_type: str = "resident_id", name: str = "Zhang San") -> dict[str, str]:
    return {"name": name, "id_type": id_type, "id_number": number}


def assert_invalid_id(
    response: httpx.Response, number: str, rule: str, message: str, position: int = 0
) -> None:
    field = f"visitors[{position}].id_number"
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:tidegate:problem:validation-failed",
        "title": "The request is not valid",
        "status": 422,
        "code": "validation-failed",
        "detail": f"{field}: {message} ({rule})",
        "instance": "/v1/reservations",
        "errors": [{"in": "body", "field": field, "rule": rule, "message": message}],
    }
    assert number not in response.text


async def remaining(client: httpx.AsyncClient) -> int:
    response = await client.get(f"/v1/slots/{YONGHE_10}")
    assert response.status_code == 200, response.text
    left: int = response.json()["remaining"]
    return left


# the routing problems ----------------------------------------------------------------------


async def test_unknown_route_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nowhere")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["type"], body["status"], body["code"], body["instance"]) == (
        "urn:tidegate:problem:not-found",
        404,
        "not-found",
        "/v1/nowhere",
    )
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_method_not_allowed_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/sites")
    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    # Every method the path answers, not only the first route's (FastAPI has one per method).
    assert response.headers["Allow"] == "GET, POST"
    body = response.json()
    assert (body["type"], body["status"], body["code"], body["instance"]) == (
        "urn:tidegate:problem:method-not-allowed",
        405,
        "method-not-allowed",
        "/v1/sites",
    )
    assert body["title"] == "Method Not Allowed"


async def test_malformed_json_is_a_validation_problem(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    content = f'{{"slot_id": "{YONGHE_10}", "visitors": [{{"id_number": "{VALID}"'
    response = await client.post(
        "/v1/reservations",
        content=content.encode(),
        headers={**tourist, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "urn:tidegate:problem:validation-failed"
    assert body["code"] == "validation-failed"
    assert body["instance"] == "/v1/reservations"
    assert [(e["in"], e["rule"]) for e in body["errors"]] == [("body", "json_invalid")]
    assert VALID not in response.text
    assert await remaining(client) == 1000


async def test_malformed_json_names_the_body_not_a_character_offset(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/reservations",
        content=b"{nope",
        headers={**tourist, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert [(e["in"], e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("body", "body", "json_invalid")
    ]


async def test_a_json_array_for_a_body_is_a_validation_problem(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await client.post("/v1/reservations", json=[YONGHE_10], headers=tourist)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "validation-failed"


# ID numbers that fail their rules ----------------------------------------------------------


async def test_wrong_check_digit_is_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(BAD_CHECK_DIGIT)])
    assert_invalid_id(response, BAD_CHECK_DIGIT, "check-digit", CHECK_DIGIT_MESSAGE)
    assert await remaining(client) == 1000


async def test_impossible_birth_date_is_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(BAD_BIRTH_DATE)])
    assert_invalid_id(response, BAD_BIRTH_DATE, "birth-date", BIRTH_DATE_MESSAGE)


async def test_birth_date_after_today_is_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(FUTURE_BIRTH)])
    assert_invalid_id(response, FUTURE_BIRTH, "birth-date", BIRTH_DATE_MESSAGE)


async def test_birth_date_rule_follows_the_service_clock(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock
) -> None:
    # A century on, by the service's clock: a baby born yesterday may visit with its parent.
    clock.set(datetime(2126, 12, 1, 2, 0, tzinfo=UTC))
    await runtime.catalog.ensure_slots(site_ids=["yonghe-temple"])
    await runtime.reconciler.rebuild_missing()
    tourist = await new_tourist(client)
    baby = make_resident_id("110105", date(2126, 11, 30), 8)

    response = await hold(
        client, tourist, "yonghe-temple.2126-12-01.1000", visitors=[visitor(), person(baby)]
    )
    assert response.status_code == 201, response.text
    assert baby not in response.text


async def test_wrong_length_is_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(TOO_SHORT)])
    assert_invalid_id(response, TOO_SHORT, "length", LENGTH_MESSAGE)


async def test_letters_inside_a_resident_id_are_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(LETTERS_INSIDE)])
    assert_invalid_id(response, LETTERS_INSIDE, "characters", CHARACTERS_MESSAGE)


async def test_passport_with_bad_characters_is_422_naming_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    number = "E1234$5678"
    response = await hold(client, tourist, visitors=[person(number, "passport")])
    assert_invalid_id(response, number, "format", PASSPORT_MESSAGE)


async def test_hong_kong_macau_permit_of_the_wrong_shape_is_422(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    number = "X12345678"
    response = await hold(client, tourist, visitors=[person(number, "hk_macau_permit")])
    assert_invalid_id(response, number, "format", HK_MACAU_MESSAGE)


async def test_invalid_id_of_a_later_visitor_names_its_position(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    ok = visitor()
    response = await hold(client, tourist, visitors=[ok, person(BAD_CHECK_DIGIT)])
    assert_invalid_id(response, BAD_CHECK_DIGIT, "check-digit", CHECK_DIGIT_MESSAGE, position=1)
    assert ok["id_number"] not in response.text


async def test_an_id_number_too_long_is_422_and_not_echoed(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    number = "1" * 41
    response = await hold(client, tourist, visitors=[person(number)])
    assert response.status_code == 422, response.text
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("visitors[0].id_number", "string_too_long")
    ]
    assert number not in response.text


async def test_an_unknown_id_type_is_422_and_does_not_echo_the_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(VALID, "driving_licence")])
    assert response.status_code == 422, response.text
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("visitors[0].id_type", "enum")
    ]
    assert VALID not in response.text


async def test_another_invalid_field_does_not_echo_a_valid_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[person(VALID, name="")])
    assert response.status_code == 422, response.text
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("visitors[0].name", "string_too_short")
    ]
    assert VALID not in response.text


async def test_a_hold_without_visitors_is_422_naming_visitors(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/reservations", json={"slot_id": YONGHE_10, "visitors": []}, headers=tourist
    )
    assert response.status_code == 422, response.text
    assert [(e["in"], e["field"], e["rule"]) for e in response.json()["errors"]] == [
        ("body", "visitors", "too_short")
    ]
    assert await remaining(client) == 1000


# ID numbers in answers that succeed or refuse for other reasons -----------------------------


async def test_a_held_reservation_never_shows_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    lower_x = "11010519491231002x"
    visitors = [
        person(VALID),
        person(lower_x, name="Li Lei"),
        person("E12345678", "passport", name="Anna Smith"),
    ]
    response = await hold(client, tourist, visitors=visitors)
    assert response.status_code == 201, response.text
    assert [v["id_number_masked"] for v in response.json()["visitors"]] == [
        VALID[:4] + "*" * 10 + VALID[-4:],
        "1101**********002X",
        "E*****678",
    ]
    reservation_id = response.json()["id"]
    answers = [
        response,
        await client.get(f"/v1/reservations/{reservation_id}", headers=tourist),
        await client.get("/v1/reservations", headers=tourist),
        await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=tourist),
        await client.post(f"/v1/reservations/{reservation_id}/cancel", headers=tourist),
    ]
    for answer in answers:
        assert answer.status_code in {200, 201}, answer.text
        for number in (VALID, lower_x, lower_x.upper(), "E12345678"):
            assert number not in answer.text


async def test_an_idempotent_replay_never_shows_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    headers = {**tourist, "Idempotency-Key": "replay-1"}
    first = await hold(client, headers, visitors=[person(VALID)])
    again = await hold(client, headers, visitors=[person(VALID)])
    reused = await hold(client, headers, visitors=[person(VALID), visitor()])

    assert (first.status_code, again.status_code, reused.status_code) == (201, 201, 422)
    for answer in (first, again, reused):
        assert VALID not in answer.text


async def test_refusals_never_show_the_id_number(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    assert (await hold(client, tourist, visitors=[person(VALID)])).status_code == 201
    party = [person(VALID)] + [visitor() for _ in range(5)]
    answers = {
        "duplicate-visitor": await hold(client, tourist, visitors=[person(VALID)]),
        "party-too-large": await hold(client, tourist, visitors=party),
        "outside-booking-window": await hold(
            client, tourist, "palace-museum.2026-12-01.0830", visitors=[person(VALID)]
        ),
        "not-found": await hold(
            client, tourist, "yonghe-temple.2026-12-01.0930", visitors=[person(VALID)]
        ),
    }
    for code, answer in answers.items():
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert answer.json()["code"] == code
        assert VALID not in answer.text
