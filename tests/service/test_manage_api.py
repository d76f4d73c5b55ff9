"""Site managers' tools over HTTP: sites, gates, slot templates, slot generation, the audit.

Against the real app, SQLite and Redis. Only admins create sites; every other change is
refused to anyone but admins and the site's own managers (a manager of another site is told
403 before its body is even looked at), refuses unknown fields, is checked after merging with
what is stored, takes effect on sale at once (the counters of the site's days are rebuilt) and
is audited.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from booking.accounts import hash_token
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"
YONGHE = "yonghe-temple"
SOUTH_GATE = "yonghe-temple.south-gate"
TODAY = date(2026, 12, 1)
AT = "2026-12-01T02:00:00Z"  # the audit's `at` of every change made at the test clock's time
ALL_WEEK = [0, 1, 2, 3, 4, 5, 6]
HOURLY = ["0900", "1000", "1100", "1200", "1300", "1400", "1500"]

NEW_SITE: dict[str, Any] = {
    "id": "hutong-museum",
    "name_zh": "胡同博物馆",
    "name_en": "Hutong Museum",
    "kind": "museum",
    "lat": 39.94,
    "lon": 116.4,
    "opens": "09:00",
    "closes": "17:00",
    "last_entry": "16:30",
    "daily_cap": 2000,
    "instant_cap": 400,
}
NEW_GATE: dict[str, Any] = {
    "id": "yonghe-temple-east-gate",
    "name_zh": "东门",
    "name_en": "East Gate",
    "lat": 39.9473,
    "lon": 116.4185,
    "direction": "entry",
    "flow_per_minute": 25,
}
SOUTH: dict[str, Any] = {  # Yonghe Temple's demo gate
    "id": SOUTH_GATE,
    "name_zh": "南门",
    "name_en": "South Gate",
    "lat": 39.9452,
    "lon": 116.4172,
    "direction": "both",
    "flow_per_minute": 40,
}
EVENING: dict[str, Any] = {"label": "evening", "start": "16:00", "end": "16:30", "capacity": 50}
EXTRA = "Extra inputs are not permitted"


# helpers -----------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def manager(runtime: Runtime, *sites: str) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role="manager", sites=list(sites))
    return bearer(token.token)


def actor(headers: dict[str, str]) -> str:
    """How the audit names a staff token: a prefix of its hash, never the token."""
    return f"token:{hash_token(headers['Authorization'].removeprefix('Bearer '))[:12]}"


def assert_problem(
    response: httpx.Response, status: int, code: str, title: str, detail: str, instance: str
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": instance,
    }


def assert_invalid(
    response: httpx.Response, instance: str, field: str, rule: str, message: str
) -> None:
    """A 422 naming exactly one field and its rule."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:tidegate:problem:validation-failed",
        "title": "The request is not valid",
        "status": 422,
        "code": "validation-failed",
        "detail": f"{field}: {message} ({rule})",
        "instance": instance,
        "errors": [{"in": "body", "field": field, "rule": rule, "message": message}],
    }


def assert_forbidden(response: httpx.Response, detail: str, instance: str) -> None:
    assert_problem(response, 403, "forbidden", "This token may not do that", detail, instance)


def assert_not_found(response: httpx.Response, detail: str, instance: str) -> None:
    assert_problem(response, 404, "not-found", "Not found", detail, instance)


async def site_of(client: httpx.AsyncClient, site_id: str = YONGHE) -> dict[str, Any]:
    response = await client.get(f"/v1/sites/{site_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def slots_of(
    client: httpx.AsyncClient, day: str, site_id: str = YONGHE
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sites/{site_id}/slots", params={"date": day})
    assert response.status_code == 200, response.text
    slots: list[dict[str, Any]] = response.json()
    return slots


async def audit(
    client: httpx.AsyncClient, headers: dict[str, str], site_id: str = YONGHE
) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params={"site": site_id}, headers=headers)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def without_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in event.items() if k != "id"} for event in events]


async def hourly_template(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """The id of Yonghe Temple's demo template (hourly, 09:00-16:00, 1000 places)."""
    response = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=headers)
    assert response.status_code == 200, response.text
    (template,) = response.json()
    template_id: int = template["id"]
    return template_id


def template_view(template_id: int, **changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": template_id,
        "site": YONGHE,
        "label": "hourly",
        "start": "09:00:00",
        "end": "16:00:00",
        "capacity": 1000,
        "repeat_minutes": 60,
        "weekdays": ALL_WEEK,
        "pools": None,
    }
    return view | changes


async def day_cap(runtime: Runtime, day: date) -> int:
    load = await runtime.counters.load(SiteDay(YONGHE, day))
    assert load is not None
    return load.day.cap


async def generate(
    client: httpx.AsyncClient, headers: dict[str, str], first: str, last: str, site: str = YONGHE
) -> httpx.Response:
    return await client.post(
        f"/v1/sites/{site}/slots/generate", json={"from": first, "to": last}, headers=headers
    )


