"""Who may call what: every route declares a policy, and the policies hold over HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import Depends

from capacity.clock import ManualClock
from service import access
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold

PALACE_SLOT = "palace-museum.2026-12-02.0830"


async def test_every_operation_declares_who_may_call_it(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    operations = [(path, method, op) for path, ops in paths.items() for method, op in ops.items()]
    assert len(operations) >= 15
    assert [(path, method) for path, method, op in operations if "x-access" not in op] == []


def test_a_route_that_does_not_say_who_may_call_it_cannot_be_made() -> None:
    router = access.router()

    with pytest.raises(access.UndeclaredAccess, match=r"\['GET'\] /forgotten does not say"):

        @router.get("/forgotten")
        async def forgotten() -> dict[str, str]:
            return {}


def test_a_route_that_names_its_policy_is_made() -> None:
    router = access.router()

    @router.get("/public", dependencies=[Depends(access.ANYONE)])
    async def public() -> dict[str, str]:
        return {}

    assert router.routes[0].openapi_extra == {"x-access": "anyone"}  # type: ignore[attr-defined]


async def test_openapi_names_each_routes_policy(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert paths["/v1/sites"]["get"]["x-access"] == "anyone"
    assert paths["/v1/reservations"]["post"]["x-access"] == "a tourist's account"
    assert paths["/v1/slots/{slot_id}"]["patch"]["x-access"] == "admins and the site's managers"
    assert paths["/v1/tokens"]["post"]["x-access"] == "admins"


async def staff(
    runtime: Runtime, role: str, sites: list[str], gate: str | None = None
) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role=role, sites=sites, gate=gate)
    return {"Authorization": f"Bearer {token.token}"}


@pytest.fixture
async def callers(
    runtime: Runtime, tourist: dict[str, str], admin: dict[str, str]
) -> dict[str, dict[str, str]]:
    return {
        "anonymous": {},
        "tourist": tourist,
        "manager of this site": await staff(runtime, "manager", ["yonghe-temple"]),
        "manager of another site": await staff(runtime, "manager", ["palace-museum"]),
        "operator": await staff(runtime, "operator", ["yonghe-temple"]),
        "gate": await staff(runtime, "gate", [], gate="yonghe-temple.south-gate"),
        "admin": admin,
    }


CHANGE_SLOT = {
    "anonymous": 401,
    "tourist": 403,
    "manager of this site": 200,
    "manager of another site": 403,
    "operator": 403,
    "gate": 403,
    "admin": 200,
}


@pytest.mark.parametrize(("caller", "status"), CHANGE_SLOT.items())
async def test_who_may_change_a_slot(
    client: httpx.AsyncClient, callers: dict[str, dict[str, str]], caller: str, status: int
) -> None:
    response = await client.patch(
        f"/v1/slots/{YONGHE_10}", json={"capacity": 10}, headers=callers[caller]
    )

    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("anonymous", 401),
        ("tourist", 403),
        ("manager of this site", 403),
        ("operator", 403),
        ("gate", 403),
        ("admin", 201),
    ],
)
async def test_who_may_create_staff_tokens(
    client: httpx.AsyncClient, callers: dict[str, dict[str, str]], caller: str, status: int
) -> None:
    response = await client.post(
        "/v1/tokens", json={"role": "operator", "sites": ["beihai-park"]}, headers=callers[caller]
    )

    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("anonymous", 401),
        ("tourist", 201),
        ("manager of this site", 403),
        ("operator", 403),
        ("gate", 403),
        ("admin", 403),
    ],
)
async def test_only_tourists_hold_places(
    client: httpx.AsyncClient, callers: dict[str, dict[str, str]], caller: str, status: int
) -> None:
    assert (await hold(client, callers[caller])).status_code == status


async def test_staff_token_for_a_manager_names_its_sites(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/tokens",
        json={"role": "manager", "sites": ["palace-museum"], "days": 7},
        headers=admin,
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["role"], body["sites"], body["gate"], body["account_id"]) == (
        "manager",
        ["palace-museum"],
        None,
        None,
    )
    assert body["expires_at"] == "2026-12-08T02:00:00Z"
    manager = {"Authorization": f"Bearer {body['token']}"}
    palace = await client.patch(f"/v1/slots/{PALACE_SLOT}", json={"capacity": 5}, headers=manager)
    assert palace.status_code == 200
    yonghe = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 5}, headers=manager)
    assert yonghe.status_code == 403
    assert yonghe.json()["detail"] == "this token is not for site yonghe-temple"


async def test_a_gate_token_is_scoped_to_its_gates_site(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/tokens", json={"role": "gate", "gate": "palace-museum.meridian-gate"}, headers=admin
    )

    assert response.status_code == 201
    assert response.json()["sites"] == ["palace-museum"]
    assert response.json()["gate"] == "palace-museum.meridian-gate"


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"role": "manager"}, "body", "sites-required"),
        ({"role": "gate"}, "body", "gate-required"),
        ({"role": "manager", "sites": ["x"], "gate": "g"}, "body", "gate-only"),
        ({"role": "tourist"}, "role", "literal_error"),
        ({"role": "manager", "sites": ["no-such-site"]}, "sites", "known-site"),
        ({"role": "gate", "gate": "no-such-gate"}, "gate", "known-gate"),
        ({"role": "admin", "days": 0}, "days", "greater_than_equal"),
        ({"role": "admin", "owner": "me"}, "owner", "extra_forbidden"),
    ],
)
async def test_bad_token_requests_name_the_field_and_rule(
    client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, object], field: str, rule: str
) -> None:
    response = await client.post("/v1/tokens", json=body, headers=admin)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [(field, rule)]


async def test_a_revoked_token_stops_working_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (
        await client.post(
            "/v1/tokens", json={"role": "manager", "sites": ["yonghe-temple"]}, headers=admin
        )
    ).json()
    manager = {"Authorization": f"Bearer {created['token']}"}
    change = {"capacity": 9}
    assert (
        await client.patch(f"/v1/slots/{YONGHE_10}", json=change, headers=manager)
    ).status_code == 200

    revoked = await client.delete(f"/v1/tokens/{created['id']}", headers=admin)

    assert revoked.status_code == 204
    after = await client.patch(f"/v1/slots/{YONGHE_10}", json=change, headers=manager)
    assert after.status_code == 401
    again = await client.delete(f"/v1/tokens/{created['id']}", headers=admin)
    assert again.status_code == 404


async def test_revoking_needs_a_well_formed_id(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.delete("/v1/tokens/not-an-id", headers=admin)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "token_id"


async def test_staff_tokens_expire(
    client: httpx.AsyncClient, admin: dict[str, str], clock: ManualClock
) -> None:
    created = (
        await client.post("/v1/tokens", json={"role": "admin", "days": 1}, headers=admin)
    ).json()
    short = {"Authorization": f"Bearer {created['token']}"}
    clock.advance(timedelta(days=1))

    response = await client.post("/v1/tokens", json={"role": "admin"}, headers=short)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_capacity_changes_are_in_the_sites_audit_log(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    manager = await staff(runtime, "manager", ["yonghe-temple"])
    await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 10}, headers=manager)
    await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 12}, headers=admin)

    response = await client.get("/v1/audit", params={"site": "yonghe-temple"}, headers=manager)

    assert response.status_code == 200
    events = response.json()
    assert [(e["action"], e["target"], e["before"], e["after"]) for e in events] == [
        ("slot.capacity", YONGHE_10, {"capacity": 10}, {"capacity": 12}),
        ("slot.capacity", YONGHE_10, {"capacity": 1000}, {"capacity": 10}),
    ]
    assert events[0]["actor"].startswith("token:")
    assert events[0]["at"] == "2026-12-01T02:00:00Z"


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("anonymous", 401),
        ("tourist", 403),
        ("manager of this site", 200),
        ("manager of another site", 403),
        ("operator", 403),
        ("admin", 200),
    ],
)
async def test_who_may_read_a_sites_audit_log(
    client: httpx.AsyncClient, callers: dict[str, dict[str, str]], caller: str, status: int
) -> None:
    response = await client.get(
        "/v1/audit", params={"site": "yonghe-temple"}, headers=callers[caller]
    )

    assert response.status_code == status
