"""The test database: a migrated SQLite file by default, or PostgreSQL when
TIDEGATE_TEST_DATABASE_URL names a server (CI runs the suite again on PostgreSQL 15).

On PostgreSQL the migrations run once into a template database; each test then gets a copy
of it (`CREATE DATABASE … TEMPLATE …` copies files, far faster than migrating again) and the
copy is dropped afterwards, so every test starts from the same schema, as on SQLite.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

_numbers = itertools.count()


def server_url() -> str | None:
    """The PostgreSQL server the tests use, as an SQLAlchemy URL, or None for SQLite."""
    return os.environ.get("TIDEGATE_TEST_DATABASE_URL") or None


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def fresh_name(kind: str) -> str:
    """A database name no other test run on this server uses (runs may share a server)."""
    return f"tg_{kind}_{os.getpid()}_{next(_numbers)}"


def asyncpg_url(url: str) -> str:
    """An SQLAlchemy URL (postgresql+asyncpg://…) as asyncpg's own (postgresql://…)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(statement: str) -> None:
    url = asyncpg_url(server_url() or "")

    async def run() -> None:
        connection: Any = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    # Sync fixtures run beside pytest-asyncio's loop, so the statement gets its own thread
    # and loop rather than touching the test's.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def create(name: str, *, template: str | None = None) -> None:
    copy = f" TEMPLATE {template}" if template else ""
    _admin(f"CREATE DATABASE {name}{copy}")


def drop(name: str) -> None:
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
