"""The authorisation matrix: every operation of the app's own route table (its OpenAPI) against
every kind of caller, each cell asserting the documented status and problem code.

The callers: the owner of a reservation, another tourist, a manager of this site
(yonghe-temple), a manager of another site (palace-museum), an operator and a gate device of
this site, an admin, anonymous (no token), and a ninth since registration answers a token at
once: a pending registration (its token before the code came back). The documented rules
(service/access.py, README "Who may call what"):

- `anyone`: every caller gets the route's success status;
- `a tourist's account`: anonymous 401, everyone else 403, except the owner, who succeeds,
  and another tourist, who gets 404 on a route naming a `{reservation_id}` (somebody else's,
  answered as if it did not exist) and succeeds on the collection (its own reservations);
- `admins and the site's managers`: anonymous 401, everyone else 403, except the manager of
  this site and admins, who succeed;
- `admins`: anonymous 401, everyone else 403, admins succeed;
- `a registration waiting for its code`: anonymous 401, everyone else 403, the pending
  registration succeeds.

A refusal is a problem whose `code` is `unauthorized` (401), `not-found` (404) or, for 403,
`forbidden`, but `account-unverified` for a pending registration's token (it is told to send
its code first). MATRIX below is the expected table, written out to be read;
`test_the_table_follows_the_documented_rules` derives each row from the rules above, the
route's policy (`x-access`) and its success status, so the table and the rules cannot drift.
An operation the app gains without a row and a sample request here fails, and so does a row
for an operation the app no longer has.

Each operation is one test: the nine callers run in turn against one fresh service, refusals
first, so every refused request meets the untouched state, then the callers that may succeed,
each with its own request (its own new gate, site, template, closure date...) so that both the
manager and the admin succeed on a change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from booking.repository import get_reservation
from service import access
from service.app import create_app
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, new_tourist, register, verification_code, visitor

YONGHE = "yonghe-temple"
SOUTH_GATE = "yonghe-temple.south-gate"
PALACE = "palace-museum"
YONGHE_14 = "yonghe-temple.2026-12-01.1400"  # holds no reservation: closing it cancels nobody
YONGHE_15 = "yonghe-temple.2026-12-01.1500"
PASSWORD = "correct horse"
PENDING_EMAIL = "pending@example.com"

OWNER = "owner"
TOURIST = "another tourist"
MANAGER = "manager of this site"
OTHER_MANAGER = "manager of another site"
OPERATOR = "operator"
GATE = "gate"
ADMIN = "admin"
PENDING = "pending registration"
ANONYMOUS = "anonymous"
PRINCIPALS = (OWNER, TOURIST, MANAGER, OTHER_MANAGER, OPERATOR, GATE, ADMIN, PENDING, ANONYMOUS)
COLUMNS = ("own", "tour", "mgr", "mgr2", "oper", "gate", "adm", "pend", "anon")  # MATRIX header

# The expected answer of each operation to each caller. Columns: own = the tourist who holds
# the reservation, tour = another tourist, mgr = manager of yonghe-temple, mgr2 = manager of
# palace-museum, oper = operator of yonghe-temple, gate = yonghe-temple's south gate device,
# adm = admin, pend = a registration's token before its code came back, anon = no token.
MATRIX_TABLE = """
operation                                                                            own   tour  mgr   mgr2  oper  gate  adm   pend  anon
GET /v1/sites                                                                        200   200   200   200   200   200   200   200   200
POST /v1/sites                                                                       403   403   403   403   403   403   201   403   401
GET /v1/sites/{site_id}                                                              200   200   200   200   200   200   200   200   200
PATCH /v1/sites/{site_id}                                                            403   403   200   403   403   403   200   403   401
GET /v1/sites/{site_id}/slots                                                        200   200   200   200   200   200   200   200   200
GET /v1/slots/{slot_id}                                                              200   200   200   200   200   200   200   200   200
PATCH /v1/slots/{slot_id}                                                            403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/close                                                       403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/reopen                                                      403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/days/{visit_date}/close                                     403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/days/{visit_date}/reopen                                    403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/gates                                                       403   403   201   403   403   403   201   403   401
PATCH /v1/sites/{site_id}/gates/{gate_id}                                            403   403   200   403   403   403   200   403   401
GET /v1/sites/{site_id}/slot-templates                                               403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/slot-templates                                              403   403   201   403   403   403   201   403   401
PATCH /v1/sites/{site_id}/slot-templates/{template_id}                               403   403   200   403   403   403   200   403   401
DELETE /v1/sites/{site_id}/slot-templates/{template_id}                              403   403   204   403   403   403   204   403   401
POST /v1/sites/{site_id}/slots/generate                                              403   403   200   403   403   403   200   403   401
POST /v1/slots/{slot_id}/close                                                       403   403   200   403   403   403   200   403   401
POST /v1/slots/{slot_id}/reopen                                                      403   403   200   403   403   403   200   403   401
POST /v1/accounts                                                                    201   201   201   201   201   201   201   201   201
POST /v1/accounts/verify                                                             403   403   403   403   403   403   403   200   401
POST /v1/sessions                                                                    200   200   200   200   200   200   200   200   200
POST /v1/reservations                                                                201   201   403   403   403   403   403   403   401
POST /v1/group-reservations                                                          201   201   403   403   403   403   403   403   401
GET /v1/reservations                                                                 200   200   403   403   403   403   403   403   401
POST /v1/reservations/{reservation_id}/confirm                                       200   404   403   403   403   403   403   403   401
POST /v1/reservations/{reservation_id}/cancel                                        200   404   403   403   403   403   403   403   401
POST /v1/reservations/{reservation_id}/reschedule                                    200   404   403   403   403   403   403   403   401
GET /v1/reservations/{reservation_id}                                                200   404   403   403   403   403   403   403   401
POST /v1/waitlist                                                                    201   201   403   403   403   403   403   403   401
GET /v1/waitlist/{entry_id}                                                          200   404   403   403   403   403   403   403   401
DELETE /v1/waitlist/{entry_id}                                                       204   404   403   403   403   403   403   403   401
POST /v1/draws/entries                                                               201   201   403   403   403   403   403   403   401
GET /v1/draws/entries/{entry_id}                                                     200   404   403   403   403   403   403   403   401
GET /v1/draws/{site_id}/{visit_date}                                                 200   200   200   200   200   200   200   200   200
POST /v1/webhooks                                                                    201   201   403   403   403   403   403   403   401
GET /v1/webhooks                                                                     200   200   403   403   403   403   403   403   401
DELETE /v1/webhooks/{subscription_id}                                                204   404   403   403   403   403   403   403   401
GET /v1/webhooks/{subscription_id}/deliveries                                        200   404   403   403   403   403   403   403   401
POST /v1/webhooks/{subscription_id}/deliveries/{delivery_id}/replay                  200   404   403   403   403   403   403   403   401
POST /v1/sites/{site_id}/webhooks                                                    403   403   201   403   403   403   201   403   401
GET /v1/sites/{site_id}/webhooks                                                     403   403   200   403   403   403   200   403   401
DELETE /v1/sites/{site_id}/webhooks/{subscription_id}                                403   403   204   403   403   403   204   403   401
GET /v1/sites/{site_id}/webhooks/{subscription_id}/deliveries                        403   403   200   403   403   403   200   403   401
POST /v1/sites/{site_id}/webhooks/{subscription_id}/deliveries/{delivery_id}/replay  403   403   200   403   403   403   200   403   401
GET /v1/reservations/{reservation_id}/ticket                                         200   404   403   403   403   403   403   403   401
POST /v1/gates/{gate_id}/scans                                                       403   403   403   403   403   200   403   403   401
POST /v1/sites/{site_id}/window-sales                                                403   403   201   403   201   403   201   403   401
GET /v1/sites/{site_id}/occupancy                                                    403   403   200   403   200   403   200   403   401
GET /v1/live                                                                         403   403   200   200   200   403   200   403   401
GET /v1/suggestions                                                                  200   200   200   200   200   200   200   200   200
GET /v1/crowd                                                                        200   200   200   200   200   200   200   200   200
GET /v1/sites/{site_id}/forecast                                                     403   403   200   403   200   403   200   403   401
POST /v1/sites/{site_id}/capacity-plan                                               403   403   200   403   403   403   200   403   401
POST /v1/tokens                                                                      403   403   403   403   403   403   201   403   401
DELETE /v1/tokens/{token_id}                                                         403   403   403   403   403   403   204   403   401
GET /v1/audit                                                                        403   403   200   403   403   403   200   403   401
GET /v1/sites/{site_id}/reports                                                      403   403   200   403   403   403   200   403   401
GET /v1/outbox                                                                       403   403   403   403   403   403   200   403   401
GET /healthz                                                                         200   200   200   200   200   200   200   200   200
GET /readyz                                                                          200   200   200   200   200   200   200   200   200
"""


def _parse(table: str) -> dict[str, dict[str, int]]:
    header, *rows = (line.split() for line in table.strip().splitlines())
    assert tuple(header[-len(COLUMNS) :]) == COLUMNS, header
    matrix: dict[str, dict[str, int]] = {}
    for row in rows:
        operation = " ".join(row[: -len(PRINCIPALS)])
        assert operation not in matrix, f"{operation} has two rows"
        cells = map(int, row[-len(PRINCIPALS) :])
        matrix[operation] = dict(zip(PRINCIPALS, cells, strict=True))
    return matrix


MATRIX = _parse(MATRIX_TABLE)


def refusal_code(who: str, status: int) -> str | None:
    """The problem `code` of a refusal (None for a success)."""
    if status == 403 and who == PENDING:
        return "account-unverified"
    return {401: "unauthorized", 403: "forbidden", 404: "not-found"}.get(status)


def documented(policy: str, success: int, operation: str) -> dict[str, int]:
    """The answer each caller gets by the documented rules, for a route's policy."""
    if policy == access.ANYONE.name:
        return dict.fromkeys(PRINCIPALS, success)
    refused = dict.fromkeys(PRINCIPALS, 403) | {ANONYMOUS: 401}
    if policy == access.TOURIST.name:
        # Somebody else's reservation or waitlist entry: as if it did not exist.
        private = any(
            name in operation for name in ("{reservation_id}", "{entry_id}", "{subscription_id}")
        )
        return refused | {OWNER: success, TOURIST: 404 if private else success}
    if policy == access.SITE_MANAGER.name:
        return refused | {MANAGER: success, ADMIN: success}
    if policy == access.ADMIN.name:
        return refused | {ADMIN: success}
    if policy == access.REGISTRATION.name:
        return refused | {PENDING: success}
    if policy == access.GATE.name:
        return refused | {GATE: success}
    if policy == access.SITE_STAFF.name and "{site_id}" not in operation:
        # Not about one site: each staff member gets their own sites.
        return refused | dict.fromkeys((MANAGER, OTHER_MANAGER, OPERATOR, ADMIN), success)
    if policy == access.SITE_STAFF.name:
        return refused | {MANAGER: success, OPERATOR: success, ADMIN: success}
    raise AssertionError(f"{operation}: no documented rule for the policy {policy!r}")


