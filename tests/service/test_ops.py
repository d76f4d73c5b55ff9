"""Liveness, readiness, metrics and the background steps the serving process runs."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from redis.asyncio import Redis

from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service import background
from service.runtime import Runtime
from tests.conftest import TODAY, YONGHE_10, hold, new_tourist


async def test_healthz_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_true_once_counters_are_built(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "counters": True, "redis": True, "database": True}


async def test_readyz_is_false_before_start(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.ready = False

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"ready": False, "counters": False, "redis": True, "database": True}


class Unreachable:
    """An engine whose database does not answer."""

    def connect(self) -> None:
        raise OSError("connection refused")


async def test_readyz_is_false_when_the_database_does_not_answer(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "engine", Unreachable())

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"ready": False, "counters": True, "redis": True, "database": False}


async def test_sweeper_step_expires_due_holds_and_counts_them(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime, clock: ManualClock
) -> None:
    accounts = [tourist, await new_tourist(client)]  # two open holds a site per account
    for i in range(3):
        assert (await hold(client, accounts[i % 2])).status_code == 201
    clock.advance(timedelta(minutes=15))

    assert await background.sweep_once(runtime) == 3

    slot = (await client.get(f"/v1/slots/{YONGHE_10}")).json()
    assert slot["remaining"] == 1000
    metrics = (await client.get("/metrics")).text
    assert "tidegate_holds_expired_total" in metrics


async def test_reconciler_step_reports_drift_as_a_metric(
    client: httpx.AsyncClient, tourist: dict[str, str], runtime: Runtime, redis: Redis
) -> None:
    assert (await hold(client, tourist)).status_code == 201
    # A unit taken in Redis with nothing in SQL: a leak (a crash between the two).
    await runtime.counters.allocate(
        SiteDay("yonghe-temple", TODAY), "1100", ["x"], now=runtime.clock.now()
    )

    drift = await background.reconcile_once(runtime)

    assert drift == 3  # one slot unit, one day unit, one visitor ID hash
    metrics = (await client.get("/metrics")).text
    assert 'tidegate_counter_drift_units{site="yonghe-temple"} 3.0' in metrics


async def test_slot_generation_step_is_idempotent(runtime: Runtime) -> None:
    assert await background.generate_once(runtime) == 0


async def test_openapi_documents_the_contract_paths_and_their_problems(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    paths = schema["paths"]
    for path in (
        "/v1/sites",
        "/v1/sites/{site_id}",
        "/v1/sites/{site_id}/slots",
        "/v1/slots/{slot_id}",
        "/v1/accounts",
        "/v1/sessions",
        "/v1/reservations",
        "/v1/reservations/{reservation_id}",
        "/v1/reservations/{reservation_id}/confirm",
        "/v1/reservations/{reservation_id}/cancel",
    ):
        assert path in paths
    hold = paths["/v1/reservations"]["post"]
    assert set(hold["responses"]) >= {"201", "401", "404", "409", "422", "503"}
    assert "sold-out" in hold["responses"]["409"]["description"]
    assert "application/problem+json" in hold["responses"]["409"]["content"]
    assert hold["summary"] == "Hold Places"
    assert hold["description"].startswith("Hold places on a timed-entry slot")
