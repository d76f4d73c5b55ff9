"""Tourists' accounts and sessions over HTTP."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.models import OutboxEvent
from booking.repository import get_reservation
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import YONGHE_10, runtime_of, verification_code, visitor
from tests.conftest import register as register_and_verify

PROBLEM_JSON = "application/problem+json"
PASSWORD = "correct horse"
# Tokens live 30 days (the default `token_ttl_days`) from the clock's 2026-12-01T02:00Z.
TOKEN_EXPIRES = "2026-12-31T02:00:00Z"
CODE_EXPIRES = "2026-12-01T02:15:00Z"


async def start(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    """POST /v1/accounts only: a pending token, a code sent, no account yet."""
    return await client.post("/v1/accounts", json={"password": PASSWORD, **body})


async def register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    """The whole registration: start, read the code sent, send it back with the token."""
    password = body.pop("password", PASSWORD)
    return await register_and_verify(client, body, password)


async def verify(client: httpx.AsyncClient, started: httpx.Response, code: str) -> httpx.Response:
    return await client.post("/v1/accounts/verify", json={"code": code}, headers=bearer(started))


async def account_of(client: httpx.AsyncClient, registered: httpx.Response) -> str:
    """The account a registration's token now belongs to (its reservations' owner)."""
    response = await client.post(
        "/v1/reservations",
        json={"slot_id": YONGHE_10, "visitors": [visitor()]},
        headers=bearer(registered),
    )
    assert response.status_code == 201, response.text
    async with runtime_of(client).sessions() as session:
        reservation = await get_reservation(session, response.json()["id"])
    assert reservation is not None
    return reservation.owner_id


def other(code: str, step: int = 1) -> str:
    return f"{(int(code) + step) % 1_000_000:06d}"


async def events(runtime: Runtime, topic: str) -> list[OutboxEvent]:
    async with runtime.sessions() as session:
        query = sa.select(OutboxEvent).where(col(OutboxEvent.topic) == topic)
        return list((await session.execute(query.order_by(col(OutboxEvent.id)))).scalars())


async def log_in(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/sessions", json=body)


def bearer(response: httpx.Response) -> dict[str, str]:
    return {"Authorization": f"Bearer {response.json()['token']}"}


def assert_token(body: dict[str, Any], *, pending: bool = False) -> None:
    assert set(body) == {"id", "token", "expires_at", "account_id", "role", "sites", "gate"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["token"]), body["token"]
    assert body["id"] == hashlib.sha256(body["token"].encode()).hexdigest()[:16]
    assert (body["sites"], body["gate"]) == ([], None)
    if pending:
        assert (body["role"], body["account_id"]) == ("pending", None)
        assert body["expires_at"] == CODE_EXPIRES
        return
    assert re.fullmatch(r"[0-9a-f]{32}", body["account_id"]), body["account_id"]
    assert body["expires_at"] == TOKEN_EXPIRES
    assert body["role"] == "tourist"


def validation_rules(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "urn:tidegate:problem:validation-failed"
    assert body["code"] == "validation-failed"
    assert body["status"] == 422
    return [(e["in"], e["field"], e["rule"]) for e in body["errors"]]


def assert_unauthorized(response: httpx.Response, detail: str, instance: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    assert response.json() == {
        "type": "urn:tidegate:problem:unauthorized",
        "title": "A valid bearer token is required",
        "status": 401,
        "code": "unauthorized",
        "detail": detail,
        "instance": instance,
    }


# registering -------------------------------------------------------------------------------


async def test_registering_answers_201_with_a_pending_token_and_sends_a_code(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await start(client, email="Li.Lei@Example.com")
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert_token(response.json(), pending=True)
    [sent] = await events(runtime, "account.verification")
    assert sent.payload["to"] == "li.lei@example.com"
    assert re.fullmatch(r"\d{6}", sent.payload["code"])
    assert sent.account_id is None
    # No account until the code comes back; the pending token may do nothing else.
    refused = await log_in(client, email="li.lei@example.com", password=PASSWORD)
    assert refused.status_code == 401
    blocked = await client.get("/v1/reservations", headers=bearer(response))
    assert blocked.status_code == 403, blocked.text
    assert blocked.json()["code"] == "account-unverified"


async def test_the_code_makes_the_account_and_the_token_the_tourists(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    started = await start(client, email="li.lei@example.com")
    code = await verification_code(runtime, "li.lei@example.com")
    verified = await verify(client, started, code)
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", verified.json()["account_id"])
    reservations = await client.get("/v1/reservations", headers=bearer(started))
    assert (reservations.status_code, reservations.json()) == (200, [])
    logged_in = await log_in(client, email="li.lei@example.com", password=PASSWORD)
    assert logged_in.status_code == 200, logged_in.text
    assert_token(logged_in.json())
    assert logged_in.json()["account_id"] == verified.json()["account_id"]


async def test_register_with_a_mobile_number(client: httpx.AsyncClient) -> None:
    response = await register(client, phone="13800138000")
    assert response.status_code == 201, response.text
    logged_in = await log_in(client, phone="13800138000", password=PASSWORD)
    assert logged_in.status_code == 200, logged_in.text


async def test_registering_a_taken_login_answers_exactly_like_a_new_one(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await register(client, email="dup@example.com")).status_code == 201
    owner = (await log_in(client, email="dup@example.com", password=PASSWORD)).json()
    sent_before = len(await events(runtime, "account.verification"))

    new = await start(client, email="someone.new@example.com")
    taken = await start(client, email="DUP@example.com")

    # No user enumeration: same status, same headers (each with its own random request id),
    # a body of the same shape.
    assert taken.status_code == new.status_code == 201
    anonymous = {"x-request-id": "(each its own)"}
    assert dict(taken.headers) | anonymous == dict(new.headers) | anonymous
    assert_token(taken.json(), pending=True)
    assert_token(new.json(), pending=True)
    # The owner is told someone tried; no code is sent for a taken login.
    assert len(await events(runtime, "account.verification")) == sent_before + 1
    [attempt] = await events(runtime, "account.registration_attempt")
    assert attempt.account_id == owner["account_id"]
    assert attempt.payload == {"channel": "email", "to": "dup@example.com"}
    # Its token can never be verified: every code is refused like a wrong one.
    for code in ("000000", "123456", "999999"):
        refused = await verify(client, taken, code)
        assert validation_rules(refused) == [("body", "code", "valid-code")]


async def test_a_wrong_code_is_422_and_makes_no_account(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    started = await start(client, email="wrong.code@example.com")
    code = await verification_code(runtime, "wrong.code@example.com")
    response = await verify(client, started, other(code))
    assert validation_rules(response) == [("body", "code", "valid-code")]
    assert other(code) not in response.text
    refused = await log_in(client, email="wrong.code@example.com", password=PASSWORD)
    assert refused.status_code == 401


async def test_five_wrong_codes_void_the_registration(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    started = await start(client, email="guesser@example.com")
    code = await verification_code(runtime, "guesser@example.com")
    for attempt in range(1, 6):
        assert (await verify(client, started, other(code, attempt))).status_code == 422
    response = await verify(client, started, code)
    assert validation_rules(response) == [("body", "code", "valid-code")]


async def test_a_code_expires_with_its_token_after_15_minutes(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock
) -> None:
    started = await start(client, email="slow@example.com")
    code = await verification_code(runtime, "slow@example.com")
    clock.advance(timedelta(minutes=15))
    response = await verify(client, started, code)
    assert_unauthorized(response, "the token is unknown, expired or revoked", "/v1/accounts/verify")


async def test_a_code_works_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    started = await start(client, email="once@example.com")
    code = await verification_code(runtime, "once@example.com")
    assert (await verify(client, started, code)).status_code == 200
    again = await verify(client, started, code)
    # The token is the tourist's now: it has nothing left to verify.
    assert (again.status_code, again.json()["code"]) == (403, "forbidden")


async def test_the_first_registration_verified_wins_the_login(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await start(client, email="twice@example.com")
    first_code = await verification_code(runtime, "twice@example.com")
    second = await start(client, email="twice@example.com", password="another horse")
    second_code = await verification_code(runtime, "twice@example.com")
    assert (await verify(client, second, second_code)).status_code == 200
    late = await verify(client, first, first_code)
    assert validation_rules(late) == [("body", "code", "valid-code")]
    logged_in = await log_in(client, email="twice@example.com", password="another horse")
    assert logged_in.status_code == 200, logged_in.text


async def test_register_with_both_email_and_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await start(client, email="both@example.com", phone="13800138000")
    assert validation_rules(response) == [("body", "body", "one-of")]


async def test_register_with_neither_email_nor_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await start(client)
    assert validation_rules(response) == [("body", "body", "one-of")]


async def test_register_with_a_malformed_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await start(client, phone="12345")
    assert validation_rules(response) == [("body", "phone", "string_pattern_mismatch")]


async def test_register_with_a_malformed_email_is_422(client: httpx.AsyncClient) -> None:
    response = await start(client, email="not-an-email")
    assert validation_rules(response) == [("body", "email", "value_error")]


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("s3cr3t", "min-length"),
        ("1234567890", "common-password"),
        ("woaini1314", "common-password"),
        ("abababababab", "too-simple"),
        ("wang.xiuying-2026", "contains-login"),
    ],
)
async def test_register_with_a_weak_password_is_422_naming_the_rule(
    client: httpx.AsyncClient, runtime: Runtime, password: str, rule: str
) -> None:
    response = await start(client, email="wang.xiuying@example.com", password=password)
    assert validation_rules(response) == [("body", "password", rule)]
    assert password not in response.text
    assert await events(runtime, "account.verification") == []


async def test_register_with_an_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    response = await start(client, email="admin@example.com", role="admin")
    assert validation_rules(response) == [("body", "role", "extra_forbidden")]


async def test_verify_with_a_malformed_code_is_422(client: httpx.AsyncClient) -> None:
    started = await start(client, email="typo@example.com")
    response = await verify(client, started, "12a456")
    assert validation_rules(response) == [("body", "code", "string_pattern_mismatch")]


async def test_verify_without_a_registration_token_is_refused(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    anonymous = await client.post("/v1/accounts/verify", json={"code": "123456"})
    assert anonymous.status_code == 401
    verified = await client.post("/v1/accounts/verify", json={"code": "123456"}, headers=tourist)
    assert (verified.status_code, verified.json()["code"]) == (403, "forbidden")


# logging in --------------------------------------------------------------------------------


async def test_log_in_with_the_right_password_gives_a_working_token(
    client: httpx.AsyncClient,
) -> None:
    registered = await register(client, email="zhang.wei@example.com")
    assert registered.status_code == 201, registered.text

    response = await log_in(client, email="zhang.wei@example.com", password=PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_token(body)
    assert body["token"] != registered.json()["token"]
    reservations = await client.get("/v1/reservations", headers=bearer(response))
    assert reservations.status_code == 200, reservations.text
    assert reservations.json() == []
    assert body["account_id"] == await account_of(client, registered)


async def test_log_in_with_a_phone_number(client: httpx.AsyncClient) -> None:
    registered = await register(client, phone="13900139000")
    assert registered.status_code == 201, registered.text

    response = await log_in(client, phone="+8613900139000", password=PASSWORD)
    assert response.status_code == 200, response.text
    assert response.json()["account_id"] == await account_of(client, registered)


async def test_log_in_with_a_wrong_password_is_401(client: httpx.AsyncClient) -> None:
    assert (await register(client, email="liu.yang@example.com")).status_code == 201

    response = await log_in(client, email="liu.yang@example.com", password="wrong horse")
    assert_unauthorized(response, "wrong login or password", "/v1/sessions")


async def test_log_in_with_an_unknown_login_is_401_like_a_wrong_password(
    client: httpx.AsyncClient,
) -> None:
    response = await log_in(client, email="nobody@example.com", password=PASSWORD)
    # The same answer as a wrong password: a caller cannot learn which logins exist.
    assert_unauthorized(response, "wrong login or password", "/v1/sessions")


async def test_log_in_with_both_email_and_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await log_in(
        client, email="liu.yang@example.com", phone="13800138000", password=PASSWORD
    )
    assert validation_rules(response) == [("body", "body", "one-of")]


async def test_a_token_works_until_one_second_before_it_expires(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    response = await register(client, email="chen.jing@example.com")
    clock.advance(timedelta(days=30) - timedelta(seconds=1))

    reservations = await client.get("/v1/reservations", headers=bearer(response))
    assert reservations.status_code == 200, reservations.text


async def test_a_token_stops_working_when_it_expires(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    response = await register(client, email="zhao.lei@example.com")
    headers = bearer(response)
    assert (await client.get("/v1/reservations", headers=headers)).status_code == 200
    clock.advance(timedelta(days=30))

    reservations = await client.get("/v1/reservations", headers=headers)
    assert_unauthorized(
        reservations, "the token is unknown, expired or revoked", "/v1/reservations"
    )
