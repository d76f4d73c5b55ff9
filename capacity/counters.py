"""Admission counters in Redis: the fast half of "Redis decides, SQL proves".

Every admitted visitor holds one unit of its slot and one unit of its site-day. The scripts
in `scripts/` take and return those units atomically; this module is their typed front door.
Redis commands live only in `capacity/`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from capacity.clock import to_millis
from capacity.errors import (
    AccountLimitReached,
    CapacityUnavailable,
    DuplicateVisitor,
    FairReleasePending,
    GroupLimitReached,
    OutsideBookingWindow,
    PartyTooLarge,
    SiteClosed,
    SlotNotCounted,
    SoldOut,
    TidegateError,
)
from capacity.keys import SiteDay, open_holds
from capacity.store import RedisClient


def _load(name: str) -> str:
    return resources.files("capacity").joinpath("scripts", name).read_text(encoding="utf-8")


def _with_room(name: str) -> str:
    """A script that takes or gives back places, after room.lua's shared rules (Lua cannot
    import)."""
    return _load("room.lua") + "\n" + _load(name)


PPM = 1_000_000  # shares of a cap, in millionths, as the counters keep them
# A limit no account reaches: claims restored from SQL after a restart are never refused.
_NO_LIMIT = 2**31


def release_field(batches: Sequence[tuple[datetime, float]]) -> str:
    """The day hash's `release`: "at_ms:ppm" batches in time order, ppm the cumulative share
    of every cap released by then ('' when everything is released at once)."""
    if not batches:
        return ""
    parts, total = [], 0.0
    for at, share in sorted(batches):
        total += share
        parts.append(f"{to_millis(at)}:{min(round(total * PPM), PPM)}")
    return " ".join(parts)


def pools_field(pools: dict[str, int] | None) -> str:
    """The slot hash's `pools`: "channel:cap" for each channel with places kept for it."""
    return " ".join(f"{channel}:{cap}" for channel, cap in sorted((pools or {}).items()))


def released_share(release: str, now_ms: int | None) -> int:
    """The share (ppm) of every cap on sale at `now_ms`, as room.lua computes it."""
    if not release or now_ms is None:
        return PPM
    ppm = 0
    for part in release.split():
        at, share = part.split(":")
        if int(at) <= now_ms:
            ppm = int(share)
    return ppm


@dataclass(frozen=True, slots=True)
class Allocation:
    """The units a party was given: one slot unit and one day unit per visitor, in order."""

    slot_units: tuple[int, ...]
    day_units: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """A slot as SQL knows it, for a rebuild."""

    key: str
    start_minute: int
    cap: int
    closes_at: datetime
    closed: bool
    taken: Sequence[int] = ()
    pools: dict[str, int] = field(default_factory=dict)
    pools_until: datetime | None = None  # when unsold pool places roll into general sale
    pool_used: dict[str, int] = field(default_factory=dict)
    by_pool: dict[str, str] = field(default_factory=dict)  # reservation -> its pool
    returns: Sequence[tuple[str, datetime]] = ()  # refunded places off sale until then

    @property
    def pool_settings(self) -> tuple[str, int]:
        return pools_field(self.pools), to_millis(self.pools_until) if self.pools_until else 0


