"""move.lua through `Counters.move`, against a real Redis (never a fake).

Within one site-day a party moves in one step: the new slot's units are taken (the lowest
freed first, then above the high-water mark) and the old slot's given back, idempotently;
the day's units, the visitors' ID hashes and the owners' counts stay as they are. A refusal
writes nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from capacity.counters import Counters, DayPlan, SlotPlan, Snapshot
from capacity.errors import (
    CapacityUnavailable,
    OutsideBookingWindow,
    SiteClosed,
    SlotNotCounted,
    SoldOut,
    TidegateError,
)
from capacity.keys import SiteDay

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
OPENS = NOW - timedelta(days=1)
CLOSES = NOW + timedelta(hours=6)
DAY = SiteDay("test-site", date(2026, 12, 1))
NEXT_DAY = SiteDay("test-site", date(2026, 12, 2))


def slot_plan(
    key: str,
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
    opens_at: datetime = OPENS,
    owners: dict[str, list[str]] | None = None,
) -> DayPlan:
    return DayPlan(
        cap=cap,
        opens_at=opens_at,
        closed=closed,
        party_max=5,
        owner_max=3,
        taken=taken,
        visitor_ids=ids,
        slots=slots or (slot_plan("0900"), slot_plan("1000")),
        owners=owners or {},
    )


@pytest.fixture
def counters(redis: Redis) -> Counters:
    return Counters(redis)


async def build(counters: Counters, plan: DayPlan, site_day: SiteDay = DAY) -> None:
    await counters.rebuild(site_day, plan, epoch="1")


async def move(
    counters: Counters,
    units: Sequence[int],
    old: str = "0900",
    new: str = "1000",
    *,
    now: datetime = NOW,
    site_day: SiteDay = DAY,
) -> tuple[int, ...]:
    return await counters.move(site_day, old, new, slot_units=list(units), now=now)


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


async def slot_state(redis: Redis, key: str, site_day: SiteDay = DAY) -> tuple[int, int, list[int]]:
    """A slot's (used, high-water mark, freed units in order)."""
    return await _state(redis, site_day.slot(key), site_day.slot_free(key))


async def day_state(redis: Redis, site_day: SiteDay = DAY) -> tuple[int, int, list[int]]:
    """The day's (used, high-water mark, freed units in order)."""
    return await _state(redis, site_day.day, site_day.day_free)


async def _state(redis: Redis, hash_key: str, free_key: str) -> tuple[int, int, list[int]]:
    used, hwm = await redis.hmget(hash_key, "used", "hwm")
    free = await redis.zrange(free_key, 0, -1)
    return int(str(used)), int(str(hwm)), [int(str(unit)) for unit in free]


async def snapshot(counters: Counters, site_day: SiteDay = DAY) -> Snapshot:
    taken = await counters.snapshot(site_day)
    assert taken is not None
    return taken


# moving ----------------------------------------------------------------------------------


async def test_a_move_takes_new_units_and_gives_the_old_ones_back(
    counters: Counters, redis: Redis
) -> None:
    await build(
        counters,
        day_plan(
            slot_plan("0900", taken=[1, 2, 3]),
            slot_plan("1000"),
            taken=[1, 2, 3],
            ids=["a", "b", "c"],
            owners={"alice": ["r1"], "bob": ["r2"]},
        ),
    )
    before = await snapshot(counters)

    assert await move(counters, [2, 3]) == (1, 2)

    assert await slot_state(redis, "0900") == (1, 3, [2, 3])
    assert await slot_state(redis, "1000") == (2, 2, [])
    # The same visit, later: day units, ID hashes and owners' counts untouched.
    assert await day_state(redis) == (3, 3, [])
    after = await snapshot(counters)
    assert after.slot_taken == {"0900": frozenset({1}), "1000": frozenset({1, 2})}
    assert (after.day_taken, after.visitor_ids, after.owners, after.settings) == (
        before.day_taken,
        before.visitor_ids,
        before.owners,
        before.settings,
    )
    load = await counters.load(DAY)
    assert load is not None
    assert (load.day.used, load.slots["0900"].used, load.slots["1000"].used) == (3, 1, 2)


