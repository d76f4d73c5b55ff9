"""Tests for capacity.counters and its Lua scripts, against a real Redis (never a fake)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from capacity.clock import to_millis
from capacity.counters import (
    Allocation,
    Counters,
    DayLoad,
    DayPlan,
    Load,
    SlotPlan,
    Snapshot,
)
from capacity.errors import (
    CapacityUnavailable,
    DuplicateVisitor,
    OutsideBookingWindow,
    PartyTooLarge,
    SiteClosed,
    SlotNotCounted,
    SoldOut,
)
from capacity.keys import SiteDay

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
OPENS = NOW - timedelta(days=1)
CLOSES = NOW + timedelta(hours=6)
DAY = SiteDay("test-site", date(2026, 12, 1))
NEXT_DAY = SiteDay("test-site", date(2026, 12, 2))


def slot_plan(
    key: str = "0900",
    *,
    cap: int = 10,
    taken: Sequence[int] = (),
    closed: bool = False,
    closes_at: datetime = CLOSES,
) -> SlotPlan:
    return SlotPlan(
        key=key,
        start_minute=int(key[:2]) * 60 + int(key[2:]),
        cap=cap,
        closes_at=closes_at,
        closed=closed,
        taken=taken,
    )


def day_plan(
    *slots: SlotPlan,
    cap: int = 100,
    taken: Sequence[int] = (),
    ids: Sequence[str] = (),
    closed: bool = False,
    party_max: int = 5,
    opens_at: datetime = OPENS,
) -> DayPlan:
    return DayPlan(
        cap=cap,
        opens_at=opens_at,
        closed=closed,
        party_max=party_max,
        taken=taken,
        visitor_ids=ids,
        slots=slots or (slot_plan(),),
    )


@dataclass(frozen=True)
class Counted:
    """What a snapshot says about units and caps (its other settings have their own tests)."""

    day_taken: frozenset[int]
    slot_taken: dict[str, frozenset[int]]
    visitor_ids: frozenset[str]
    day_cap: int
    slot_caps: dict[str, int]


def counted(snapshot: Snapshot | None) -> Counted:
    assert snapshot is not None
    return Counted(
        snapshot.day_taken,
        snapshot.slot_taken,
        snapshot.visitor_ids,
        snapshot.day_cap,
        snapshot.slot_caps,
    )


@pytest.fixture
def counters(redis: Redis) -> Counters:
    return Counters(redis)


async def build(counters: Counters, plan: DayPlan, site_day: SiteDay = DAY) -> None:
    await counters.rebuild(site_day, plan, epoch="1")


async def take(
    counters: Counters,
    ids: Sequence[str],
    slot: str = "0900",
    *,
    site_day: SiteDay = DAY,
    now: datetime = NOW,
) -> Allocation:
    return await counters.allocate(site_day, slot, list(ids), now=now)


async def dump(redis: Redis) -> dict[str, object]:
    """Every key and its whole value: to prove that a refusal wrote nothing."""
    state: dict[str, object] = {}
    for key in sorted(str(k) for k in await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(await redis.smembers(key))
        else:
            state[key] = await redis.get(key)
    return state


async def used(counters: Counters, slot: str = "0900") -> tuple[int, int]:
    load = await counters.load(DAY)
    assert load is not None
    return load.slots[slot].used, load.day.used


# allocation order ------------------------------------------------------------------------


async def test_allocate_takes_units_from_the_high_water_mark(counters: Counters) -> None:
    await build(counters, day_plan())
    assert await take(counters, ["a"]) == Allocation((1,), (1,))
    assert await take(counters, ["b", "c"]) == Allocation((2, 3), (2, 3))
    assert await take(counters, ["d"]) == Allocation((4,), (4,))


async def test_allocate_takes_slot_and_day_units_independently(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan("0900"), slot_plan("1000")))
    assert await take(counters, ["a", "b"], "0900") == Allocation((1, 2), (1, 2))
    assert await take(counters, ["c"], "1000") == Allocation((1,), (3,))


async def test_allocate_takes_freed_units_lowest_first(counters: Counters) -> None:
    await build(counters, day_plan())
    await take(counters, ["a", "b", "c", "d", "e"])
    await counters.release(DAY, "0900", slot_units=[4, 2], day_units=[4, 2])
    assert await take(counters, ["f"]) == Allocation((2,), (2,))
    assert await take(counters, ["g", "h"]) == Allocation((4, 6), (4, 6))


# caps ------------------------------------------------------------------------------------


async def test_slot_cap_refuses_with_places_left(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=2), cap=100))
    await take(counters, ["a", "b"])
    with pytest.raises(SoldOut) as refused:
        await take(counters, ["c"])
    assert refused.value.extra == {"slot_left": 0, "day_left": 98}


async def test_slot_cap_admits_exactly_up_to_the_cap(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=3), cap=100))
    assert await take(counters, ["a", "b", "c"]) == Allocation((1, 2, 3), (1, 2, 3))
    assert await used(counters) == (3, 3)


async def test_day_cap_refuses_across_slots(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan("0900"), slot_plan("1000"), cap=3))
    await take(counters, ["a", "b"], "0900")
    with pytest.raises(SoldOut) as refused:
        await take(counters, ["c", "d"], "1000")
    assert refused.value.extra == {"slot_left": 10, "day_left": 1}


async def test_sold_out_party_takes_nothing(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(slot_plan(cap=5)))
    await take(counters, ["a", "b", "c"])
    load_before = await counters.load(DAY)
    snapshot_before = await counters.snapshot(DAY)
    state_before = await dump(redis)
    with pytest.raises(SoldOut) as refused:
        await take(counters, ["d", "e", "f"])
    assert refused.value.extra == {"slot_left": 2, "day_left": 97}
    assert await used(counters) == (3, 3)
    assert await counters.load(DAY) == load_before
    assert await counters.snapshot(DAY) == snapshot_before
    assert await dump(redis) == state_before


# the per-ID rule -------------------------------------------------------------------------


async def test_same_id_twice_in_a_slot_is_a_duplicate(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan())
    await take(counters, ["a"])
    state_before = await dump(redis)
    with pytest.raises(DuplicateVisitor) as refused:
        await take(counters, ["b", "a"])
    assert refused.value.extra == {"visitor_index": 1}
    assert await dump(redis) == state_before


async def test_same_id_in_another_slot_of_the_day_is_a_duplicate(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan("0900"), slot_plan("1000")))
    await take(counters, ["a"], "0900")
    with pytest.raises(DuplicateVisitor) as refused:
        await take(counters, ["a"], "1000")
    assert refused.value.extra == {"visitor_index": 0}
    assert await used(counters, "1000") == (0, 1)


async def test_same_id_on_another_day_is_allowed(counters: Counters) -> None:
    await build(counters, day_plan(), DAY)
    await build(counters, day_plan(), NEXT_DAY)
    await take(counters, ["a"], site_day=DAY)
    assert await take(counters, ["a"], site_day=NEXT_DAY) == Allocation((1,), (1,))


async def test_duplicate_inside_one_party_writes_nothing(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan())
    state_before = await dump(redis)
    with pytest.raises(DuplicateVisitor) as refused:
        await take(counters, ["a", "b", "a"])
    assert refused.value.extra == {"visitor_index": 2}
    assert await dump(redis) == state_before
    snapshot = await counters.snapshot(DAY)
    assert snapshot is not None
    assert snapshot.visitor_ids == frozenset()


async def test_released_id_can_book_again(counters: Counters) -> None:
    await build(counters, day_plan())
    first = await take(counters, ["a"])
    await counters.release(
        DAY, "0900", slot_units=first.slot_units, day_units=first.day_units, visitor_ids=["a"]
    )
    assert await take(counters, ["a"]) == Allocation((1,), (1,))


# booking window, closures, party size ----------------------------------------------------


async def test_allocate_before_sales_open_is_outside_the_window(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(opens_at=NOW + timedelta(minutes=1)))
    state_before = await dump(redis)
    with pytest.raises(OutsideBookingWindow) as refused:
        await take(counters, ["a"])
    assert refused.value.extra == {
        "sales_open_at": NOW + timedelta(minutes=1),
        "sales_close_at": CLOSES,
    }
    assert await dump(redis) == state_before


async def test_allocate_at_the_opening_instant_succeeds(counters: Counters) -> None:
    await build(counters, day_plan(opens_at=NOW))
    assert await take(counters, ["a"], now=NOW) == Allocation((1,), (1,))


async def test_allocate_at_the_closing_instant_is_outside_the_window(counters: Counters) -> None:
    await build(counters, day_plan())
    with pytest.raises(OutsideBookingWindow) as refused:
        await take(counters, ["a"], now=CLOSES)
    assert refused.value.extra == {"sales_open_at": OPENS, "sales_close_at": CLOSES}
    assert await used(counters) == (0, 0)


async def test_allocate_after_closing_is_outside_the_window(counters: Counters) -> None:
    await build(counters, day_plan())
    with pytest.raises(OutsideBookingWindow):
        await take(counters, ["a"], now=CLOSES + timedelta(hours=1))
    assert await used(counters) == (0, 0)


async def test_allocate_one_millisecond_before_closing_succeeds(counters: Counters) -> None:
    await build(counters, day_plan())
    before_close = CLOSES - timedelta(milliseconds=1)
    assert await take(counters, ["a"], now=before_close) == Allocation((1,), (1,))


async def test_closed_slot_refuses(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(slot_plan(closed=True)))
    state_before = await dump(redis)
    with pytest.raises(SiteClosed):
        await take(counters, ["a"])
    assert await dump(redis) == state_before


async def test_closed_day_refuses(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(closed=True))
    state_before = await dump(redis)
    with pytest.raises(SiteClosed):
        await take(counters, ["a"])
    assert await dump(redis) == state_before


async def test_party_above_the_limit_is_too_large(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(party_max=3))
    state_before = await dump(redis)
    with pytest.raises(PartyTooLarge) as refused:
        await take(counters, ["a", "b", "c", "d"])
    assert refused.value.extra == {"max_party_size": 3}
    assert await dump(redis) == state_before


async def test_party_at_the_limit_is_admitted(counters: Counters) -> None:
    await build(counters, day_plan(party_max=3))
    assert await take(counters, ["a", "b", "c"]) == Allocation((1, 2, 3), (1, 2, 3))


# fail closed -----------------------------------------------------------------------------


async def test_allocate_without_counters_fails_closed_and_creates_no_key(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(), NEXT_DAY)
    keys_before = sorted(await redis.keys("*"))
    with pytest.raises(CapacityUnavailable) as refused:
        await take(counters, ["a"])
    assert refused.value.headers == {"Retry-After": "1"}
    assert sorted(await redis.keys("*")) == keys_before
    assert not [key for key in keys_before if "test-site:2026-12-01" in key]


async def test_allocate_after_forget_fails_closed_and_writes_nothing(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan())
    await take(counters, ["a"])
    await counters.forget(DAY)
    state_before = await dump(redis)
    assert DAY.epoch not in state_before
    with pytest.raises(CapacityUnavailable):
        await take(counters, ["b"])
    assert await dump(redis) == state_before


async def test_allocate_on_an_unknown_slot_is_not_counted(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(slot_plan("0900")))
    state_before = await dump(redis)
    with pytest.raises(SlotNotCounted):
        await take(counters, ["a"], "1000")
    assert await dump(redis) == state_before


async def test_unreachable_redis_fails_closed() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1", decode_responses=True)
    try:
        counters = Counters(unreachable)
        with pytest.raises(CapacityUnavailable) as refused:
            await take(counters, ["a"])
        assert refused.value.headers == {"Retry-After": "1"}
    finally:
        await unreachable.aclose()


async def test_is_built_follows_rebuild_and_forget(counters: Counters) -> None:
    assert await counters.is_built(DAY) is False
    await build(counters, day_plan())
    assert await counters.is_built(DAY) is True
    await counters.forget(DAY)
    assert await counters.is_built(DAY) is False


# release ---------------------------------------------------------------------------------


async def test_release_returns_units_and_ids(counters: Counters) -> None:
    await build(counters, day_plan())
    await take(counters, ["a"])
    allocation = await take(counters, ["b", "c"])
    freed = await counters.release(
        DAY,
        "0900",
        slot_units=allocation.slot_units,
        day_units=allocation.day_units,
        visitor_ids=["b", "c"],
    )
    assert freed == (2, 2)
    assert await used(counters) == (1, 1)
    assert counted(await counters.snapshot(DAY)) == Counted(
        day_taken=frozenset({1}),
        slot_taken={"0900": frozenset({1})},
        visitor_ids=frozenset({"a"}),
        day_cap=100,
        slot_caps={"0900": 10},
    )


async def test_release_twice_frees_once(counters: Counters) -> None:
    await build(counters, day_plan())
    allocation = await take(counters, ["a", "b"])
    first = await counters.release(
        DAY, "0900", slot_units=allocation.slot_units, day_units=allocation.day_units
    )
    second = await counters.release(
        DAY, "0900", slot_units=allocation.slot_units, day_units=allocation.day_units
    )
    assert (first, second) == ((2, 2), (0, 0))
    assert await used(counters) == (0, 0)


async def test_release_of_units_never_taken_frees_nothing(counters: Counters) -> None:
    await build(counters, day_plan())
    await take(counters, ["a"])
    assert await counters.release(DAY, "0900", slot_units=[0, 7], day_units=[7]) == (0, 0)
    assert await used(counters) == (1, 1)


async def test_release_after_counters_were_forgotten_does_nothing(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan())
    allocation = await take(counters, ["a"])
    await counters.forget(DAY)
    state_before = await dump(redis)
    freed = await counters.release(
        DAY,
        "0900",
        slot_units=allocation.slot_units,
        day_units=allocation.day_units,
        visitor_ids=["a"],
    )
    assert freed == (0, 0)
    assert await dump(redis) == state_before


# rebuild ---------------------------------------------------------------------------------


async def test_rebuild_sets_the_epoch(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan())
    assert await redis.get(DAY.epoch) == "1"


async def test_rebuild_with_gaps_counts_them_free(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(slot_plan(taken=[1, 2, 5]), taken=[1, 2, 5]))
    slot = await redis.hgetall(DAY.slot("0900"))
    assert (slot["hwm"], slot["used"]) == ("5", "3")
    assert await redis.zrange(DAY.slot_free("0900"), 0, -1) == ["3", "4"]
    day = await redis.hgetall(DAY.day)
    assert (day["hwm"], day["used"]) == ("5", "3")
    assert await redis.zrange(DAY.day_free, 0, -1) == ["3", "4"]


async def test_after_a_rebuild_gaps_are_taken_before_new_units(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(taken=[1, 2, 5]), taken=[1, 2, 5]))
    assert await take(counters, ["a"]) == Allocation((3,), (3,))
    assert await take(counters, ["b"]) == Allocation((4,), (4,))
    assert await take(counters, ["c"]) == Allocation((6,), (6,))


async def test_rebuild_replaces_previous_counters(counters: Counters) -> None:
    await build(counters, day_plan())
    await take(counters, ["a", "b", "c"])
    await build(counters, day_plan(slot_plan(taken=[2]), taken=[2], ids=["b"]))
    assert counted(await counters.snapshot(DAY)) == Counted(
        day_taken=frozenset({2}),
        slot_taken={"0900": frozenset({2})},
        visitor_ids=frozenset({"b"}),
        day_cap=100,
        slot_caps={"0900": 10},
    )
    assert await take(counters, ["a"]) == Allocation((1,), (1,))


# capacity changes ------------------------------------------------------------------------


async def test_lowering_a_cap_below_use_cancels_nobody_and_stops_sales(
    counters: Counters,
) -> None:
    await build(counters, day_plan(slot_plan(cap=5)))
    await take(counters, ["a", "b", "c", "d", "e"])
    assert await counters.set_slot_capacity(DAY, "0900", 3) is True
    assert await used(counters) == (5, 5)
    with pytest.raises(SoldOut) as refused:
        await take(counters, ["f"])
    assert refused.value.extra == {"slot_left": 0, "day_left": 95}


async def test_after_a_lowered_cap_sales_resume_under_the_new_cap(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=5)))
    await take(counters, ["a", "b", "c", "d", "e"])
    await counters.set_slot_capacity(DAY, "0900", 3)
    await counters.release(DAY, "0900", slot_units=[5, 4, 2], day_units=[5, 4, 2])
    assert await used(counters) == (2, 2)
    allocation = await take(counters, ["f"])
    assert allocation.slot_units == (2,)
    assert allocation.slot_units[0] <= 3
    with pytest.raises(SoldOut):
        await take(counters, ["g"])


async def test_free_units_above_a_lowered_cap_are_never_handed_out(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=5)))
    await take(counters, ["a", "b", "c", "d", "e"])
    await counters.release(DAY, "0900", slot_units=[5, 4, 1], day_units=[])
    await counters.set_slot_capacity(DAY, "0900", 3)
    assert (await take(counters, ["f"])).slot_units == (1,)
    with pytest.raises(SoldOut):
        await take(counters, ["g"])
    snapshot = await counters.snapshot(DAY)
    assert snapshot is not None
    assert snapshot.slot_taken == {"0900": frozenset({1, 2, 3})}


async def test_raising_a_cap_admits_more(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=1)))
    await take(counters, ["a"])
    assert await counters.set_slot_capacity(DAY, "0900", 2) is True
    assert await take(counters, ["b"]) == Allocation((2,), (2,))


async def test_set_day_capacity_changes_the_day_cap(counters: Counters) -> None:
    await build(counters, day_plan(cap=100))
    await take(counters, ["a", "b"])
    assert await counters.set_day_capacity(DAY, 2) is True
    with pytest.raises(SoldOut) as refused:
        await take(counters, ["c"])
    assert refused.value.extra == {"slot_left": 8, "day_left": 0}


async def test_set_capacity_without_epoch_returns_false_and_writes_nothing(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan())
    await counters.forget(DAY)
    state_before = await dump(redis)
    assert await counters.set_slot_capacity(DAY, "0900", 3) is False
    assert await counters.set_day_capacity(DAY, 3) is False
    assert await dump(redis) == state_before


async def test_set_capacity_of_an_unknown_slot_returns_false_and_creates_nothing(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(slot_plan("0900")))
    assert await counters.set_slot_capacity(DAY, "1000", 3) is False
    assert await redis.exists(DAY.slot("1000")) == 0


# load and snapshot -----------------------------------------------------------------------


async def test_load_reports_caps_use_and_times(counters: Counters) -> None:
    later = CLOSES + timedelta(hours=1)
    await build(
        counters,
        day_plan(
            slot_plan("1000", cap=4, taken=[1, 3], closes_at=later),
            slot_plan("0900", cap=10, taken=[2], closed=True),
            cap=50,
            taken=[1, 2, 3],
        ),
    )
    load = await counters.load(DAY)
    assert load is not None
    assert load.opens_at_ms == to_millis(OPENS)
    assert (load.day.cap, load.day.used, load.day.closed) == (50, 3, False)
    assert list(load.slots) == ["0900", "1000"]  # ordered by start minute
    assert load.slots == {
        "0900": Load(cap=10, used=1, closed=True, closes_at_ms=to_millis(CLOSES)),
        "1000": Load(cap=4, used=2, closed=False, closes_at_ms=to_millis(later)),
    }
    assert (load.left_in("0900"), load.left_in("1000"), load.left_in("1100")) == (0, 2, 0)
    assert load.on_sale("1000", NOW) is True
    assert load.on_sale("1000", later) is False


async def test_load_of_the_day_carries_no_closing_time(counters: Counters) -> None:
    await build(counters, day_plan(cap=50))
    assert await counters.load(DAY) == DayLoad(
        day=Load(cap=50, used=0, closed=False, closes_at_ms=0),
        opens_at_ms=to_millis(OPENS),
        slots={"0900": Load(cap=10, used=0, closed=False, closes_at_ms=to_millis(CLOSES))},
        party_max=5,
        owner_max=1_000_000,
    )


async def test_load_of_a_closed_day_offers_nothing(counters: Counters) -> None:
    await build(counters, day_plan(closed=True))
    load = await counters.load(DAY)
    assert load is not None
    assert load.day.closed is True
    assert load.left_in("0900") == 0


async def test_snapshot_lists_taken_units_and_ids(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan("0900"), slot_plan("1000", cap=4), cap=50))
    await take(counters, ["a", "b"], "0900")
    await take(counters, ["c"], "1000")
    await counters.release(DAY, "0900", slot_units=[1], day_units=[1], visitor_ids=["a"])
    assert counted(await counters.snapshot(DAY)) == Counted(
        day_taken=frozenset({2, 3}),
        slot_taken={"0900": frozenset({2}), "1000": frozenset({1})},
        visitor_ids=frozenset({"b", "c"}),
        day_cap=50,
        slot_caps={"0900": 10, "1000": 4},
    )


async def test_load_and_snapshot_without_counters_are_none(counters: Counters) -> None:
    await build(counters, day_plan())
    await counters.forget(DAY)
    assert await counters.load(DAY) is None
    assert await counters.snapshot(DAY) is None
    assert await counters.load(NEXT_DAY) is None


async def test_rebuild_drops_slots_gone_from_sql(counters: Counters, redis: Redis) -> None:
    await counters.rebuild(DAY, day_plan(slot_plan("0900"), slot_plan("1000")), epoch="1")

    await counters.rebuild(DAY, day_plan(slot_plan("0900")), epoch="2")

    with pytest.raises(SlotNotCounted):
        await counters.allocate(DAY, "1000", ["a"], now=NOW)
    assert await redis.exists(DAY.slot("1000"), DAY.slot_free("1000")) == 0
    load = await counters.load(DAY)
    assert load is not None
    assert list(load.slots) == ["0900"]


# leases --------------------------------------------------------------------------------------


async def test_a_lease_is_held_by_one_holder_at_a_time(counters: Counters, redis: Redis) -> None:
    async with counters.lease("tg:moving:r1", ttl_ms=30_000) as first:
        async with (
            counters.lease("tg:moving:r1", ttl_ms=30_000) as second,
            counters.lease("tg:moving:r2", ttl_ms=30_000) as other,
        ):
            assert (first, second, other) == (True, False, True)
        # The refused one did not free the holder's lease on leaving.
        assert await redis.exists("tg:moving:r1") == 1
    assert await redis.exists("tg:moving:r1", "tg:moving:r2") == 0


async def test_a_lease_that_outlived_its_ttl_leaves_the_next_holders_alone(
    counters: Counters, redis: Redis
) -> None:
    first = counters.lease("tg:moving:r1", ttl_ms=30_000)
    assert await first.__aenter__()
    await redis.delete("tg:moving:r1")  # as if its TTL ran out
    async with counters.lease("tg:moving:r1", ttl_ms=30_000) as second:
        assert second
        token = await redis.get("tg:moving:r1")
        await first.__aexit__(None, None, None)
        # The first left the second's lease in place: only its own holder frees it.
        assert await redis.get("tg:moving:r1") == token
        assert 0 < await redis.pttl("tg:moving:r1") <= 30_000
    assert await redis.exists("tg:moving:r1") == 0