def routes(template_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route of the managers' tools on Yonghe Temple, with a valid body. The first,
    creating a site, is for admins only."""
    return [
        ("POST", "/v1/sites", {**NEW_SITE, "id": YONGHE + "-annex"}),
        ("PATCH", f"/v1/sites/{YONGHE}", {"daily_cap": 5000}),
        ("POST", f"/v1/sites/{YONGHE}/gates", NEW_GATE),
        ("PATCH", f"/v1/sites/{YONGHE}/gates/{SOUTH_GATE}", {"flow_per_minute": 50}),
        ("GET", f"/v1/sites/{YONGHE}/slot-templates", None),
        ("POST", f"/v1/sites/{YONGHE}/slot-templates", EVENING),
        ("PATCH", f"/v1/sites/{YONGHE}/slot-templates/{template_id}", {"capacity": 900}),
        ("DELETE", f"/v1/sites/{YONGHE}/slot-templates/{template_id}", None),
        ("POST", f"/v1/sites/{YONGHE}/slots/generate", {"from": "2026-12-05", "to": "2026-12-06"}),
        ("GET", f"/v1/audit?site={YONGHE}", None),
    ]


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def nothing_changed(client: httpx.AsyncClient, admin: dict[str, str], template: int) -> None:
    assert await audit(client, admin) == []
    site = await site_of(client)
    assert (site["daily_cap"], [g["id"] for g in site["gates"]]) == (7500, [SOUTH_GATE])
    assert site["gates"][0]["flow_per_minute"] == 40
    listed = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=admin)
    assert listed.json() == [template_view(template)]
    assert await slots_of(client, "2026-12-05") == []
    assert (await client.get(f"/v1/sites/{YONGHE}-annex")).status_code == 404


# who may call ------------------------------------------------------------------------------


async def test_no_token_is_401_on_every_route(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    for method, path, body in routes(template):
        response = await call(client, method, path, body)
        assert_problem(
            response,
            401,
            "unauthorized",
            "A valid bearer token is required",
            "send Authorization: Bearer <token>",
            path.split("?")[0],
        )
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'
    await nothing_changed(client, admin, template)


async def test_a_tourist_is_403_on_every_route(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    for method, path, body in routes(template):
        response = await call(client, method, path, body, tourist)
        detail = (
            "this route is for admins"
            if path == "/v1/sites"
            else "this route is for admins and the site's managers"
        )
        assert_forbidden(response, detail, path.split("?")[0])
    await nothing_changed(client, admin, template)


async def test_a_manager_of_another_site_is_403_on_every_route(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    palace_manager = await manager(runtime, "palace-museum")
    for method, path, body in routes(template):
        response = await call(client, method, path, body, palace_manager)
        detail = (
            "this route is for admins"
            if path == "/v1/sites"
            else f"this token is not for site {YONGHE}"
        )
        assert_forbidden(response, detail, path.split("?")[0])
    await nothing_changed(client, admin, template)


def bad_bodies(template_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Routes of Yonghe Temple, each with a body its own manager would be told 422 for."""
    slot = f"/v1/slots/{YONGHE_10}"
    return [
        ("PATCH", f"/v1/sites/{YONGHE}", {}),
        ("PATCH", f"/v1/sites/{YONGHE}", {"daily_cap": 5000, "colour": "red"}),
        ("POST", f"/v1/sites/{YONGHE}/gates", {**NEW_GATE, "direction": "in"}),
        ("PATCH", f"/v1/sites/{YONGHE}/gates/{SOUTH_GATE}", {}),
        ("POST", f"/v1/sites/{YONGHE}/slot-templates", {**EVENING, "end": "15:00"}),
        ("PATCH", f"/v1/sites/{YONGHE}/slot-templates/{template_id}", {"id": 1}),
        ("POST", f"/v1/sites/{YONGHE}/slots/generate", {"from": "2026-12-05"}),
        ("POST", f"/v1/sites/{YONGHE}/close", {}),
        ("POST", f"/v1/sites/{YONGHE}/days/2026-12-02/close", {"reason": "storm", "x": 1}),
        ("PATCH", slot, {}),
        ("PATCH", slot, {"capacity": -1}),
        ("POST", f"{slot}/close", {}),
        ("POST", f"{slot}/close", None),
    ]


async def test_a_manager_of_another_site_is_403_whatever_its_body(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    palace_manager = await manager(runtime, "palace-museum")
    yonghe_manager = await manager(runtime, YONGHE)
    for method, path, body in bad_bodies(template):
        # The site's own manager is told what is wrong with the body...
        own = await call(client, method, path, body, yonghe_manager)
        assert own.status_code == 422, (method, path, body, own.text)
        assert own.json()["code"] == "validation-failed"
        # ...a manager of another site only that the site is not its own.
        response = await call(client, method, path, body, palace_manager)
        assert_forbidden(response, f"this token is not for site {YONGHE}", path)
    await nothing_changed(client, admin, template)
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["capacity"] == 1000


async def test_the_sites_own_manager_may_use_every_route(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    yonghe_manager = await manager(runtime, YONGHE)
    statuses = []
    for method, path, body in routes(template)[1:]:  # creating a site is for admins: see below
        response = await call(client, method, path, body, yonghe_manager)
        statuses.append((method, path.split("/")[-1], response.status_code))
    assert statuses == [
        ("PATCH", YONGHE, 200),
        ("POST", "gates", 201),
        ("PATCH", SOUTH_GATE, 200),
        ("GET", "slot-templates", 200),
        ("POST", "slot-templates", 201),
        ("PATCH", str(template), 200),
        ("DELETE", str(template), 204),
        ("POST", "generate", 200),
        ("GET", f"audit?site={YONGHE}", 200),
    ]
    events = await audit(client, yonghe_manager)
    assert [(e["action"], e["actor"]) for e in events] == [
        (action, actor(yonghe_manager))
        for action in [
            "slots.generate",
            "template.delete",
            "template.update",
            "template.create",
            "gate.update",
            "gate.create",
            "site.update",
        ]
    ]


# sites -------------------------------------------------------------------------------------


async def test_an_admin_creates_a_site_with_the_defaults(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/sites", json=NEW_SITE, headers=admin)

    assert response.status_code == 201, response.text
    stored = {
        "id": "hutong-museum",
        "name_zh": "胡同博物馆",
        "name_en": "Hutong Museum",
        "kind": "museum",
        "lat": 39.94,
        "lon": 116.4,
        "timezone": "Asia/Shanghai",
        "opens": "09:00:00",
        "closes": "17:00:00",
        "last_entry": "16:30:00",
        "closed_weekdays": [],
        "daily_cap": 2000,
        "instant_cap": 400,
        "average_stay_minutes": 120,
        "horizon_days": 7,
        "release_time": "20:00:00",
        "same_day_sales": True,
        "party_size_limit": 5,
        "real_name": True,
        "account_day_limit": 3,
        "account_hold_limit": 2,
        "entry_grace_minutes": 15,
        "alert_thresholds": None,
        "release_batches": None,
        "pool_rollover": None,
        "refund_policy": None,
        "fair_release": None,
        "group_rules": None,
        "closed_reason": None,
        "zones": None,
    }
    assert response.json() == {
        **stored,
        "name": "Hutong Museum",
        "gates": [],
        # Nothing on sale until it has templates and slots.
        "today": {"date": "2026-12-01", "open": False, "offered": 0, "remaining": 0},
        "sources": {},
    }
    assert await site_of(client, "hutong-museum") == response.json()
    assert without_ids(await audit(client, admin, "hutong-museum")) == [
        {
            "at": AT,
            "actor": actor(admin),
            "action": "site.create",
            "site": "hutong-museum",
            "target": "hutong-museum",
            "before": {},
            "after": stored,
        }
    ]


async def test_a_manager_whose_token_names_the_new_site_may_not_create_it(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    # The token API only names existing sites, so this token is issued directly.
    async with runtime.sessions() as session, session.begin():
        token = await runtime.accounts._issue(
            session, account_id=None, role="manager", sites=["hutong-museum"]
        )
    headers = bearer(token.token)

    response = await client.post("/v1/sites", json=NEW_SITE, headers=headers)

    assert_forbidden(response, "this route is for admins", "/v1/sites")
    assert_not_found(
        await client.get("/v1/sites/hutong-museum"),
        "no site hutong-museum",
        "/v1/sites/hutong-museum",
    )
    assert_not_found(
        await client.get("/v1/audit", params={"site": "hutong-museum"}, headers=admin),
        "no site hutong-museum",
        "/v1/audit",
    )
    # Admins create it, then its managers act on it: the audit names the admin only.
    assert (await client.post("/v1/sites", json=NEW_SITE, headers=admin)).status_code == 201
    events = await audit(client, headers, "hutong-museum")
    assert [(e["action"], e["actor"]) for e in events] == [("site.create", actor(admin))]
    changed = await client.patch(
        "/v1/sites/hutong-museum", json={"daily_cap": 1500}, headers=headers
    )
    assert changed.status_code == 200, changed.text


async def test_a_manager_may_not_create_a_site_its_token_does_not_name(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/sites", json=NEW_SITE, headers=await manager(runtime, YONGHE))

    assert_forbidden(response, "this route is for admins", "/v1/sites")
    assert (await client.get("/v1/sites/hutong-museum")).status_code == 404
    assert await audit(client, admin) == []


async def test_creating_an_existing_site_is_409_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/sites", json={**NEW_SITE, "id": YONGHE, "daily_cap": 9999}, headers=admin
    )

    assert_problem(
        response, 409, "conflict", "It exists already", f"site {YONGHE} exists", "/v1/sites"
    )
    site = await site_of(client)
    assert (site["name_en"], site["daily_cap"]) == ("Yonghe Temple (Lama Temple)", 7500)
    assert await audit(client, admin) == []


@pytest.mark.parametrize(
    ("changes", "field", "rule", "message"),
    [
        ({"closes": "08:00"}, "closes", "after-opens", "closes before it opens"),
        (
            {"last_entry": "17:30"},
            "last_entry",
            "within-opening-hours",
            "the last entry must be between opening and closing",
        ),
        (
            {"instant_cap": 2001},
            "instant_cap",
            "at-most-daily-cap",
            "more people inside at once than a whole day admits",
        ),
        ({"timezone": "Asia/Atlantis"}, "timezone", "time-zone", "not an IANA time zone name"),
        ({"id": "Hutong Museum"}, "id", "string_pattern_mismatch", None),
        ({"closed_weekdays": [0, 0]}, "closed_weekdays", "distinct", "each weekday at most once"),
        ({"closed_reason": "storm"}, "closed_reason", "extra_forbidden", EXTRA),
        ({"sources": {"x": "y"}}, "sources", "extra_forbidden", EXTRA),
    ],
)
async def test_a_new_site_is_checked(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    changes: dict[str, Any],
    field: str,
    rule: str,
    message: str | None,
) -> None:
    response = await client.post("/v1/sites", json={**NEW_SITE, **changes}, headers=admin)

    if message is None:
        message = "String should match pattern '^[a-z0-9-]{1,64}$'"
    assert_invalid(response, "/v1/sites", field, rule, message)
    assert (await client.get(f"/v1/sites/{NEW_SITE['id']}")).status_code == 404


async def test_lowering_the_daily_cap_takes_effect_on_sale_at_once_and_is_audited(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    assert (await hold(client, tourist, visitors=[visitor(), visitor()])).status_code == 201
    assert (await site_of(client))["today"] == {
        "date": "2026-12-01",
        "open": True,
        "offered": 7500,
        "remaining": 7498,
    }
    yonghe_manager = await manager(runtime, YONGHE)

    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"daily_cap": 5000}, headers=yonghe_manager
    )

    assert response.status_code == 200, response.text
    assert response.json()["daily_cap"] == 5000
    # The places already taken stay taken.
    today = {"date": "2026-12-01", "open": True, "offered": 5000, "remaining": 4998}
    assert response.json()["today"] == today
    assert (await site_of(client))["today"] == today
    # Every day of the site's on sale in Redis, not only today.
    assert [await day_cap(runtime, date(2026, 12, d)) for d in (1, 2, 3)] == [5000, 5000, 5000]
    assert without_ids(await audit(client, admin)) == [
        {
            "at": AT,
            "actor": actor(yonghe_manager),
            "action": "site.update",
            "site": YONGHE,
            "target": YONGHE,
            "before": {"daily_cap": 7500},
            "after": {"daily_cap": 5000},
        }
    ]


async def test_a_lower_party_size_limit_refuses_larger_parties_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"party_size_limit": 2}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["party_size_limit"] == 2

    refused = await hold(client, tourist, visitors=[visitor(), visitor(), visitor()])

    assert refused.status_code == 422, refused.text
    assert refused.json() == {
        "type": "urn:tidegate:problem:party-too-large",
        "title": "Too many visitors in one reservation",
        "status": 422,
        "code": "party-too-large",
        "detail": "3 visitors asked for; at most 2 per reservation here",
        "instance": "/v1/reservations",
        "max_party_size": 2,
    }
    assert (await hold(client, tourist, visitors=[visitor(), visitor()])).status_code == 201
    assert (await site_of(client))["today"]["remaining"] == 7498


def account_limit(response: httpx.Response, detail: str, limit: int, per: str) -> None:
    assert response.status_code == 409, response.text
    assert response.json() == {
        "type": "urn:tidegate:problem:account-limit",
        "title": "This account has reached its limit here",
        "status": 409,
        "code": "account-limit",
        "detail": detail,
        "instance": "/v1/reservations",
        "limit": limit,
        "per": per,
    }


async def test_a_lower_account_day_limit_refuses_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    assert (await hold(client, tourist)).status_code == 201

    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"account_day_limit": 1}, headers=admin
    )

    assert response.status_code == 200, response.text
    refused = await hold(client, tourist, f"{YONGHE}.2026-12-01.1100")
    account_limit(
        refused,
        f"this account has reached its limit of 1 reservations at {YONGHE} on 2026-12-01",
        1,
        "site-day",
    )
    # Another day, another count.
    assert (await hold(client, tourist, f"{YONGHE}.2026-12-02.1100")).status_code == 201


async def test_a_lower_open_hold_limit_refuses_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    assert (await hold(client, tourist)).status_code == 201

    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"account_hold_limit": 1}, headers=admin
    )

    assert response.status_code == 200, response.text
    refused = await hold(client, tourist, f"{YONGHE}.2026-12-02.1000")
    account_limit(
        refused,
        f"this account has reached its limit of 1 open holds at {YONGHE}: "
        "confirm or cancel one first",
        1,
        "open-holds",
    )


