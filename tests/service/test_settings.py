from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from capacity.clock import ManualClock, ScaledClock, SystemClock
from service.settings import Settings


def test_embedded_default_keeps_one_generated_id_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    first = settings.id_key()

    assert len(first) == 64
    assert Settings(data_dir=tmp_path).id_key() == first
    assert (tmp_path / "id-hash.key").stat().st_mode & 0o777 == 0o600


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/tidegate.sqlite3"
    assert settings.redis_url is None


def test_real_database_requires_an_id_hash_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TIDEGATE_ID_HASH_KEY is required"):
        Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://db/tidegate")


def test_settings_read_the_tidegate_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_HOLD_TTL_SECONDS", "120")
    monkeypatch.setenv("TIDEGATE_CLOCK_START", "2026-12-01T12:00:00+08:00")
    monkeypatch.setenv("TIDEGATE_CLOCK_SPEED", "60")

    settings = Settings(data_dir=tmp_path)

    assert settings.hold_ttl == timedelta(minutes=2)
    clock = settings.clock()
    assert isinstance(clock, ScaledClock)
    assert clock.now() >= datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def test_real_clock_by_default(tmp_path: Path) -> None:
    assert isinstance(Settings(data_dir=tmp_path).clock(), SystemClock)


def test_scaled_clock_runs_faster_from_its_start() -> None:
    start = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    clock = ScaledClock(start, speed=3600)

    time.sleep(0.05)  # 50 ms of real time is three minutes of the clock's

    elapsed = clock.now() - start
    assert timedelta(minutes=3) <= elapsed < timedelta(hours=1)


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))

    clock.advance(timedelta(minutes=15))

    assert clock.now() == datetime(2026, 12, 1, 0, 15, tzinfo=UTC)


def test_clocks_refuse_naive_starts() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        ManualClock(datetime(2026, 12, 1))
