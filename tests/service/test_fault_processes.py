"""Faults with real processes (issue 8 §2): `tidegate serve` over real HTTP while its Redis is
killed with SIGKILL and comes back empty, while the server itself is killed with SIGKILL and
restarted, and while the database fails inside a booking's transaction. Each test counts:
exactly the places sold that SQL proves, none lost, none oversold, and `tidegate audit` finds
Redis and SQL agreeing at the end (ARCHITECTURE §2: Redis decides, SQL proves)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from capacity.counters import Counters
from capacity.keys import RequestKeys, SiteDay
from capacity.store import connect
from tests import databases
from tests.conftest import YONGHE_10, visitor
from tests.service.processes import TIDEGATE, cli
from tests.service.redis_process import RedisProcess
from tests.service.serving import register_tourist, serving

pytestmark = pytest.mark.slow

SLOT = YONGHE_10
LATER_SLOT = "yonghe-temple.2026-12-01.1100"
BEIJING = timezone(timedelta(hours=8))
CLOCK_START = datetime(2026, 12, 1, 10, 0, tzinfo=BEIJING)  # the `env` fixture's clock
PROBLEM = "application/problem+json"
FAST_LOOPS = {
    # The reconciler returns units leaked by a crash two seconds after it first sees them.
    "TIDEGATE_RECONCILE_SECONDS": "1",
    "TIDEGATE_RECONCILE_GRACE_SECONDS": "2",
    "TIDEGATE_SWEEP_SECONDS": "0.5",
}


# the stack: a Redis of the test's own, the database of `env`, and the audit -----------------


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


def database_url(env: dict[str, str]) -> str:
    sqlite = (Path(env["TIDEGATE_DATA_DIR"]) / "tidegate.sqlite3").resolve()
    return env.get("TIDEGATE_DATABASE_URL") or f"sqlite+aiosqlite:///{sqlite}"


def prepared(
    env: dict[str, str], redis: RedisProcess, **settings: str
) -> tuple[dict[str, str], str]:
    """The environment of the test's processes (its Redis, no rate limits, `settings`), the
    database migrated and seeded; returns it with an admin token."""
    env = env | {"TIDEGATE_REDIS_URL": redis.url, "TIDEGATE_RATE_LIMITS": "off"} | settings
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    return env, cli(env, "token", "create", "--role", "admin")


def audit(env: dict[str, str], *, within: float = 30.0) -> dict[str, Any]:
    """`tidegate audit --json` on the test's database and Redis, until it exits 0 (the
    reconciler may still be returning units a crash leaked) or `within` seconds; asserts
    that nothing is oversold, missing or leaked, and returns its report."""
    command = [
        *TIDEGATE,
        "audit",
        "--database-url",
        database_url(env),
        "--redis-url",
        env["TIDEGATE_REDIS_URL"],
        "--json",
    ]
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done.returncode == 0, f"audit exited {done.returncode}: {done.stdout}{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["clean"] is True, report
    assert report["oversold"] == report["missing"] == report["leaked"] == 0, report
    return report


async def sql(env: dict[str, str], statement: str, **params: object) -> list[tuple[Any, ...]]:
    """Read the test's database as another client would (never through the server)."""
    engine = create_async_engine(database_url(env), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text(statement), params)
            return [tuple(row) for row in result.all()]
    finally:
        await engine.dispose()


