"""One clock for everything that depends on time.

Holds expire, sales open at 20:00, slots end: every such rule asks a `Clock`, never
`datetime.now()`, so tests can move time by hand and demos can replay a whole day fast.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Starts at `start` and runs `speed` times faster than real time.

    Built from TIDEGATE_CLOCK_START / TIDEGATE_CLOCK_SPEED for demos, the simulator and
    black-box tests of a whole day. Uses the monotonic clock so a host clock jump does not
    move tidegate's time.
    """

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("clock start must carry a UTC offset")
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        elapsed = time.monotonic() - self._origin
        return self._start + timedelta(seconds=elapsed * self._speed)


class ManualClock:
    """A clock that moves only when told to: for tests."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("clock start must carry a UTC offset")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = instant.astimezone(UTC)


def to_millis(instant: datetime) -> int:
    """Milliseconds since the epoch: the unit of time inside the Lua scripts."""
    return int(instant.timestamp() * 1000)
