"""Live occupancy: people inside each site now, and each gate's flow, counted in Redis.

Gate scans feed the counters after SQL has recorded the entry or exit; an entry first takes
its room here, atomically against the instantaneous cap, so two gates cannot together let a
site overflow. The counters are rebuilt from SQL (visitors in and not out, the scan log's
flows) whenever Redis has none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from capacity.errors import CapacityUnavailable, TidegateError
from capacity.keys import SiteDay
from capacity.store import RedisClient

FLOW_TTL_SECONDS = 3 * 24 * 3600


class SiteFull(TidegateError):
    """The site is at its instantaneous cap: the gate holds these visitors (they keep their
    reservation) until exits make room."""

    code, status, title = "site-full", 409, "The site is full right now: wait for exits"

    def __init__(self, detail: str, *, inside: int, instant_cap: int) -> None:
        super().__init__(detail, inside=inside, instant_cap=instant_cap)
        self.headers["Retry-After"] = "30"


class NotCounted(Exception):
    """No occupancy counters for this site-day yet: count from SQL, then try again."""


@dataclass(frozen=True, slots=True)
class Count:
    inside: int  # people inside now
    entered: int  # people who came in today


@dataclass(frozen=True, slots=True)
class Flow:
    """People in and out per gate, per minute of the day."""

    by_minute: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def in_minute(self, minute: int) -> tuple[int, int]:
        gates = self.by_minute.get(minute, {})
        return sum(v[0] for v in gates.values()), sum(v[1] for v in gates.values())


class Occupancy:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        scripts = resources.files("capacity").joinpath("scripts")
        self._pass: AsyncScript = redis.register_script(
            scripts.joinpath("pass_gate.lua").read_text("utf-8")
        )
        self._set_level: AsyncScript = redis.register_script(
            scripts.joinpath("set_level.lua").read_text("utf-8")
        )
        self._build: AsyncScript = redis.register_script(
            scripts.joinpath("build_occupancy.lua").read_text("utf-8")
        )

    async def enter(
        self, site_day: SiteDay, gate: str, people: int, *, instant_cap: int, minute: int
    ) -> Count:
        """Count people in, or raise SiteFull (nothing counted)."""
        reply = await self._call(site_day, "in", people, instant_cap, gate, minute)
        if reply[0] == "full":
            inside = int(reply[1])
            raise SiteFull(
                f"{inside} inside of {instant_cap}: hold {people} at the gate until exits "
                "make room",
                inside=inside,
                instant_cap=instant_cap,
            )
        return Count(int(reply[1]), int(reply[2]))

    async def leave(self, site_day: SiteDay, gate: str, people: int, *, minute: int) -> Count:
        reply = await self._call(site_day, "out", people, 0, gate, minute)
        return Count(int(reply[1]), int(reply[2]))

    async def move_level(self, site_day: SiteDay, level: str) -> str | None:
        """Set the alert level; returns the level before if it changed, else None."""
        try:
            before: str = await self._set_level(keys=[site_day.occupancy], args=[level])
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        return None if before == level else before

    async def level(self, site_day: SiteDay) -> str | None:
        try:
            level = await self._redis.hget(site_day.occupancy, "level")
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        return None if level is None else str(level)

    async def give_back(self, site_day: SiteDay, gate: str, people: int, *, minute: int) -> None:
        """Undo an entry counted here that SQL did not record (no flow is counted)."""
        await self._call(site_day, "undo", people, 0, gate, minute)

    async def _call(
        self, site_day: SiteDay, direction: str, people: int, cap: int, gate: str, minute: int
    ) -> list[str]:
        try:
            reply: list[str] = await self._pass(
                keys=[site_day.occupancy, site_day.flow],
                args=[direction, people, cap, gate, minute],
            )
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        if reply[0] == "unbuilt":
            raise NotCounted(str(site_day))
        return reply

    async def inside(self, site_day: SiteDay) -> int | None:
        """People inside now, or None before the counters are built."""
        count = await self.count(site_day)
        return None if count is None else count.inside

    async def count(self, site_day: SiteDay) -> Count | None:
        try:
            people, entered, built = await self._redis.hmget(
                site_day.occupancy, "people", "entered", "built"
            )
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        return None if built is None else Count(int(people or 0), int(entered or 0))

    async def flow(self, site_day: SiteDay) -> Flow:
        try:
            raw: dict[Any, Any] = await self._redis.hgetall(site_day.flow)
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        by_minute: dict[int, dict[str, list[int]]] = defaultdict(dict)
        for name, count in raw.items():
            minute, gate, direction = name.rsplit(":", 2)
            slot = by_minute[int(minute)].setdefault(gate, [0, 0])
            slot[0 if direction == "in" else 1] += int(count)
        return Flow(
            {m: {g: (v[0], v[1]) for g, v in gates.items()} for m, gates in by_minute.items()}
        )

    async def rebuild(
        self,
        site_day: SiteDay,
        *,
        inside: int,
        entered: int,
        flows: Mapping[tuple[int, str, str], int],
        only_if_missing: bool = False,
    ) -> bool:
        """Set a site-day's counters to what SQL recorded, atomically (the alert level is
        kept: it changes only with a recorded level change). With `only_if_missing`, counters
        that exist are left alone (another scan built them first). Returns whether it wrote."""
        pairs: list[str | int] = []
        for (minute, gate, direction), count in flows.items():
            pairs += [f"{minute}:{gate}:{direction}", count]
        try:
            wrote = await self._build(
                keys=[site_day.occupancy, site_day.flow],
                args=["1" if only_if_missing else "0", inside, entered, FLOW_TTL_SECONDS, *pairs],
            )
        except RedisError as error:
            raise CapacityUnavailable("the occupancy counters are unreachable") from error
        return bool(wrote)
