"""Crowd flow over HTTP: suggestions, the sold-out and closure offers that share their
ranking, the city's crowd index, the forecast beside the counted curve, the suggested gate,
the capacity calculator (LB/T 034-2014) and the live feed's redirections.

Real app, SQLite and Redis; the clock stands at Tuesday 1 December 2026, 10:00 in Beijing.
Every figure below is worked out by hand from the demo sites (Yonghe Temple: hourly slots
09:00-16:00 of 1000 places, instant cap 1500, daily cap 7500, stays of 90 minutes, sold one
day ahead; the Confucius Temple, another temple, is 0.31 km away).

Suggestions cache a day's forecast for 30 s and places left for 0.5 s per process, so each
test books what it needs before it first asks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

import booking.sites
from capacity.clock import ManualClock
from service.runtime import Runtime
from tests.conftest import hold, new_tourist, visitor
from tests.service.test_live import events_of

PROBLEM_JSON = "application/problem+json"
YONGHE = "yonghe-temple"
CONFUCIUS = "confucius-temple"
CONFUCIUS_NAME = "Confucius Temple and Imperial Academy Museum"
SOUTH = "yonghe-temple.south-gate"
XIANSHI = "confucius-temple.xianshi-gate"  # 30 people a minute
JIXIAN = "confucius-temple.jixian-gate"  # 20 people a minute


def yonghe(hhmm: str, day: str = "2026-12-01") -> str:
    return f"{YONGHE}.{day}.{hhmm}"


def confucius(hhmm: str, day: str = "2026-12-01") -> str:
    return f"{CONFUCIUS}.{day}.{hhmm}"


def at(hhmm: str, day: str = "2026-12-01") -> str:
    """An instant in Beijing, as the API writes it."""
    return f"{day}T{hhmm}:00+08:00"


def offer(
    slot_id: str,
    *,
    remaining: int = 1000,
    comfort: str = "comfortable",
    load: float = 0.0,
    distance_km: float = 0.0,
    reason: str,
) -> dict[str, Any]:
    """A suggestion as the API answers it, for an hourly slot."""
    site, day, hhmm = slot_id.split(".")
    end = f"{int(hhmm[:2]) + 1:02d}:{hhmm[2:]}"
    return {
        "site": site,
        "slot_id": slot_id,
        "start": at(f"{hhmm[:2]}:{hhmm[2:]}", day),
        "end": at(end, day),
        "remaining": remaining,
        "comfort": comfort,
        "load": load,
        "distance_km": distance_km,
        "reason": reason,
    }


# helpers -----------------------------------------------------------------------------------


async def staff(runtime: Runtime, role: str, *sites: str) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role=role, sites=list(sites))
    return {"Authorization": f"Bearer {token.token}"}


async def gate_token(runtime: Runtime, gate: str) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=gate)
    return {"Authorization": f"Bearer {token.token}"}


async def booked(
    client: httpx.AsyncClient, slot_id: str, party: int, *, confirm: bool = True
) -> tuple[str, dict[str, str]]:
    """A party's reservation by a new tourist; returns (reservation id, the owner's headers)."""
    tourist = await new_tourist(client)
    held = await hold(client, tourist, slot_id, visitors=[visitor() for _ in range(party)])
    assert held.status_code == 201, held.text
    reservation_id: str = held.json()["id"]
    if confirm:
        done = await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=tourist)
        assert done.status_code == 200, done.text
    return reservation_id, tourist


async def ticket(
    client: httpx.AsyncClient, reservation_id: str, owner: dict[str, str]
) -> dict[str, Any]:
    """A fresh ticket, as the owner's phone shows it (codes live a minute)."""
    response = await client.get(f"/v1/reservations/{reservation_id}/ticket", headers=owner)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def scan(
    client: httpx.AsyncClient,
    gate: str,
    device: dict[str, str],
    reservation_id: str,
    owner: dict[str, str],
    direction: str,
) -> None:
    code = (await ticket(client, reservation_id, owner))["code"]
    response = await client.post(
        f"/v1/gates/{gate}/scans", json={"code": code, "direction": direction}, headers=device
    )
    assert response.status_code == 200, response.text


async def suggestions(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/suggestions", params={"site": YONGHE, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch_site(
    client: httpx.AsyncClient, admin: dict[str, str], site: str, **changes: Any
) -> None:
    response = await client.patch(f"/v1/sites/{site}", json=changes, headers=admin)
    assert response.status_code == 200, response.text


async def set_capacity(
    client: httpx.AsyncClient, admin: dict[str, str], slot_id: str, capacity: int
) -> None:
    response = await client.patch(
        f"/v1/slots/{slot_id}", json={"capacity": capacity}, headers=admin
    )
    assert response.status_code == 200, response.text


async def close_slot(client: httpx.AsyncClient, admin: dict[str, str], slot_id: str) -> None:
    response = await client.post(
        f"/v1/slots/{slot_id}/close", json={"reason": "repairs"}, headers=admin
    )
    assert response.status_code == 200, response.text


async def close_day(client: httpx.AsyncClient, admin: dict[str, str], day: str) -> None:
    response = await client.post(
        f"/v1/sites/{YONGHE}/days/{day}/close", json={"reason": "state event"}, headers=admin
    )
    assert response.status_code == 200, response.text


