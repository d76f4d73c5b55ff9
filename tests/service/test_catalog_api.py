"""The catalog over HTTP: sites, gates, today's load, slots, and an admin's slot capacity."""

from __future__ import annotations

from typing import Any

import httpx

from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import TODAY, YONGHE_10, hold, visitor

PROBLEM_JSON = "application/problem+json"

# The demo sites in id order, each with its daily cap and its gates (ARCHITECTURE §7).
DEMO_SITES = {
    "beihai-park": (
        50000,
        [
            "beihai-park.east-gate",
            "beihai-park.north-gate",
            "beihai-park.south-gate",
            "beihai-park.west-gate",
        ],
    ),
    "confucius-temple": (7000, ["confucius-temple.jixian-gate", "confucius-temple.xianshi-gate"]),
    "drum-and-bell-towers": (
        3500,
        ["drum-and-bell-towers.bell-tower", "drum-and-bell-towers.drum-tower"],
    ),
    "jingshan-park": (
        30000,
        [
            "jingshan-park.east-gate",
            "jingshan-park.north-gate",
            "jingshan-park.south-gate",
            "jingshan-park.west-gate",
        ],
    ),
    "national-museum": (28000, ["national-museum.north-gate", "national-museum.west-gate"]),
    "palace-museum": (
        40000,
        [
            "palace-museum.east-prosperity-gate",
            "palace-museum.gate-of-divine-prowess",
            "palace-museum.meridian-gate",
        ],
    ),
    "prince-gongs-mansion": (12000, ["prince-gongs-mansion.main-gate"]),
    "temple-of-heaven": (
        175000,
        [
            "temple-of-heaven.east-gate",
            "temple-of-heaven.north-gate",
            "temple-of-heaven.south-gate",
            "temple-of-heaven.west-gate",
        ],
    ),
    "working-peoples-cultural-palace": (
        20000,
        ["working-peoples-cultural-palace.south-gate", "working-peoples-cultural-palace.west-gate"],
    ),
    "yonghe-temple": (7500, ["yonghe-temple.south-gate"]),
    "zhongshan-park": (30000, ["zhongshan-park.east-gate", "zhongshan-park.south-gate"]),
}

YONGHE_HOURS = ["0900", "1000", "1100", "1200", "1300", "1400", "1500"]


def yonghe_slot(hhmm: str, *, remaining: int = 1000, on_sale: bool = True) -> dict[str, Any]:
    hour = int(hhmm[:2])
    return {
        "id": f"yonghe-temple.2026-12-01.{hhmm}",
        "site": "yonghe-temple",
        "date": "2026-12-01",
        "start": f"2026-12-01T{hour:02d}:00:00+08:00",
        "end": f"2026-12-01T{hour + 1:02d}:00:00+08:00",
        "label": "hourly",
        "capacity": 1000,
        "remaining": remaining,
        "status": "open",
        "closed_reason": None,
        "on_sale": on_sale,
        "sales_open_at": "2026-11-30T00:00:00+08:00",
        "sales_close_at": f"2026-12-01T{hour + 1:02d}:00:00+08:00",
        "pools": None,
    }


def palace_slot(day: str, session: str, *, on_sale: bool, opens: str) -> dict[str, Any]:
    start, end, label = {
        "0830": ("08:30", "12:00", "morning"),
        "1100": ("11:00", "16:00", "afternoon"),
    }[session]
    return {
        "id": f"palace-museum.{day}.{session}",
        "site": "palace-museum",
        "date": day,
        "start": f"{day}T{start}:00+08:00",
        "end": f"{day}T{end}:00+08:00",
        "label": label,
        "capacity": 20000,
        "remaining": 20000,
        "status": "open",
        "closed_reason": None,
        "on_sale": on_sale,
        "sales_open_at": opens,
        # No same-day sales: sales stop at midnight before the visit.
        "sales_close_at": f"{day}T00:00:00+08:00",
        "pools": None,
    }


def assert_problem(
    response: httpx.Response, status: int, code: str, title: str, detail: str, instance: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body == {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": instance,
    }
    return body


def field_rules(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["in"], e["field"], e["rule"]) for e in body["errors"]]


async def slots_of(client: httpx.AsyncClient, site: str, day: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sites/{site}/slots", params={"date": day})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def slot(client: httpx.AsyncClient, slot_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/slots/{slot_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def patch_capacity(
    client: httpx.AsyncClient, headers: dict[str, str], capacity: int, slot_id: str = YONGHE_10
) -> httpx.Response:
    return await client.patch(f"/v1/slots/{slot_id}", json={"capacity": capacity}, headers=headers)