async def test_ending_same_day_sales_stops_todays_sales_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"same_day_sales": False}, headers=admin
    )

    assert response.status_code == 200, response.text
    today = await slots_of(client, "2026-12-01")
    assert {(s["on_sale"], s["sales_close_at"]) for s in today} == {
        (False, "2026-12-01T00:00:00+08:00")
    }
    refused = await hold(client, tourist)
    assert (refused.status_code, refused.json()["code"]) == (409, "outside-booking-window")
    assert (await hold(client, tourist, f"{YONGHE}.2026-12-02.1000")).status_code == 201


async def test_release_time_and_horizon_move_the_sales_window_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    third = f"{YONGHE}.2026-12-03.1000"
    before = await slots_of(client, "2026-12-03")
    assert {(s["sales_open_at"], s["on_sale"]) for s in before} == {
        ("2026-12-02T00:00:00+08:00", False)
    }
    assert (await hold(client, tourist, third)).json()["code"] == "outside-booking-window"

    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"release_time": "20:00"}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert {s["sales_open_at"] for s in await slots_of(client, "2026-12-03")} == {
        "2026-12-02T20:00:00+08:00"
    }

    # Two days ahead from 09:00: the 3rd went on sale an hour ago.
    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"horizon_days": 2, "release_time": "09:00"}, headers=admin
    )
    assert response.status_code == 200, response.text
    after = await slots_of(client, "2026-12-03")
    assert {(s["sales_open_at"], s["on_sale"]) for s in after} == {
        ("2026-12-01T09:00:00+08:00", True)
    }
    held = await hold(client, tourist, third)
    assert held.status_code == 201, held.text
    assert without_ids(await audit(client, admin))[0] | {"actor": ""} == {
        "at": AT,
        "actor": "",
        "action": "site.update",
        "site": YONGHE,
        "target": YONGHE,
        "before": {"horizon_days": 1, "release_time": "20:00:00"},
        "after": {"horizon_days": 2, "release_time": "09:00:00"},
    }


