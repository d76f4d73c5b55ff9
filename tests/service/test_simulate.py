"""The simulator drives a whole day over HTTP: every booked party comes in and goes out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

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
