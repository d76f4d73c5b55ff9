"""Rate limits in Redis: 429 with Retry-After and the IETF RateLimit fields, then the reset."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from capacity.throttle import Throttle
from service.runtime import Runtime
from service.settings import Settings
from tests.conftest import YONGHE_10, hold, new_tourist

BUDGETS = {
    "reads": "5/minute",
    "holds": "3/minute",
    "holds-by-address": "100/minute",
    "logins": "4/minute",
    "logins-by-account": "2/minute",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limits": True, "rate_budgets": BUDGETS})


def assert_limited(response: httpx.Response, budget: str, limit: int, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate-limited"
    reset = int(response.headers["Retry-After"])
    assert 1 <= reset <= window + 1
    assert response.headers["RateLimit-Policy"] == f'"{budget}";q={limit};w={window}'
    assert response.headers["RateLimit"] == f'"{budget}";r=0;t={reset}'


async def test_reads_over_the_budget_answer_429(client: httpx.AsyncClient) -> None:
    answers = [(await client.get("/v1/sites/yonghe-temple")).status_code for _ in range(5)]

    assert answers == [200] * 5
    assert_limited(await client.get("/v1/sites/yonghe-temple"), "reads", 5, 60)


async def test_holds_are_counted_per_token(
    unlimited_accounts: None, client: httpx.AsyncClient
) -> None:
    # Three log-ins spend the address's login budget of four; the fourth is for `second`.
    first = await new_tourist(client)
    second = await new_tourist(client)
    statuses = [(await hold(client, first)).status_code for _ in range(3)]

    assert statuses == [201, 201, 201]
    assert_limited(await hold(client, first), "holds", 3, 60)
    assert (await hold(client, second)).status_code == 201


async def test_a_refused_hold_takes_no_place(
    unlimited_accounts: None, client: httpx.AsyncClient
) -> None:
    tourist = await new_tourist(client)
    for _ in range(3):
        assert (await hold(client, tourist)).status_code == 201

    refused = await hold(client, tourist)

    assert refused.status_code == 429
    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert slot["remaining"] == 997


async def test_logins_are_throttled_per_account_from_any_address(
    client: httpx.AsyncClient,
) -> None:
    login = {"email": "target@example.com", "password": "correct horse"}
    assert (await client.post("/v1/accounts", json=login)).status_code == 201
    wrong = {"email": "target@example.com", "password": "wrong guess!"}
    assert (await client.post("/v1/sessions", json=wrong)).status_code == 401

    third = await client.post("/v1/sessions", json=login)

    assert_limited(third, "logins-by-account", 2, 60)


async def test_the_budget_comes_back_after_its_window(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.throttle = Throttle(runtime.redis, {**BUDGETS, "reads": "2/second"})
    for _ in range(2):
        assert (await client.get("/v1/sites")).status_code == 200
    limited = await client.get("/v1/sites")
    assert_limited(limited, "reads", 2, 1)

    await asyncio.sleep(int(limited.headers["Retry-After"]))

    assert (await client.get("/v1/sites")).status_code == 200


async def test_rate_limits_off_lets_everything_through(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.throttle = Throttle(runtime.redis, BUDGETS, enabled=False)

    answers = {(await client.get("/v1/sites/yonghe-temple")).status_code for _ in range(20)}

    assert answers == {200}


def test_tidegate_rate_limits_off_switches_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RATE_LIMITS", "off")
    monkeypatch.setenv("TIDEGATE_RATE_BUDGETS", '{"holds": "5/second"}')

    settings = Settings()

    assert settings.rate_limits is False
    assert settings.rate_budgets == {"holds": "5/second"}