async def test_a_move_takes_the_lowest_freed_units_first_then_above_the_high_water_mark(
    counters: Counters, redis: Redis
) -> None:
    await build(
        counters,
        day_plan(
            slot_plan("0900", taken=[1, 2, 3]),
            slot_plan("1000", taken=[2, 4, 5]),  # 1 and 3 freed below the mark (5)
            taken=[1, 2, 3, 4, 5, 6],
        ),
    )

    assert await move(counters, [3, 1, 2]) == (1, 3, 6)

    assert await slot_state(redis, "1000") == (6, 6, [])
    assert await slot_state(redis, "0900") == (0, 3, [1, 2, 3])
    assert await day_state(redis) == (6, 6, [])
    # And back: the freed units of 09:00, lowest first, in the party's order.
    assert await move(counters, [1, 3, 6], "1000", "0900") == (1, 2, 3)
    assert await slot_state(redis, "1000") == (3, 6, [1, 3, 6])
    assert await slot_state(redis, "0900") == (3, 3, [])


async def test_a_lowered_cap_bounds_the_units_a_move_takes(
    counters: Counters, redis: Redis
) -> None:
    await build(
        counters,
        day_plan(slot_plan("0900", taken=[1]), slot_plan("1000", cap=10, taken=[1, 9])),
    )
    assert await counters.set_slot_capacity(DAY, "1000", 4)

    assert await move(counters, [1]) == (2,)
    assert await move(counters, [2], "1000", "0900") == (1,)  # back, and
    assert await move(counters, [1], "0900", "1000") == (2,)  # again: 2 is lowest
    with pytest.raises(SoldOut) as refused:
        await move(counters, [7, 8], "0900", "1000")
    assert refused.value.extra == {"slot_left": 1, "day_left": 100}
    assert await slot_state(redis, "1000") == (3, 9, [3, 4, 5, 6, 7, 8])


async def test_a_party_may_fill_a_slot_exactly_even_on_a_full_day(
    counters: Counters, redis: Redis
) -> None:
    # The day is full, and stays so: the party keeps its day units.
    await build(
        counters,
        day_plan(
            slot_plan("0900", taken=[1, 2, 3]),
            slot_plan("1000", cap=5, taken=[1, 2]),
            cap=5,
            taken=[1, 2, 3, 4, 5],
        ),
    )

    assert await move(counters, [1, 2, 3]) == (3, 4, 5)

    assert await slot_state(redis, "1000") == (5, 5, [])
    assert await day_state(redis) == (5, 5, [])
    load = await counters.load(DAY)
    assert load is not None
    assert load.left_in("1000") == 0
    assert load.left_in("0900") == 0  # the day is full: nobody else gets in


async def test_giving_back_units_already_free_frees_nothing_twice(
    counters: Counters, redis: Redis
) -> None:
    await build(
        counters,
        day_plan(slot_plan("0900", taken=[1, 2, 4]), slot_plan("1000"), taken=[1, 2, 3]),
    )

    # Unit 3 is already free, 7 above the mark, 0 and -1 are no units: only 1 goes back.
    assert await move(counters, [1, 3, 7, 0, -1]) == (1, 2, 3, 4, 5)
    assert await slot_state(redis, "0900") == (2, 4, [1, 3])
    assert await slot_state(redis, "1000") == (5, 5, [])

    # The same old units a second time (a retried move): new units are taken again, but
    # nothing more is given back; rebuilding from SQL returns such a second move's units.
    assert await move(counters, [1]) == (6,)
    assert await slot_state(redis, "0900") == (2, 4, [1, 3])
    assert await slot_state(redis, "1000") == (6, 6, [])
    assert await day_state(redis) == (3, 3, [])


async def test_a_move_from_a_slot_the_counters_no_longer_have_gives_nothing_back(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(slot_plan("1000", taken=[1]), taken=[1, 2]))

    assert await move(counters, [1, 2], "0900", "1000") == (2, 3)

    assert await slot_state(redis, "1000") == (3, 3, [])
    assert await redis.exists(DAY.slot("0900"), DAY.slot_free("0900")) == 0
    assert await day_state(redis) == (2, 2, [])


