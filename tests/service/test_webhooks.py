"""Webhooks over real HTTP: the outbox's events, signed, POSTed to a receiver served by uvicorn.

The receiver is a real server on a loopback port, in a thread of its own. It records every
request (headers and raw body), can be told to answer 500 or to stall past the client's
timeout for the next requests, and acts on each event once by remembering the
`Tidegate-Event-Id`s it acted on (the exactly-once effect a receiver builds on at-least-once
deliveries). The worker is driven by hand: `fan_out()`, `deliver_due()`, and the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlmodel import col
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from booking.ids import make_resident_id
from booking.models import OutboxEvent, Site, WebhookDelivery
from booking.webhooks import LEASE, MAX_ATTEMPTS, backoff, signature
from capacity.clock import ManualClock
from service.background import webhooks_once
from service.runtime import Runtime
from tests.conftest import NOW, YONGHE_10, hold, new_tourist, register, visitor
from tests.service.processes import free_port

YONGHE = "yonghe-temple"
PALACE = "palace-museum"
PALACE_TOMORROW = "palace-museum.2026-12-02.0830"  # sales end the day before
SOUTH = "yonghe-temple.south-gate"
STALL = 1.0  # seconds a stalled answer takes: past the test's client timeout below
SHORT_TIMEOUT = 0.3
ID_NUMBER = make_resident_id("110105", date(1980, 3, 4), 77)


# the receiver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def topic(self) -> str:
        return self.headers["tidegate-topic"]


@dataclass
class Receiver:
    """What a subscriber runs: records each request; acts on each event id once."""

    base: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to the next N requests (without acting)
    stall_next: int = 0  # act, then sleep past the client's timeout, for the next N
    acted: set[str] = field(default_factory=set)  # the event ids it acted on
    effects: dict[str, int] = field(default_factory=dict)  # event id -> times acted on

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.fail_next = self.stall_next = 0
            self.acted.clear()
            self.effects.clear()

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        stall = False
        with self.lock:
            self.requests.append(Received(request.url.path, dict(request.headers), body))
            if self.fail_next:
                self.fail_next -= 1
                return Response(status_code=500)
            event_id = request.headers["tidegate-event-id"]
            if event_id not in self.acted:  # the effect, once per event
                self.acted.add(event_id)
                self.effects[event_id] = self.effects.get(event_id, 0) + 1
            if self.stall_next:
                self.stall_next -= 1
                stall = True
        if stall:
            await asyncio.sleep(STALL)
        return Response(status_code=204)


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.endpoint, methods=["POST"])])
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="webhook-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the receiver did not start"
        assert time.monotonic() < deadline, "the receiver did not get ready"
        time.sleep(0.01)
    receiver.base = f"http://127.0.0.1:{port}"
    yield receiver
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.reset()
    return receiver_server


@pytest.fixture
async def short_timeout(runtime: Runtime) -> AsyncIterator[None]:
    """The runtime's webhook client with a short timeout, so a stalled receiver is quick."""
    client = httpx.AsyncClient(timeout=SHORT_TIMEOUT, follow_redirects=False)
    runtime.webhooks._http = client
    yield
    await client.aclose()


# helpers -----------------------------------------------------------------------------------


async def staff(runtime: Runtime, role: str, sites: list[str]) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role=role, sites=sites)
    return {"Authorization": f"Bearer {token.token}"}


def base_of(site: str | None) -> str:
    return f"/v1/sites/{site}/webhooks" if site else "/v1/webhooks"


