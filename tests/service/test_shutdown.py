"""Stopping: on SIGTERM the server stops accepting, finishes the bookings it is answering,
then closes the runtime and exits 0. Nothing half-done: every booking it answered 201 is in
SQL, and nothing else is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests import databases
from tests.conftest import YONGHE_10, visitor
from tests.service.processes import cli
from tests.service.serving import Served, register_tourist, serving

GRACE_SECONDS = 20
IN_FLIGHT = 240  # bookings sent before the stop
DURING_STOP = 20  # bookings sent just after it


@dataclass
class Outcome:
    tourist: int
    status: int | None = None
    reservation: str | None = None
    unanswered: str | None = None  # why no answer came: refused, or closed before one


def hold_request(port: int, authorization: str, number: int) -> bytes:
    """A hold, as bytes on the wire: written at once, so that many are in flight together."""
    body = json.dumps({"slot_id": YONGHE_10, "visitors": [visitor()]}).encode()
    head = (
        "POST /v1/reservations HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: {authorization}\r\n"
        f"Idempotency-Key: stop-{number}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def answer(reader: asyncio.StreamReader, outcome: Outcome) -> Outcome:
    """Read the answer to the end. No byte at all: the server never took the request (uvicorn,
    when it stops, closes the connections on which it has not read one). Some bytes, then the
    end or a reset before the whole answer: a request cut off, which fails the test."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        assert received == b"", f"reset in the middle of an answer: {received!r}"
    if not received:
        outcome.unanswered = "closed"
        return outcome
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert len(body) == int(fields["content-length"]), f"an answer cut off: {received!r}"
    outcome.status = int(lines[0].split()[1])
    if outcome.status == 201:
        outcome.reservation = json.loads(body)["id"]
    return outcome


async def hold_during_stop(port: int, authorization: str, number: int, tourist: int) -> Outcome:
    outcome = Outcome(tourist)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        outcome.unanswered = "refused"
        return outcome
    try:
        writer.write(hold_request(port, authorization, number))
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        outcome.unanswered = "closed"
        return outcome
    try:
        return await answer(reader, outcome)
    finally:
        writer.close()


@dataclass
class Rush:
    in_flight: list[Outcome]
    during_stop: list[Outcome]
    stopped_at: float  # time.monotonic() of the SIGTERM


@contextlib.asynccontextmanager
async def writes_held(env: dict[str, str]) -> AsyncIterator[None]:
    """The database's writes held by another client (SQLite's write lock, or a lock on the
    visitor table in PostgreSQL): holds sent meanwhile are read and begun by the server, and
    wait for their commit, so a stop that comes then surely meets them in flight."""
    url = env.get("TIDEGATE_DATABASE_URL")
    if url:
        connection = await asyncpg.connect(databases.asyncpg_url(url))
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE visitor IN SHARE ROW EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
            await connection.close()
        return
    sqlite = sqlite3.connect(Path(env["TIDEGATE_DATA_DIR"]) / "tidegate.sqlite3", timeout=30)
    sqlite.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        sqlite.rollback()
        sqlite.close()


async def rush(served: Served, tourists: list[dict[str, str]], env: dict[str, str]) -> Rush:
    """IN_FLIGHT holds written at once while the database's writes are held, so the server has
    read them all and waits to commit them; SIGTERM then, DURING_STOP more holds, and the writes
    let go. The holds in flight are still to be answered when the stop begins."""
    port = int(served.url.rsplit(":", 1)[1])
    authorizations = [tourist["Authorization"] for tourist in tourists]
    async with writes_held(env):
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(IN_FLIGHT)]
        for number, (_, writer) in enumerate(connections):
            writer.write(hold_request(port, authorizations[number % len(tourists)], number))
        await asyncio.gather(*(writer.drain() for _, writer in connections))
        first = [
            asyncio.create_task(answer(reader, Outcome(number % len(tourists))))
            for number, (reader, _) in enumerate(connections)
        ]
        await asyncio.sleep(1.0)  # the server reads them and begins each (it cannot finish one)
        assert not any(task.done() for task in first), "answered while writes were held"
        served.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        late = [
            hold_during_stop(port, authorizations[number % len(tourists)], number, number % 4)
            for number in range(IN_FLIGHT, IN_FLIGHT + DURING_STOP)
        ]
        during_stop_task = asyncio.gather(*late)
        await asyncio.sleep(0.5)  # the stop has begun: new connections are refused
    in_flight, during_stop = await asyncio.gather(*first), await during_stop_task
    for _, writer in connections:
        writer.close()
    return Rush(in_flight, during_stop, stopped_at)