async def test_raising_the_horizon_makes_the_newly_covered_days_slots(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    assert await slots_of(client, "2026-12-04") == []

    response = await client.patch(f"/v1/sites/{YONGHE}", json={"horizon_days": 3}, headers=admin)

    assert response.status_code == 200, response.text
    # Today and the horizon plus one day: up to the 5th.
    fourth = await slots_of(client, "2026-12-04")
    fifth = await slots_of(client, "2026-12-05")
    assert [s["id"] for s in fourth] == [f"{YONGHE}.2026-12-04.{k}" for k in HOURLY]
    assert [s["id"] for s in fifth] == [f"{YONGHE}.2026-12-05.{k}" for k in HOURLY]
    assert await slots_of(client, "2026-12-06") == []
    assert {(s["remaining"], s["on_sale"]) for s in fourth} == {(1000, True)}
    assert {(s["remaining"], s["on_sale"]) for s in fifth} == {(1000, False)}
    assert await day_cap(runtime, date(2026, 12, 5)) == 7500
    held = await hold(client, tourist, f"{YONGHE}.2026-12-04.1000")
    assert held.status_code == 201, held.text


async def test_a_shorter_horizon_takes_days_off_sale_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    tomorrow = f"{YONGHE}.2026-12-02.1000"
    assert {s["on_sale"] for s in await slots_of(client, "2026-12-02")} == {True}

    response = await client.patch(f"/v1/sites/{YONGHE}", json={"horizon_days": 0}, headers=admin)

    assert response.status_code == 200, response.text
    # Made slots stay; they go on sale on their own day now.
    assert {(s["sales_open_at"], s["on_sale"]) for s in await slots_of(client, "2026-12-02")} == {
        ("2026-12-02T00:00:00+08:00", False)
    }
    refused = await hold(client, tourist, tomorrow)
    assert (refused.status_code, refused.json()["code"]) == (409, "outside-booking-window")
    assert (await hold(client, tourist)).status_code == 201


async def test_closing_todays_weekday_stops_todays_sales_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/sites/{YONGHE}", json={"closed_weekdays": [3, 1]}, headers=admin
    )

    assert response.status_code == 200, response.text
    assert response.json()["closed_weekdays"] == [1, 3]
    assert response.json()["today"] == {
        "date": "2026-12-01",
        "open": False,
        "offered": 7500,
        "remaining": 7500,
    }
    refused = await hold(client, tourist)
    assert (refused.status_code, refused.json()["code"]) == (409, "site-closed")
    # Wednesday the 2nd is still open.
    held = await hold(client, tourist, f"{YONGHE}.2026-12-02.1000")
    assert held.status_code == 201, held.text


async def test_reopening_a_closed_weekday_puts_its_days_on_sale_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    # The Palace Museum is closed on Mondays: Monday the 7th, within its 7-day horizon, has
    # no slots.
    assert await slots_of(client, "2026-12-07", "palace-museum") == []

    response = await client.patch(
        "/v1/sites/palace-museum", json={"closed_weekdays": []}, headers=admin
    )

    assert response.status_code == 200, response.text
    monday = await slots_of(client, "2026-12-07", "palace-museum")
    assert [s["id"] for s in monday] == [
        "palace-museum.2026-12-07.0830",
        "palace-museum.2026-12-07.1100",
    ]
    held = await hold(client, tourist, "palace-museum.2026-12-07.0830")
    assert held.status_code == 201, held.text


