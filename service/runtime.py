"""Everything a running tidegate holds: engine, Redis, and the domain services over them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from booking.accounts import Accounts
from booking.crowd import Crowd
from booking.draws import Draws
from booking.gates import Gates
from booking.ids import IdHasher
from booking.ledger import HoldLedger
from booking.management import Management
from booking.reconcile import Reconciler
from booking.service import Booking
from booking.sites import Catalog
from booking.tickets import TicketSigner
from booking.waitlist import Waitlist
from booking.webhooks import Webhooks
from capacity.clock import Clock
from capacity.counters import Counters
from capacity.occupancy import Occupancy
from capacity.replays import Replays
from capacity.store import RedisClient, connect
from capacity.throttle import Throttle
from service.embedded_redis import ANNOUNCE_FILE, EmbeddedRedis
from service.settings import DEFAULT_BUDGETS, Settings

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and a single connection never meets
        # "database is locked" between its own transactions. WAL keeps readers of other
        # processes (the CLI, the benchmark's checker) off the writer's back.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_read_only_engine(url: str) -> AsyncEngine:
    """An engine that cannot write, for the audit: SQLite opened with `mode=ro`, PostgreSQL
    sessions whose transactions are read-only (any write fails)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return make_engine(url)
        readonly = parsed.set(
            database=f"file:{quote(path)}",
            query={**parsed.query, "mode": "ro", "uri": "true"},
        )
        engine = create_async_engine(readonly, pool_size=1, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    if parsed.get_driver_name() == "asyncpg":
        settings = {"default_transaction_read_only": "on"}
        return create_async_engine(
            url, pool_size=2, pool_pre_ping=True, connect_args={"server_settings": settings}
        )
    engine = create_async_engine(url, pool_size=2, pool_pre_ping=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _read_only(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()

    return engine


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: RedisClient
    counters: Counters
    catalog: Catalog
    reconciler: Reconciler
    booking: Booking
    management: Management
    crowd: Crowd
    waitlist: Waitlist
    draws: Draws
    webhooks: Webhooks
    http: httpx.AsyncClient
    gates: Gates
    accounts: Accounts
    hasher: IdHasher
    throttle: Throttle
    ledger: HoldLedger | None = None
    embedded_redis: EmbeddedRedis | None = None
    ready: bool = False

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        clock = clock or settings.clock()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        embedded = None
        redis_url = settings.redis_url
        if redis_url is None:
            announce = settings.data_dir / ANNOUNCE_FILE
            embedded = EmbeddedRedis(announce=announce).start()
            redis_url = embedded.url
        redis = connect(redis_url)
        engine = make_engine(settings.db_url, pool_size=settings.db_pool_size)
        sessions = make_sessions(engine)
        counters = Counters(redis)
        catalog = Catalog(sessions=sessions, counters=counters, clock=clock)
        reconciler = Reconciler(
            sessions=sessions,
            counters=counters,
            clock=clock,
            grace=timedelta(seconds=settings.reconcile_grace_seconds),
        )
        hasher = IdHasher(settings.id_key())
        ledger = HoldLedger(engine)
        occupancy = Occupancy(redis)
        crowd = Crowd(sessions=sessions, catalog=catalog, occupancy=occupancy, clock=clock)
        booking = Booking(
            sessions=sessions,
            counters=counters,
            catalog=catalog,
            crowd=crowd,
            reconciler=reconciler,
            clock=clock,
            hasher=hasher,
            hold_ttl=settings.hold_ttl,
            replays=Replays(redis),
            ledger=ledger,
        )
        accounts = Accounts(sessions=sessions, clock=clock, token_ttl=settings.token_ttl)
        # Webhook deliveries: a receiver has 5 s to answer; redirects are not followed.
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            sessions=sessions,
            redis=redis,
            counters=counters,
            catalog=catalog,
            reconciler=reconciler,
            booking=booking,
            gates=Gates(
                sessions=sessions,
                catalog=catalog,
                signer=TicketSigner(*settings.ticket_signing()),
                occupancy=occupancy,
                crowd=crowd,
                reconciler=reconciler,
                clock=clock,
            ),
            crowd=crowd,
            waitlist=Waitlist(sessions=sessions, booking=booking, counters=counters, clock=clock),
            draws=Draws(
                sessions=sessions,
                booking=booking,
                reconciler=reconciler,
                clock=clock,
            ),
            webhooks=Webhooks(sessions=sessions, clock=clock, http=http),
            http=http,
            management=Management(
                sessions=sessions,
                counters=counters,
                catalog=catalog,
                crowd=crowd,
                reconciler=reconciler,
                clock=clock,
            ),
            accounts=accounts,
            hasher=hasher,
            ledger=ledger,
            throttle=Throttle(
                redis,
                {**DEFAULT_BUDGETS, **settings.rate_budgets},
                enabled=settings.rate_limits,
            ),
            embedded_redis=embedded,
        )

    async def close(self) -> None:
        await self.reconciler.wait_pending()
        await self.http.aclose()
        if self.ledger is not None:
            await self.ledger.close()
        await self.throttle.close()
        await self.redis.aclose()
        await self.engine.dispose()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