@pytest.mark.slow
def test_sigterm_finishes_the_bookings_in_flight_and_exits_0(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = env | {"TIDEGATE_LOG_LEVEL": "info", "TIDEGATE_RATE_LIMITS": "off"}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    admin = cli(env, "token", "create", "--role", "admin")
    args = ("--access-log", "--graceful-seconds", str(GRACE_SECONDS))
    with serving(env, tmp_path / "first.log", *args) as served:
        with httpx.Client(base_url=served.url) as client:
            lifted = client.patch(
                "/v1/sites/yonghe-temple",
                json={"account_day_limit": 100, "account_hold_limit": 100},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert lifted.status_code == 200, lifted.text
            tourists = [register_tourist(client, admin, f"t{n}@example.com") for n in range(4)]
            remaining = client.get(f"/v1/slots/{YONGHE_10}").json()["remaining"]

        done = asyncio.run(rush(served, tourists, env))
        assert served.process.wait(timeout=GRACE_SECONDS + 30) == 0
        assert time.monotonic() - done.stopped_at < GRACE_SECONDS
        records = served.records()

    # Every hold in flight at the stop was answered, in full, with 201.
    assert [outcome.status for outcome in done.in_flight] == [201] * IN_FLIGHT
    # Those sent during the stop were answered in full, or not taken at all.
    for outcome in done.during_stop:
        assert (outcome.status, outcome.unanswered is None) in [(201, True), (None, False)]
    booked = [o for o in done.in_flight + done.during_stop if o.status == 201]
    # The server's own account: holds answered after its shutdown began, and no error.
    events = [record["event"] for record in records]
    holds = [i for i, r in enumerate(records) if r.get("path") == "/v1/reservations"]
    assert [records[i]["status"] for i in holds] == [201] * len(booked)
    assert holds[-1] > events.index("Shutting down")
    assert events[-3:] == [
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        f"Finished server process [{served.process.pid}]",
    ]
    assert [r for r in records if r["level"] != "info"] == []

    # After a restart on the same database: exactly the answered holds are there.
    with serving(env, tmp_path / "second.log") as served:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            for number, tourist in enumerate(tourists):
                listed = client.get("/v1/reservations", params={"limit": 100}, headers=tourist)
                assert listed.status_code == 200, listed.text
                kept = {(r["id"], r["status"]) for r in listed.json()}
                answered = {(o.reservation, "held") for o in booked if o.tourist == number}
                assert kept == answered
            # The counters, rebuilt from SQL at startup, agree.
            after = client.get(f"/v1/slots/{YONGHE_10}").json()["remaining"]
        assert remaining - after == len(booked)
        assert served.stop() == 0


async def test_the_runtime_closes_only_after_the_last_request_is_answered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    happened: list[str] = []
    close = Runtime.close

    async def closing(runtime: Runtime) -> None:
        happened.append("runtime closed")
        await close(runtime)

    monkeypatch.setattr(Runtime, "close", closing)
    app = create_app(settings)
    arrived, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> dict[str, str]:
        arrived.set()
        await finish.wait()
        happened.append("answered")
        return {}

    app.add_api_route("/slow", slow)
    transport = httpx.ASGITransport(app=app)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as client:
        request = asyncio.create_task(client.get("/slow"))
        await arrived.wait()
        # The server's shutdown reaches the app while the request is still being answered.
        shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
        await asyncio.sleep(0.3)
        assert happened == []
        finish.set()
        assert (await request).status_code == 200
        await shutdown

    assert happened == ["answered", "runtime closed"]