async def test_a_move_touches_only_its_own_site_day(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(slot_plan("0900", taken=[1]), slot_plan("1000"), taken=[1]))
    await build(
        counters,
        day_plan(slot_plan("0900", taken=[1]), slot_plan("1000"), taken=[1]),
        NEXT_DAY,
    )
    other_day = {k: v for k, v in (await dump(redis)).items() if str(NEXT_DAY) in k}

    assert await move(counters, [1]) == (1,)

    assert {k: v for k, v in (await dump(redis)).items() if str(NEXT_DAY) in k} == other_day


# refusals: nothing written ---------------------------------------------------------------


async def assert_refused(
    counters: Counters,
    redis: Redis,
    error: type[TidegateError],
    units: Sequence[int] = (1, 2),
    new: str = "1000",
    *,
    now: datetime = NOW,
) -> TidegateError:
    """The move raises `error` and Redis holds exactly what it held before."""
    before = await dump(redis)
    with pytest.raises(error) as refused:
        await move(counters, units, "0900", new, now=now)
    assert await dump(redis) == before
    return refused.value


def occupied() -> DayPlan:
    """09:00 holds the party (units 1, 2); 10:00 holds 8 of its 10 places."""
    return day_plan(
        slot_plan("0900", taken=[1, 2]),
        slot_plan("1000", taken=range(1, 9)),
        taken=range(1, 11),
        ids=[f"id-{n}" for n in range(10)],
        owners={"alice": ["r1", "r2"]},
    )


async def test_without_counters_a_move_is_unavailable(counters: Counters, redis: Redis) -> None:
    await build(counters, occupied())
    await counters.forget(DAY)

    refused = await assert_refused(counters, redis, CapacityUnavailable)

    assert refused.detail == f"counters of {DAY} are being rebuilt"


async def test_a_slot_the_counters_do_not_have_is_refused(counters: Counters, redis: Redis) -> None:
    await build(counters, occupied())

    await assert_refused(counters, redis, SlotNotCounted, new="1100")


@pytest.mark.parametrize(
    "plan",
    [
        day_plan(slot_plan("0900", taken=[1, 2]), slot_plan("1000"), taken=[1, 2], closed=True),
        day_plan(slot_plan("0900", taken=[1, 2]), slot_plan("1000", closed=True), taken=[1, 2]),
        # Closed and full: the closure is what is said.
        day_plan(
            slot_plan("0900", taken=[1, 2]),
            slot_plan("1000", cap=1, taken=[1], closed=True),
            taken=[1, 2, 3],
        ),
    ],
    ids=["day", "slot", "slot-and-full"],
)
async def test_a_closed_day_or_slot_is_refused(
    counters: Counters, redis: Redis, plan: DayPlan
) -> None:
    await build(counters, plan)

    await assert_refused(counters, redis, SiteClosed)


async def test_before_sales_open_a_move_is_refused(counters: Counters, redis: Redis) -> None:
    opens = NOW + timedelta(minutes=1)
    await build(
        counters,
        day_plan(slot_plan("0900", taken=[1, 2]), slot_plan("1000"), taken=[1, 2], opens_at=opens),
    )

    refused = await assert_refused(counters, redis, OutsideBookingWindow)

    assert refused.extra == {"sales_open_at": opens, "sales_close_at": CLOSES}
    # From the very millisecond sales open, it moves.
    assert await move(counters, [1, 2], now=opens) == (1, 2)


async def test_once_the_new_slot_closed_its_sales_a_move_is_refused(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, occupied())

    refused = await assert_refused(counters, redis, OutsideBookingWindow, now=CLOSES)

    assert refused.extra == {"sales_open_at": OPENS, "sales_close_at": CLOSES}
    await assert_refused(counters, redis, OutsideBookingWindow, now=CLOSES + timedelta(hours=1))
    assert await move(counters, [1, 2], now=CLOSES - timedelta(milliseconds=1)) == (9, 10)


async def test_a_party_that_does_not_fit_is_refused_with_what_is_left(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, occupied())

    refused = await assert_refused(counters, redis, SoldOut, units=[1, 2, 3])

    assert refused.extra == {"slot_left": 2, "day_left": 90}
    assert refused.detail == "3 asked for; left: 2 in this slot, 90 this day"
    # Two fit exactly.
    assert await move(counters, [1, 2]) == (9, 10)
    assert await slot_state(redis, "1000") == (10, 10, [])
    full = await assert_refused(counters, redis, SoldOut, units=[1], new="1000")
    assert full.extra == {"slot_left": 0, "day_left": 90}
