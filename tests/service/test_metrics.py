"""What /metrics tells Prometheus: bookings and refusals, per-site gauges, request latency."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

YONGHE = "yonghe-temple"
SOUTH = "yonghe-temple.south-gate"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_bookings_refusals_and_show_each_sites_state(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    before = await scrape(client)
    tourist = await new_tourist(client)
    kept = await hold(client, tourist, YONGHE_10, visitors=[visitor(), visitor()])
    rid = kept.json()["id"]
    await client.post(f"/v1/reservations/{rid}/confirm", headers=tourist)
    await hold(client, tourist, "yonghe-temple.2026-12-01.1100")  # stays open
    dropped = await hold(client, await new_tourist(client), "yonghe-temple.2026-12-01.1200")
    await client.post(
        f"/v1/reservations/{dropped.json()['id']}/cancel", headers=tourist
    )  # not the owner: 404
    await client.patch(
        "/v1/slots/yonghe-temple.2026-12-01.1300", json={"capacity": 0}, headers=admin
    )
    refused = await hold(client, await new_tourist(client), "yonghe-temple.2026-12-01.1300")
    assert refused.json()["code"] == "sold-out"
    gate = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=SOUTH)
    code = (await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)).json()["code"]
    scanned = await client.post(
        f"/v1/gates/{SOUTH}/scans",
        json={"code": code, "direction": "entry"},
        headers={"Authorization": f"Bearer {gate.token}"},
    )
    assert scanned.status_code == 200, scanned.text

    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tidegate_bookings_total", change="held") == 3
    assert delta("tidegate_bookings_total", change="confirmed") == 1
    assert delta("tidegate_bookings_total", change="cancelled") == 0
    assert delta("tidegate_refusals_total", code="sold-out") == 1
    assert delta("tidegate_refusals_total", code="not-found") == 1
    assert value(after, "tidegate_people_inside", site=YONGHE) == 2
    assert value(after, "tidegate_alert_level", site=YONGHE) == 0
    assert value(after, "tidegate_open_holds", site=YONGHE) == 2
    assert value(after, "tidegate_open_holds", site="palace-museum") == 0
    assert delta("tidegate_request_seconds_count", method="POST", route="/v1/reservations") == 4
    assert (
        delta("tidegate_request_seconds_count", method="POST", route="/v1/gates/{gate_id}/scans")
        == 1
    )