async def test_a_change_of_names_and_hours_is_stored_and_audited(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    changes = {
        "name_en": "Lama Temple",
        "opens": "08:30",
        "closes": "17:00",
        "last_entry": "16:30",
        "instant_cap": 2000,
        "account_hold_limit": 1,
        "real_name": False,
    }

    response = await client.patch(f"/v1/sites/{YONGHE}", json=changes, headers=admin)

    assert response.status_code == 200, response.text
    site = response.json()
    assert {name: site[name] for name in changes} | {"name": site["name"]} == {
        "name_en": "Lama Temple",
        "opens": "08:30:00",
        "closes": "17:00:00",
        "last_entry": "16:30:00",
        "instant_cap": 2000,
        "account_hold_limit": 1,
        "real_name": False,
        "name": "Lama Temple",
    }
    assert (await site_of(client))["name_en"] == "Lama Temple"
    (event,) = await audit(client, admin)
    assert (event["before"], event["after"]) == (
        {
            "name_en": "Yonghe Temple (Lama Temple)",
            "opens": "09:00:00",
            "closes": "16:30:00",
            "last_entry": "16:00:00",
            "instant_cap": 1500,
            "account_hold_limit": 2,
            "real_name": True,
        },
        {
            "name_en": "Lama Temple",
            "opens": "08:30:00",
            "closes": "17:00:00",
            "last_entry": "16:30:00",
            "instant_cap": 2000,
            "account_hold_limit": 1,
            "real_name": False,
        },
    )


@pytest.mark.parametrize(
    ("changes", "field", "rule", "message"),
    [
        # Checked against the stored site: opens 09:00, closes 16:30, last entry 16:00.
        ({"closes": "08:00"}, "closes", "after-opens", "closes before it opens"),
        ({"opens": "17:00"}, "closes", "after-opens", "closes before it opens"),
        (
            {"closes": "15:00"},
            "last_entry",
            "within-opening-hours",
            "the last entry must be between opening and closing",
        ),
        (
            {"last_entry": "08:59"},
            "last_entry",
            "within-opening-hours",
            "the last entry must be between opening and closing",
        ),
        (
            {"instant_cap": 7501},
            "instant_cap",
            "at-most-daily-cap",
            "more people inside at once than a whole day admits",
        ),
        (
            {"daily_cap": 1499},
            "instant_cap",
            "at-most-daily-cap",
            "more people inside at once than a whole day admits",
        ),
    ],
)
async def test_a_change_is_checked_with_the_stored_site(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: dict[str, str],
    changes: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    response = await client.patch(f"/v1/sites/{YONGHE}", json=changes, headers=admin)

    assert_invalid(response, f"/v1/sites/{YONGHE}", field, rule, message)
    site = await site_of(client)
    assert (site["opens"], site["closes"], site["last_entry"]) == (
        "09:00:00",
        "16:30:00",
        "16:00:00",
    )
    assert (site["daily_cap"], site["instant_cap"]) == (7500, 1500)
    assert await day_cap(runtime, TODAY) == 7500
    assert await audit(client, admin) == []


@pytest.mark.parametrize(
    ("body", "field", "rule", "message"),
    [
        ({}, "body", "not-empty", "name at least one field to change"),
        ({"daily_cap": None}, "body", "not-null", "daily_cap cannot be null"),
        ({"id": "x"}, "id", "extra_forbidden", EXTRA),
        ({"timezone": "UTC"}, "timezone", "extra_forbidden", EXTRA),
        ({"closed_reason": "storm"}, "closed_reason", "extra_forbidden", EXTRA),
        (
            {"daily_cap": 0},
            "daily_cap",
            "greater_than_equal",
            "Input should be greater than or equal to 1",
        ),
        (
            {"horizon_days": 91},
            "horizon_days",
            "less_than_equal",
            "Input should be less than or equal to 90",
        ),
        (
            {"closed_weekdays": [7]},
            "closed_weekdays[0]",
            "less_than_equal",
            "Input should be less than or equal to 6",
        ),
    ],
)
async def test_a_bad_site_change_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    response = await client.patch(f"/v1/sites/{YONGHE}", json=body, headers=admin)

    assert_invalid(response, f"/v1/sites/{YONGHE}", field, rule, message)
    assert (await site_of(client))["daily_cap"] == 7500
    assert await audit(client, admin) == []


async def test_changing_an_unknown_site_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.patch("/v1/sites/atlantis", json={"daily_cap": 10}, headers=admin)

    assert_not_found(response, "no site atlantis", "/v1/sites/atlantis")


# gates -------------------------------------------------------------------------------------


async def test_a_new_gate_is_listed_with_the_site_and_audited(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)

    response = await client.post(f"/v1/sites/{YONGHE}/gates", json=NEW_GATE, headers=yonghe_manager)

    assert response.status_code == 201, response.text
    assert response.json() == NEW_GATE
    gates = sorted((await site_of(client))["gates"], key=lambda g: str(g["id"]))
    assert gates == [NEW_GATE, SOUTH]
    assert without_ids(await audit(client, admin)) == [
        {
            "at": AT,
            "actor": actor(yonghe_manager),
            "action": "gate.create",
            "site": YONGHE,
            "target": NEW_GATE["id"],
            "before": {},
            "after": {**NEW_GATE, "site_id": YONGHE},
        }
    ]


async def test_a_gate_takes_its_defaults(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {k: NEW_GATE[k] for k in ("id", "name_zh", "name_en", "lat", "lon")}

    response = await client.post(f"/v1/sites/{YONGHE}/gates", json=body, headers=admin)

    assert response.status_code == 201, response.text
    assert response.json() == {**body, "direction": "both", "flow_per_minute": 60}


async def test_a_gate_id_in_use_is_409_at_any_site(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    palace_gate = {**NEW_GATE, "id": "palace-museum-east-gate", "name_en": "East Glorious Gate"}
    added = await client.post("/v1/sites/palace-museum/gates", json=palace_gate, headers=admin)
    assert added.status_code == 201, added.text
    added = await client.post(f"/v1/sites/{YONGHE}/gates", json=NEW_GATE, headers=admin)
    assert added.status_code == 201, added.text

    path = f"/v1/sites/{YONGHE}/gates"
    for gate_id in (NEW_GATE["id"], palace_gate["id"]):
        response = await client.post(
            path, json={**NEW_GATE, "id": gate_id, "name_en": "Other"}, headers=admin
        )
        assert_problem(
            response, 409, "conflict", "It exists already", f"gate {gate_id} exists", path
        )
    gates = sorted((await site_of(client))["gates"], key=lambda g: str(g["id"]))
    assert gates == [NEW_GATE, SOUTH]
    palace = {g["id"]: g for g in (await site_of(client, "palace-museum"))["gates"]}
    assert palace[palace_gate["id"]] == palace_gate
    assert [e["action"] for e in await audit(client, admin)] == ["gate.create"]
    assert [e["action"] for e in await audit(client, admin, "palace-museum")] == ["gate.create"]


async def test_a_gate_named_like_the_demo_gates_is_accepted_and_a_demo_id_is_409(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    path = f"/v1/sites/{YONGHE}/gates"
    dotted = {**NEW_GATE, "id": "yonghe-temple.east-gate"}
    response = await client.post(path, json=dotted, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json() == dotted
    # A demo gate's id, of this site or of another: taken.
    for gate_id in (SOUTH_GATE, "palace-museum.meridian-gate"):
        response = await client.post(path, json={**NEW_GATE, "id": gate_id}, headers=admin)
        assert_problem(
            response, 409, "conflict", "It exists already", f"gate {gate_id} exists", path
        )
    gates = sorted((await site_of(client))["gates"], key=lambda g: str(g["id"]))
    assert gates == [dotted, SOUTH]
    events = await audit(client, admin)
    assert [(e["action"], e["target"]) for e in events] == [("gate.create", dotted["id"])]


@pytest.mark.parametrize(
    ("changes", "field", "rule", "message"),
    [
        ({"site_id": "palace-museum"}, "site_id", "extra_forbidden", EXTRA),
        (
            {"direction": "sideways"},
            "direction",
            "literal_error",
            "Input should be 'entry', 'exit' or 'both'",
        ),
        # The directions of the demo data, not "in" and "out".
        (
            {"direction": "in"},
            "direction",
            "literal_error",
            "Input should be 'entry', 'exit' or 'both'",
        ),
        (
            {"direction": "out"},
            "direction",
            "literal_error",
            "Input should be 'entry', 'exit' or 'both'",
        ),
        (
            {"flow_per_minute": 0},
            "flow_per_minute",
            "greater_than_equal",
            "Input should be greater than or equal to 1",
        ),
        (
            {"id": "East Gate"},
            "id",
            "string_pattern_mismatch",
            "String should match pattern '^[a-z0-9.-]{1,100}$'",
        ),
    ],
)
async def test_a_bad_new_gate_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    changes: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    path = f"/v1/sites/{YONGHE}/gates"
    response = await client.post(path, json={**NEW_GATE, **changes}, headers=admin)

    assert_invalid(response, path, field, rule, message)
    assert [g["id"] for g in (await site_of(client))["gates"]] == [SOUTH_GATE]
    assert await audit(client, admin) == []


async def test_a_gate_of_an_unknown_site_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/sites/atlantis/gates", json=NEW_GATE, headers=admin)

    assert_not_found(response, "no site atlantis", "/v1/sites/atlantis/gates")


async def test_a_gate_change_is_stored_and_audited(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    path = f"/v1/sites/{YONGHE}/gates/{SOUTH_GATE}"

    response = await client.patch(
        path, json={"flow_per_minute": 55, "direction": "exit"}, headers=admin
    )

    assert response.status_code == 200, response.text
    changed = {**SOUTH, "direction": "exit", "flow_per_minute": 55}
    assert response.json() == changed
    assert (await site_of(client))["gates"] == [changed]
    assert without_ids(await audit(client, admin)) == [
        {
            "at": AT,
            "actor": actor(admin),
            "action": "gate.update",
            "site": YONGHE,
            "target": SOUTH_GATE,
            "before": {"direction": "both", "flow_per_minute": 40},
            "after": {"direction": "exit", "flow_per_minute": 55},
        }
    ]


async def test_a_gate_of_another_site_or_none_is_404(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)
    palace_gates = (await site_of(client, "palace-museum"))["gates"]
    for gate_id in ("palace-museum.meridian-gate", "yonghe-temple-west-gate"):
        path = f"/v1/sites/{YONGHE}/gates/{gate_id}"
        response = await client.patch(path, json={"flow_per_minute": 1}, headers=yonghe_manager)
        assert_not_found(response, f"no gate {gate_id} at {YONGHE}", path)
    assert (await site_of(client, "palace-museum"))["gates"] == palace_gates
    assert await audit(client, admin, "palace-museum") == []
    assert await audit(client, admin) == []


@pytest.mark.parametrize(
    ("body", "field", "rule", "message"),
    [
        ({}, "body", "not-empty", "name at least one field to change"),
        ({"name_en": None}, "body", "not-null", "name_en cannot be null"),
        ({"id": "yonghe-temple-north-gate"}, "id", "extra_forbidden", EXTRA),
        ({"site_id": "palace-museum"}, "site_id", "extra_forbidden", EXTRA),
    ],
)
async def test_a_bad_gate_change_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    path = f"/v1/sites/{YONGHE}/gates/{SOUTH_GATE}"

    response = await client.patch(path, json=body, headers=admin)

    assert_invalid(response, path, field, rule, message)
    assert [(g["id"], g["name_en"]) for g in (await site_of(client))["gates"]] == [
        (SOUTH_GATE, "South Gate")
    ]
    assert await audit(client, admin) == []


# slot templates ----------------------------------------------------------------------------


async def test_the_templates_of_a_site_are_listed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.get(
        f"/v1/sites/{YONGHE}/slot-templates", headers=await manager(runtime, YONGHE)
    )

    assert response.status_code == 200, response.text
    (template,) = response.json()
    assert template == template_view(template["id"])


async def test_the_templates_of_an_unknown_site_are_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get("/v1/sites/atlantis/slot-templates", headers=admin)

    assert_not_found(response, "no site atlantis", "/v1/sites/atlantis/slot-templates")


async def test_a_new_template_makes_its_slots_at_once_and_they_sell(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)
    hourly = await hourly_template(client, admin)
    templates = f"/v1/sites/{YONGHE}/slot-templates"
    assert (await hold(client, tourist, visitors=[visitor(), visitor()])).status_code == 201

    response = await client.post(templates, json=EVENING, headers=yonghe_manager)

    assert response.status_code == 201, response.text
    evening = response.json()
    created = {
        "id": evening["id"],
        "site": YONGHE,
        "label": "evening",
        "start": "16:00:00",
        "end": "16:30:00",
        "capacity": 50,
        "repeat_minutes": None,
        "weekdays": ALL_WEEK,
        "pools": None,
    }
    assert evening == created
    assert evening["id"] != hourly
    listed = await client.get(templates, headers=admin)
    assert sorted(listed.json(), key=lambda t: int(t["id"])) == sorted(
        [template_view(hourly), created], key=lambda t: int(t["id"])
    )
    # Made at once over the horizon (one day, so today to the 3rd), not beyond it.
    for day in ("2026-12-01", "2026-12-02", "2026-12-03"):
        assert [s["id"][-4:] for s in await slots_of(client, day)] == [*HOURLY, "1600"]
    assert await slots_of(client, "2026-12-04") == []
    today = await slots_of(client, "2026-12-01")
    assert {k: today[-1][k] for k in ("capacity", "remaining", "on_sale", "label", "status")} == {
        "capacity": 50,
        "remaining": 50,
        "on_sale": True,
        "label": "evening",
        "status": "open",
    }
    third = (await slots_of(client, "2026-12-03"))[-1]
    assert (third["remaining"], third["on_sale"]) == (50, False)
    # Rebuilding today's counters kept the places held before.
    assert (await client.get(f"/v1/slots/{YONGHE_10}")).json()["remaining"] == 998
    assert (await site_of(client))["today"]["remaining"] == 7498
    held = await hold(client, tourist, f"{YONGHE}.2026-12-01.1600")
    assert held.status_code == 201, held.text
    assert (await client.get(f"/v1/slots/{YONGHE}.2026-12-01.1600")).json()["remaining"] == 49
    assert (await site_of(client))["today"]["remaining"] == 7497
    # Tomorrow's, on sale too.
    held = await hold(client, await new_tourist(client), f"{YONGHE}.2026-12-02.1600")
    assert held.status_code == 201, held.text
    assert (await client.get(f"/v1/slots/{YONGHE}.2026-12-02.1600")).json()["remaining"] == 49

    # Nothing left to make over the horizon; beyond it, generation still makes slots.
    again = await generate(client, yonghe_manager, "2026-12-01", "2026-12-03")

    assert again.status_code == 200, again.text
    assert again.json() == {
        "site": YONGHE,
        "first": "2026-12-01",
        "last": "2026-12-03",
        "created": 0,
    }
    assert (await client.get(f"/v1/slots/{YONGHE}.2026-12-01.1600")).json()["remaining"] == 49
    beyond = await generate(client, yonghe_manager, "2026-12-04", "2026-12-04")
    assert beyond.json()["created"] == 8
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-04")] == [*HOURLY, "1600"]
    events = without_ids(await audit(client, admin))
    assert [(e["action"], e["target"], e["before"], e["after"]) for e in events] == [
        (
            "slots.generate",
            f"{YONGHE}:2026-12-04..2026-12-04",
            {},
            {"from": "2026-12-04", "to": "2026-12-04", "created": 8},
        ),
        (
            "slots.generate",
            f"{YONGHE}:2026-12-01..2026-12-03",
            {},
            {"from": "2026-12-01", "to": "2026-12-03", "created": 0},
        ),
        ("template.create", f"template:{evening['id']}", {}, created),
    ]


async def test_a_template_for_some_weekdays_makes_slots_on_those_days_only(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = {**EVENING, "weekdays": [5, 2], "start": "16:00", "end": "16:30", "repeat_minutes": 15}
    response = await client.post(f"/v1/sites/{YONGHE}/slot-templates", json=body, headers=admin)
    assert response.status_code == 201, response.text
    assert (response.json()["weekdays"], response.json()["repeat_minutes"]) == ([2, 5], 15)
    # Made at once over the horizon (the 1st to the 3rd): Wednesday the 2nd only.
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-01")] == HOURLY
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-03")] == HOURLY

    # Tuesday the 1st to Monday the 7th: beyond the horizon, Saturday the 5th, two slots.
    generated = await generate(client, admin, "2026-12-01", "2026-12-07")

    assert generated.json()["created"] == 2 + 7 * 4  # and the hourly slots of the 4th to 7th
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-02")] == [
        *HOURLY,
        "1600",
        "1615",
    ]
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-04")] == HOURLY
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-05")] == [
        *HOURLY,
        "1600",
        "1615",
    ]


@pytest.mark.parametrize(
    ("changes", "field", "rule", "message"),
    [
        ({"end": "15:00"}, "end", "after-start", "a slot ends after it starts"),
        ({"end": "16:00"}, "end", "after-start", "a slot ends after it starts"),
        (
            {"repeat_minutes": 45},
            "repeat_minutes",
            "fits-window",
            "the repeat is longer than the window between start and end",
        ),
        ({"weekdays": [1, 1]}, "weekdays", "distinct", "each weekday at most once"),
        (
            {"weekdays": [7]},
            "weekdays[0]",
            "less_than_equal",
            "Input should be less than or equal to 6",
        ),
        (
            {"weekdays": []},
            "weekdays",
            "too_short",
            "List should have at least 1 item after validation, not 0",
        ),
        ({"site_id": "palace-museum"}, "site_id", "extra_forbidden", EXTRA),
        ({"id": 1}, "id", "extra_forbidden", EXTRA),
        (
            {"capacity": -1},
            "capacity",
            "greater_than_equal",
            "Input should be greater than or equal to 0",
        ),
    ],
)
async def test_a_bad_new_template_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    changes: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    path = f"/v1/sites/{YONGHE}/slot-templates"

    response = await client.post(path, json={**EVENING, **changes}, headers=admin)

    assert_invalid(response, path, field, rule, message)
    assert len((await client.get(path, headers=admin)).json()) == 1
    assert await audit(client, admin) == []


async def test_a_template_change_is_stored_and_audited_and_made_slots_keep_theirs(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)
    template = await hourly_template(client, admin)
    path = f"/v1/sites/{YONGHE}/slot-templates/{template}"

    response = await client.patch(
        path,
        json={"capacity": 800, "repeat_minutes": 120, "label": "two-hourly"},
        headers=yonghe_manager,
    )

    assert response.status_code == 200, response.text
    changed = template_view(template, capacity=800, repeat_minutes=120, label="two-hourly")
    assert response.json() == changed
    listed = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=admin)
    assert listed.json() == [changed]
    assert without_ids(await audit(client, admin)) == [
        {
            "at": AT,
            "actor": actor(yonghe_manager),
            "action": "template.update",
            "site": YONGHE,
            "target": f"template:{template}",
            "before": template_view(template),
            "after": changed,
        }
    ]
    # Slots already made keep their times and caps; new days follow the template.
    assert [(s["id"][-4:], s["capacity"]) for s in await slots_of(client, "2026-12-03")] == [
        (key, 1000) for key in HOURLY
    ]
    generated = await generate(client, admin, "2026-12-04", "2026-12-04")
    assert generated.json()["created"] == 3
    assert [(s["id"][-4:], s["capacity"]) for s in await slots_of(client, "2026-12-04")] == [
        ("0900", 800),
        ("1100", 800),
        ("1300", 800),
    ]


async def test_a_template_may_become_one_window(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    template = await hourly_template(client, admin)
    path = f"/v1/sites/{YONGHE}/slot-templates/{template}"

    response = await client.patch(path, json={"repeat_minutes": None}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == template_view(template, repeat_minutes=None)
    assert (await generate(client, admin, "2026-12-04", "2026-12-04")).json()["created"] == 1
    (slot,) = await slots_of(client, "2026-12-04")
    assert (slot["id"], slot["start"], slot["end"]) == (
        f"{YONGHE}.2026-12-04.0900",
        "2026-12-04T09:00:00+08:00",
        "2026-12-04T16:00:00+08:00",
    )


@pytest.mark.parametrize(
    ("body", "field", "rule", "message"),
    [
        ({}, "body", "not-empty", "name at least one field to change"),
        ({"capacity": None}, "body", "not-null", "capacity cannot be null"),
        # Checked with the stored template: 09:00 to 16:00, every 60 minutes.
        ({"start": "16:00"}, "end", "after-start", "a slot ends after it starts"),
        ({"end": "08:00"}, "end", "after-start", "a slot ends after it starts"),
        (
            {"repeat_minutes": 480},
            "repeat_minutes",
            "fits-window",
            "the repeat is longer than the window between start and end",
        ),
        (
            {"start": "15:30"},
            "repeat_minutes",
            "fits-window",
            "the repeat is longer than the window between start and end",
        ),
        ({"weekdays": [0, 6, 0]}, "weekdays", "distinct", "each weekday at most once"),
        ({"site_id": "palace-museum"}, "site_id", "extra_forbidden", EXTRA),
        ({"id": 99}, "id", "extra_forbidden", EXTRA),
    ],
)
async def test_a_bad_template_change_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    field: str,
    rule: str,
    message: str,
) -> None:
    template = await hourly_template(client, admin)
    path = f"/v1/sites/{YONGHE}/slot-templates/{template}"

    response = await client.patch(path, json=body, headers=admin)

    assert_invalid(response, path, field, rule, message)
    listed = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=admin)
    assert listed.json() == [template_view(template)]
    assert await audit(client, admin) == []


async def test_a_template_of_another_site_is_404(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    palace = await client.get("/v1/sites/palace-museum/slot-templates", headers=admin)
    palace_template = palace.json()[0]["id"]
    yonghe_manager = await manager(runtime, YONGHE)
    for template_id in (palace_template, 999_999):
        path = f"/v1/sites/{YONGHE}/slot-templates/{template_id}"
        detail = f"no slot template {template_id} at {YONGHE}"
        patched = await client.patch(path, json={"capacity": 1}, headers=yonghe_manager)
        assert_not_found(patched, detail, path)
        deleted = await client.delete(path, headers=yonghe_manager)
        assert_not_found(deleted, detail, path)
    assert (await client.get("/v1/sites/palace-museum/slot-templates", headers=admin)).json() == (
        palace.json()
    )
    assert await audit(client, admin, "palace-museum") == []


async def test_a_deleted_template_makes_no_more_slots_and_its_slots_stay(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)
    template = await hourly_template(client, admin)
    path = f"/v1/sites/{YONGHE}/slot-templates/{template}"

    response = await client.delete(path, headers=yonghe_manager)

    assert response.status_code == 204, response.text
    assert response.content == b""
    listed = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=admin)
    assert listed.json() == []
    assert without_ids(await audit(client, admin)) == [
        {
            "at": AT,
            "actor": actor(yonghe_manager),
            "action": "template.delete",
            "site": YONGHE,
            "target": f"template:{template}",
            "before": template_view(template),
            "after": {},
        }
    ]
    assert (await generate(client, admin, "2026-12-04", "2026-12-10")).json()["created"] == 0
    assert await slots_of(client, "2026-12-04") == []
    assert len(await slots_of(client, "2026-12-02")) == 7
    assert (await hold(client, tourist)).status_code == 201
    assert_not_found(
        await client.delete(path, headers=admin), f"no slot template {template} at {YONGHE}", path
    )


# slot generation ---------------------------------------------------------------------------


async def test_slots_made_beyond_the_horizon_go_on_sale_with_their_day(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], clock: ManualClock
) -> None:
    response = await generate(client, admin, "2026-12-10", "2026-12-11")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "site": YONGHE,
        "first": "2026-12-10",
        "last": "2026-12-11",
        "created": 14,
    }
    tenth = await slots_of(client, "2026-12-10")
    assert [s["id"] for s in tenth] == [f"{YONGHE}.2026-12-10.{k}" for k in HOURLY]
    assert {(s["remaining"], s["on_sale"], s["sales_open_at"]) for s in tenth} == {
        (1000, False, "2026-12-09T00:00:00+08:00")
    }
    # Their counters are built already: sold the moment their day's sales open.
    assert await day_cap(runtime, date(2026, 12, 10)) == 7500
    assert await day_cap(runtime, date(2026, 12, 11)) == 7500
    clock.set(datetime(2026, 12, 9, 1, 0, tzinfo=UTC))  # the 9th, 09:00 in Beijing
    tourist = await new_tourist(client)
    held = await hold(client, tourist, f"{YONGHE}.2026-12-10.1000")
    assert held.status_code == 201, held.text
    assert (await client.get(f"/v1/slots/{YONGHE}.2026-12-10.1000")).json()["remaining"] == 999


async def test_a_new_site_sells_once_it_has_a_template(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    assert (await client.post("/v1/sites", json=NEW_SITE, headers=admin)).status_code == 201
    template = {"label": "mornings", "start": "09:00", "end": "12:00", "capacity": 100}

    added = await client.post(
        "/v1/sites/hutong-museum/slot-templates",
        json={**template, "repeat_minutes": 90},
        headers=admin,
    )

    assert added.status_code == 201, added.text
    # Its slots are made at once over its 7-day horizon: today to the 9th, two a day.
    slots = await slots_of(client, "2026-12-01", "hutong-museum")
    assert [(s["id"], s["remaining"], s["on_sale"]) for s in slots] == [
        ("hutong-museum.2026-12-01.0900", 100, True),
        ("hutong-museum.2026-12-01.1030", 100, True),
    ]
    ninth = await slots_of(client, "2026-12-09", "hutong-museum")
    assert [s["id"][-4:] for s in ninth] == ["0900", "1030"]
    assert await slots_of(client, "2026-12-10", "hutong-museum") == []
    held = await hold(client, tourist, "hutong-museum.2026-12-01.1030", visitors=[visitor()])
    assert held.status_code == 201, held.text
    assert (await site_of(client, "hutong-museum"))["today"] == {
        "date": "2026-12-01",
        "open": True,
        "offered": 2000,
        "remaining": 1999,
    }
    response = await generate(client, admin, "2026-12-01", "2026-12-09", site="hutong-museum")
    assert response.json() == {
        "site": "hutong-museum",
        "first": "2026-12-01",
        "last": "2026-12-09",
        "created": 0,
    }
    beyond = await generate(client, admin, "2026-12-09", "2026-12-10", site="hutong-museum")
    assert beyond.json()["created"] == 2
    assert len(await slots_of(client, "2026-12-10", "hutong-museum")) == 2
    events = await audit(client, admin, "hutong-museum")
    assert [e["action"] for e in events] == [
        "slots.generate",
        "slots.generate",
        "template.create",
        "site.create",
    ]


@pytest.mark.parametrize(
    ("body", "field", "rule", "message"),
    [
        # The site's today, not the host's: the 1st in Beijing.
        (
            {"from": "2026-11-30", "to": "2026-12-02"},
            "from",
            "not-past",
            "slots cannot be made for past days",
        ),
        ({"from": "2026-12-03", "to": "2026-12-02"}, "body", "date-order", "`to` is before `from`"),
        # 367 dates, one more than the most.
        (
            {"from": "2026-12-01", "to": "2027-12-02"},
            "body",
            "date-range",
            "at most 366 days at once",
        ),
        (
            {"from": "2027-06-01", "to": "2028-06-01"},
            "body",
            "date-range",
            "at most 366 days at once",
        ),
        ({"from": "2026-12-01"}, "to", "missing", "Field required"),
        ({"to": "2026-12-02"}, "from", "missing", "Field required"),
        # The names of the wire are `from` and `to`, not the model's.
        (
            {"from": "2026-12-01", "to": "2026-12-02", "last": "2026-12-03"},
            "last",
            "extra_forbidden",
            EXTRA,
        ),
        (
            {"from": "2026-12-01", "to": "2026-12-02", "site": "palace-museum"},
            "site",
            "extra_forbidden",
            EXTRA,
        ),
        ({"from": "tomorrow", "to": "2026-12-02"}, "from", "date_from_datetime_parsing", None),
    ],
)
async def test_a_bad_generation_is_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    field: str,
    rule: str,
    message: str | None,
) -> None:
    path = f"/v1/sites/{YONGHE}/slots/generate"

    response = await client.post(path, json=body, headers=admin)

    if message is None:
        message = response.json()["errors"][0]["message"]
    assert_invalid(response, path, field, rule, message)
    assert await audit(client, admin) == []


async def test_generation_takes_366_dates_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # The 1st of December 2026 to the 1st of December 2027: 366 dates, the most.
    response = await generate(client, admin, "2026-12-01", "2027-12-01")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "site": YONGHE,
        "first": "2026-12-01",
        "last": "2027-12-01",
        "created": 366 * 7 - 3 * 7,  # the 1st to the 3rd were made at start-up
    }
    assert [s["id"] for s in await slots_of(client, "2027-12-01")] == [
        f"{YONGHE}.2027-12-01.{k}" for k in HOURLY
    ]
    assert await slots_of(client, "2027-12-02") == []


async def test_generation_follows_the_sites_date_not_utcs(
    client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    clock.set(datetime(2026, 12, 1, 17, 0, tzinfo=UTC))  # the 2nd, 01:00 in Beijing
    path = f"/v1/sites/{YONGHE}/slots/generate"

    refused = await generate(client, admin, "2026-12-01", "2026-12-04")

    assert_invalid(refused, path, "from", "not-past", "slots cannot be made for past days")
    response = await generate(client, admin, "2026-12-02", "2026-12-04")
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 7  # the 4th: the 2nd and 3rd were made at start-up


async def test_generation_for_an_unknown_site_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await generate(client, admin, "2026-12-01", "2026-12-02", site="atlantis")

    assert_not_found(response, "no site atlantis", "/v1/sites/atlantis/slots/generate")


# the audit ---------------------------------------------------------------------------------


async def test_the_audit_lists_a_sites_changes_newest_first(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], clock: ManualClock
) -> None:
    yonghe_manager = await manager(runtime, YONGHE)
    template = await hourly_template(client, admin)
    steps = [
        ("PATCH", f"/v1/sites/{YONGHE}", {"daily_cap": 5000}, admin),
        ("POST", f"/v1/sites/{YONGHE}/gates", NEW_GATE, yonghe_manager),
        ("PATCH", f"/v1/sites/{YONGHE}/gates/{NEW_GATE['id']}", {"name_zh": "东大门"}, admin),
        ("POST", f"/v1/sites/{YONGHE}/slot-templates", EVENING, yonghe_manager),
        ("PATCH", f"/v1/sites/{YONGHE}/slot-templates/{template}", {"capacity": 900}, admin),
        ("DELETE", f"/v1/sites/{YONGHE}/slot-templates/{template}", None, yonghe_manager),
        (
            "POST",
            f"/v1/sites/{YONGHE}/slots/generate",
            {"from": "2026-12-04", "to": "2026-12-04"},
            admin,
        ),
    ]
    for minute, (method, path, body, headers) in enumerate(steps):
        clock.set(datetime(2026, 12, 1, 2, minute, tzinfo=UTC))
        response = await call(client, method, path, body, headers)
        assert response.status_code in (200, 201, 204), response.text
    # Changes to another site are not listed.
    other = await client.patch("/v1/sites/palace-museum", json={"daily_cap": 39000}, headers=admin)
    assert other.status_code == 200, other.text

    events = await audit(client, yonghe_manager)

    assert [(e["at"], e["action"], e["actor"], e["target"]) for e in events] == [
        (
            "2026-12-01T02:06:00Z",
            "slots.generate",
            actor(admin),
            f"{YONGHE}:2026-12-04..2026-12-04",
        ),
        ("2026-12-01T02:05:00Z", "template.delete", actor(yonghe_manager), f"template:{template}"),
        ("2026-12-01T02:04:00Z", "template.update", actor(admin), f"template:{template}"),
        ("2026-12-01T02:03:00Z", "template.create", actor(yonghe_manager), events[3]["target"]),
        ("2026-12-01T02:02:00Z", "gate.update", actor(admin), NEW_GATE["id"]),
        ("2026-12-01T02:01:00Z", "gate.create", actor(yonghe_manager), NEW_GATE["id"]),
        ("2026-12-01T02:00:00Z", "site.update", actor(admin), YONGHE),
    ]
    assert events[3]["target"] != f"template:{template}"
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert {e["site"] for e in events} == {YONGHE}
    assert (events[4]["before"], events[4]["after"]) == ({"name_zh": "东门"}, {"name_zh": "东大门"})
    assert (events[2]["before"]["capacity"], events[2]["after"]["capacity"]) == (1000, 900)
    assert events[0]["after"] == {"from": "2026-12-04", "to": "2026-12-04", "created": 1}
    # The 4th gets the evening slot only: the hourly template was deleted.
    assert [s["id"][-4:] for s in await slots_of(client, "2026-12-04")] == ["1600"]
    paged = await client.get(
        "/v1/audit", params={"site": YONGHE, "limit": 2, "offset": 1}, headers=admin
    )
    assert [e["action"] for e in paged.json()] == ["template.delete", "template.update"]


async def test_the_audit_of_another_site_is_403_and_of_no_site_404(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    palace_manager = await manager(runtime, "palace-museum")
    response = await client.get("/v1/audit", params={"site": YONGHE}, headers=palace_manager)
    assert_forbidden(response, f"this token is not for site {YONGHE}", "/v1/audit")
    response = await client.get("/v1/audit", params={"site": YONGHE}, headers=tourist)
    assert_forbidden(response, "this route is for admins and the site's managers", "/v1/audit")
    response = await client.get("/v1/audit", params={"site": "atlantis"}, headers=admin)
    assert_not_found(response, "no site atlantis", "/v1/audit")