async def subscribe(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    url: str,
    topics: list[str] | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if topics is not None:
        body["topics"] = topics
    response = await client.post(base_of(site), json=body, headers=headers)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def delivery_log(
    client: httpx.AsyncClient, headers: dict[str, str], sub_id: str, site: str | None = None
) -> list[dict[str, Any]]:
    response = await client.get(f"{base_of(site)}/{sub_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    log: list[dict[str, Any]] = response.json()
    return log


async def pump(runtime: Runtime) -> int:
    """One turn of the worker: fan out what is new, send what is due."""
    return await webhooks_once(runtime)


async def held(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slot_id: str = YONGHE_10,
    visitors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    response = await hold(client, headers, slot_id, visitors)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def act(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str, action: str
) -> dict[str, Any]:
    response = await client.post(f"/v1/reservations/{reservation_id}/{action}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def delivery_rows(runtime: Runtime) -> list[tuple[str, int]]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            sa.select(col(WebhookDelivery.subscription_id), col(WebhookDelivery.event_id)).order_by(
                col(WebhookDelivery.id)
            )
        )
        return [(s, e) for s, e in rows.all()]


async def event_ids(runtime: Runtime, *topics: str) -> list[int]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            sa.select(col(OutboxEvent.id))
            .where(col(OutboxEvent.topic).in_(topics))
            .order_by(col(OutboxEvent.id))
        )
        return [i for i in rows.scalars() if i is not None]


# subscribing -------------------------------------------------------------------------------


async def test_subscribing_answers_201_and_shows_the_secret_once(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    url = receiver.url("/hooks/app")
    response = await client.post("/v1/webhooks", json={"url": url}, headers=tourist)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert len(body["secret"]) > len("whsec_") + 30
    principal = await runtime.accounts.authenticate(tourist["Authorization"].split()[1])
    assert body == {
        "id": body["id"],
        "url": url,
        "topics": [],
        "account": principal.account_id,
        "site": None,
        "created_at": "2026-12-01T02:00:00Z",
        "secret": body["secret"],
    }
    listed = await client.get("/v1/webhooks", headers=tourist)
    assert listed.status_code == 200, listed.text
    assert listed.json() == [{**body, "secret": None}]
    assert body["secret"] not in listed.text
    # Nobody else sees it.
    other = await client.get("/v1/webhooks", headers=await new_tourist(client))
    assert other.json() == []


async def test_a_subscription_with_topics_receives_only_those(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    topics = ["reservation.confirmed", "reservation.cancelled", "reservation.confirmed"]
    made = await subscribe(client, tourist, receiver.url("/hooks/some"), topics)
    assert made["topics"] == ["reservation.cancelled", "reservation.confirmed"]

    reservation = await held(client, tourist)
    confirmed = await act(client, tourist, reservation["id"], "confirm")
    await pump(runtime)

    received = receiver.at("/hooks/some")
    assert [r.topic for r in received] == ["reservation.confirmed"]
    assert received[0].json["data"] == {"reservation": confirmed}
    log = await delivery_log(client, tourist, made["id"])
    assert [d["topic"] for d in log] == ["reservation.confirmed"]


BAD_BODIES: list[tuple[dict[str, Any], str, str]] = [
    ({"url": "ftp://example.com/hook"}, "url", "url_scheme"),
    ({"url": "not a url"}, "url", "url_parsing"),
    ({"topics": ["reservation.held"]}, "url", "missing"),
    (
        {"url": "https://example.com/hook", "topics": ["reservation.held", "account.login"]},
        "topics",
        "known-topic",
    ),
    (
        {"url": "https://example.com/hook", "topics": ["account.verification"]},
        "topics",
        "known-topic",
    ),
    ({"url": "https://example.com/hook", "secret": "mine"}, "secret", "extra_forbidden"),
]


async def test_a_bad_subscription_is_422_naming_the_field_and_rule(
    client: httpx.AsyncClient, tourist: dict[str, str], admin: dict[str, str]
) -> None:
    for path, headers in (("/v1/webhooks", tourist), (f"/v1/sites/{YONGHE}/webhooks", admin)):
        for body, field_name, rule in BAD_BODIES:
            response = await client.post(path, json=body, headers=headers)

            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["code"] == "validation-failed"
            assert [(e["in"], e["field"], e["rule"]) for e in problem["errors"]] == [
                ("body", field_name, rule)
            ], body
        assert (await client.get(path, headers=headers)).json() == []

    body = {"url": "https://example.com/hook", "topics": ["reservation.held", "account.login"]}
    response = await client.post("/v1/webhooks", json=body, headers=tourist)
    assert response.json()["errors"][0]["message"] == "unknown topics: account.login"
    assert response.json()["detail"] == "topics: unknown topics: account.login (known-topic)"


# an account's events -----------------------------------------------------------------------


async def test_hold_confirm_cancel_are_delivered_once_each_in_order(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    mine = await subscribe(client, tourist, receiver.url("/hooks/mine"))
    other_tourist = await new_tourist(client)
    others = await subscribe(client, other_tourist, receiver.url("/hooks/others"))

    reservation = await held(client, tourist)
    confirmed = await act(client, tourist, reservation["id"], "confirm")
    cancelled = await act(client, tourist, reservation["id"], "cancel")
    assert await pump(runtime) == 3
    assert await pump(runtime) == 0  # nothing twice

    received = receiver.at("/hooks/mine")
    assert [r.topic for r in received] == [
        "reservation.held",
        "reservation.confirmed",
        "reservation.cancelled",
    ]
    assert [r.json["data"] for r in received] == [
        {"reservation": reservation},
        {"reservation": confirmed},
        {"reservation": cancelled},
    ]
    ids = await event_ids(
        runtime, "reservation.held", "reservation.confirmed", "reservation.cancelled"
    )
    for request, event_id in zip(received, ids, strict=True):
        assert request.json == {
            "id": event_id,
            "topic": request.topic,
            "at": "2026-12-01T02:00:00+00:00",
            "site": YONGHE,
            "data": request.json["data"],
        }
        assert request.headers["tidegate-event-id"] == str(event_id)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "tidegate-webhooks/1"
    assert receiver.at("/hooks/others") == []
    assert await delivery_log(client, other_tourist, others["id"]) == []

    log = await delivery_log(client, tourist, mine["id"])
    assert [(d["topic"], d["event_id"]) for d in log] == [
        ("reservation.cancelled", ids[2]),
        ("reservation.confirmed", ids[1]),
        ("reservation.held", ids[0]),
    ]
    for entry in log:
        assert entry == {
            "id": entry["id"],
            "event_id": entry["event_id"],
            "topic": entry["topic"],
            "status": "delivered",
            "attempts": 1,
            "next_attempt_at": "2026-12-01T02:00:00Z",
            "last_status": 204,
            "last_error": None,
            "delivered_at": "2026-12-01T02:00:00Z",
        }


async def test_a_tourists_events_go_to_every_one_of_their_subscriptions(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    first = await subscribe(client, tourist, receiver.url("/hooks/first"))
    second = await subscribe(client, tourist, receiver.url("/hooks/second"))
    await held(client, tourist)
    await pump(runtime)

    one, two = receiver.at("/hooks/first"), receiver.at("/hooks/second")
    assert [r.topic for r in one] == [r.topic for r in two] == ["reservation.held"]
    assert one[0].body == two[0].body
    # Each signed with its own subscription's secret.
    timestamp = int(one[0].headers["tidegate-timestamp"])
    assert one[0].headers["tidegate-signature"] == signature(
        first["secret"], timestamp, one[0].body
    )
    assert two[0].headers["tidegate-signature"] == signature(
        second["secret"], timestamp, two[0].body
    )
    assert one[0].headers["tidegate-signature"] != two[0].headers["tidegate-signature"]


# a site's events ---------------------------------------------------------------------------


async def set_instant_cap(runtime: Runtime, cap: int) -> None:
    async with runtime.sessions() as session, session.begin():
        await session.execute(sa.update(Site).where(col(Site.id) == YONGHE).values(instant_cap=cap))


async def enter(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], reservation_id: str
) -> None:
    ticket = await client.get(f"/v1/reservations/{reservation_id}/ticket", headers=tourist)
    assert ticket.status_code == 200, ticket.text
    token = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=SOUTH)
    scanned = await client.post(
        f"/v1/gates/{SOUTH}/scans",
        json={"code": ticket.json()["code"], "direction": "entry"},
        headers={"Authorization": f"Bearer {token.token}"},
    )
    assert scanned.status_code == 200, scanned.text


async def test_a_site_subscription_receives_the_sites_events(
    runtime: Runtime,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    await set_instant_cap(runtime, 5)
    manager = await staff(runtime, "manager", [YONGHE])
    by_admin = await subscribe(client, admin, receiver.url("/hooks/admin"), site=YONGHE)
    by_manager = await subscribe(client, manager, receiver.url("/hooks/manager"), site=YONGHE)
    alerts = await subscribe(
        client, manager, receiver.url("/hooks/alerts"), ["site.alert_level"], site=YONGHE
    )
    assert by_admin["site"] == by_manager["site"] == YONGHE
    assert by_admin["account"] is None
    assert by_manager["secret"].startswith("whsec_")
    listed = await client.get(f"/v1/sites/{YONGHE}/webhooks", headers=manager)
    assert [s["id"] for s in listed.json()] == [by_admin["id"], by_manager["id"], alerts["id"]]
    assert all(s["secret"] is None for s in listed.json())

    party = [visitor() for _ in range(4)]
    reservation = await held(client, tourist, visitors=party)
    await act(client, tourist, reservation["id"], "confirm")
    await held(client, await new_tourist(client), PALACE_TOMORROW)  # another site's
    await enter(runtime, client, tourist, reservation["id"])  # 4 of 5: yellow
    closed = await client.post(f"/v1/sites/{YONGHE}/close", json={"reason": "storm"}, headers=admin)
    assert closed.status_code == 200, closed.text
    await pump(runtime)

    expected = [
        "reservation.held",
        "reservation.confirmed",
        "site.alert_level",
        "site.closed",
    ]
    for path in ("/hooks/admin", "/hooks/manager"):
        received = receiver.at(path)
        assert [r.topic for r in received] == expected, path
        assert all(r.json["site"] == YONGHE for r in received)
    received = receiver.at("/hooks/manager")
    assert received[2].json["data"]["site"] == YONGHE
    assert (received[2].json["data"]["from"], received[2].json["data"]["to"]) == (
        "green",
        "yellow",
    )
    assert received[3].json["data"] == {"site": YONGHE, "reason": "storm", "from": "2026-12-01"}
    assert [r.topic for r in receiver.at("/hooks/alerts")] == ["site.alert_level"]
    log = await delivery_log(client, manager, by_admin["id"], site=YONGHE)
    assert [d["topic"] for d in log] == list(reversed(expected))
    assert {d["status"] for d in log} == {"delivered"}


async def test_a_closure_announces_the_sites_cancellations_to_the_site_and_the_owner(
    runtime: Runtime,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    site_sub = await subscribe(client, admin, receiver.url("/hooks/site"), site=YONGHE)
    owner_sub = await subscribe(client, tourist, receiver.url("/hooks/owner"))
    reservation = await held(client, tourist)
    await act(client, tourist, reservation["id"], "confirm")
    closed = await client.post(f"/v1/sites/{YONGHE}/close", json={"reason": "storm"}, headers=admin)
    assert closed.status_code == 200, closed.text
    await pump(runtime)

    site_topics = [r.topic for r in receiver.at("/hooks/site")]
    owner = receiver.at("/hooks/owner")
    assert [r.topic for r in owner] == [
        "reservation.held",
        "reservation.confirmed",
        "reservation.cancelled_by_site",
    ]
    assert owner[2].json["data"]["reservation_id"] == reservation["id"]
    assert owner[2].json["data"]["reason"] == "storm"
    assert "reservation.cancelled_by_site" in site_topics
    assert "site.closed" in site_topics
    assert "site.closed" not in [r.topic for r in owner]
    assert site_sub["id"] != owner_sub["id"]


async def test_a_manager_of_another_site_may_not_subscribe_to_it(
    runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str], receiver: Receiver
) -> None:
    other = await staff(runtime, "manager", [PALACE])
    operator = await staff(runtime, "operator", [YONGHE])
    made = await subscribe(client, admin, receiver.url("/hooks/site"), site=YONGHE)
    body = {"url": receiver.url("/hooks/intruder")}

    for headers in (other, operator):
        response = await client.post(f"/v1/sites/{YONGHE}/webhooks", json=body, headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
        listed = await client.get(f"/v1/sites/{YONGHE}/webhooks", headers=headers)
        assert listed.status_code == 403, listed.text
        log = await client.get(
            f"/v1/sites/{YONGHE}/webhooks/{made['id']}/deliveries", headers=headers
        )
        assert log.status_code == 403, log.text
        gone = await client.delete(f"/v1/sites/{YONGHE}/webhooks/{made['id']}", headers=headers)
        assert gone.status_code == 403, gone.text
    # Its own site is fine; a tourist has no site routes.
    assert (
        await client.post(f"/v1/sites/{PALACE}/webhooks", json=body, headers=other)
    ).status_code == 201
    tourist = await new_tourist(client)
    response = await client.post(f"/v1/sites/{YONGHE}/webhooks", json=body, headers=tourist)
    assert response.status_code == 403, response.text
    assert [
        s["id"] for s in (await client.get(f"/v1/sites/{YONGHE}/webhooks", headers=admin)).json()
    ] == [made["id"]]


async def test_an_unknown_site_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], receiver: Receiver
) -> None:
    response = await client.post(
        "/v1/sites/atlantis/webhooks", json={"url": receiver.url("/x")}, headers=admin
    )
    assert response.status_code == 404, response.text


# what never leaves -------------------------------------------------------------------------


async def test_verification_codes_and_registration_attempts_are_never_delivered(
    runtime: Runtime,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    receiver: Receiver,
) -> None:
    login = {"email": "hook-owner@example.com"}
    owner = {"Authorization": f"Bearer {(await register(client, login)).json()['token']}"}
    await subscribe(client, owner, receiver.url("/hooks/owner"))
    for site in (YONGHE, PALACE):
        await subscribe(client, admin, receiver.url(f"/hooks/{site}"), site=site)

    # A new account: a code is sent. The owner's address again: an attempt on their account.
    await register(client, {"email": "newcomer@example.com"})
    again = await client.post("/v1/accounts", json={**login, "password": "another one"})
    assert again.status_code == 201, again.text
    await held(client, owner)  # something that does leave
    await pump(runtime)

    async with runtime.sessions() as session:
        events = (
            await session.execute(
                sa.select(OutboxEvent).where(col(OutboxEvent.topic).like("account.%"))
            )
        ).scalars()
        secret_events = [(e.topic, e.account_id, e.payload) for e in events]
    codes = [p["code"] for t, _, p in secret_events if t == "account.verification"]
    assert len(codes) == 2
    attempts = [a for t, a, _ in secret_events if t == "account.registration_attempt"]
    assert len(attempts) == 1
    assert attempts[0] is not None  # it is the owner's account: only the topic keeps it in

    received = receiver.all()
    assert sorted((r.path, r.topic) for r in received) == [
        ("/hooks/owner", "reservation.held"),
        (f"/hooks/{YONGHE}", "reservation.held"),
    ]
    for request in received:
        assert not request.topic.startswith("account."), request.topic
        for code in codes:
            assert code not in request.body.decode()
        assert b"newcomer@example.com" not in request.body
        assert b"hook-owner@example.com" not in request.body
    secret_ids = set(
        await event_ids(runtime, "account.verification", "account.registration_attempt")
    )
    assert len(secret_ids) == 3
    assert len(await delivery_rows(runtime)) == 2
    assert not secret_ids & {e for _, e in await delivery_rows(runtime)}


async def test_no_visitor_id_number_appears_in_any_delivery(
    runtime: Runtime,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    await subscribe(client, tourist, receiver.url("/hooks/app"))
    await subscribe(client, admin, receiver.url("/hooks/site"), site=YONGHE)
    party = [
        {"name": "Li Lei", "id_type": "resident_id", "id_number": ID_NUMBER},
        visitor(),
    ]
    alone = visitor()
    numbers = [party[0]["id_number"], party[1]["id_number"], alone["id_number"]]
    reservation = await held(client, tourist, visitors=party)
    await act(client, tourist, reservation["id"], "confirm")
    other = await held(client, tourist, "yonghe-temple.2026-12-01.1100", [alone])
    await act(client, tourist, other["id"], "cancel")
    closed = await client.post(f"/v1/sites/{YONGHE}/close", json={"reason": "storm"}, headers=admin)
    assert closed.status_code == 200, closed.text
    await pump(runtime)

    received = receiver.all()
    assert len(received) >= 10
    masked = [n[:4] + "*" * 10 + n[-4:] for n in numbers]
    seen: set[str] = set()
    for request in received:
        text = request.body.decode()
        for number in numbers:
            assert number not in text
            assert number[4:-4] not in text  # not even the middle, where the birth date is
        seen |= {m for m in masked if m in text}
        for who in request.json["data"].get("reservation", {}).get("visitors", []):
            assert set(who) == {"name", "id_type", "id_number_masked"}
    assert seen == set(masked)


# signatures --------------------------------------------------------------------------------


def verify(secret: str, request: Received) -> bool:
    """What a receiver does: HMAC-SHA256 of "<timestamp>." + the raw body, with the secret."""
    timestamp = request.headers["tidegate-timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    expected = f"v1={mac.hexdigest()}"
    return hmac.compare_digest(expected, request.headers["tidegate-signature"])


async def test_the_signature_verifies_with_the_secret_and_the_timestamp_header(
    runtime: Runtime,
    client: httpx.AsyncClient,
    clock: ManualClock,
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/signed"))
    other = await subscribe(client, await new_tourist(client), receiver.url("/hooks/other"))
    await held(client, tourist)
    await runtime.webhooks.fan_out()
    clock.advance(timedelta(seconds=42))  # sent later than it happened
    await runtime.webhooks.deliver_due()

    (request,) = receiver.at("/hooks/signed")
    sent_at = int(NOW.timestamp()) + 42
    assert request.headers["tidegate-timestamp"] == str(sent_at)
    assert request.json["at"] == "2026-12-01T02:00:00+00:00"  # when it happened
    assert request.headers["tidegate-signature"].startswith("v1=")
    assert len(request.headers["tidegate-signature"]) == len("v1=") + 64
    assert verify(made["secret"], request)
    assert request.headers["tidegate-signature"] == signature(made["secret"], sent_at, request.body)
    # Another secret, another timestamp, another body: no.
    assert not verify(other["secret"], request)
    assert not verify("whsec_" + made["secret"][6:][::-1], request)
    older = Received(
        request.path, {**request.headers, "tidegate-timestamp": str(sent_at - 1)}, request.body
    )
    assert not verify(made["secret"], older)
    tampered = Received(request.path, request.headers, request.body.replace(b"held", b"HELD"))
    assert not verify(made["secret"], tampered)


# retries -----------------------------------------------------------------------------------


def test_backoff_doubles_from_five_seconds_up_to_an_hour() -> None:
    assert [backoff(n).total_seconds() for n in range(1, 13)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        320,
        640,
        1280,
        2560,
        3600,
        3600,
    ]
    assert MAX_ATTEMPTS == 8
    assert timedelta(seconds=5) < LEASE


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    runtime: Runtime,
    client: httpx.AsyncClient,
    clock: ManualClock,
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/flaky"))
    receiver.fail_next = 2
    await held(client, tourist)

    assert await pump(runtime) == 0
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert entry == {
        "id": entry["id"],
        "event_id": entry["event_id"],
        "topic": "reservation.held",
        "status": "pending",
        "attempts": 1,
        "next_attempt_at": "2026-12-01T02:00:05Z",
        "last_status": 500,
        "last_error": "HTTP 500",
        "delivered_at": None,
    }
    assert at(entry["next_attempt_at"]) == NOW + backoff(1)

    clock.advance(timedelta(seconds=4.9))  # not due yet
    assert await pump(runtime) == 0
    assert len(receiver.at("/hooks/flaky")) == 1

    clock.advance(timedelta(seconds=0.1))  # 5 s after the first attempt
    assert await pump(runtime) == 0
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["attempts"], entry["last_status"]) == ("pending", 2, 500)
    assert at(entry["next_attempt_at"]) == NOW + timedelta(seconds=5) + timedelta(seconds=10)
    assert entry["next_attempt_at"] == "2026-12-01T02:00:15Z"

    clock.advance(timedelta(seconds=9))
    assert await pump(runtime) == 0
    assert len(receiver.at("/hooks/flaky")) == 2
    clock.advance(timedelta(seconds=1))  # 10 s after the second attempt
    assert await pump(runtime) == 1

    (entry,) = await delivery_log(client, tourist, made["id"])
    assert entry == {
        "id": entry["id"],
        "event_id": entry["event_id"],
        "topic": "reservation.held",
        "status": "delivered",
        "attempts": 3,
        "next_attempt_at": "2026-12-01T02:00:15Z",
        "last_status": 204,
        "last_error": None,
        "delivered_at": "2026-12-01T02:00:15Z",
    }
    attempts = receiver.at("/hooks/flaky")
    assert len(attempts) == 3
    assert len({r.headers["tidegate-event-id"] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1  # the same body each time
    assert [r.headers["tidegate-timestamp"] for r in attempts] == [
        str(int(NOW.timestamp()) + s) for s in (0, 5, 15)
    ]
    assert all(verify(made["secret"], r) for r in attempts)
    assert list(receiver.effects.values()) == [1]
    clock.advance(timedelta(hours=2))
    assert await pump(runtime) == 0
    assert len(receiver.at("/hooks/flaky")) == 3


async def test_after_the_last_attempt_a_delivery_fails_until_it_is_replayed(
    runtime: Runtime,
    client: httpx.AsyncClient,
    clock: ManualClock,
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/down"))
    receiver.fail_next = MAX_ATTEMPTS
    await held(client, tourist)
    await runtime.webhooks.fan_out()

    waited = timedelta()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await runtime.webhooks.deliver_due() == 0
        (entry,) = await delivery_log(client, tourist, made["id"])
        assert entry["attempts"] == attempt
        assert entry["last_status"] == 500
        if attempt < MAX_ATTEMPTS:
            assert entry["status"] == "pending"
            assert at(entry["next_attempt_at"]) == NOW + waited + backoff(attempt)
            waited += backoff(attempt)
            clock.advance(backoff(attempt))
    assert len(receiver.at("/hooks/down")) == MAX_ATTEMPTS
    assert waited == timedelta(seconds=5 + 10 + 20 + 40 + 80 + 160 + 320)

    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["attempts"], entry["last_error"]) == (
        "failed",
        MAX_ATTEMPTS,
        "HTTP 500",
    )
    assert entry["delivered_at"] is None
    clock.advance(timedelta(days=1))
    assert await pump(runtime) == 0  # failed: not tried again by itself
    assert len(receiver.at("/hooks/down")) == MAX_ATTEMPTS

    replayed = await client.post(
        f"/v1/webhooks/{made['id']}/deliveries/{entry['id']}/replay", headers=tourist
    )
    assert replayed.status_code == 200, replayed.text
    now = "2026-12-02T02:10:35Z"
    assert replayed.json() == {**entry, "status": "pending", "next_attempt_at": now}
    assert await runtime.webhooks.deliver_due() == 1
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["last_status"], entry["delivered_at"]) == (
        "delivered",
        204,
        now,
    )
    requests = receiver.at("/hooks/down")
    assert len(requests) == MAX_ATTEMPTS + 1
    assert len({r.headers["tidegate-event-id"] for r in requests}) == 1


async def test_a_replay_of_a_delivered_event_has_its_effect_once(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/replay"))
    await held(client, tourist)
    await pump(runtime)
    (entry,) = await delivery_log(client, tourist, made["id"])

    path = f"/v1/webhooks/{made['id']}/deliveries/{entry['id']}/replay"
    assert (await client.post(path, headers=tourist)).status_code == 200
    assert await pump(runtime) == 1

    first, second = receiver.at("/hooks/replay")
    assert first.headers["tidegate-event-id"] == second.headers["tidegate-event-id"]
    assert first.body == second.body
    assert receiver.effects == {first.headers["tidegate-event-id"]: 1}
    missing = await client.post(
        f"/v1/webhooks/{made['id']}/deliveries/{entry['id'] + 1000}/replay", headers=tourist
    )
    assert missing.status_code == 404, missing.text


async def test_a_timeout_after_the_receiver_acted_redelivers_the_same_event_for_one_effect(
    runtime: Runtime,
    client: httpx.AsyncClient,
    clock: ManualClock,
    tourist: dict[str, str],
    receiver: Receiver,
    short_timeout: None,
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/slow"))
    receiver.stall_next = 1
    await held(client, tourist)

    assert await pump(runtime) == 0  # it acted, but the answer came too late
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["attempts"], entry["last_status"]) == ("pending", 1, None)
    assert entry["last_error"].startswith("ReadTimeout"), entry["last_error"]
    assert at(entry["next_attempt_at"]) == NOW + backoff(1)

    clock.advance(backoff(1))
    assert await pump(runtime) == 1
    first, second = receiver.at("/hooks/slow")
    assert first.headers["tidegate-event-id"] == second.headers["tidegate-event-id"]
    assert first.body == second.body
    assert receiver.effects == {first.headers["tidegate-event-id"]: 1}
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["attempts"], entry["last_error"]) == ("delivered", 2, None)


async def test_an_unreachable_receiver_is_retried(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    made = await subscribe(client, tourist, f"http://127.0.0.1:{free_port()}/nobody")
    await held(client, tourist)
    assert await pump(runtime) == 0
    (entry,) = await delivery_log(client, tourist, made["id"])
    assert (entry["status"], entry["attempts"], entry["last_status"]) == ("pending", 1, None)
    assert entry["last_error"].startswith("ConnectError"), entry["last_error"]


# two workers -------------------------------------------------------------------------------


async def test_two_workers_delivering_at_once_send_each_delivery_once(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/race"))
    await act(client, tourist, (await held(client, tourist))["id"], "confirm")
    await held(client, tourist, "yonghe-temple.2026-12-01.1100")
    assert await runtime.webhooks.fan_out() == 3

    sent = await asyncio.gather(
        runtime.webhooks.deliver_due(),
        runtime.webhooks.deliver_due(),
        runtime.webhooks.deliver_due(),
    )

    assert sum(sent) == 3
    received = receiver.at("/hooks/race")
    assert len(received) == 3
    assert len({r.headers["tidegate-event-id"] for r in received}) == 3
    log = await delivery_log(client, tourist, made["id"])
    assert [(d["status"], d["attempts"]) for d in log] == [("delivered", 1)] * 3


async def test_two_workers_fanning_out_at_once_make_each_delivery_once(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    """The first fan-out ever: both workers start from the beginning."""
    made = await subscribe(client, tourist, receiver.url("/hooks/fan"))
    await act(client, tourist, (await held(client, tourist))["id"], "confirm")

    # (One of the two may fail: see the next test. What it made is made once all the same.)
    await asyncio.gather(
        runtime.webhooks.fan_out(), runtime.webhooks.fan_out(), return_exceptions=True
    )

    rows = await delivery_rows(runtime)
    assert len(rows) == len(set(rows)) == 2
    assert await runtime.webhooks.fan_out() == 0
    assert await runtime.webhooks.deliver_due() == 2
    assert [r.topic for r in receiver.at("/hooks/fan")] == [
        "reservation.held",
        "reservation.confirmed",
    ]
    assert len(await delivery_log(client, tourist, made["id"])) == 2


async def test_the_first_two_fan_outs_at_once_both_succeed(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    await subscribe(client, tourist, receiver.url("/hooks/fan"))
    await act(client, tourist, (await held(client, tourist))["id"], "confirm")

    outcomes = await asyncio.gather(
        runtime.webhooks.fan_out(), runtime.webhooks.fan_out(), return_exceptions=True
    )

    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    assert sorted(o for o in outcomes if isinstance(o, int)) == [0, 2]


async def test_two_workers_fanning_out_new_events_at_once_make_each_delivery_once(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    """Later fan-outs: both workers read the same new events."""
    await subscribe(client, tourist, receiver.url("/hooks/fan"))
    await subscribe(client, tourist, receiver.url("/hooks/fan2"))
    reservation = await held(client, tourist)
    assert await runtime.webhooks.fan_out() == 2
    await act(client, tourist, reservation["id"], "confirm")
    await held(client, tourist, "yonghe-temple.2026-12-01.1100")

    made_counts = await asyncio.gather(*(runtime.webhooks.fan_out() for _ in range(3)))

    assert sum(made_counts) == 4
    rows = await delivery_rows(runtime)
    assert len(rows) == len(set(rows)) == 6
    assert await runtime.webhooks.deliver_due() == 6
    assert await runtime.webhooks.fan_out() == 0


# unsubscribing and ownership ---------------------------------------------------------------


async def test_unsubscribing_stops_future_deliveries(
    runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str], receiver: Receiver
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/bye"))
    kept = await subscribe(client, tourist, receiver.url("/hooks/kept"))
    reservation = await held(client, tourist)
    await pump(runtime)
    assert len(receiver.at("/hooks/bye")) == 1

    for _ in range(2):
        gone = await client.delete(f"/v1/webhooks/{made['id']}", headers=tourist)
        assert gone.status_code == 204, gone.text
        assert gone.content == b""
    listed = (await client.get("/v1/webhooks", headers=tourist)).json()
    assert [s["id"] for s in listed] == [kept["id"]]

    await act(client, tourist, reservation["id"], "confirm")
    await pump(runtime)
    assert [r.topic for r in receiver.at("/hooks/bye")] == ["reservation.held"]
    assert [r.topic for r in receiver.at("/hooks/kept")] == [
        "reservation.held",
        "reservation.confirmed",
    ]
    stopped = await client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=tourist)
    assert stopped.status_code == 404, stopped.text


async def test_unsubscribing_stops_the_pending_deliveries_too(
    runtime: Runtime,
    client: httpx.AsyncClient,
    clock: ManualClock,
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    """DELETE /v1/webhooks/{id}: "Stop a subscription (its pending deliveries are not sent)"."""
    made = await subscribe(client, tourist, receiver.url("/hooks/stopped"))
    receiver.fail_next = 1
    await held(client, tourist)
    await pump(runtime)  # attempted once: 500, a retry in 5 s
    later = await held(client, tourist, "yonghe-temple.2026-12-01.1100")
    await act(client, tourist, later["id"], "confirm")
    await runtime.webhooks.fan_out()  # two more, pending, not yet sent
    assert len(receiver.at("/hooks/stopped")) == 1

    gone = await client.delete(f"/v1/webhooks/{made['id']}", headers=tourist)
    assert gone.status_code == 204, gone.text
    clock.advance(timedelta(minutes=1))
    await pump(runtime)

    assert len(receiver.at("/hooks/stopped")) == 1


async def test_someone_elses_subscription_is_404(
    runtime: Runtime,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    receiver: Receiver,
) -> None:
    made = await subscribe(client, tourist, receiver.url("/hooks/private"))
    site_sub = await subscribe(client, admin, receiver.url("/hooks/palace"), site=PALACE)
    await held(client, tourist)
    await pump(runtime)
    (entry,) = await delivery_log(client, tourist, made["id"])
    stranger = await new_tourist(client)

    def expect_404(response: httpx.Response) -> None:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not-found"

    sub = f"/v1/webhooks/{made['id']}"
    expect_404(await client.get(f"{sub}/deliveries", headers=stranger))
    expect_404(await client.post(f"{sub}/deliveries/{entry['id']}/replay", headers=stranger))
    expect_404(await client.delete(sub, headers=stranger))
    # Nor through a site's routes, nor another site's subscription through this one's.
    staff_sub = f"/v1/sites/{YONGHE}/webhooks/{made['id']}"
    expect_404(await client.get(f"{staff_sub}/deliveries", headers=admin))
    expect_404(await client.post(f"{staff_sub}/deliveries/{entry['id']}/replay", headers=admin))
    expect_404(await client.delete(staff_sub, headers=admin))
    cross = f"/v1/sites/{YONGHE}/webhooks/{site_sub['id']}"
    expect_404(await client.get(f"{cross}/deliveries", headers=admin))
    expect_404(await client.delete(cross, headers=admin))
    # A tourist may not reach a site's subscription through their own routes either.
    expect_404(await client.delete(f"/v1/webhooks/{site_sub['id']}", headers=tourist))
    expect_404(await client.get("/v1/webhooks/nope/deliveries", headers=tourist))

    # All still there, untouched.
    (after,) = await delivery_log(client, tourist, made["id"])
    assert after == entry
    assert [s["id"] for s in (await client.get("/v1/webhooks", headers=tourist)).json()] == [
        made["id"]
    ]
    palace = (await client.get(f"/v1/sites/{PALACE}/webhooks", headers=admin)).json()
    assert [s["id"] for s in palace] == [site_sub["id"]]
    assert (await client.get("/v1/webhooks", headers=stranger)).json() == []


async def test_webhook_routes_need_a_token(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/v1/webhooks"),
        await client.post("/v1/webhooks", json={"url": "https://example.com/x"}),
        await client.get(f"/v1/sites/{YONGHE}/webhooks"),
    ):
        assert response.status_code == 401, response.text