def _route_table() -> dict[str, tuple[str, int]]:
    """The app's operations, "METHOD /path", each with its policy's name (`x-access`) and its
    success status; read from an app that is built but never started."""
    table: dict[str, tuple[str, int]] = {}
    for path, operations in create_app().openapi()["paths"].items():
        for method, operation in operations.items():
            success = min(int(status) for status in operation["responses"] if status[0] == "2")
            table[f"{method.upper()} {path}"] = (operation.get("x-access", "<none>"), success)
    return table


ROUTES = _route_table()


# sample requests -----------------------------------------------------------------------------


@dataclass
class World:
    """What every operation's test starts from: one fresh service with the demo sites, a held
    reservation of the owner's at Yonghe Temple, and a token for each caller."""

    client: httpx.AsyncClient
    runtime: Runtime
    headers: dict[str, dict[str, str]]
    reservation_id: str  # the owner's, held at 10:00 today
    template_id: int  # Yonghe Temple's demo template
    code: str  # the one sent to the pending registration


@dataclass(frozen=True)
class Sample:
    """One request of an operation (its method is the operation's)."""

    path: str
    json: Any = None
    params: dict[str, str] | None = None


Builder = Callable[[World, str], Awaitable[Sample]]
SAMPLES: dict[str, Builder] = {}


