"""Reports per site and day, as JSON and CSV."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import hold, visitor

REPORT = "/v1/sites/yonghe-temple/reports"


async def test_a_day_counts_places_by_what_became_of_them(
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
    runtime: Runtime,
    clock: ManualClock,
) -> None:
    confirmed = await hold(client, tourist, visitors=[visitor(), visitor()])
    await client.post(f"/v1/reservations/{confirmed.json()['id']}/confirm", headers=tourist)
    cancelled = await hold(client, tourist)
    await client.post(f"/v1/reservations/{cancelled.json()['id']}/cancel", headers=tourist)
    await hold(client, tourist, visitors=[visitor(), visitor(), visitor()])
    clock.advance(timedelta(minutes=16))
    await runtime.booking.expire_due()
    await hold(client, tourist, slot_id="yonghe-temple.2026-12-01.1100")

    response = await client.get(REPORT, params={"from": "2026-12-01"}, headers=admin)

    assert response.status_code == 200
    assert response.json() == [
        {
            "date": "2026-12-01",
            "offered": 7000,
            "held": 1,
            "confirmed": 2,
            "cancelled": 1,
            "cancelled_by_site": 0,
            "expired": 3,
            "entered": 0,
            "no_show": 0,
        }
    ]


async def test_a_closure_shows_as_cancelled_by_site_and_offers_less(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    held = await hold(client, tourist, visitors=[visitor(), visitor()])
    assert held.status_code == 201, held.text
    closed = await client.post(
        "/v1/slots/yonghe-temple.2026-12-01.1000/close", json={"reason": "storm"}, headers=admin
    )
    assert closed.status_code == 200, closed.text

    response = await client.get(REPORT, params={"from": "2026-12-01"}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == [
        {
            "date": "2026-12-01",
            "offered": 6000,
            "held": 0,
            "confirmed": 0,
            "cancelled": 0,
            "cancelled_by_site": 2,
            "expired": 0,
            "entered": 0,
            "no_show": 0,
        }
    ]


async def test_a_range_has_one_row_per_day_and_csv_on_request(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    await hold(client, tourist)

    response = await client.get(
        REPORT,
        params={"from": "2026-12-01", "to": "2026-12-04"},
        headers=admin | {"Accept": "text/csv"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text.splitlines() == [
        "date,offered,held,confirmed,cancelled,cancelled_by_site,expired,entered,no_show",
        "2026-12-01,7000,1,0,0,0,0,0,0",
        "2026-12-02,7000,0,0,0,0,0,0,0",
        "2026-12-03,7000,0,0,0,0,0,0,0",
        "2026-12-04,0,0,0,0,0,0,0,0",  # beyond the booking horizon: no slots yet
    ]


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"from": "2026-12-05", "to": "2026-12-01"}, "to", "after-from"),
        ({"from": "2026-01-01", "to": "2026-12-01"}, "to", "max-range"),
        ({}, "from", "missing"),
        ({"from": "yesterday"}, "from", "date_from_datetime_parsing"),
    ],
)
async def test_bad_report_ranges_name_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    params: dict[str, str],
    field: str,
    rule: str,
) -> None:
    response = await client.get(REPORT, params=params, headers=admin)

    assert response.status_code == 422
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [(field, rule)]


async def test_managers_read_only_their_sites_reports(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await runtime.accounts.create_staff_token(role="manager", sites=["palace-museum"])
    manager = {"Authorization": f"Bearer {token.token}"}

    theirs = await client.get(
        "/v1/sites/palace-museum/reports", params={"from": "2026-12-01"}, headers=manager
    )
    other = await client.get(REPORT, params={"from": "2026-12-01"}, headers=manager)

    assert theirs.status_code == 200
    assert other.status_code == 403