@dataclass(frozen=True, slots=True)
class DayPlan:
    """A site-day as SQL knows it, for a rebuild."""

    cap: int
    opens_at: datetime
    closed: bool
    party_max: int
    owner_max: int = 1_000_000
    taken: Sequence[int] = ()
    visitor_ids: Sequence[str] = ()
    slots: Sequence[SlotPlan] = ()
    owners: dict[str, list[str]] = field(default_factory=dict)
    release: str = ""  # release_field() of the day's batches
    returns: Sequence[tuple[str, datetime]] = ()
    drawing: bool = False  # a fair release still serving its draw: no other sale yet
    group_max: int = 0  # group reservations a day
    groups: Sequence[str] = ()  # the active group reservations

    def settings(self) -> Settings:
        """What the counters must say about this day, besides the units."""
        return Settings(
            day=(
                self.cap,
                to_millis(self.opens_at),
                self.closed,
                self.party_max,
                self.owner_max,
                self.release,
                self.drawing,
                self.group_max,
            ),
            slots={
                slot.key: (slot.cap, to_millis(slot.closes_at), slot.closed, *slot.pool_settings)
                for slot in self.slots
            },
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Caps, windows, closures and limits of a site-day: the reconciler rebuilds a day whose
    counters say otherwise than SQL (a manager's change that Redis missed)."""

    day: tuple[int, int, bool, int, int, str, bool, int]
    slots: dict[str, tuple[int, int, bool, str, int]]


@dataclass(frozen=True, slots=True)
class Load:
    """Places used and offered, as Redis counts them."""

    cap: int
    used: int
    closed: bool = False
    closes_at_ms: int = 0
    pools: str = ""
    pools_until_ms: int = 0
    pools_rolled_over: bool = False  # when it was read
    on_sale_ppm: int = PPM  # the share released when it was read
    channel_used: dict[str, int] = field(default_factory=dict)  # each pool's places
    coming_back: dict[str, int] = field(default_factory=dict)  # refunds off sale, per channel

    @property
    def pool_used(self) -> int:
        """Places taken from the slot's pools, all together."""
        pools = {part.split(":")[0] for part in self.pools.split()}
        return sum(used for channel, used in self.channel_used.items() if channel in pools)

    @property
    def left(self) -> int:
        """Places the general sale (the online channel) may still take."""
        return max(self.room("online"), 0)

    def room(self, channel: str) -> int:
        """What room.lua's `slot_room` answers for `channel` (kept in step with it): what is
        released, less refunds still off sale, less what the pools keep for their channels
        until they roll over."""
        released = self.cap * self.on_sale_ppm // PPM
        room = released - self.used - sum(self.coming_back.values())
        if not self.pools or self.pools_rolled_over:
            return room
        caps = {name: int(cap) for name, cap in (p.split(":") for p in self.pools.split())}
        kept, in_pools, mine = 0, 0, None
        for name, cap in caps.items():
            pool_cap = cap * self.on_sale_ppm // PPM
            used = self.channel_used.get(name, 0)
            taken = used + self.coming_back.get(name, 0)
            if name == channel:
                mine = pool_cap - taken
            kept += max(pool_cap, taken)
            in_pools += used
        if mine is None:
            general_back = sum(n for name, n in self.coming_back.items() if name not in caps)
            mine = released - kept - (self.used - in_pools) - general_back
        return min(room, mine)


@dataclass(frozen=True, slots=True)
class DayLoad:
    day: Load
    opens_at_ms: int
    slots: dict[str, Load] = field(default_factory=dict)
    party_max: int = 0
    owner_max: int = 0

    release: str = ""
    drawing: bool = False
    group_max: int = 0

    def settings(self) -> Settings:
        return Settings(
            day=(
                self.day.cap,
                self.opens_at_ms,
                self.day.closed,
                self.party_max,
                self.owner_max,
                self.release,
                self.drawing,
                self.group_max,
            ),
            slots={
                key: (
                    slot.cap,
                    slot.closes_at_ms,
                    slot.closed,
                    slot.pools,
                    slot.pools_until_ms,
                )
                for key, slot in self.slots.items()
            },
        )

    def left_in(self, slot_key: str) -> int:
        """Places one more party can still get in a slot: bounded by the slot and the day."""
        slot = self.slots.get(slot_key)
        if slot is None or slot.closed or self.day.closed:
            return 0
        return min(slot.left, self.day.left)

    def on_sale(self, slot_key: str, now: datetime) -> bool:
        slot = self.slots.get(slot_key)
        now_ms = to_millis(now)
        return slot is not None and self.opens_at_ms <= now_ms < slot.closes_at_ms


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Which units Redis counts as taken: the reconciler compares this with SQL."""

    day_taken: frozenset[int]
    slot_taken: dict[str, frozenset[int]]
    visitor_ids: frozenset[str]
    settings: Settings
    owners: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def day_cap(self) -> int:
        return self.settings.day[0]

    @property
    def slot_caps(self) -> dict[str, int]:
        return {key: slot[0] for key, slot in self.settings.slots.items()}


class Counters:
    """Typed access to one Redis (or Redis Cluster) holding every site-day's counters."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._allocate: AsyncScript = redis.register_script(_with_room("allocate.lua"))
        self._release: AsyncScript = redis.register_script(_with_room("release.lua"))
        self._rebuild: AsyncScript = redis.register_script(_load("rebuild.lua"))
        self._set_capacity: AsyncScript = redis.register_script(_load("set_capacity.lua"))
        self._claim_hold: AsyncScript = redis.register_script(_load("claim_hold.lua"))
        self._move: AsyncScript = redis.register_script(_with_room("move.lua"))

    @property
    def redis(self) -> RedisClient:
        return self._redis

    async def allocate(
        self,
        site_day: SiteDay,
        slot_key: str,
        visitor_ids: Sequence[str],
        *,
        now: datetime,
        owner: str = "",
        reservation: str = "",
        channel: str = "online",
        draw: bool = False,
    ) -> Allocation:
        """Take one slot unit and one day unit per visitor, or raise why not (nothing taken).

        With an `owner`, the reservation also counts against the account's limit of active
        reservations for the site-day (the day hash's `owner_max`). The `channel` sells from
        its own pool where the slot keeps one for it, else from the general sale. Only a fair
        release's `draw` takes places while the day is still serving its draw.
        """
        n = len(visitor_ids)
        reply = await self._call(
            self._allocate,
            site_day.allocation_keys(slot_key),
            [to_millis(now), n, owner, reservation, channel, "1" if draw else "", *visitor_ids],
        )
        status = reply[0]
        if status == "ok":
            units = [int(u) for u in reply[2:]]
            return Allocation(tuple(units[:n]), tuple(units[n:]))
        raise _refusal(reply, site_day, n)

    async def move(
        self,
        site_day: SiteDay,
        old_slot: str,
        new_slot: str,
        *,
        slot_units: Sequence[int],
        now: datetime,
        reservation: str = "",
        channel: str = "online",
    ) -> tuple[int, ...]:
        """Move a party between two slots of one site-day in one step: the new slot's units
        are taken and the old ones given back, or nothing changes (and the reason is raised).
        The party keeps its day units, and its pool. Returns the new slot units, in the
        party's order."""
        n = len(slot_units)
        reply = await self._call(
            self._move,
            site_day.move_keys(old_slot, new_slot),
            [to_millis(now), n, reservation, channel, *slot_units],
        )
        if reply[0] == "ok":
            return tuple(int(u) for u in reply[2:])
        raise _refusal(reply, site_day, n)

    async def release(
        self,
        site_day: SiteDay,
        slot_key: str,
        *,
        slot_units: Sequence[int],
        day_units: Sequence[int],
        visitor_ids: Sequence[str] = (),
        owner: str = "",
        reservation: str = "",
        back_at: datetime | None = None,
    ) -> tuple[int, int]:
        """Give units back (idempotent); returns how many slot and day units were freed.

        With an `owner`, the reservation no longer counts against the account's limit. With
        `back_at` (a refund policy), the places stay off sale until then.
        """
        reply = await self._call(
            self._release,
            site_day.allocation_keys(slot_key),
            [
                owner,
                reservation,
                to_millis(back_at) if back_at is not None else 0,
                len(slot_units),
                *slot_units,
                len(day_units),
                *day_units,
                *visitor_ids,
            ],
        )
        return int(reply[0]), int(reply[1])

    async def claim_hold(
        self, owner: str, site: str, reservation: str, *, limit: int, now: datetime, until: datetime
    ) -> None:
        """Count an open hold against the account's limit at a site, or raise (nothing kept)."""
        reply = await self._call(
            self._claim_hold,
            [open_holds(owner)],
            [to_millis(now), site, limit, reservation, to_millis(until)],
        )
        if reply[0] != "ok":
            raise AccountLimitReached(
                f"this account has reached its limit of {reply[1]} open holds at {site}: "
                "confirm or cancel one first",
                limit=int(reply[1]),
                per="open-holds",
            )

    async def restore_holds(
        self, site: str, holds: Sequence[tuple[str, str, datetime]], *, now: datetime
    ) -> None:
        """Count again (owner, reservation, deadline) holds that SQL says are open at a site:
        after Redis restarted empty, an account's open holds must still count against its
        limit. Never refused: these holds exist already, whatever the limit says now."""
        for owner, reservation, until in holds:
            await self._call(
                self._claim_hold,
                [open_holds(owner)],
                [to_millis(now), site, _NO_LIMIT, reservation, to_millis(until)],
            )

    async def end_holds(self, claims: Sequence[tuple[str, str, str]]) -> None:
        """Forget (owner, site, reservation) hold claims: confirmed, cancelled or expired."""
        if not claims:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner, site, reservation in claims:
                pipe.zrem(open_holds(owner), f"{site} {reservation}")
            await self._guard(pipe.execute())

    async def rebuild(self, site_day: SiteDay, plan: DayPlan, *, epoch: str) -> None:
        """Replace a site-day's counters with what SQL proves, in one atomic script."""
        payload = {
            "day": {
                "cap": plan.cap,
                "opens_at": to_millis(plan.opens_at),
                "closed": int(plan.closed),
                "party_max": plan.party_max,
                "owner_max": plan.owner_max,
                "release": plan.release,
                "drawing": int(plan.drawing),
                "group_max": plan.group_max,
                "groups": list(plan.groups),
                "taken": list(plan.taken),
                "returns": [[member, to_millis(at)] for member, at in plan.returns],
            },
            "ids": list(plan.visitor_ids),
            "owners": {owner: " ".join(ids) for owner, ids in plan.owners.items()},
            "slots": [
                {
                    "key": slot.key,
                    "start": slot.start_minute,
                    "cap": slot.cap,
                    "closes_at": to_millis(slot.closes_at),
                    "closed": int(slot.closed),
                    "taken": list(slot.taken),
                    "pools": slot.pool_settings[0],
                    "pool_until": slot.pool_settings[1],
                    # cjson makes {} of an empty object and of an empty array alike
                    "pool_used": slot.pool_used or {},
                    "by": slot.by_pool or {},
                    "returns": [[member, to_millis(at)] for member, at in slot.returns],
                }
                for slot in plan.slots
            ],
        }
        keys = [
            site_day.epoch,
            site_day.day,
            site_day.day_free,
            site_day.visitor_ids,
            site_day.slot_index,
            site_day.owners,
            site_day.day_returns,
        ]
        for slot in plan.slots:
            keys += [
                site_day.slot(slot.key),
                site_day.slot_free(slot.key),
                site_day.slot_returns(slot.key),
            ]
        # Slots counted before but gone from SQL must not stay on sale.
        counted = await self._guard(self._redis.zrange(site_day.slot_index, 0, -1))
        for key in set(counted) - {slot.key for slot in plan.slots}:
            keys += [site_day.slot(key), site_day.slot_free(key), site_day.slot_returns(key)]
        await self._call(self._rebuild, keys, [epoch, json.dumps(payload)])

    async def forget(self, site_day: SiteDay) -> None:
        """Drop a site-day's epoch so that it fails closed until rebuilt."""
        await self._guard(self._redis.delete(site_day.epoch))

    async def is_built(self, site_day: SiteDay) -> bool:
        return bool(await self._guard(self._redis.exists(site_day.epoch)))

    async def set_slot_capacity(self, site_day: SiteDay, slot_key: str, cap: int) -> bool:
        """Change a slot's cap in place; False when there are no counters to change."""
        keys = [site_day.epoch, site_day.slot(slot_key)]
        return bool(await self._call(self._set_capacity, keys, [cap]))

    async def set_day_capacity(self, site_day: SiteDay, cap: int) -> bool:
        keys = [site_day.epoch, site_day.day]
        return bool(await self._call(self._set_capacity, keys, [cap]))

    async def load(self, site_day: SiteDay, *, now: datetime | None = None) -> DayLoad | None:
        """Every slot's cap and use for a day, or None when the counters are not built.

        With `now`, the places left count only the share released by then and what the pools
        keep (see room.lua); without it, as if everything were released.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(site_day.epoch)
            pipe.hmget(
                site_day.day,
                "cap",
                "used",
                "closed",
                "opens_at",
                "party_max",
                "owner_max",
                "release",
                "drawing",
                "group_max",
            )
            pipe.zrange(site_day.slot_index, 0, -1)
            built, day, slot_keys = await self._guard(pipe.execute())
        if not built or day[0] is None:
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in slot_keys:
                pipe.hmget(site_day.slot(key), *_SLOT_FIELDS)
            if now is not None:
                # Refunded places still off sale (a refund policy), the day's, then each slot's.
                window = (f"({to_millis(now)}", "+inf")
                pipe.zrangebyscore(site_day.day_returns, *window)
                for key in slot_keys:
                    pipe.zrangebyscore(site_day.slot_returns(key), *window)
            replies = await self._guard(pipe.execute())
        rows = replies[: len(slot_keys)]
        returns = replies[len(slot_keys) :] or [[] for _ in range(len(slot_keys) + 1)]
        now_ms = None if now is None else to_millis(now)
        ppm = released_share(day[6] or "", now_ms)
        slots = {
            key: _as_load(row, ppm, now_ms, _coming_back(back))
            for key, row, back in zip(slot_keys, rows, returns[1:], strict=True)
            if row[0] is not None
        }
        return DayLoad(
            _as_load(day[:3], ppm, coming_back=_coming_back(returns[0])),
            int(day[3] or 0),
            slots,
            party_max=int(day[4] or 0),
            owner_max=int(day[5] or 0),
            release=day[6] or "",
            drawing=day[7] == "1",
            group_max=int(day[8] or 0),
        )

    async def snapshot(self, site_day: SiteDay) -> Snapshot | None:
        """Units Redis counts as taken, per slot and for the day; None without counters."""
        load = await self.load(site_day)
        if load is None:
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(site_day.day, "hwm")
            pipe.zrange(site_day.day_free, 0, -1)
            pipe.smembers(site_day.visitor_ids)
            pipe.hgetall(site_day.owners)
            for key in load.slots:
                pipe.hget(site_day.slot(key), "hwm")
                pipe.zrange(site_day.slot_free(key), 0, -1)
            replies = await self._guard(pipe.execute())
        day_taken = _taken(replies[0], replies[1])
        slot_taken = {
            key: _taken(replies[4 + 2 * i], replies[5 + 2 * i]) for i, key in enumerate(load.slots)
        }
        return Snapshot(
            day_taken=day_taken,
            slot_taken=slot_taken,
            visitor_ids=frozenset(replies[2]),
            settings=load.settings(),
            owners={owner: frozenset(ids.split()) for owner, ids in replies[3].items()},
        )

    async def watch_suspects(
        self, site_day: SiteDay, current: set[str], *, now: datetime
    ) -> dict[str, int]:
        """Remember when each Redis-only unit was first seen; forget the ones that resolved.

        Returns every current suspect with its first-seen time (ms), so the reconciler can
        return only units leaked for longer than its grace period.
        """
        now_ms = to_millis(now)
        seen: dict[str, str] = await self._guard(self._redis.hgetall(site_day.suspects))
        gone = [name for name in seen if name not in current]
        new = {name: str(now_ms) for name in current if name not in seen}
        async with self._redis.pipeline(transaction=False) as pipe:
            if gone:
                pipe.hdel(site_day.suspects, *gone)
            if new:
                pipe.hset(site_day.suspects, mapping=new)  # type: ignore[arg-type]
                pipe.expire(site_day.suspects, 7 * 24 * 3600)
            await self._guard(pipe.execute())
        return {name: int(seen.get(name, now_ms)) for name in current}

    async def clear_suspects(self, site_day: SiteDay, names: Sequence[str]) -> None:
        if names:
            await self._guard(self._redis.hdel(site_day.suspects, *names))

    async def try_lock(self, key: str, *, ttl_ms: int) -> bool:
        """A short lease shared by every replica (rebuilds, requests in flight)."""
        return bool(await self._guard(self._redis.set(key, "1", nx=True, px=ttl_ms)))

    async def unlock(self, key: str) -> None:
        await self._guard(self._redis.delete(key))

    @asynccontextmanager
    async def lease(self, key: str, *, ttl_ms: int) -> AsyncIterator[bool]:
        """Hold `key` for the block if no one else does (yields whether it was taken). Unlike
        `try_lock`, only its holder frees it: a lease that outlived its TTL and was taken by
        another request is left to that request."""
        lock = self._redis.lock(key, timeout=ttl_ms / 1000, blocking=False)
        taken = bool(await self._guard(lock.acquire()))
        try:
            yield taken
        finally:
            if taken:
                # Not ours any more (it outlived its TTL), or Redis is unreachable: either way
                # it lapses at its TTL, and the request's own outcome must not be lost to it.
                with suppress(RedisError):
                    await lock.release()

    async def _call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self._guard(script(keys=keys, args=args))

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as error:
            # Fail closed: an unreachable Redis means "try again", never a guess.
            raise CapacityUnavailable("the admission counters are unreachable") from error


_CHANNELS = ("online", "window", "group")
_SLOT_FIELDS = (
    "cap",
    "used",
    "closed",
    "closes_at",
    "pools",
    "pool_until",
    *(f"used:{channel}" for channel in _CHANNELS),
)


def _coming_back(members: Sequence[str]) -> dict[str, int]:
    """Places per channel of a returns set's members ("<reservation>:<places>:<channel>")."""
    back: dict[str, int] = {}
    for member in members:
        _, places, channel = member.rsplit(":", 2)
        back[channel] = back.get(channel, 0) + int(places)
    return back


def _as_load(
    row: Sequence[Any],
    ppm: int = PPM,
    now_ms: int | None = None,
    coming_back: dict[str, int] | None = None,
) -> Load:
    """cap, used, closed and, for a slot, the rest of _SLOT_FIELDS."""
    if len(row) <= 3:
        return Load(
            cap=int(row[0]),
            used=int(row[1] or 0),
            closed=row[2] == "1",
            on_sale_ppm=ppm,
            coming_back=coming_back or {},
        )
    pools_until = int(row[5] or 0)
    rolled_over = pools_until > 0 and now_ms is not None and now_ms >= pools_until
    return Load(
        cap=int(row[0]),
        used=int(row[1] or 0),
        closed=row[2] == "1",
        closes_at_ms=int(row[3] or 0),
        pools=row[4] or "",
        pools_until_ms=pools_until,
        pools_rolled_over=rolled_over,
        on_sale_ppm=ppm,
        channel_used={c: int(u) for c, u in zip(_CHANNELS, row[6:], strict=True) if u},
        coming_back=coming_back or {},
    )


def _instant(millis: Any) -> datetime:
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)


def _taken(hwm: Any, free: Sequence[Any]) -> frozenset[int]:
    freed = {int(unit) for unit in free}
    return frozenset(u for u in range(1, int(hwm or 0) + 1) if u not in freed)


def _refusal(reply: Sequence[Any], site_day: SiteDay, n: int) -> TidegateError:
    """The error a script's refusal stands for."""
    status = reply[0]
    if status == "sold-out":
        slot_left, day_left = int(reply[1]), int(reply[2])
        return SoldOut(
            f"{n} asked for; left: {slot_left} in this slot, {day_left} this day",
            slot_left=slot_left,
            day_left=day_left,
        )
    if status == "duplicate":
        index = int(reply[1])
        if reply[2] == "party":
            detail = f"visitor {index} is named twice in this party"
        else:
            detail = (
                f"visitor {index} already holds a place at {site_day.site} "
                f"on {site_day.visit_date.isoformat()}"
            )
        return DuplicateVisitor(detail, visitor_index=index - 1)
    if status == "window":
        opens_at, closes_at = _instant(reply[1]), _instant(reply[2])
        return OutsideBookingWindow(
            f"on sale from {opens_at.isoformat()} until {closes_at.isoformat()}",
            sales_open_at=opens_at,
            sales_close_at=closes_at,
        )
    if status == "party-too-large":
        return PartyTooLarge(
            f"{n} visitors asked for; at most {reply[1]} per reservation here",
            max_party_size=int(reply[1]),
        )
    if status == "account-limit":
        return AccountLimitReached(
            f"this account has reached its limit of {reply[1]} reservations at "
            f"{site_day.site} on {site_day.visit_date.isoformat()}",
            limit=int(reply[1]),
            per="site-day",
        )
    if status == "closed":
        return SiteClosed()
    if status == "drawing":
        return FairReleasePending()
    if status == "group-limit":
        return GroupLimitReached(
            f"{site_day.site} takes {reply[1]} group reservations a day and has them "
            f"on {site_day.visit_date.isoformat()}",
            limit=int(reply[1]),
        )
    if status == "no-slot":
        return SlotNotCounted()
    return CapacityUnavailable(f"counters of {site_day} are being rebuilt")