def sample(operation: str) -> Callable[[Builder], Builder]:
    """Register the sample request builder of an operation: given the world and the caller,
    the request that caller makes."""

    def add(builder: Builder) -> Builder:
        assert operation not in SAMPLES, f"{operation} has two samples"
        SAMPLES[operation] = builder
        return builder

    return add


def fixed(operation: str, request: Sample) -> None:
    """An operation whose every caller sends the same request (reads, idempotent changes)."""

    async def build(world: World, who: str) -> Sample:
        return request

    sample(operation)(build)


def slug(who: str) -> str:
    return who.replace(" ", "-")


def nth(who: str) -> int:
    return PRINCIPALS.index(who)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def staff(
    runtime: Runtime, role: str, sites: list[str], gate: str | None = None
) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role=role, sites=sites, gate=gate)
    return bearer(token.token)


# The catalog.

fixed("GET /v1/sites", Sample("/v1/sites"))
fixed("GET /v1/sites/{site_id}", Sample(f"/v1/sites/{YONGHE}"))
fixed(
    "GET /v1/sites/{site_id}/slots",
    Sample(f"/v1/sites/{YONGHE}/slots", params={"date": "2026-12-01"}),
)
fixed("GET /v1/slots/{slot_id}", Sample(f"/v1/slots/{YONGHE_10}"))


