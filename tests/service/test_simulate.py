"""The simulator drives a whole day over HTTP: every booked party comes in and goes out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlmodel import col

from booking.models import Reservation
from capacity.clock import ManualClock
from service.runtime import Runtime
from service.simulate import Simulation

SITES = ["yonghe-temple", "temple-of-heaven"]


async def test_a_simulated_day_brings_every_party_in_and_out(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    admin_token = (await runtime.accounts.create_staff_token(role="admin", sites=[])).token
    gates = {}
    for site in SITES:
        for gate in (await client.get(f"/v1/sites/{site}")).json()["gates"]:
            token = await runtime.accounts.create_staff_token(
                role="gate", sites=[], gate=gate["id"]
            )
            gates[gate["id"]] = token.token
    simulation = Simulation(client, admin_token=admin_token, gate_tokens=gates, seed=7)

    await simulation.prepare(SITES, tourists=8)
    assert len(simulation.visits) == 8
    booked = sum(v.party for v in simulation.visits)
    assert simulation.totals.booked == booked

    # The service's day, ten minutes at a time, until every party has come and gone.
    while any(v.state != "left" for v in simulation.visits):
        clock.advance(timedelta(minutes=10))
        await simulation.step(clock.now())
        assert clock.now() < datetime(2026, 12, 1, 15, tzinfo=UTC), "still inside at 23:00"

    totals = simulation.totals
    assert (totals.entered, totals.left, totals.refused) == (booked, booked, {})
    assert {v.state for v in simulation.visits} == {"left"}
    for site in SITES:
        now = (await client.get(f"/v1/sites/{site}/occupancy", headers=admin)).json()
        assert now["inside"] == 0
        assert now["entered_today"] == sum(v.party for v in simulation.visits if v.site == site)


async def test_tourists_waiting_for_a_release_book_in_its_first_moments(
    runtime: Runtime, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    admin_token = (await runtime.accounts.create_staff_token(role="admin", sites=[])).token
    simulation = Simulation(client, admin_token=admin_token, gate_tokens={}, seed=3)

    await simulation.prepare(["yonghe-temple"], tourists=0, at_release=4)
    assert simulation.release is not None
    release_at, day = simulation.release
    assert release_at > clock.now()

    clock.set(release_at - timedelta(seconds=1))
    await simulation.step(clock.now())
    assert simulation.totals.booked_at_release == 0
    clock.set(release_at)
    await simulation.step(clock.now())

    assert simulation.totals.booked_at_release > 0
    assert simulation.totals.refused == {}
    async with runtime.sessions() as session:
        query = sa.select(sa.func.sum(Reservation.party_size)).where(
            col(Reservation.visit_date) == date.fromisoformat(day),
            col(Reservation.status) == "confirmed",
        )
        booked = (await session.execute(query)).scalar_one()
    assert booked == simulation.totals.booked_at_release
