"""The operators' live feed: server-sent events over HTTP, and the pushes on level changes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from booking.models import Site
from service.live import live_events
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

YONGHE = "yonghe-temple"
SOUTH = "yonghe-temple.south-gate"


def events_of(text: str) -> list[tuple[str, Any]]:
    """(event, data) of each server-sent event in a stream."""
    found = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            found.append((fields.get("event", "message"), json.loads(fields["data"])))
    return found


async def test_the_feed_streams_every_site_as_server_sent_events(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get("/v1/live", params={"events": "1"}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    [(event, sites)] = events_of(response.text)
    assert event == "occupancy"
    assert len(sites) == 11
    yonghe = next(s for s in sites if s["site"] == YONGHE)
    assert yonghe == {
        "site": YONGHE,
        "date": "2026-12-01",
        "name": "Yonghe Temple (Lama Temple)",
        "inside": 0,
        "instant_cap": 1500,
        "load": 0.0,
        "entered_today": 0,
        "daily_cap": 7500,
        "day_load": 0.0,
        "level": "green",
        "action": "normal operation",
        "entries_last_minute": 0,
        "exits_last_minute": 0,
        "places_left_today": 7500,
        "send_to": [],  # only from yellow on
    }


async def test_staff_see_only_their_sites(runtime: Runtime, client: httpx.AsyncClient) -> None:
    token = await runtime.accounts.create_staff_token(role="operator", sites=[YONGHE])
    response = await client.get(
        "/v1/live", params={"events": "1"}, headers={"Authorization": f"Bearer {token.token}"}
    )
    [(_, sites)] = events_of(response.text)
    assert [s["site"] for s in sites] == [YONGHE]


async def test_a_level_change_is_pushed_at_once(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    async with runtime.sessions() as session, session.begin():
        await session.execute(sa.update(Site).where(col(Site.id) == YONGHE).values(instant_cap=2))
    gate = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=SOUTH)
    tourist = await new_tourist(client)
    held = await hold(client, tourist, YONGHE_10, visitors=[visitor(), visitor()])
    rid = held.json()["id"]
    await client.post(f"/v1/reservations/{rid}/confirm", headers=tourist)
    code = (await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)).json()["code"]

    # A long interval: only a level change can bring the second event soon.
    stream = live_events(runtime, [YONGHE], interval=3600, tick=0.05)
    first = await anext(stream)
    scanned = await client.post(
        f"/v1/gates/{SOUTH}/scans",
        json={"code": code, "direction": "entry"},
        headers={"Authorization": f"Bearer {gate.token}"},
    )
    assert scanned.status_code == 200, scanned.text
    second = await anext(stream)
    await stream.aclose()

    assert first["event"] == "occupancy"
    assert json.loads(first["data"])[0]["level"] == "green"
    assert second["event"] == "level"
    pushed = json.loads(second["data"])[0]
    assert (pushed["inside"], pushed["level"]) == (2, "pause")