async def read(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_invalid(response: httpx.Response, field: str, rule: str) -> None:
    """A 422 problem naming one field and the rule it breaks."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["type"], body["code"], body["status"]) == (
        "urn:tidegate:problem:validation-failed",
        "validation-failed",
        422,
    )
    assert body["instance"] == response.request.url.path
    assert [(e["field"], e["rule"]) for e in body["errors"]] == [(field, rule)]
    assert body["detail"].startswith(f"{field}: ")
    assert body["detail"].endswith(f"({rule})")


def inside_at(
    minute: float, arrivals: list[tuple[int, int, float]], stays: dict[int, float]
) -> float:
    """People expected inside at a minute of the day, worked out independently: arrivals
    spread evenly over their windows, each staying `d` minutes with probability `p`."""

    def arrived(before: float) -> float:
        return sum(
            people * min(max((before - start) / (end - start), 0.0), 1.0)
            for start, end, people in arrivals
        )

    return sum(p * (arrived(minute) - arrived(minute - d)) for d, p in stays.items())


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# 1. GET /v1/suggestions --------------------------------------------------------------------

NEXT_HOUR = offer(yonghe("1100"), reason="1000 places left at 11:00")
NEXT_DOOR = offer(
    confucius("1000"),
    distance_km=0.31,
    reason=f"{CONFUCIUS_NAME}, 0.3 km away: comfortable at 10:00",
)
NOON = offer(yonghe("1200"), reason="1000 places left at 12:00")
TOMORROW = offer(yonghe("1000", "2026-12-02"), reason="Wed 2 Dec: comfortable at 10:00")
NEXT_DOOR_LATER = offer(
    confucius("1100"),
    distance_km=0.31,
    reason=f"{CONFUCIUS_NAME}, 0.3 km away: comfortable at 11:00",
)


async def test_suggestions_rank_the_next_hour_the_temple_next_door_then_later_and_tomorrow(
    client: httpx.AsyncClient,
) -> None:
    """Scores: an hour apart 1, another site 1.5 + 0.5/km, a day later 2; ties go to the
    earlier start. 09:00 ended at 10:00: it is no suggestion."""
    body = await suggestions(client, time="10:00", party=2)

    assert body == {
        "site": YONGHE,
        "date": "2026-12-01",
        "time": "10:00:00",
        "party": 2,
        "wanted_slot_id": yonghe("1000"),
        "wanted_remaining": 1000,
        "wanted_comfort": "comfortable",
        # 1.0, 1.655, 2.0 (12:00 today before 10:00 tomorrow), 2.0, 2.655
        "suggestions": [NEXT_HOUR, NEXT_DOOR, NOON, TOMORROW, NEXT_DOOR_LATER],
    }


async def test_suggestions_default_to_now_at_the_site_and_one_visitor(
    client: httpx.AsyncClient,
) -> None:
    body = await suggestions(client)
    assert (body["date"], body["time"], body["party"]) == ("2026-12-01", "10:00:00", 1)
    assert body["wanted_slot_id"] == yonghe("1000")


async def test_suggestions_are_deterministic_and_limited(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/suggestions", params={"site": YONGHE, "party": 2})
    again = await client.get("/v1/suggestions", params={"site": YONGHE, "party": 2})
    assert first.status_code == again.status_code == 200
    assert first.content == again.content

    two = await suggestions(client, time="10:00", party=2, limit=2)
    assert two["suggestions"] == [NEXT_HOUR, NEXT_DOOR]


async def test_no_suggestion_is_full_for_the_party_closed_ended_or_beyond_the_horizon(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await set_capacity(client, admin, yonghe("1100"), 1)  # one place: not for two
    await close_slot(client, admin, yonghe("1200"))

    body = await suggestions(client, time="10:00", party=2, limit=20)

    # Every slot on sale with room for two, best first: 11:00 is too small, 12:00 closed,
    # 09:00 here and at the Confucius Temple ended; Yonghe sells one day ahead only.
    assert [s["slot_id"] for s in body["suggestions"]] == [
        confucius("1000"),  # 1.655
        yonghe("1000", "2026-12-02"),  # 2.0
        confucius("1100"),  # 2.655
        yonghe("1300"),  # 3.0, the earliest start of three
        yonghe("0900", "2026-12-02"),
        yonghe("1100", "2026-12-02"),
        confucius("1200"),  # 3.655
        yonghe("1400"),  # 4.0
        yonghe("1200", "2026-12-02"),
        confucius("1300"),  # 4.655
        yonghe("1500"),  # 5.0
        yonghe("1300", "2026-12-02"),
        confucius("1400"),  # 5.655
        yonghe("1400", "2026-12-02"),  # 6.0
        confucius("1500"),  # 6.655
        yonghe("1500", "2026-12-02"),  # 7.0
    ]
    assert all(s["remaining"] >= 2 for s in body["suggestions"])
    # One visitor fits in the last place at 11:00, which then comes first.
    alone = await suggestions(client, time="10:00", party=1, limit=20)
    assert [(s["slot_id"], s["remaining"]) for s in alone["suggestions"][:2]] == [
        (yonghe("1100"), 1),
        (confucius("1000"), 1000),
    ]
    assert yonghe("1200") not in {s["slot_id"] for s in alone["suggestions"]}


async def test_tomorrow_offers_no_day_after_it_beyond_the_horizon(
    client: httpx.AsyncClient,
) -> None:
    """Yonghe sells one day ahead: the day after tomorrow has its slots, not yet on sale,
    and is never offered."""
    made = await read(client, f"/v1/sites/{YONGHE}/slots?date=2026-12-03", {})
    assert [(s["on_sale"], s["remaining"]) for s in made] == [(False, 1000)] * 7

    body = await suggestions(client, date="2026-12-02", time="10:00", party=2, limit=20)

    assert (body["wanted_slot_id"], body["wanted_remaining"]) == (
        yonghe("1000", "2026-12-02"),
        1000,
    )
    days = {s["slot_id"].split(".")[1] for s in body["suggestions"]}
    assert days == {"2026-12-02"}
    assert len(body["suggestions"]) == 6 + 7  # the other Yonghe hours and the temple's


async def test_lat_and_lon_measure_distances_from_the_visitor(client: httpx.AsyncClient) -> None:
    """From Yonghe's south gate (39.9452, 116.4172): Yonghe is 0.24 km away, the Confucius
    Temple 0.37 km (haversine, R = 6371 km)."""
    body = await suggestions(client, time="10:00", party=2, lat=39.9452, lon=116.4172, limit=3)

    assert body["suggestions"] == [
        {**NEXT_HOUR, "distance_km": 0.24},
        {
            **NEXT_DOOR,
            "distance_km": 0.37,
            "reason": f"{CONFUCIUS_NAME}, 0.4 km away: comfortable at 10:00",
        },
        {**NOON, "distance_km": 0.24},
    ]


async def test_a_point_far_from_the_temple_next_door_ranks_it_lower(
    client: httpx.AsyncClient,
) -> None:
    """From Tiananmen (39.9087, 116.3975) the Confucius Temple is 4.42 km away (Yonghe 4.6):
    1.5 + 0.5 x 4.42 = 3.71 points, after every Yonghe hour within three hours."""
    body = await suggestions(client, time="10:00", party=2, lat=39.9087, lon=116.3975, limit=8)

    assert [s["slot_id"] for s in body["suggestions"]] == [
        yonghe("1100"),  # 1.0
        yonghe("1200"),  # 2.0
        yonghe("1000", "2026-12-02"),  # 2.0
        yonghe("1300"),  # 3.0
        yonghe("0900", "2026-12-02"),
        yonghe("1100", "2026-12-02"),
        confucius("1000"),  # 3.71
        yonghe("1400"),  # 4.0
    ]
    assert {s["distance_km"] for s in body["suggestions"] if s["site"] == YONGHE} == {4.6}
    temple = body["suggestions"][6]
    assert temple["distance_km"] == 4.42
    assert temple["reason"] == f"{CONFUCIUS_NAME}, 4.4 km away: comfortable at 10:00"


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"lat": 39.9}, "lon", "both-or-neither"),
        ({"lon": 116.4}, "lat", "both-or-neither"),
        ({"date": "2026-11-30"}, "date", "not-past"),
        ({"party": 0}, "party", "greater_than_equal"),
        ({"party": 51}, "party", "less_than_equal"),
        ({"limit": 0}, "limit", "greater_than_equal"),
        ({"limit": 21}, "limit", "less_than_equal"),
        ({"time": "25:00"}, "time", "time_parsing"),
        ({"time": "ten"}, "time", "time_parsing"),
        ({"lat": 91, "lon": 116.4}, "lat", "less_than_equal"),
    ],
)
async def test_suggestions_refuse_bad_queries_naming_the_field_and_rule(
    client: httpx.AsyncClient, params: dict[str, Any], field: str, rule: str
) -> None:
    response = await client.get("/v1/suggestions", params={"site": YONGHE, **params})
    assert_invalid(response, field, rule)


async def test_suggestions_for_an_unknown_site_are_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/suggestions", params={"site": "atlantis"})
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:tidegate:problem:not-found",
        "title": "Not found",
        "status": 404,
        "code": "not-found",
        "detail": "no site atlantis",
        "instance": "/v1/suggestions",
    }


@pytest.mark.parametrize(
    ("instant_cap", "wanted", "wanted_load", "later", "later_load"),
    [
        # 10 booked at 11:00 are all inside at 12:00 (stays of 90 minutes), half at 13:00.
        (7, "crowded", 1.4286, "moderate", 0.7143),  # bookings may outnumber the cap
        (12, "busy", 0.8333, "comfortable", 0.4167),
        (16, "moderate", 0.625, "comfortable", 0.3125),
    ],
)
async def test_calmer_times_say_how_much_less_crowded_and_comfort_follows_the_thresholds(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    instant_cap: int,
    wanted: str,
    wanted_load: float,
    later: str,
    later_load: float,
) -> None:
    """Comfortable under half the instant cap, moderate under 0.8, busy under 0.95, then
    crowded. A time at least 10% (and 5 points of the cap) calmer than the wanted one says
    by how much."""
    await patch_site(client, admin, YONGHE, instant_cap=instant_cap)
    await booked(client, yonghe("1100"), 5, confirm=False)
    await booked(client, yonghe("1100"), 5, confirm=False)

    body = await suggestions(client, time="11:00", party=2, limit=20)

    assert (body["wanted_slot_id"], body["wanted_remaining"], body["wanted_comfort"]) == (
        yonghe("1100"),
        990,
        wanted,
    )
    by_slot = {s["slot_id"]: s for s in body["suggestions"]}
    # 10:00: nobody is expected before 11:00; 14:00: everyone has left by then.
    assert by_slot[yonghe("1000")] == offer(yonghe("1000"), reason="100% less crowded at 10:00")
    assert by_slot[yonghe("1400")] == offer(yonghe("1400"), reason="100% less crowded at 14:00")
    assert by_slot[yonghe("1300")] == offer(
        yonghe("1300"), comfort=later, load=later_load, reason="50% less crowded at 13:00"
    )
    # As crowded as the wanted hour: places left is all there is to say.
    assert by_slot[yonghe("1200")] == offer(
        yonghe("1200"), comfort=wanted, load=wanted_load, reason="1000 places left at 12:00"
    )
    assert by_slot[confucius("1100")]["reason"] == (
        f"{CONFUCIUS_NAME}, 0.3 km away: 100% less crowded at 11:00"
    )
    assert by_slot[yonghe("1100", "2026-12-02")]["reason"] == (
        "Wed 2 Dec: 100% less crowded at 11:00"
    )


@pytest.mark.parametrize(("instant_cap", "slot"), [(10, "1300"), (20, "1100")])
async def test_exactly_half_the_cap_is_moderate(
    client: httpx.AsyncClient, admin: dict[str, str], instant_cap: int, slot: str
) -> None:
    """10 booked at 11:00: 10 of 20 inside during 11:00 (the wanted hour), 5 of 10 at 13:00."""
    await patch_site(client, admin, YONGHE, instant_cap=instant_cap)
    await booked(client, yonghe("1100"), 5, confirm=False)
    await booked(client, yonghe("1100"), 5, confirm=False)

    body = await suggestions(client, time="11:00", party=2, limit=20)

    shown = {s["slot_id"]: (s["load"], s["comfort"]) for s in body["suggestions"]}
    if slot == "1100":
        assert body["wanted_comfort"] == "moderate"
    else:
        assert shown[yonghe(slot)] == (0.5, "moderate")


async def test_crowding_moves_a_crowded_hour_down_the_ranking(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Crowding costs 3 points at a full cap: 12:00 (1 hour + 3) falls behind 13:00 (2 + 1.5)
    and every calm hour within three."""
    await patch_site(client, admin, YONGHE, instant_cap=10)
    await booked(client, yonghe("1100"), 5, confirm=False)
    await booked(client, yonghe("1100"), 5, confirm=False)

    body = await suggestions(client, time="11:00", party=2, limit=11)

    assert [(s["slot_id"], s["load"]) for s in body["suggestions"]] == [
        (yonghe("1000"), 0.0),  # 1.0
        (confucius("1100"), 0.0),  # 1.655
        (yonghe("1100", "2026-12-02"), 0.0),  # 2.0
        (confucius("1000"), 0.0),  # 2.655, earlier than 12:00 there
        (confucius("1200"), 0.0),  # 2.655
        (yonghe("1400"), 0.0),  # 3.0
        (yonghe("1000", "2026-12-02"), 0.0),  # 3.0
        (yonghe("1200", "2026-12-02"), 0.0),  # 3.0
        (yonghe("1300"), 0.5),  # 2.0 + 3 x 0.5
        (confucius("1300"), 0.0),  # 3.655
        (yonghe("1200"), 1.0),  # 1.0 + 3 x 1.0, tied with 09:00 and 13:00 tomorrow
    ]
    assert body["suggestions"][-1]["comfort"] == "crowded"


async def test_a_managers_change_of_the_instant_cap_is_used_at_once_by_this_process(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await booked(client, yonghe("1100"), 5, confirm=False)
    await booked(client, yonghe("1100"), 5, confirm=False)

    async def load_at_11() -> float:
        body = await suggestions(client, time="10:00", party=2, limit=20)
        load: float = next(s["load"] for s in body["suggestions"] if s["slot_id"] == yonghe("1100"))
        return load

    assert await load_at_11() == 0.0067  # 10 of 1500

    await patch_site(client, admin, YONGHE, instant_cap=10)

    index = (await client.get("/v1/crowd")).json()  # its first answer, made after the change
    assert [s["instant_cap"] for s in index if s["site"] == YONGHE] == [10]
    assert await load_at_11() == 1.0  # 10 of 10


# 2. A sold-out answer ----------------------------------------------------------------------


async def test_a_sold_out_answer_offers_the_first_suggestions_for_its_slot_and_party(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await patch_site(client, admin, YONGHE, instant_cap=20)
    await set_capacity(client, admin, yonghe("1000"), 4)
    await booked(client, yonghe("1000"), 4, confirm=False)
    await booked(client, yonghe("1100"), 5, confirm=False)

    refused = await hold(
        client, await new_tourist(client), yonghe("1000"), visitors=[visitor(), visitor()]
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "sold-out"
    offered = refused.json()["alternatives"]

    body = await suggestions(client, time="10:00", party=2)
    assert body["wanted_slot_id"] == yonghe("1000")
    assert offered == body["suggestions"][:3]
    # The 4 of 10:00 are inside until 11:30 and the 5 of 11:00 come in: 7 of 20 at 12:00.
    assert offered == [
        offer(
            confucius("1000"),
            distance_km=0.31,
            reason=f"{CONFUCIUS_NAME}, 0.3 km away: 100% less crowded at 10:00",
        ),
        offer(yonghe("1000", "2026-12-02"), reason="Wed 2 Dec: 100% less crowded at 10:00"),
        offer(yonghe("1100"), remaining=995, load=0.35, reason="995 places left at 11:00"),
    ]


# 3. Closures -------------------------------------------------------------------------------


async def test_a_closed_day_offers_its_cancelled_parties_the_same_ranking_elsewhere(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    reservation_id, owner = await booked(client, yonghe("1000"), 2)

    await close_day(client, admin, "2026-12-01")

    body = await read(client, f"/v1/reservations/{reservation_id}", owner)
    assert (body["status"], body["cancel_reason"]) == ("cancelled_by_site", "state event")
    alternatives = body["alternatives"]
    assert alternatives == [NEXT_DOOR, TOMORROW, NEXT_DOOR_LATER]
    assert not [a for a in alternatives if a["slot_id"].startswith(f"{YONGHE}.2026-12-01.")]
    ranking = await suggestions(client, time="10:00", party=2)
    assert (ranking["wanted_slot_id"], ranking["wanted_remaining"]) == (yonghe("1000"), 0)
    assert alternatives == ranking["suggestions"][:3]


async def test_a_closed_slot_offers_the_other_hours_of_the_day(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    reservation_id, owner = await booked(client, yonghe("1100"), 3, confirm=False)

    await close_slot(client, admin, yonghe("1100"))

    body = await read(client, f"/v1/reservations/{reservation_id}", owner)
    assert body["status"] == "cancelled_by_site"
    # The offers are worked out before the party is cancelled: its 3 still count at 12:00
    # (in at 11:00-12:00, gone by 13:30) in the forecast, kept for half a minute.
    assert body["alternatives"] == [
        offer(yonghe("1000"), reason="1000 places left at 10:00"),
        offer(yonghe("1200"), load=0.002, reason="1000 places left at 12:00"),
        offer(
            confucius("1100"),
            distance_km=0.31,
            reason=f"{CONFUCIUS_NAME}, 0.3 km away: comfortable at 11:00",
        ),
    ]
    ranking = await suggestions(client, time="11:00", party=3)
    assert body["alternatives"] == ranking["suggestions"][:3]


async def test_a_closure_right_after_a_suggestion_offers_nothing_of_the_closed_day(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half a second in production: a rush of sold-out answers keeps it warm all the time.
    # Stretched so the race is deterministic here.
    monkeypatch.setattr(booking.sites, "LOAD_TTL_SECONDS", 60.0)
    reservation_id, owner = await booked(client, yonghe("1000"), 2)
    await suggestions(client, time="10:00", party=2)  # someone looks just before

    await close_day(client, admin, "2026-12-01")

    body = await read(client, f"/v1/reservations/{reservation_id}", owner)
    assert body["status"] == "cancelled_by_site"
    offered = [a["slot_id"] for a in body["alternatives"]]
    assert not [s for s in offered if s.startswith(f"{YONGHE}.2026-12-01.")], offered


# 4. GET /v1/crowd --------------------------------------------------------------------------


async def test_the_crowd_index_is_public_cached_and_names_the_calmest_times_left(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    south = await gate_token(runtime, SOUTH)
    inside, owner = await booked(client, yonghe("1000"), 3)
    await scan(client, SOUTH, south, inside, owner, "entry")
    await booked(client, yonghe("1300"), 2, confirm=False)

    response = await client.get("/v1/crowd")  # no token

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=10"
    index = response.json()
    assert [s["site"] for s in index] == [
        "beihai-park",
        "confucius-temple",
        "drum-and-bell-towers",
        "jingshan-park",
        "national-museum",
        "palace-museum",
        "prince-gongs-mansion",
        "temple-of-heaven",
        "working-peoples-cultural-palace",
        "yonghe-temple",
        "zhongshan-park",
    ]
    # Forecast loads: 10:00 and 11:00 3/1500, 12:00 1.5/1500 (half the 10:00 party left),
    # 13:00 and 14:00 2/1500, 15:00 1/1500; 09:00 ended. Calmest first, then earliest.
    assert index[-2] == {
        "site": YONGHE,
        "name": "Yonghe Temple (Lama Temple)",
        "name_zh": "雍和宫",
        "kind": "temple",
        "lat": 39.9473,
        "lon": 116.4168,
        "date": "2026-12-01",
        "inside": 3,
        "instant_cap": 1500,
        "load": 0.002,
        "comfort": "comfortable",
        "level": "green",
        "places_left_today": 7495,
        "best_times": [
            {
                "slot_id": yonghe("1500"),
                "start": at("15:00"),
                "end": at("16:00"),
                "remaining": 1000,
                "load": 0.0007,
                "comfort": "comfortable",
            },
            {
                "slot_id": yonghe("1200"),
                "start": at("12:00"),
                "end": at("13:00"),
                "remaining": 1000,
                "load": 0.001,
                "comfort": "comfortable",
            },
            {
                "slot_id": yonghe("1300"),
                "start": at("13:00"),
                "end": at("14:00"),
                "remaining": 998,
                "load": 0.0013,
                "comfort": "comfortable",
            },
        ],
        "suggested_gate": SOUTH,
    }
    for site in index:
        assert all(t["remaining"] > 0 for t in site["best_times"])
        loads = [(t["load"], t["start"]) for t in site["best_times"]]
        assert loads == sorted(loads)


# 5. GET /v1/sites/{site}/forecast ----------------------------------------------------------


def quarters(
    arrivals: list[tuple[int, int, float]],
    stays: dict[int, float],
    *,
    opens: int,
    closes: int,
    cap: int,
) -> list[dict[str, Any]]:
    """The expected forecast, quarter by quarter; everyone leaves at closing."""
    result = []
    before = 0.0
    for start in range(opens, closes, 15):
        end = start + 15
        came = sum(
            people * (min(max(end, s), e) - min(max(start, s), e)) / (e - s)
            for s, e, people in arrivals
        )
        now = inside_at(end, arrivals, stays) if end < closes else 0.0
        result.append(
            {
                "start": at(hhmm(start)),
                "end": at(hhmm(end)),
                "arrivals": round(came, 2),
                "exits": round(before + came - now, 2),
                "inside": round(now, 2),
                "load": round(now / cap, 4),
            }
        )
        before = now
    return result


async def test_the_forecast_spreads_a_party_over_its_hour_and_keeps_it_for_the_stay(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await booked(client, yonghe("1000"), 4)
    stay = (await read(client, f"/v1/sites/{YONGHE}", {}))["average_stay_minutes"]
    assert stay == 90
    operator = await staff(runtime, "operator", YONGHE)

    body = await read(client, f"/v1/sites/{YONGHE}/forecast", operator)

    # One arrival a quarter from 10:00; nobody leaves before 11:30.
    assert [q["inside"] for q in body["quarters"]] == (
        [0.0] * 4 + [1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 3.0, 2.0, 1.0] + [0.0] * 17
    )
    assert body == {
        "site": YONGHE,
        "date": "2026-12-01",
        "instant_cap": 1500,
        "expected_visitors": 4,
        "stay": {"source": "configured", "pairs": 0, "mean_minutes": 90.0},
        "peak_inside": 4.0,
        "peak_at": at("11:00"),
        "quarters": quarters([(600, 660, 4)], {stay: 1.0}, opens=540, closes=990, cap=1500),
    }


async def test_the_forecast_is_for_the_sites_staff(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    url = f"/v1/sites/{YONGHE}/forecast"
    for role in ("manager", "operator"):
        ok = await client.get(url, headers=await staff(runtime, role, YONGHE))
        assert ok.status_code == 200, ok.text
    elsewhere = await client.get(url, headers=await staff(runtime, "operator", CONFUCIUS))
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (403, "forbidden")
    assert (await client.get(url, headers=tourist)).status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_stay_times_are_learned_from_thirty_entry_and_exit_pairs(
    runtime: Runtime, client: httpx.AsyncClient, clock: ManualClock, admin: dict[str, str]
) -> None:
    """15 visitors stay 40 minutes, 15 stay 61: buckets of 5 minutes, each at its middle
    (42 and 62, half each). A party checked out at closing left through no gate: not a
    pair."""
    south = await gate_token(runtime, SOUTH)
    parties = [await booked(client, yonghe("1000"), 5) for _ in range(6)]
    stayer = await booked(client, yonghe("1000"), 2)
    for reservation_id, owner in [*parties, stayer]:
        await scan(client, SOUTH, south, reservation_id, owner, "entry")
    clock.advance(timedelta(minutes=40))
    for reservation_id, owner in parties[:3]:
        await scan(client, SOUTH, south, reservation_id, owner, "exit")
    clock.advance(timedelta(minutes=21))
    for reservation_id, owner in parties[3:]:
        await scan(client, SOUTH, south, reservation_id, owner, "exit")
    clock.advance(timedelta(hours=5, minutes=29))  # 16:30, closing
    assert await runtime.gates.end_of_day() == (0, 2)

    body = await read(client, f"/v1/sites/{YONGHE}/forecast?date=2026-12-01", admin)

    assert body["stay"] == {"source": "learned", "pairs": 30, "mean_minutes": 52.0}
    assert body["expected_visitors"] == 32
    expected = quarters([(600, 660, 32)], {42: 0.5, 62: 0.5}, opens=540, closes=990, cap=1500)
    assert body["quarters"] == expected
    # By 10:45, 24 came and 0.8 left (half of the 1.6 in before 10:03); by 11:00, 32 and 4.8.
    assert [q["inside"] for q in body["quarters"][4:13]] == [
        8.0,
        16.0,
        23.2,
        27.2,
        19.73,
        11.73,
        4.53,
        0.53,
        0.0,
    ]
    assert (body["peak_inside"], body["peak_at"]) == (27.2, at("11:00"))


# 6. and 7. Occupancy: the forecast beside the count, the suggested gate, the ticket ----------


async def test_occupancy_sets_the_forecast_beside_the_counted_curve(
    runtime: Runtime, client: httpx.AsyncClient, clock: ManualClock, admin: dict[str, str]
) -> None:
    south = await gate_token(runtime, SOUTH)
    reservation_id, owner = await booked(client, yonghe("1000"), 4)
    await scan(client, SOUTH, south, reservation_id, owner, "entry")  # all four at 10:00
    clock.advance(timedelta(minutes=35))

    body = await read(client, f"/v1/sites/{YONGHE}/occupancy", admin)

    forecast = [0.0] * 5 + [1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 3.0, 2.0, 1.0] + [0.0] * 17
    assert body["forecast"] == [
        {"at": at(hhmm(540 + 15 * i)), "inside": inside} for i, inside in enumerate(forecast)
    ]
    assert [p["inside"] for p in body["curve"]] == [0, 0, 0, 0, 0, 4, 4, 4]
    # Quarter hours so far: 09:00 to 10:30 (10:35 is no quarter). Counted 4 and 4 against
    # the forecast's 1 and 2 at 10:15 and 10:30: errors 3 and 2 over 7 points.
    assert body["forecast_error"] == {
        "points": 7,
        "mean_abs": 0.71,
        "max_abs": 3.0,
        "mean_abs_share": 0.0005,
    }


async def test_the_suggested_gate_has_the_most_room_in_its_flow_and_the_ticket_names_it(
    runtime: Runtime, client: httpx.AsyncClient, clock: ManualClock, admin: dict[str, str]
) -> None:
    four, owner_of_four = await booked(client, confucius("1000"), 4)
    three, owner_of_three = await booked(client, confucius("1000"), 3)
    later, owner_of_later = await booked(client, confucius("1000"), 1)
    url = f"/v1/sites/{CONFUCIUS}/occupancy"
    # No entries yet: both gates are free, the first by id is named.
    assert (await read(client, url, admin))["suggested_gate"] == {
        "gate": JIXIAN,
        "name": "Gate of Assembled Worthies (Imperial Academy)",
        "load": 0.0,
    }
    assert (await ticket(client, later, owner_of_later))["suggested_gate"]["gate"] == JIXIAN

    await scan(client, XIANSHI, await gate_token(runtime, XIANSHI), four, owner_of_four, "entry")
    await scan(client, JIXIAN, await gate_token(runtime, JIXIAN), three, owner_of_three, "entry")
    clock.advance(timedelta(minutes=1))

    # The last 5 minutes: 4 of 150 at Xianshi, 3 of 100 at Jixian.
    xianshi = {
        "gate": XIANSHI,
        "name": "Gate of the Foremost Teacher (Confucius Temple)",
        "load": 0.0267,
    }
    assert (await read(client, url, admin))["suggested_gate"] == xianshi
    assert (await ticket(client, later, owner_of_later))["suggested_gate"] == xianshi

    clock.advance(timedelta(minutes=5))  # the entries are no longer recent
    assert (await read(client, url, admin))["suggested_gate"]["gate"] == JIXIAN


# 8. POST /v1/sites/{site}/capacity-plan ----------------------------------------------------

# 30 m² at 2.5 m² a person and 0.7 m² at 0.1 (7 people, not 6.999...): C1 = 12 + 7 = 19.
ZONES: list[dict[str, Any]] = [
    {"name": "Hall of Harmony", "area_m2": 30, "m2_per_person": 2.5},
    {"name": "Courtyard", "area_m2": 0.7, "m2_per_person": 0.1},
]


async def test_the_capacity_plan_works_out_the_caps_and_quotas_and_changes_nothing(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    manager = await staff(runtime, "manager", YONGHE)
    [template] = await read(client, f"/v1/sites/{YONGHE}/slot-templates", admin)

    response = await client.post(
        f"/v1/sites/{YONGHE}/capacity-plan",
        json={"zones": ZONES, "average_stay_minutes": 60},
        headers=manager,
    )

    assert response.status_code == 200, response.text
    plan = response.json()
    # C2 = floor(19 x 450 / 60) = 142; each hour floor(19 / 60 x 60) = 19, 7 x 19 <= 142.
    assert plan == {
        "site": YONGHE,
        "instant_cap": 19,
        "daily_cap": 142,
        "open_minutes": 450,
        "average_stay_minutes": 60,
        "arrivals_per_minute": 0.317,
        "slot_quotas": [
            {
                "template_id": template["id"],
                "label": "hourly",
                "start": f"{hour:02d}:00:00",
                "end": f"{hour + 1:02d}:00:00",
                "quota": 19,
            }
            for hour in range(9, 16)
        ],
        "peak_forecast_inside": 19.0,
        "applied": False,
    }
    assert plan["peak_forecast_inside"] <= plan["instant_cap"]
    site = await read(client, f"/v1/sites/{YONGHE}", {})
    assert (site["instant_cap"], site["daily_cap"], site["average_stay_minutes"]) == (
        1500,
        7500,
        90,
    )
    assert site["zones"] is None
    assert (await read(client, f"/v1/sites/{YONGHE}/slot-templates", admin)) == [template]
    slots = await read(client, f"/v1/sites/{YONGHE}/slots?date=2026-12-01", {})
    assert {(s["capacity"], s["remaining"]) for s in slots} == {(1000, 1000)}
    audit = await read(client, f"/v1/audit?site={YONGHE}", admin)
    assert "site.capacity_plan" not in {e["action"] for e in audit}


async def test_the_capacity_plan_with_more_area_and_longer_stays(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """C1 = 1200/2 + 2500/5 = 1100; C2 = floor(1100 x 450 / 75) = 6600; each hour
    floor(1100 / 75 x 60) = 880, 7 x 880 = 6160 <= 6600."""
    zones = [
        {"name": "halls", "area_m2": 1200, "m2_per_person": 2},
        {"name": "courtyards", "area_m2": 2500, "m2_per_person": 5},
    ]
    response = await client.post(
        f"/v1/sites/{YONGHE}/capacity-plan",
        json={"zones": zones, "average_stay_minutes": 75},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert (plan["instant_cap"], plan["daily_cap"], plan["arrivals_per_minute"]) == (
        1100,
        6600,
        14.667,
    )
    assert {q["quota"] for q in plan["slot_quotas"]} == {880}
    assert plan["peak_forecast_inside"] == 1100.0


async def test_an_applied_capacity_plan_becomes_the_caps_and_cancels_nobody(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    parties = [await booked(client, yonghe("1000"), 5, confirm=i % 2 == 0) for i in range(4)]
    [template] = await read(client, f"/v1/sites/{YONGHE}/slot-templates", admin)

    response = await client.post(
        f"/v1/sites/{YONGHE}/capacity-plan",
        json={"zones": ZONES, "average_stay_minutes": 60, "apply": True},
        headers=admin,
    )

    assert response.status_code == 200, response.text
    assert (response.json()["applied"], response.json()["instant_cap"]) == (True, 19)
    site = await read(client, f"/v1/sites/{YONGHE}", {})
    assert (site["instant_cap"], site["daily_cap"], site["average_stay_minutes"]) == (
        19,
        142,
        60,
    )
    assert site["zones"] == ZONES  # kept for the next plan
    assert (await read(client, f"/v1/sites/{YONGHE}/slot-templates", admin)) == [
        {**template, "capacity": 19}
    ]
    # Today: 20 were booked at 10:00, over the new 19, and keep their places; the day has
    # 142 - 20 = 122 left. Tomorrow: 19 an hour.
    today = await read(client, f"/v1/sites/{YONGHE}/slots?date=2026-12-01", {})
    assert [(s["id"], s["capacity"], s["remaining"]) for s in today] == [
        (yonghe(f"{hour:02d}00"), 19, 0 if hour == 10 else 19) for hour in range(9, 16)
    ]
    assert site["today"]["remaining"] == 122
    for day in ("2026-12-02", "2026-12-03"):
        later = await read(client, f"/v1/sites/{YONGHE}/slots?date={day}", {})
        assert [(s["capacity"], s["remaining"]) for s in later] == [(19, 19)] * 7
    for i, (reservation_id, owner) in enumerate(parties):
        body = await read(client, f"/v1/reservations/{reservation_id}", owner)
        assert body["status"] == ("confirmed" if i % 2 == 0 else "held")
    refused = await hold(client, await new_tourist(client), yonghe("1000"))
    assert (refused.status_code, refused.json()["code"]) == (409, "sold-out")
    assert (await hold(client, await new_tourist(client), yonghe("1100"))).status_code == 201

    audit = await read(client, f"/v1/audit?site={YONGHE}", admin)
    plans = [e for e in audit if e["action"] == "site.capacity_plan"]
    assert len(plans) == 1
    assert (plans[0]["site"], plans[0]["target"]) == (YONGHE, YONGHE)
    assert plans[0]["before"] == {
        "instant_cap": 1500,
        "daily_cap": 7500,
        "average_stay_minutes": 90,
        "zones": None,
        "templates": {str(template["id"]): 1000},
    }
    assert plans[0]["after"] == {
        "instant_cap": 19,
        "daily_cap": 142,
        "average_stay_minutes": 60,
        "templates": {str(template["id"]): 19},
        "slots_changed": 21,  # today's, tomorrow's and those of the day after, not on sale
        "zones": ZONES,
    }


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"zones": [], "average_stay_minutes": 60}, "zones", "too_short"),
        (
            {"zones": [{**ZONES[0], "area_m2": 0}], "average_stay_minutes": 60},
            "zones[0].area_m2",
            "greater_than",
        ),
        (
            {"zones": [ZONES[0], {**ZONES[1], "m2_per_person": 0.05}], "average_stay_minutes": 60},
            "zones[1].m2_per_person",
            "greater_than_equal",
        ),
        (
            {"zones": [{**ZONES[0], "height_m": 3}], "average_stay_minutes": 60},
            "zones[0].height_m",
            "extra_forbidden",
        ),
        ({"zones": ZONES, "average_stay_minutes": 60, "cap": 5}, "cap", "extra_forbidden"),
        ({"zones": ZONES, "average_stay_minutes": 5}, "average_stay_minutes", "greater_than_equal"),
        ({"zones": ZONES}, "average_stay_minutes", "missing"),
        (
            {
                "zones": [{"name": "kiosk", "area_m2": 1, "m2_per_person": 2}],
                "average_stay_minutes": 60,
            },
            "zones",
            "room-for-one",
        ),
    ],
)
async def test_a_bad_capacity_plan_is_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    response = await client.post(f"/v1/sites/{YONGHE}/capacity-plan", json=body, headers=admin)
    assert_invalid(response, field, rule)


async def test_the_capacity_plan_is_for_the_sites_managers(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    url = f"/v1/sites/{YONGHE}/capacity-plan"
    body = {"zones": ZONES, "average_stay_minutes": 60, "apply": True}
    other = await client.post(url, json=body, headers=await staff(runtime, "manager", CONFUCIUS))
    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
    operator = await client.post(url, json=body, headers=await staff(runtime, "operator", YONGHE))
    assert operator.status_code == 403
    assert (await client.post(url, json=body, headers=tourist)).status_code == 403
    assert (await client.post(url, json=body)).status_code == 401
    site = await read(client, f"/v1/sites/{YONGHE}", {})
    assert site["instant_cap"] == 1500


# 9. The live feed's redirections -----------------------------------------------------------


async def test_a_site_at_yellow_sends_people_to_nearby_calm_sites_of_its_kind_first(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await patch_site(client, admin, YONGHE, instant_cap=5)
    south = await gate_token(runtime, SOUTH)
    reservation_id, owner = await booked(client, yonghe("1000"), 4)
    await scan(client, SOUTH, south, reservation_id, owner, "entry")  # 4 of 5: yellow

    response = await client.get("/v1/live", params={"events": "1"}, headers=admin)

    assert response.status_code == 200, response.text
    [(_, feed)] = events_of(response.text)
    sites = {s["site"]: s for s in feed}
    assert (sites[YONGHE]["level"], sites[YONGHE]["load"]) == ("yellow", 0.8)
    # The other temple first, then the nearest calm sites (load 0 everywhere else).
    assert sites[YONGHE]["send_to"] == [
        {
            "site": CONFUCIUS,
            "name": CONFUCIUS_NAME,
            "distance_km": 0.31,
            "load": 0.0,
            "comfort": "comfortable",
            "places_left_today": 7000,
        },
        {
            "site": "drum-and-bell-towers",
            "name": "Drum Tower and Bell Tower of Beijing",
            "distance_km": 2.0,
            "load": 0.0,
            "comfort": "comfortable",
            "places_left_today": 3500,
        },
        {
            "site": "prince-gongs-mansion",
            "name": "Prince Gong's Mansion Museum",
            "distance_km": 2.85,
            "load": 0.0,
            "comfort": "comfortable",
            "places_left_today": 12000,
        },
    ]
    assert all(s["send_to"] == [] for s in feed if s["level"] == "green")
    assert {s["level"] for s in feed if s["site"] != YONGHE} == {"green"}
    # The same from the runtime's feed.
    live = {s.site: s for s in await runtime.gates.live(None)}
    assert [r.site for r in live[YONGHE].send_to] == [
        CONFUCIUS,
        "drum-and-bell-towers",
        "prince-gongs-mansion",
    ]


async def test_only_green_calmer_sites_receive_people_the_same_kind_first(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A green site of the same kind comes first even if busier than the others; once it is
    at yellow too it receives nobody, and neither sends people to the other."""
    await patch_site(client, admin, YONGHE, instant_cap=5)
    await patch_site(client, admin, CONFUCIUS, instant_cap=5)
    yonghe_gate = await gate_token(runtime, SOUTH)
    temple_gate = await gate_token(runtime, XIANSHI)
    at_yonghe, yonghe_owner = await booked(client, yonghe("1000"), 4)
    at_temple, temple_owner = await booked(client, confucius("1000"), 3)
    one_more, its_owner = await booked(client, confucius("1000"), 1)
    await scan(client, SOUTH, yonghe_gate, at_yonghe, yonghe_owner, "entry")  # yellow
    await scan(client, XIANSHI, temple_gate, at_temple, temple_owner, "entry")  # 3 of 5: green

    feed = {s.site: s for s in await runtime.gates.live(None)}

    assert (feed[CONFUCIUS].level, feed[CONFUCIUS].send_to) == ("green", [])
    assert [(r.site, r.load, r.comfort) for r in feed[YONGHE].send_to] == [
        (CONFUCIUS, 0.6, "moderate"),  # green and calmer than 0.8
        ("drum-and-bell-towers", 0.0, "comfortable"),
        ("prince-gongs-mansion", 0.0, "comfortable"),
    ]
    # Only the sites asked for are in the feed, but all are compared.
    [only] = await runtime.gates.live([YONGHE])
    assert only.send_to == feed[YONGHE].send_to

    await scan(client, XIANSHI, temple_gate, one_more, its_owner, "entry")  # 4 of 5: yellow
    feed = {s.site: s for s in await runtime.gates.live(None)}

    assert (feed[CONFUCIUS].level, feed[YONGHE].level) == ("yellow", "yellow")
    assert [(r.site, r.distance_km) for r in feed[YONGHE].send_to] == [
        ("drum-and-bell-towers", 2.0),
        ("prince-gongs-mansion", 2.85),
        ("jingshan-park", 2.99),
    ]
    assert [(r.site, r.distance_km) for r in feed[CONFUCIUS].send_to] == [
        ("drum-and-bell-towers", 1.69),
        ("prince-gongs-mansion", 2.55),
        ("jingshan-park", 2.76),
    ]