@sample("PATCH /v1/slots/{slot_id}")
async def _change_slot(world: World, who: str) -> Sample:
    return Sample(f"/v1/slots/{YONGHE_14}", json={"capacity": 900 + nth(who)})


# Site managers' tools.

NEW_SITE: dict[str, Any] = {
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


@sample("POST /v1/sites")
async def _create_site(world: World, who: str) -> Sample:
    return Sample("/v1/sites", json={**NEW_SITE, "id": f"matrix-{slug(who)}"})


@sample("PATCH /v1/sites/{site_id}")
async def _change_site(world: World, who: str) -> Sample:
    return Sample(f"/v1/sites/{YONGHE}", json={"name_en": f"Yonghe Temple ({who})"})


async def as_admin(world: World, method: str, path: str, json: Any = None) -> httpx.Response:
    """A change made by the admin to set up a caller's request."""
    response = await world.client.request(method, path, json=json, headers=world.headers[ADMIN])
    assert response.is_success, response.text
    return response


@sample("POST /v1/sites/{site_id}/close")
async def _close_site(world: World, who: str) -> Sample:
    # The site is open again for each caller, so the admin's closure closes its slots too.
    await as_admin(world, "POST", f"/v1/sites/{YONGHE}/reopen")
    return Sample(f"/v1/sites/{YONGHE}/close", json={"reason": f"storm ({who})"})


@sample("POST /v1/sites/{site_id}/reopen")
async def _reopen_site(world: World, who: str) -> Sample:
    # Closed for each caller, so each reopening has slots to reopen.
    await as_admin(world, "POST", f"/v1/sites/{YONGHE}/close", json={"reason": "storm"})
    return Sample(f"/v1/sites/{YONGHE}/reopen")


def _closure_date(who: str) -> str:
    # Not the owner's day (2026-12-01); the admin's its own, so both closures close something.
    return "2026-12-03" if who == ADMIN else "2026-12-02"


@sample("POST /v1/sites/{site_id}/days/{visit_date}/close")
async def _close_day(world: World, who: str) -> Sample:
    path = f"/v1/sites/{YONGHE}/days/{_closure_date(who)}/close"
    return Sample(path, json={"reason": f"state event ({who})"})


@sample("POST /v1/sites/{site_id}/days/{visit_date}/reopen")
async def _reopen_day(world: World, who: str) -> Sample:
    day = f"/v1/sites/{YONGHE}/days/{_closure_date(who)}"
    await as_admin(world, "POST", f"{day}/close", json={"reason": "state event"})
    return Sample(f"{day}/reopen")


@sample("POST /v1/sites/{site_id}/gates")
async def _add_gate(world: World, who: str) -> Sample:
    gate = {
        "id": f"yonghe-temple-{slug(who)}-gate",
        "name_zh": "东门",
        "name_en": f"East Gate ({who})",
        "lat": 39.9473,
        "lon": 116.4185,
    }
    return Sample(f"/v1/sites/{YONGHE}/gates", json=gate)


@sample("PATCH /v1/sites/{site_id}/gates/{gate_id}")
async def _change_gate(world: World, who: str) -> Sample:
    return Sample(f"/v1/sites/{YONGHE}/gates/{SOUTH_GATE}", json={"flow_per_minute": 30 + nth(who)})


fixed("GET /v1/sites/{site_id}/slot-templates", Sample(f"/v1/sites/{YONGHE}/slot-templates"))


@sample("POST /v1/sites/{site_id}/slot-templates")
async def _add_template(world: World, who: str) -> Sample:
    template = {"label": f"evening {who}", "start": "16:00", "end": "16:30", "capacity": 50}
    return Sample(f"/v1/sites/{YONGHE}/slot-templates", json=template)


@sample("PATCH /v1/sites/{site_id}/slot-templates/{template_id}")
async def _change_template(world: World, who: str) -> Sample:
    path = f"/v1/sites/{YONGHE}/slot-templates/{world.template_id}"
    return Sample(path, json={"label": f"hourly ({who})"})


@sample("DELETE /v1/sites/{site_id}/slot-templates/{template_id}")
async def _delete_template(world: World, who: str) -> Sample:
    """A template of its own for each caller, made by the admin, so each may delete one."""
    template = {"label": f"throwaway {who}", "start": "16:00", "end": "16:30", "capacity": 5}
    made = await world.client.post(
        f"/v1/sites/{YONGHE}/slot-templates", json=template, headers=world.headers[ADMIN]
    )
    assert made.status_code == 201, made.text
    return Sample(f"/v1/sites/{YONGHE}/slot-templates/{made.json()['id']}")


@sample("POST /v1/sites/{site_id}/slots/generate")
async def _generate_slots(world: World, who: str) -> Sample:
    # Days past the horizon, none made yet: the admin's its own, so both make slots.
    days = ("2026-12-12", "2026-12-13") if who == ADMIN else ("2026-12-10", "2026-12-11")
    return Sample(f"/v1/sites/{YONGHE}/slots/generate", json={"from": days[0], "to": days[1]})


def _closure_slot(who: str) -> str:
    # Not the owner's slot (10:00); the admin's its own, so both closures close something.
    return YONGHE_15 if who == ADMIN else YONGHE_14


@sample("POST /v1/slots/{slot_id}/close")
async def _close_slot(world: World, who: str) -> Sample:
    return Sample(f"/v1/slots/{_closure_slot(who)}/close", json={"reason": f"repairs ({who})"})


@sample("POST /v1/slots/{slot_id}/reopen")
async def _reopen_slot(world: World, who: str) -> Sample:
    slot = f"/v1/slots/{_closure_slot(who)}"
    await as_admin(world, "POST", f"{slot}/close", json={"reason": "repairs"})
    return Sample(f"{slot}/reopen")


fixed("GET /v1/audit", Sample("/v1/audit", params={"site": YONGHE}))
fixed(
    "GET /v1/sites/{site_id}/reports",
    Sample(f"/v1/sites/{YONGHE}/reports", params={"from": "2026-12-01"}),
)


# Accounts and sessions: a login of its own for each caller.


@sample("POST /v1/accounts")
async def _register(world: World, who: str) -> Sample:
    return Sample(
        "/v1/accounts", json={"email": f"new-{slug(who)}@example.com", "password": PASSWORD}
    )


@sample("POST /v1/accounts/verify")
async def _verify(world: World, who: str) -> Sample:
    """The pending registration's right code, whoever sends it: only its own token may (the
    refusals come first, so none of them spends one of its attempts)."""
    return Sample("/v1/accounts/verify", json={"code": world.code})


@sample("POST /v1/sessions")
async def _log_in(world: World, who: str) -> Sample:
    email = f"session-{slug(who)}@example.com"
    await register(world.client, {"email": email})
    return Sample("/v1/sessions", json={"email": email, "password": PASSWORD})


# A tourist's reservations.


@sample("POST /v1/reservations")
async def _hold(world: World, who: str) -> Sample:
    # 11:00, not the owner's 10:00: the owner's second open hold (the limit is two).
    body = {"slot_id": "yonghe-temple.2026-12-01.1100", "visitors": [visitor()]}
    return Sample("/v1/reservations", json=body)


fixed("GET /v1/reservations", Sample("/v1/reservations"))


@sample("POST /v1/reservations/{reservation_id}/confirm")
async def _confirm(world: World, who: str) -> Sample:
    return Sample(f"/v1/reservations/{world.reservation_id}/confirm")


@sample("POST /v1/reservations/{reservation_id}/cancel")
async def _cancel(world: World, who: str) -> Sample:
    return Sample(f"/v1/reservations/{world.reservation_id}/cancel")


@sample("POST /v1/reservations/{reservation_id}/reschedule")
async def _reschedule(world: World, who: str) -> Sample:
    body = {"slot_id": "yonghe-temple.2026-12-01.1200"}
    return Sample(f"/v1/reservations/{world.reservation_id}/reschedule", json=body)


@sample("GET /v1/reservations/{reservation_id}")
async def _read_reservation(world: World, who: str) -> Sample:
    return Sample(f"/v1/reservations/{world.reservation_id}")


# Waitlists: the owner waits for a full slot (13:00 or 14:00, their caps made 0).

_ENTRIES: dict[str, str] = {}


@sample("POST /v1/waitlist")
async def _join_waitlist(world: World, who: str) -> Sample:
    slot = "yonghe-temple.2026-12-01.1300"
    await as_admin(world, "PATCH", f"/v1/slots/{slot}", json={"capacity": 0})
    return Sample("/v1/waitlist", json={"slot_id": slot, "visitors": [visitor()]})


async def owners_entry(world: World) -> str:
    """The owner's waitlist entry in this world, made once."""
    if world.reservation_id not in _ENTRIES:
        slot = "yonghe-temple.2026-12-01.1400"
        await as_admin(world, "PATCH", f"/v1/slots/{slot}", json={"capacity": 0})
        joined = await world.client.post(
            "/v1/waitlist",
            json={"slot_id": slot, "visitors": [visitor()]},
            headers=world.headers[OWNER],
        )
        assert joined.status_code == 201, joined.text
        _ENTRIES[world.reservation_id] = joined.json()["id"]
    return _ENTRIES[world.reservation_id]


@sample("GET /v1/waitlist/{entry_id}")
async def _read_entry(world: World, who: str) -> Sample:
    return Sample(f"/v1/waitlist/{await owners_entry(world)}")


@sample("DELETE /v1/waitlist/{entry_id}")
async def _leave_waitlist(world: World, who: str) -> Sample:
    return Sample(f"/v1/waitlist/{await owners_entry(world)}")


# Groups: yonghe-temple takes them once its managers set the rules.


@sample("POST /v1/group-reservations")
async def _hold_group(world: World, who: str) -> Sample:
    rules = {"max_people": 35, "max_minors": 30, "minors_per_adult": 10, "groups_per_day": 200}
    await as_admin(world, "PATCH", f"/v1/sites/{YONGHE}", json={"group_rules": rules})
    body = {"slot_id": "yonghe-temple.2026-12-01.1100", "visitors": [visitor(), visitor()]}
    return Sample("/v1/group-reservations", json=body)


# Fair release: yonghe-temple (sales open a day ahead at 00:00 Beijing) draws 3 December;
# its pre-queue window (a day long here) is open at the world's time.

DRAW_DAY = "2026-12-03"
DRAW_SLOT = f"yonghe-temple.{DRAW_DAY}.1000"
_DRAW_ENTRIES: dict[str, str] = {}


async def fair_release(world: World) -> None:
    await as_admin(
        world, "PATCH", f"/v1/sites/{YONGHE}", json={"fair_release": {"prequeue_minutes": 1440}}
    )


@sample("POST /v1/draws/entries")
async def _enter_draw(world: World, who: str) -> Sample:
    await fair_release(world)
    return Sample("/v1/draws/entries", json={"choices": [DRAW_SLOT], "visitors": [visitor()]})


async def owners_draw_entry(world: World) -> str:
    """The owner's entry in the draw of 3 December, made once per world."""
    if world.reservation_id not in _DRAW_ENTRIES:
        await fair_release(world)
        entered = await world.client.post(
            "/v1/draws/entries",
            json={"choices": [DRAW_SLOT], "visitors": [visitor()]},
            headers=world.headers[OWNER],
        )
        assert entered.status_code == 201, entered.text
        _DRAW_ENTRIES[world.reservation_id] = entered.json()["id"]
    return _DRAW_ENTRIES[world.reservation_id]


@sample("GET /v1/draws/entries/{entry_id}")
async def _read_draw_entry(world: World, who: str) -> Sample:
    return Sample(f"/v1/draws/entries/{await owners_draw_entry(world)}")


@sample("GET /v1/draws/{site_id}/{visit_date}")
async def _read_draw(world: World, who: str) -> Sample:
    await owners_draw_entry(world)
    return Sample(f"/v1/draws/{YONGHE}/{DRAW_DAY}")


# The window: the site's staff sell places to visitors without the app.


@sample("POST /v1/sites/{site_id}/window-sales")
async def _sell_at_window(world: World, who: str) -> Sample:
    body = {"slot_id": "yonghe-temple.2026-12-01.1500", "visitors": [visitor()]}
    return Sample(f"/v1/sites/{YONGHE}/window-sales", json=body)


# Webhooks: the owner's subscription and the site's, each made once per world, with a
# delivery of the owner's hold to replay.

HOOK = {"url": "http://127.0.0.1:9/hook"}
_HOOKS: dict[tuple[str, str], tuple[str, int]] = {}


async def hook_of(world: World, scope: str) -> tuple[str, int]:
    """(subscription, delivery) of the owner's ("owner") or the site's ("site") webhook."""
    key = (world.reservation_id, scope)
    if key not in _HOOKS:
        async with world.runtime.sessions() as session:
            reservation = await get_reservation(session, world.reservation_id)
        assert reservation is not None
        if scope == "owner":
            made = await world.runtime.webhooks.subscribe(
                url=HOOK["url"], topics=[], actor="test", account_id=reservation.owner_id
            )
        else:
            made = await world.runtime.webhooks.subscribe(
                url=HOOK["url"], topics=[], actor="test", site_id=YONGHE
            )
        await world.runtime.webhooks.fan_out()
        log = await world.runtime.webhooks.deliveries(
            made.id,
            account_id=made.account,
            site_id=made.site,
        )
        _HOOKS[key] = (made.id, log[0].id)
    return _HOOKS[key]


fixed("POST /v1/webhooks", Sample("/v1/webhooks", json=HOOK))
fixed("GET /v1/webhooks", Sample("/v1/webhooks"))


@sample("DELETE /v1/webhooks/{subscription_id}")
async def _unsubscribe(world: World, who: str) -> Sample:
    return Sample(f"/v1/webhooks/{(await hook_of(world, 'owner'))[0]}")


@sample("GET /v1/webhooks/{subscription_id}/deliveries")
async def _deliveries(world: World, who: str) -> Sample:
    return Sample(f"/v1/webhooks/{(await hook_of(world, 'owner'))[0]}/deliveries")


@sample("POST /v1/webhooks/{subscription_id}/deliveries/{delivery_id}/replay")
async def _replay(world: World, who: str) -> Sample:
    hook, delivery = await hook_of(world, "owner")
    return Sample(f"/v1/webhooks/{hook}/deliveries/{delivery}/replay")


fixed("POST /v1/sites/{site_id}/webhooks", Sample(f"/v1/sites/{YONGHE}/webhooks", json=HOOK))
fixed("GET /v1/sites/{site_id}/webhooks", Sample(f"/v1/sites/{YONGHE}/webhooks"))


@sample("DELETE /v1/sites/{site_id}/webhooks/{subscription_id}")
async def _unsubscribe_site(world: World, who: str) -> Sample:
    return Sample(f"/v1/sites/{YONGHE}/webhooks/{(await hook_of(world, 'site'))[0]}")


@sample("GET /v1/sites/{site_id}/webhooks/{subscription_id}/deliveries")
async def _site_deliveries(world: World, who: str) -> Sample:
    hook = (await hook_of(world, "site"))[0]
    return Sample(f"/v1/sites/{YONGHE}/webhooks/{hook}/deliveries")


@sample("POST /v1/sites/{site_id}/webhooks/{subscription_id}/deliveries/{delivery_id}/replay")
async def _site_replay(world: World, who: str) -> Sample:
    hook, delivery = await hook_of(world, "site")
    return Sample(f"/v1/sites/{YONGHE}/webhooks/{hook}/deliveries/{delivery}/replay")


# Tickets and gates.


async def confirmed(world: World) -> str:
    """Confirm the owner's reservation (twice is harmless); returns the owner's account."""
    answer = await world.client.post(
        f"/v1/reservations/{world.reservation_id}/confirm", headers=world.headers[OWNER]
    )
    assert answer.status_code == 200, answer.text
    async with world.runtime.sessions() as session:
        reservation = await get_reservation(session, world.reservation_id)
    assert reservation is not None
    return reservation.owner_id


@sample("GET /v1/reservations/{reservation_id}/ticket")
async def _ticket(world: World, who: str) -> Sample:
    await confirmed(world)
    return Sample(f"/v1/reservations/{world.reservation_id}/ticket")


@sample("POST /v1/gates/{gate_id}/scans")
async def _scan(world: World, who: str) -> Sample:
    owner = await confirmed(world)
    ticket = await world.runtime.gates.ticket(owner_id=owner, reservation_id=world.reservation_id)
    return Sample(f"/v1/gates/{SOUTH_GATE}/scans", json={"code": ticket.code, "direction": "entry"})


fixed("GET /v1/sites/{site_id}/occupancy", Sample(f"/v1/sites/{YONGHE}/occupancy"))
fixed("GET /v1/live", Sample("/v1/live", params={"events": "1"}))

# Crowd flow.

fixed(
    "GET /v1/suggestions",
    Sample("/v1/suggestions", params={"site": YONGHE, "time": "10:00", "party": "2"}),
)
fixed("GET /v1/crowd", Sample("/v1/crowd"))
fixed("GET /v1/sites/{site_id}/forecast", Sample(f"/v1/sites/{YONGHE}/forecast"))
fixed(
    "POST /v1/sites/{site_id}/capacity-plan",
    Sample(
        f"/v1/sites/{YONGHE}/capacity-plan",
        json={
            "zones": [{"name": "halls", "area_m2": 3000, "m2_per_person": 2}],
            "average_stay_minutes": 90,
        },
    ),
)


# Staff tokens and the outbox.


@sample("POST /v1/tokens")
async def _create_token(world: World, who: str) -> Sample:
    return Sample("/v1/tokens", json={"role": "operator", "sites": [YONGHE], "label": who})


@sample("DELETE /v1/tokens/{token_id}")
async def _revoke_token(world: World, who: str) -> Sample:
    """A live token of its own for each caller to revoke, so a refusal is never a 404."""
    token = await world.runtime.accounts.create_staff_token(
        role="operator", sites=[YONGHE], label=f"throwaway for {who}"
    )
    return Sample(f"/v1/tokens/{token.id}")


fixed("GET /v1/outbox", Sample("/v1/outbox"))

# Probes.

fixed("GET /healthz", Sample("/healthz"))
fixed("GET /readyz", Sample("/readyz"))


# the tests -----------------------------------------------------------------------------------


@pytest.fixture
async def world(client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]) -> World:
    owner = await new_tourist(client)
    held = await hold(client, owner)
    assert held.status_code == 201, held.text
    templates = await client.get(f"/v1/sites/{YONGHE}/slot-templates", headers=admin)
    assert templates.status_code == 200, templates.text
    pending = await client.post("/v1/accounts", json={"email": PENDING_EMAIL, "password": PASSWORD})
    assert pending.status_code == 201, pending.text
    assert pending.json()["role"] == "pending"
    headers = {
        OWNER: owner,
        TOURIST: await new_tourist(client),
        MANAGER: await staff(runtime, "manager", [YONGHE]),
        OTHER_MANAGER: await staff(runtime, "manager", [PALACE]),
        OPERATOR: await staff(runtime, "operator", [YONGHE]),
        GATE: await staff(runtime, "gate", [], gate=SOUTH_GATE),
        ADMIN: admin,
        PENDING: bearer(pending.json()["token"]),
        ANONYMOUS: {},
    }
    code = await verification_code(runtime, PENDING_EMAIL)
    return World(client, runtime, headers, held.json()["id"], templates.json()[0]["id"], code)


