"""The alembic migrations make exactly the schema the models describe, and go down and up."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import booking.models  # noqa: F401  (registers the tables)
from alembic import command

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
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    found = []
    for change in diff:
        entry = change[0] if isinstance(change, list) else change
        found.append(
            (str(entry[2]), str(entry[3]))
            if entry[0] == "modify_type"
            else (str(entry[0]), str(entry[1]))
        )
    return found


def test_head_matches_the_models_and_every_step_goes_down_and_up(tmp_path: Path) -> None:
    database = tmp_path / "migrations.sqlite3"
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", f"sqlite+aiosqlite:///{database}")
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert set(differences(f"sqlite:///{database}")) == KNOWN