async def reservations(env: dict[str, str]) -> dict[str, tuple[str, str | None, str]]:
    """Every reservation of the sale's slots: id -> (status, idempotency key, owner)."""
    rows = await sql(
        env,
        "SELECT id, status, idempotency_key, owner_id FROM reservation "
        "WHERE slot_id IN (:slot, :later)",
        slot=SLOT,
        later=LATER_SLOT,
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def active_units(env: dict[str, str], slot: str = SLOT) -> dict[str, list[tuple[int, int]]]:
    """The slot's active visitors in SQL: reservation id -> its (slot unit, day unit)s."""
    rows = await sql(
        env,
        "SELECT reservation_id, slot_unit, day_unit FROM visitor WHERE slot_id = :slot AND active",
        slot=slot,
    )
    units: dict[str, list[tuple[int, int]]] = {}
    for reservation_id, slot_unit, day_unit in rows:
        units.setdefault(reservation_id, []).append((slot_unit, day_unit))
    return units


def assert_proved(units: dict[str, list[tuple[int, int]]], capacity: int) -> None:
    """No unit is held twice and none lies beyond the slot's capacity: nothing oversold."""
    slot_units = [s for held in units.values() for s, _ in held]
    day_units = [d for held in units.values() for _, d in held]
    assert len(set(slot_units)) == len(slot_units) <= capacity
    assert all(1 <= unit <= capacity for unit in slot_units)
    assert len(set(day_units)) == len(day_units)


def remaining(url: str, slot: str = SLOT) -> int:
    """The places left as the server counts them (from Redis once its counters are built)."""
    response = httpx.get(f"{url}/v1/slots/{slot}", timeout=30)
    assert response.status_code == 200, response.text
    left: int = response.json()["remaining"]
    return left


def open_sale(url: str, admin: str, *, capacity: int, tourists: int) -> list[dict[str, str]]:
    """Give the slot `capacity` places, lift the per-account limits (a few accounts stand for
    many visitors) and register `tourists`; returns their Authorization headers."""
    staff = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        lifted = client.patch(
            "/v1/sites/yonghe-temple",
            json={"account_day_limit": 100, "account_hold_limit": 100},
            headers=staff,
        )
        assert lifted.status_code == 200, lifted.text
        sized = client.patch(f"/v1/slots/{SLOT}", json={"capacity": capacity}, headers=staff)
        assert sized.status_code == 200, sized.text
        number = time.monotonic_ns()
        return [
            register_tourist(client, admin, f"fault{number}-{n}@example.com")
            for n in range(tourists)
        ]


def restarted_clock(started: float, env: dict[str, str]) -> dict[str, str]:
    """The service clock of a server started again: where the first one's clock is now (it
    started at CLOCK_START when the first server was launched, `started`, and runs at the
    environment's speed), so time goes on across the restart instead of starting over."""
    speed = float(env.get("TIDEGATE_CLOCK_SPEED", "1"))
    now = CLOCK_START + timedelta(seconds=(time.monotonic() - started) * speed)
    return {"TIDEGATE_CLOCK_START": now.isoformat()}


# a request's answer, as a client saw it -------------------------------------------------------


@dataclass
class Answer:
    status: int
    code: str | None
    retry_after: str | None
    content_type: str
    reservation: str | None
    replayed: bool
    sent: float
    at: float

    @classmethod
    def of(cls, response: httpx.Response, sent: float) -> Answer:
        problem = response.headers.get("content-type") == "application/problem+json"
        body = response.json()
        return cls(
            status=response.status_code,
            code=body.get("code") if problem else None,
            retry_after=response.headers.get("Retry-After"),
            content_type=response.headers.get("content-type", ""),
            reservation=None if problem else body.get("id"),
            replayed=response.headers.get("Idempotent-Replayed") == "true",
            sent=sent,
            at=time.monotonic(),
        )


async def post(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: object = None
) -> Answer:
    sent = time.monotonic()
    response = await client.post(path, json=body, headers=headers)
    return Answer.of(response, sent)


async def two_holds(client: httpx.AsyncClient, tourist: dict[str, str]) -> tuple[str, str]:
    """Two holds of one visitor each: one to confirm and one to cancel."""
    made = [
        await post(client, "/v1/reservations", tourist, {"slot_id": SLOT, "visitors": [v]})
        for v in (visitor(), visitor())
    ]
    assert [a.status for a in made] == [201, 201]
    first, second = (a.reservation or "" for a in made)
    return first, second


async def until_not_in_flight(
    request: Callable[[], Coroutine[Any, Any, Answer]], *, within: float = 45.0
) -> Answer:
    """A retry after a crash: the first attempt's in-flight lock (30 s in Redis) answers 409
    `request-in-flight` with Retry-After until it lapses; retry as told, then the answer."""
    deadline = time.monotonic() + within
    while True:
        answer = await request()
        if answer.code != "request-in-flight":
            return answer
        assert answer.retry_after is not None
        assert time.monotonic() < deadline, "the crashed request's lock never lapsed"
        await asyncio.sleep(min(float(answer.retry_after), 1.0))


# 1. Redis killed in the middle of a flash sale, restarted empty -----------------------------

SALE_PLACES = 40
SALE_HOLDS = 300
KILL_AFTER_SOLD = 10


@dataclass
class Sale:
    answers: list[Answer] = field(default_factory=list)
    finals: list[Answer] = field(default_factory=list)
    sold: int = 0
    some_sold: asyncio.Event = field(default_factory=asyncio.Event)


async def buy(
    client: httpx.AsyncClient, sale: Sale, headers: dict[str, str], key: str, deadline: float
) -> None:
    """One tourist's hold, retried with the same Idempotency-Key while told to (503 +
    Retry-After), as an app does; the final answer is a 201 or a 409."""
    body = {"slot_id": SLOT, "visitors": [visitor()]}
    while True:
        answer = await post(client, "/v1/reservations", headers | {"Idempotency-Key": key}, body)
        sale.answers.append(answer)
        if answer.status != 503:
            break
        assert time.monotonic() < deadline, "still refused at the end of the sale"
        await asyncio.sleep(min(float(answer.retry_after or 1), 1.0))
    sale.finals.append(answer)
    if answer.status == 201:
        sale.sold += 1
        if sale.sold >= KILL_AFTER_SOLD:
            sale.some_sold.set()


@dataclass
class Outage:
    sold_before: int = 0
    down_at: float = 0.0
    up_at: float = 0.0


async def outage(sale: Sale, redis: RedisProcess, done: Outage) -> None:
    """Kill Redis once some places are sold; start it again, empty, once the sale has met
    the outage (refusals answered while it was down)."""
    await sale.some_sold.wait()
    done.sold_before = sale.sold
    redis.kill()
    done.down_at = time.monotonic()
    deadline = done.down_at + 15
    while sum(1 for a in sale.answers if a.sent > done.down_at and a.status == 503) < 20:
        assert time.monotonic() < deadline, "no request met the outage"
        await asyncio.sleep(0.05)
    redis.start()
    assert redis.keys() == 0
    done.up_at = time.monotonic()


async def test_redis_killed_mid_sale_answers_503_then_sells_exactly_the_places(
    env: dict[str, str], redis_server: RedisProcess, tmp_path: Path
) -> None:
    env, admin = prepared(env, redis_server, **FAST_LOOPS)
    with serving(env, tmp_path / "serve.log") as served:
        tourists = open_sale(served.url, admin, capacity=SALE_PLACES, tourists=6)
        sale, down = Sale(), Outage()
        gate = asyncio.Semaphore(16)
        deadline = time.monotonic() + 40

        async def one(number: int) -> None:
            async with gate:
                await buy(client, sale, tourists[number % 6], f"sale-{number}", deadline)

        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
            killer = asyncio.create_task(outage(sale, redis_server, down))
            await asyncio.gather(*(one(n) for n in range(SALE_HOLDS)))
            await killer
        left = remaining(served.url)
        proved = await active_units(env)
        held = await reservations(env)
        report = audit(env)

    # The outage met the sale in its middle.
    assert KILL_AFTER_SOLD <= down.sold_before < SALE_PLACES
    # Never a 500: places sold, sold out, or "retry" while the places could not be counted.
    assert {a.status for a in sale.answers} <= {201, 409, 503}, Counter(
        (a.status, a.code) for a in sale.answers
    )
    refusals = [a for a in sale.answers if a.status == 503]
    for refusal in refusals:
        assert refusal.content_type == "application/problem+json"
        assert refusal.code == "capacity-unavailable"
        assert refusal.retry_after == "1"
    # Every hold sent while Redis was down was told to retry.
    while_down = [a for a in sale.answers if down.down_at < a.sent and a.at < down.up_at]
    assert while_down
    assert {a.status for a in while_down} == {503}
    # Once rebuilt from SQL the sale went on, to exactly its places.
    assert any(a.status == 201 and a.sent > down.up_at for a in sale.answers)
    finals = Counter((a.status, a.code) for a in sale.finals)
    assert finals == {(201, None): SALE_PLACES, (409, "sold-out"): SALE_HOLDS - SALE_PLACES}
    # Every 201 a tourist saw is in SQL with its unit, and nothing else is: 0 lost, 0 oversold.
    answered = {a.reservation for a in sale.finals if a.status == 201}
    assert set(proved) == answered
    assert {rid for rid, (status, _, _) in held.items() if status == "held"} == answered
    assert all(len(units) == 1 for units in proved.values())
    assert_proved(proved, SALE_PLACES)
    assert left == 0
    assert report["oversold"] == 0
    print(
        f"\nredis outage: sold {down.sold_before} before the kill, "
        f"{len(while_down)} answers 503 while down, {len(refusals)} answers 503 in all, "
        f"{sum(1 for a in sale.answers if a.replayed)} replays, sold {len(answered)}"
    )


# 2. the API process killed in the middle of the rush, restarted -----------------------------

RUSH_PLACES = 40
RUSH_ORDERS = 160
KILL_AFTER_CONFIRMED = 10
# Orphaned holds expire within the test: after 10 s of service time, 5 s of the test's.
HOLD_TTL = {"TIDEGATE_HOLD_TTL_SECONDS": "10", "TIDEGATE_CLOCK_SPEED": "2"}


def confirms(number: int) -> bool:
    """Three tourists in four confirm their hold; the fourth walks away from it."""
    return number % 4 != 3


@dataclass
class Order:
    number: int
    headers: dict[str, str]
    body: dict[str, object] = field(default_factory=lambda: {"slot_id": SLOT, "visitors": []})
    hold: Answer | None = None
    confirm: Answer | None = None
    hold_cut: bool = False  # sent, and the server died before answering
    confirm_cut: bool = False

    @property
    def hold_key(self) -> str:
        return f"rush-hold-{self.number}"

    @property
    def confirm_key(self) -> str:
        return f"rush-confirm-{self.number}"

    async def send_hold(self, client: httpx.AsyncClient) -> Answer:
        return await post(
            client, "/v1/reservations", self.headers | {"Idempotency-Key": self.hold_key}, self.body
        )

    async def send_confirm(self, client: httpx.AsyncClient, reservation: str) -> Answer:
        headers = self.headers | {"Idempotency-Key": self.confirm_key}
        return await post(client, f"/v1/reservations/{reservation}/confirm", headers)


@dataclass
class Rush:
    orders: list[Order]
    confirmed: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    killed: bool = False


async def play(client: httpx.AsyncClient, rush: Rush, order: Order) -> None:
    """Hold, then confirm (three in four), until the server dies under the order."""
    if rush.killed:
        return
    try:
        order.hold = await order.send_hold(client)
    except httpx.TransportError:
        order.hold_cut = True
        return
    if order.hold.status != 201 or not confirms(order.number) or rush.killed:
        return
    assert order.hold.reservation is not None
    try:
        order.confirm = await order.send_confirm(client, order.hold.reservation)
    except httpx.TransportError:
        order.confirm_cut = True
        return
    if order.confirm.status == 200:
        rush.confirmed += 1
        if rush.confirmed >= KILL_AFTER_CONFIRMED:
            rush.enough.set()


async def retry(client: httpx.AsyncClient, order: Order) -> tuple[Answer | None, Answer | None]:
    """After the restart: each request the crash cut off, again with its key (then the
    confirm the order had not sent yet). Returns the retries' answers (hold, confirm)."""
    hold_retry = confirm_retry = None
    if order.hold_cut:
        hold_retry = await until_not_in_flight(lambda: order.send_hold(client))
        order.hold = hold_retry
        if hold_retry.status == 201 and confirms(order.number):
            assert hold_retry.reservation is not None
            reservation = hold_retry.reservation
            order.confirm = await order.send_confirm(client, reservation)
    elif order.confirm_cut:
        assert order.hold is not None
        assert order.hold.reservation is not None
        reservation = order.hold.reservation
        confirm_retry = await until_not_in_flight(lambda: order.send_confirm(client, reservation))
        order.confirm = confirm_retry
    return hold_retry, confirm_retry


async def test_api_killed_mid_rush_loses_no_booking_and_orphans_come_back(
    env: dict[str, str], redis_server: RedisProcess, tmp_path: Path
) -> None:
    env, admin = prepared(env, redis_server, **FAST_LOOPS, **HOLD_TTL)
    started = time.monotonic()
    with serving(env, tmp_path / "first.log") as served:
        tourists = open_sale(served.url, admin, capacity=RUSH_PLACES, tourists=4)
        orders = [Order(n, tourists[n % 4]) for n in range(RUSH_ORDERS)]
        for order in orders:
            order.body["visitors"] = [visitor()]
        rush, gate = Rush(orders), asyncio.Semaphore(16)

        async def one(order: Order) -> None:
            async with gate:
                await play(client, rush, order)

        async def kill() -> None:
            await rush.enough.wait()
            rush.killed = True
            served.process.kill()  # SIGKILL: no shutdown, no unwinding
            served.process.wait(timeout=10)

        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
            killer = asyncio.create_task(kill())
            await asyncio.gather(*(one(order) for order in orders))
            await killer

    # What the crash left in SQL: the requests it recorded, before any retry.
    recorded = {
        row[0]: json.loads(row[2])["id"]
        for row in await sql(
            env, "SELECT key, status_code, body FROM idempotency_record WHERE key LIKE 'rush-%'"
        )
    }
    with serving(env | restarted_clock(started, env), tmp_path / "second.log") as served:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
            retried = await asyncio.gather(*(retry(client, order) for order in orders))
            # The rush goes on: the tourists who had not sent anything yet book now.
            rush.killed = False
            unsent = [o for o in orders if o.hold is None and not o.hold_cut]
            await asyncio.gather(*(one(order) for order in unsent))
        # Orphaned holds (walked away from, or whose confirm never came) expire.
        deadline = time.monotonic() + 30
        while any(status == "held" for status, _, _ in (await reservations(env)).values()):
            assert time.monotonic() < deadline, "orphaned holds did not expire"
            await asyncio.sleep(0.2)
        report = audit(env)
        left = remaining(served.url)
        final = await reservations(env)
        proved = await active_units(env)

    answers = [a for o in orders for a in (o.hold, o.confirm) if a is not None]
    assert {(a.status, a.code) for a in answers} <= {
        (201, None),
        (200, None),
        (409, "sold-out"),
        (410, "hold-expired"),
    }, Counter((a.status, a.code) for a in answers)
    cut = [o for o in orders if o.hold_cut or o.confirm_cut]
    assert cut, "the crash cut no request off"
    # A retry replays what the crash left recorded, and processes the rest exactly once.
    replays = fresh = 0
    for order, (hold_retry, confirm_retry) in zip(orders, retried, strict=True):
        for key, again in ((order.hold_key, hold_retry), (order.confirm_key, confirm_retry)):
            if again is None:
                continue
            if key in recorded:
                assert (again.status, again.replayed) in [(201, True), (200, True)], (key, again)
                assert again.reservation == recorded[key]
                replays += 1
            else:
                assert not again.replayed, (key, again)
                fresh += 1
    by_key = Counter(key for _, key, _ in final.values() if key is not None)
    assert max(by_key.values()) == 1  # no hold made twice
    for order in orders:
        made = [rid for rid, (_, key, _) in final.items() if key == order.hold_key]
        won = order.hold is not None and order.hold.status == 201
        assert made == ([order.hold.reservation] if won and order.hold else []), order
    # No confirmed booking lost, none confirmed unanswered; every other hold came back.
    answered_confirmed = {
        o.hold.reservation
        for o in orders
        if o.hold is not None and o.confirm is not None and o.confirm.status == 200
    }
    assert {rid for rid, (status, _, _) in final.items() if status == "confirmed"} == (
        answered_confirmed
    )
    assert {status for status, _, _ in final.values()} <= {"confirmed", "expired"}
    assert set(proved) == answered_confirmed
    assert_proved(proved, RUSH_PLACES)
    # SQL and Redis count the same.
    assert left == RUSH_PLACES - len(answered_confirmed)
    assert report["orphaned_holds"] == 0
    print(
        f"\napi crash: {len(cut)} requests cut off, {len(recorded)} recorded, "
        f"{replays} replayed, {fresh} processed on retry, {len(unsent)} sent after the restart, "
        f"{len(answered_confirmed)} confirmed, "
        f"{sum(1 for s, _, _ in final.values() if s == 'expired')} expired, {left} left"
    )


# 2b. the crash between the commit and the answer --------------------------------------------


@contextlib.asynccontextmanager
async def writes_held(env: dict[str, str]) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The database's writes held by another client (SQLite's write lock; in PostgreSQL, a
    lock on the reservation and visitor tables); yields the function that lets them go."""
    url = env.get("TIDEGATE_DATABASE_URL")
    if url:
        connection = await asyncpg.connect(databases.asyncpg_url(url))
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE reservation, visitor IN SHARE ROW EXCLUSIVE MODE")
        released = False

        async def release_pg() -> None:
            nonlocal released
            if not released:
                released = True
                await transaction.rollback()

        try:
            yield release_pg
        finally:
            await release_pg()
            await connection.close()
        return
    sqlite = sqlite3.connect(Path(env["TIDEGATE_DATA_DIR"]) / "tidegate.sqlite3", timeout=30)
    sqlite.execute("BEGIN IMMEDIATE")

    async def release_sqlite() -> None:
        if sqlite.in_transaction:
            sqlite.rollback()

    try:
        yield release_sqlite
    finally:
        await release_sqlite()
        sqlite.close()


async def in_flight(redis: RedisProcess, owner: str, keys: list[str]) -> bool:
    with redis.client() as client:
        return all(client.exists(RequestKeys.of(owner, key).in_flight) for key in keys)


async def slot_used(redis: RedisProcess, used: int) -> bool:
    """Whether Redis counts `used` places taken in the slot."""
    client = connect(redis.url)
    try:
        load = await Counters(client).load(SiteDay("yonghe-temple", CLOCK_START.date()))
    finally:
        await client.aclose()
    return load is not None and load.slots[SLOT.rsplit(".", 1)[1]].used == used


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float = 8) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_retries_after_a_crash_between_commit_and_answer_replay_the_commit(
    env: dict[str, str], redis_server: RedisProcess, tmp_path: Path
) -> None:
    """Deterministic: the hold, confirm and cancel are committed in SQL and the server is
    killed before it answers (Redis's writes are paused right after the commits, so none of
    them gets to record its answer in Redis). A retry with the same key must replay each."""
    # No background step may take the database or Redis while the scene is set.
    env, admin = prepared(
        env, redis_server, TIDEGATE_SWEEP_SECONDS="60", TIDEGATE_RECONCILE_SECONDS="60"
    )
    started = time.monotonic()
    with serving(env, tmp_path / "first.log") as served:
        (tourist,) = open_sale(served.url, admin, capacity=10, tourists=1)
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            to_confirm, to_cancel = await two_holds(client, tourist)
            owner = (await reservations(env))[to_confirm][2]
            new_hold = {"slot_id": SLOT, "visitors": [visitor()]}
            keys = {"hold": "crash-hold", "confirm": "crash-confirm", "cancel": "crash-cancel"}

            def hold() -> Coroutine[Any, Any, Answer]:
                headers = tourist | {"Idempotency-Key": keys["hold"]}
                return post(client, "/v1/reservations", headers, new_hold)

            def confirm() -> Coroutine[Any, Any, Answer]:
                headers = tourist | {"Idempotency-Key": keys["confirm"]}
                return post(client, f"/v1/reservations/{to_confirm}/confirm", headers)

            def cancel() -> Coroutine[Any, Any, Answer]:
                headers = tourist | {"Idempotency-Key": keys["cancel"]}
                return post(client, f"/v1/reservations/{to_cancel}/cancel", headers)

            async with writes_held(env) as let_go:
                # The hold takes its unit in Redis, then waits for SQL; the confirm and the
                # cancel begin (their keys locked in Redis), then wait for SQL too.
                first = [asyncio.create_task(hold())]
                await wait_for(lambda: slot_used(redis_server, 3), "the hold took no unit")
                first += [asyncio.create_task(confirm()), asyncio.create_task(cancel())]
                await wait_for(
                    lambda: in_flight(redis_server, owner, list(keys.values())), "all begun"
                )
                redis_server.pause_writes(60)
                await let_go()

                async def committed() -> bool:
                    now = await reservations(env)
                    return (
                        now[to_confirm][0] == "confirmed"
                        and now[to_cancel][0] == "cancelled"
                        and any(key == keys["hold"] for _, key, _ in now.values())
                    )

                try:
                    await wait_for(committed, "the three changes were not committed", 20)
                    served.process.kill()  # before any of them is answered
                    served.process.wait(timeout=10)
                finally:
                    redis_server.unpause()
            cut = await asyncio.gather(*first, return_exceptions=True)
        assert all(isinstance(outcome, httpx.TransportError) for outcome in cut), cut

    recorded = {
        row[0]: row[1]
        for row in await sql(env, "SELECT key, status_code FROM idempotency_record")
        if row[0].startswith("crash-")
    }
    assert recorded == {"crash-hold": 201, "crash-confirm": 200, "crash-cancel": 200}
    again = env | restarted_clock(started, env) | FAST_LOOPS
    with serving(again, tmp_path / "second.log") as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            retried = await asyncio.gather(
                *(until_not_in_flight(request) for request in (hold, confirm, cancel))
            )
        final = await reservations(env)
        report = audit(env)
        left = remaining(served.url)

    new_id = next(rid for rid, (_, key, _) in final.items() if key == keys["hold"])
    assert final[to_confirm][0] == "confirmed"
    assert final[to_cancel][0] == "cancelled"
    assert left == 10 - 2  # the confirmed one and the new hold; the cancelled one came back
    assert report["leaked"] == 0
    outcomes = [(a.status, a.code, a.replayed, a.reservation) for a in retried]
    assert outcomes == [
        (201, None, True, new_id),
        (200, None, True, to_confirm),
        (200, None, True, to_cancel),
    ], outcomes


# 3. the database failing inside a booking's transaction -------------------------------------


@contextlib.asynccontextmanager
async def failing_database(env: dict[str, str]) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """While held, the server's next write fails at the database: on SQLite it waits for a
    write lock another client keeps past the server's busy timeout (10 s); on PostgreSQL it
    waits on a table lock and its connection is then ended by `pg_terminate_backend`. Yields
    the function to call while a write is under way (it returns once that write was cut)."""
    async with writes_held(env) as let_go:
        url = env.get("TIDEGATE_DATABASE_URL")
        if not url:

            async def busy() -> None:
                return None  # SQLite gives up by itself after its busy timeout

            yield busy
            await let_go()
            return
        killer = await asyncpg.connect(databases.asyncpg_url(url))

        async def terminate() -> None:
            waiting: list[int] = []
            deadline = time.monotonic() + 10
            while not waiting:
                assert time.monotonic() < deadline, "no write waited for the lock"
                await asyncio.sleep(0.05)
                waiting = [
                    row["pid"]
                    for row in await killer.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                ]
            for pid in waiting:
                await killer.execute("SELECT pg_terminate_backend($1)", pid)

        try:
            yield terminate
        finally:
            await killer.close()
            await let_go()


# A connection of its own for a request the database fails: a server that meets an
# unexpected error closes the connection, which a kept-alive one would find only on reuse.
ONE_SHOT = {"Connection": "close"}


async def failed_write(
    env: dict[str, str], request: Callable[[], Coroutine[Any, Any, Answer]]
) -> Answer:
    async with failing_database(env) as cut:
        sent = asyncio.create_task(request())
        await cut()
        return await sent


@dataclass
class Counted:
    left: int
    later_left: int
    proved: int
    statuses: dict[str, str]

    @classmethod
    async def now(cls, env: dict[str, str], url: str) -> Counted:
        return cls(
            left=remaining(url),
            later_left=remaining(url, LATER_SLOT),
            proved=sum(len(u) for u in (await active_units(env)).values()),
            statuses={rid: status for rid, (status, _, _) in (await reservations(env)).items()},
        )


async def test_database_failing_a_hold_or_a_reschedule_gives_the_units_back(
    env: dict[str, str], redis_server: RedisProcess, tmp_path: Path
) -> None:
    """The paths that take units in Redis before SQL proves them: a hold, and a reschedule
    to another slot of the day. SQL fails; the units must be given back."""
    env, admin = prepared(env, redis_server, **FAST_LOOPS)
    with serving(env, tmp_path / "serve.log") as served:
        (tourist,) = open_sale(served.url, admin, capacity=10, tourists=1)
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            body = {"slot_id": SLOT, "visitors": [visitor()]}
            kept = await post(client, "/v1/reservations", tourist, body)
            assert kept.status == 201
            assert kept.reservation is not None
            before = await Counted.now(env, served.url)

            def hold() -> Coroutine[Any, Any, Answer]:
                body = {"slot_id": SLOT, "visitors": [visitor()]}
                headers = tourist | {"Idempotency-Key": "failing-hold"} | ONE_SHOT
                return post(client, "/v1/reservations", headers, body)

            def reschedule() -> Coroutine[Any, Any, Answer]:
                path = f"/v1/reservations/{kept.reservation}/reschedule"
                headers = tourist | {"Idempotency-Key": "failing-move"} | ONE_SHOT
                return post(client, path, headers, {"slot_id": LATER_SLOT})

            failed_hold = await failed_write(env, hold)
            after_hold = await Counted.now(env, served.url)
            failed_move = await failed_write(env, reschedule)
            after_move = await Counted.now(env, served.url)
            report = audit(env)
            # The database is back: the same requests go through.
            assert (await hold()).status == 201
            assert (await reschedule()).status == 200

    # Nothing of the failed requests stayed, in SQL or in Redis.
    assert after_hold == before
    assert after_move == before
    assert report["missing"] == report["leaked"] == 0
    # And the tourist was told to retry, not that the service broke (ARCHITECTURE §6).
    told = [(a.status, a.code, a.content_type, a.retry_after) for a in (failed_hold, failed_move)]
    assert told == [(503, told[0][1], PROBLEM, "1"), (503, told[1][1], PROBLEM, "1")], told


async def test_database_failing_a_confirm_or_a_cancel_changes_nothing(
    env: dict[str, str], redis_server: RedisProcess, tmp_path: Path
) -> None:
    """The paths that commit in SQL first, then give units back: if SQL fails, nothing is
    given back and the reservation is as it was."""
    env, admin = prepared(env, redis_server, **FAST_LOOPS)
    with serving(env, tmp_path / "serve.log") as served:
        (tourist,) = open_sale(served.url, admin, capacity=10, tourists=1)
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            to_confirm, to_cancel = await two_holds(client, tourist)
            before = await Counted.now(env, served.url)

            def confirm() -> Coroutine[Any, Any, Answer]:
                headers = tourist | {"Idempotency-Key": "failing-confirm"} | ONE_SHOT
                return post(client, f"/v1/reservations/{to_confirm}/confirm", headers)

            def cancel() -> Coroutine[Any, Any, Answer]:
                headers = tourist | {"Idempotency-Key": "failing-cancel"} | ONE_SHOT
                return post(client, f"/v1/reservations/{to_cancel}/cancel", headers)

            failed_confirm = await failed_write(env, confirm)
            failed_cancel = await failed_write(env, cancel)
            after = await Counted.now(env, served.url)
            report = audit(env)
            assert (await confirm()).status == 200
            assert (await cancel()).status == 200
            assert remaining(served.url) == before.left + 1

    assert after == before
    assert report["missing"] == report["leaked"] == 0
    told = [
        (a.status, a.code, a.content_type, a.retry_after) for a in (failed_confirm, failed_cancel)
    ]
    assert told == [(503, told[0][1], PROBLEM, "1"), (503, told[1][1], PROBLEM, "1")], told
