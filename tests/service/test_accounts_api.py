"""Tourists' accounts and sessions over HTTP."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import httpx

from capacity.clock import ManualClock

PROBLEM_JSON = "application/problem+json"
PASSWORD = "correct horse"
# Tokens live 30 days (the default `token_ttl_days`) from the clock's 2026-12-01T02:00Z.
TOKEN_EXPIRES = "2026-12-31T02:00:00Z"


async def register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/accounts", json={"password": PASSWORD, **body})


async def log_in(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/sessions", json=body)


def bearer(response: httpx.Response) -> dict[str, str]:
    return {"Authorization": f"Bearer {response.json()['token']}"}


def assert_token(body: dict[str, Any]) -> None:
    assert set(body) == {"id", "token", "expires_at", "account_id", "role", "sites", "gate"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["token"]), body["token"]
    assert body["id"] == hashlib.sha256(body["token"].encode()).hexdigest()[:16]
    assert (body["sites"], body["gate"]) == ([], None)
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


async def test_register_with_an_email_answers_201_with_a_token(client: httpx.AsyncClient) -> None:
    response = await register(client, email="li.lei@example.com")
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert_token(response.json())


async def test_register_with_a_mobile_number_answers_201_with_a_token(
    client: httpx.AsyncClient,
) -> None:
    response = await register(client, phone="13800138000")
    assert response.status_code == 201, response.text
    assert_token(response.json())


async def test_registration_token_works_at_once(client: httpx.AsyncClient) -> None:
    response = await register(client, email="han.meimei@example.com")
    assert response.status_code == 201, response.text

    reservations = await client.get("/v1/reservations", headers=bearer(response))
    assert reservations.status_code == 200, reservations.text
    assert reservations.json() == []


async def test_register_with_both_email_and_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await register(client, email="both@example.com", phone="13800138000")
    assert validation_rules(response) == [("body", "body", "one-of")]


async def test_register_with_neither_email_nor_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await register(client)
    assert validation_rules(response) == [("body", "body", "one-of")]


async def test_register_with_a_malformed_phone_is_422(client: httpx.AsyncClient) -> None:
    response = await register(client, phone="12345")
    assert validation_rules(response) == [("body", "phone", "string_pattern_mismatch")]


async def test_register_with_a_malformed_email_is_422(client: httpx.AsyncClient) -> None:
    response = await register(client, email="not-an-email")
    assert validation_rules(response) == [("body", "email", "value_error")]


async def test_register_with_a_short_password_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/accounts", json={"email": "short@example.com", "password": "s3cr3t"}
    )
    assert validation_rules(response) == [("body", "password", "string_too_short")]
    assert "s3cr3t" not in response.text


async def test_register_with_an_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    response = await register(client, email="admin@example.com", role="admin")
    assert validation_rules(response) == [("body", "role", "extra_forbidden")]


async def test_register_a_taken_email_is_409_account_exists(client: httpx.AsyncClient) -> None:
    assert (await register(client, email="dup@example.com")).status_code == 201

    response = await register(client, email="dup@example.com")
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:tidegate:problem:account-exists",
        "title": "An account with this email or phone exists",
        "status": 409,
        "code": "account-exists",
        "detail": "an account with this email exists",
        "instance": "/v1/accounts",
    }


async def test_register_a_taken_email_in_other_case_is_409(client: httpx.AsyncClient) -> None:
    assert (await register(client, email="wang.fang@example.com")).status_code == 201

    response = await register(client, email="Wang.Fang@Example.COM")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "account-exists"


async def test_register_a_taken_phone_with_country_code_is_409(client: httpx.AsyncClient) -> None:
    assert (await register(client, phone="13800138000")).status_code == 201

    response = await register(client, phone="+8613800138000")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "account-exists"
    assert response.json()["detail"] == "an account with this phone exists"


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
    assert body["account_id"] == registered.json()["account_id"]
    assert body["token"] != registered.json()["token"]
    reservations = await client.get("/v1/reservations", headers=bearer(response))
    assert reservations.status_code == 200, reservations.text
    assert reservations.json() == []


async def test_log_in_with_a_phone_number(client: httpx.AsyncClient) -> None:
    registered = await register(client, phone="13900139000")
    assert registered.status_code == 201, registered.text

    response = await log_in(client, phone="+8613900139000", password=PASSWORD)
    assert response.status_code == 200, response.text
    assert response.json()["account_id"] == registered.json()["account_id"]


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