async def test_the_table_has_every_operation_of_the_app_and_no_other(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    live = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}

    assert sorted(live - SAMPLES.keys()) == [], "operations without a sample request: add them"
    assert sorted(SAMPLES.keys() - live) == [], "samples of operations the app no longer has"
    assert sorted(live ^ MATRIX.keys()) == [], "the table and the app name other operations"


def test_the_table_follows_the_documented_rules() -> None:
    disagreements = {
        operation: {"table": row, "rules": documented(*ROUTES[operation], operation)}
        for operation, row in MATRIX.items()
        if operation in ROUTES and row != documented(*ROUTES[operation], operation)
    }

    assert disagreements == {}


# Cells whose real answer is not the documented one: each a bug, reported, never hidden.
MISMATCHES: dict[str, str] = {}

CASES = [
    pytest.param(
        operation,
        id=operation,
        marks=[pytest.mark.xfail(strict=True, reason=MISMATCHES[operation])]
        if operation in MISMATCHES
        else [],
    )
    for operation in [*ROUTES, *(o for o in MATRIX if o not in ROUTES)]
]


def _code(response: httpx.Response) -> str | None:
    if response.is_success:
        return None
    if response.headers.get("content-type") != "application/problem+json":
        return f"<not a problem: {response.headers.get('content-type')}>"
    code: str = response.json()["code"]
    if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
        return f"{code} <without WWW-Authenticate>"
    return code


@pytest.mark.parametrize("operation", CASES)
async def test_each_caller_gets_the_documented_answer(operation: str, world: World) -> None:
    assert operation in ROUTES, f"the table lists {operation}, which the app no longer has"
    assert operation in SAMPLES, f"no sample request for {operation}: add one"
    assert operation in MATRIX, f"no row for {operation} in MATRIX_TABLE: add one"
    method = operation.split()[0]
    expected = MATRIX[operation]
    # Refusals first, against the untouched state; then each caller that may succeed.
    callers = sorted(PRINCIPALS, key=lambda who: expected[who] < 400)

    answers: dict[str, tuple[int, str | None]] = {}
    for who in callers:
        request = await SAMPLES[operation](world, who)
        response = await world.client.request(
            method,
            request.path,
            json=request.json,
            params=request.params,
            headers=world.headers[who],
        )
        answers[who] = (response.status_code, _code(response))

    assert answers == {who: (expected[who], refusal_code(who, expected[who])) for who in callers}
