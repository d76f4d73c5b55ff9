"""The alembic migrations make exactly the schema the models describe, and go down and up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import booking.models  # noqa: F401  (registers the tables)
from alembic import command
from tests import databases

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

# Differences alembic reports that are not differences on SQLite: the first two columns were
# made as TEXT, which is what SQLModel's unbounded string is; SQLite ignores VARCHAR lengths
# (0002 widens `status` on PostgreSQL only).
KNOWN = {
    ("api_token", "account_id"),
    ("idempotency_record", "body"),
    ("reservation", "status"),
}


def differences(url: str) -> list[tuple[str, str]]:
    """What alembic's autogenerate would still change, on the same async driver the service
    uses (run the same way alembic/env.py runs the migrations)."""

    def compare(connection: sa.Connection) -> Any:
        return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)

    async def run() -> Any:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            diff = await connection.run_sync(compare)
        await engine.dispose()
        return diff

    diff = asyncio.run(run())
    found = []
    for change in diff:
        entry = change[0] if isinstance(change, list) else change
        found.append(
            (str(entry[2]), str(entry[3]))
            if entry[0] == "modify_type"
            else (str(entry[0]), str(entry[1]))
        )
    return found


# On PostgreSQL the same two columns made as TEXT differ; `status` was widened by 0002.
KNOWN_POSTGRESQL = KNOWN - {("reservation", "status")}


def down_and_up(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")


def test_head_matches_the_models_and_every_step_goes_down_and_up(tmp_path: Path) -> None:
    database = tmp_path / "migrations.sqlite3"
    down_and_up(f"sqlite+aiosqlite:///{database}")
    assert set(differences(f"sqlite+aiosqlite:///{database}")) == KNOWN


@pytest.fixture
def empty_postgresql() -> Iterator[str]:
    server = databases.server_url()
    if not server:
        pytest.skip("runs when TIDEGATE_TEST_DATABASE_URL names a PostgreSQL server (CI does)")
    name = databases.fresh_name("migrations")
    databases.create(name)
    yield databases.with_database(server, name)
    databases.drop(name)


def test_the_same_migrations_on_postgresql(empty_postgresql: str) -> None:
    down_and_up(empty_postgresql)
    assert set(differences(empty_postgresql)) == KNOWN_POSTGRESQL