# sites -------------------------------------------------------------------------------------


async def test_sites_lists_the_eleven_demo_sites_in_id_order(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert [site["id"] for site in response.json()] == list(DEMO_SITES)


async def test_sites_carry_their_gates(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites")
    gates = {site["id"]: [gate["id"] for gate in site["gates"]] for site in response.json()}
    assert gates == {site: expected for site, (_, expected) in DEMO_SITES.items()}


async def test_palace_museum_gates_include_the_meridian_gate_for_entry(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/sites")
    palace = next(site for site in response.json() if site["id"] == "palace-museum")
    meridian = next(g for g in palace["gates"] if g["id"] == "palace-museum.meridian-gate")
    assert meridian == {
        "id": "palace-museum.meridian-gate",
        "name_zh": "午门",
        "name_en": "Meridian Gate",
        "lat": 39.913,
        "lon": 116.3971,
        "direction": "entry",
        "flow_per_minute": 200,
    }


async def test_sites_show_todays_load_of_every_site(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites")
    loads = {site["id"]: site["today"] for site in response.json()}
    assert loads == {
        site: {"date": "2026-12-01", "open": True, "offered": cap, "remaining": cap}
        for site, (cap, _) in DEMO_SITES.items()
    }


async def test_todays_load_drops_by_the_places_held(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[visitor(), visitor()])
    assert response.status_code == 201, response.text

    response = await client.get("/v1/sites")
    loads = {site["id"]: site["today"] for site in response.json()}
    assert loads["yonghe-temple"] == {
        "date": "2026-12-01",
        "open": True,
        "offered": 7500,
        "remaining": 7498,
    }
    assert loads["palace-museum"]["remaining"] == 40000


async def test_get_site_answers_one_site_with_its_rules(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/palace-museum")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: v for k, v in body.items() if k not in {"sources", "gates"}} == {
        "id": "palace-museum",
        "name": "The Palace Museum",
        "name_zh": "故宫博物院",
        "name_en": "The Palace Museum",
        "kind": "museum",
        "lat": 39.9163,
        "lon": 116.3972,
        "timezone": "Asia/Shanghai",
        "opens": "08:30:00",
        "closes": "17:00:00",
        "last_entry": "16:00:00",
        "closed_weekdays": [0],
        "daily_cap": 40000,
        "instant_cap": 18000,
        "average_stay_minutes": 210,
        "horizon_days": 7,
        "release_time": "20:00:00",
        "same_day_sales": False,
        "party_size_limit": 5,
        "real_name": True,
        "account_day_limit": 3,
        "account_hold_limit": 2,
        "entry_grace_minutes": 0,
        "alert_thresholds": None,
        "release_batches": None,  # on sale whole, 7 days ahead at 20:00
        "pool_rollover": None,
        # Refunds are kept out of the pool (FACTS.md), back at a random later batch.
        "refund_policy": {
            "mode": "random-batch",
            "batches": ["09:00:00", "13:00:00", "17:00:00", "21:00:00"],
        },
        "fair_release": None,
        "group_rules": {
            "min_people": 2,
            "max_people": 35,
            "max_minors": 30,
            "minors_per_adult": 10,
            "groups_per_day": 200,
        },
        "closed_reason": None,
        "zones": None,  # no capacity plan applied yet
        "today": {"date": "2026-12-01", "open": True, "offered": 40000, "remaining": 40000},
    }
    assert [gate["id"] for gate in body["gates"]] == DEMO_SITES["palace-museum"][1]


async def test_get_unknown_site_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/atlantis")
    assert_problem(
        response, 404, "not-found", "Not found", "no site atlantis", "/v1/sites/atlantis"
    )


async def test_slots_of_unknown_site_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/atlantis/slots", params={"date": "2026-12-01"})
    assert_problem(
        response, 404, "not-found", "Not found", "no site atlantis", "/v1/sites/atlantis/slots"
    )


# slots -------------------------------------------------------------------------------------


async def test_yonghe_has_seven_hourly_slots_of_a_thousand(client: httpx.AsyncClient) -> None:
    slots = await slots_of(client, "yonghe-temple", "2026-12-01")
    # 09:00 ended at 10:00, which is now: it is no longer on sale.
    assert slots == [yonghe_slot(hhmm, on_sale=hhmm != "0900") for hhmm in YONGHE_HOURS]


async def test_slots_default_to_today_at_the_site(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/yonghe-temple/slots")
    assert response.status_code == 200, response.text
    assert [s["id"] for s in response.json()] == [
        f"yonghe-temple.2026-12-01.{hhmm}" for hhmm in YONGHE_HOURS
    ]


async def test_held_places_lower_only_the_held_slot(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold(client, tourist, visitors=[visitor(), visitor()])
    assert response.status_code == 201, response.text

    slots = await slots_of(client, "yonghe-temple", "2026-12-01")
    assert {s["id"]: s["remaining"] for s in slots} == {
        f"yonghe-temple.2026-12-01.{hhmm}": 998 if hhmm == "1000" else 1000 for hhmm in YONGHE_HOURS
    }
    assert await slot(client, YONGHE_10) == yonghe_slot("1000", remaining=998)


async def test_get_one_slot(client: httpx.AsyncClient) -> None:
    assert await slot(client, YONGHE_10) == yonghe_slot("1000")


async def test_get_unknown_slot_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/slots/yonghe-temple.2026-12-01.0930")
    assert_problem(
        response,
        404,
        "not-found",
        "Not found",
        "no slot yonghe-temple.2026-12-01.0930",
        "/v1/slots/yonghe-temple.2026-12-01.0930",
    )


async def test_palace_museum_has_no_slots_on_a_monday(client: httpx.AsyncClient) -> None:
    assert await slots_of(client, "palace-museum", "2026-12-07") == []


async def test_palace_museum_sells_nothing_for_today(client: httpx.AsyncClient) -> None:
    slots = await slots_of(client, "palace-museum", "2026-12-01")
    opens = "2026-11-24T20:00:00+08:00"
    assert slots == [
        palace_slot("2026-12-01", "0830", on_sale=False, opens=opens),
        palace_slot("2026-12-01", "1100", on_sale=False, opens=opens),
    ]


async def test_palace_museum_sells_tomorrow_released_a_week_ago_at_20(
    client: httpx.AsyncClient,
) -> None:
    slots = await slots_of(client, "palace-museum", "2026-12-02")
    opens = "2026-11-25T20:00:00+08:00"
    assert slots == [
        palace_slot("2026-12-02", "0830", on_sale=True, opens=opens),
        palace_slot("2026-12-02", "1100", on_sale=True, opens=opens),
    ]


async def test_palace_museum_day_not_yet_released_is_not_on_sale(
    client: httpx.AsyncClient,
) -> None:
    slots = await slots_of(client, "palace-museum", "2026-12-09")
    opens = "2026-12-02T20:00:00+08:00"
    assert slots == [
        palace_slot("2026-12-09", "0830", on_sale=False, opens=opens),
        palace_slot("2026-12-09", "1100", on_sale=False, opens=opens),
    ]


async def test_slots_with_a_bad_date_is_422_naming_date(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/yonghe-temple/slots", params={"date": "2026-13-01"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "urn:tidegate:problem:validation-failed"
    assert body["code"] == "validation-failed"
    assert body["status"] == 422
    assert body["instance"] == "/v1/sites/yonghe-temple/slots"
    assert field_rules(body) == [("query", "date", "date_from_datetime_parsing")]


async def test_slots_with_a_word_for_a_date_is_422_naming_date(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/yonghe-temple/slots", params={"date": "tomorrow"})
    assert response.status_code == 422, response.text
    assert [(e["in"], e["field"]) for e in response.json()["errors"]] == [("query", "date")]


# PATCH /v1/slots/{id} ----------------------------------------------------------------------


async def test_admin_changes_a_slots_capacity(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await patch_capacity(client, admin, 600)
    assert response.status_code == 200, response.text
    assert response.json() == {**yonghe_slot("1000"), "capacity": 600, "remaining": 600}
    assert await slot(client, YONGHE_10) == {
        **yonghe_slot("1000"),
        "capacity": 600,
        "remaining": 600,
    }


async def test_new_capacity_counts_places_already_held(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    assert (await hold(client, tourist, visitors=[visitor(), visitor()])).status_code == 201

    response = await patch_capacity(client, admin, 10)
    assert response.status_code == 200, response.text
    assert (response.json()["capacity"], response.json()["remaining"]) == (10, 8)


async def test_new_capacity_is_kept_in_sql_through_a_rebuild(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str], runtime: Runtime
) -> None:
    assert (await hold(client, tourist)).status_code == 201
    assert (await patch_capacity(client, admin, 10)).status_code == 200

    assert await runtime.reconciler.rebuild(SiteDay("yonghe-temple", TODAY))
    assert await slot(client, YONGHE_10) == {**yonghe_slot("1000"), "capacity": 10, "remaining": 9}


async def test_lowering_capacity_below_sold_cancels_nobody(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
) -> None:
    ids = []
    for _ in range(3):
        response = await hold(client, tourist)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    response = await patch_capacity(client, admin, 2)
    assert response.status_code == 200, response.text
    assert (response.json()["capacity"], response.json()["remaining"]) == (2, 0)
    for reservation_id in ids:
        response = await client.get(f"/v1/reservations/{reservation_id}", headers=tourist)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "held"


async def test_lowered_capacity_stops_new_sales(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
) -> None:
    for _ in range(3):
        assert (await hold(client, tourist)).status_code == 201
    assert (await patch_capacity(client, admin, 2)).status_code == 200

    response = await hold(client, tourist)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "sold-out"
    assert response.json()["slot_left"] == 0
    assert (await slot(client, YONGHE_10))["remaining"] == 0


async def test_raising_capacity_again_resumes_sales(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
) -> None:
    for _ in range(3):
        assert (await hold(client, tourist)).status_code == 201
    assert (await patch_capacity(client, admin, 2)).status_code == 200
    assert (await hold(client, tourist)).status_code == 409

    response = await patch_capacity(client, admin, 5)
    assert response.status_code == 200, response.text
    assert (response.json()["capacity"], response.json()["remaining"]) == (5, 2)
    first = await hold(client, tourist)
    second = await hold(client, tourist)
    assert (first.status_code, second.status_code) == (201, 201)
    assert (await hold(client, tourist)).status_code == 409
    assert (await slot(client, YONGHE_10))["remaining"] == 0


async def test_sales_resume_only_once_cancellations_bring_use_under_the_lowered_cap(
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    admin: dict[str, str],
) -> None:
    ids = []
    for _ in range(3):
        response = await hold(client, tourist)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    assert (await patch_capacity(client, admin, 2)).status_code == 200

    cancel = await client.post(f"/v1/reservations/{ids[0]}/cancel", headers=tourist)
    assert cancel.status_code == 200, cancel.text
    assert (await slot(client, YONGHE_10))["remaining"] == 0
    assert (await hold(client, tourist)).status_code == 409

    cancel = await client.post(f"/v1/reservations/{ids[1]}/cancel", headers=tourist)
    assert cancel.status_code == 200, cancel.text
    assert (await slot(client, YONGHE_10))["remaining"] == 1
    assert (await hold(client, tourist)).status_code == 201
    assert (await hold(client, tourist)).status_code == 409


async def test_patch_slot_without_a_token_is_401_with_a_challenge(
    client: httpx.AsyncClient,
) -> None:
    response = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 2})
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
        f"/v1/slots/{YONGHE_10}",
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    assert (await slot(client, YONGHE_10))["capacity"] == 1000


async def test_patch_slot_with_a_tourists_token_is_forbidden(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await patch_capacity(client, tourist, 2)
    assert_problem(
        response,
        403,
        "forbidden",
        "This token may not do that",
        "this route is for admins and the site's managers",
        f"/v1/slots/{YONGHE_10}",
    )
    assert (await slot(client, YONGHE_10))["capacity"] == 1000


async def test_patch_unknown_slot_is_not_found(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await patch_capacity(client, admin, 2, "yonghe-temple.2026-12-01.0930")
    assert_problem(
        response,
        404,
        "not-found",
        "Not found",
        "no slot yonghe-temple.2026-12-01.0930",
        "/v1/slots/yonghe-temple.2026-12-01.0930",
    )


async def test_patch_negative_capacity_is_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await patch_capacity(client, admin, -1)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation-failed"
    assert field_rules(body) == [("body", "capacity", "greater_than_equal")]
    assert (await slot(client, YONGHE_10))["capacity"] == 1000


async def test_patch_with_an_unknown_field_is_422_extra_forbidden(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/slots/{YONGHE_10}", json={"capacity": 2, "status": "closed"}, headers=admin
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation-failed"
    assert field_rules(body) == [("body", "status", "extra_forbidden")]
    assert (await slot(client, YONGHE_10))["capacity"] == 1000
