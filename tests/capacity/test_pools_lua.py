"""room.lua's rules through allocate.lua, release.lua, move.lua and rebuild.lua, against a
real Redis (never a fake).

A day's `release` puts floor(cap × cumulative share) of every cap on sale at each batch; a
slot's pools keep places for their channels until `pool_until`, the other channels sharing
the rest; places given back with a `back_at` stay off sale until then. Each test counts the
places a channel can still take by taking them one by one until refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from capacity.clock import to_millis
from capacity.counters import (
    Allocation,
    Counters,
    DayPlan,
    SlotPlan,
    release_field,
    released_share,
)
from capacity.errors import SoldOut
from capacity.keys import SiteDay

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
OPENS = NOW - timedelta(days=1)
CLOSES = NOW + timedelta(days=8)
DAY = SiteDay("test-site", date(2026, 12, 8))
FIRST = NOW + timedelta(hours=10)  # the first batch: 60%
LAST = NOW + timedelta(days=6)  # the last batch: the other 40%
MS = timedelta(milliseconds=1)

_numbers = itertools.count()


def slot_plan(
    key: str = "0900",
    *,
    cap: int = 10,
    pools: dict[str, int] | None = None,
    pools_until: datetime | None = None,
    taken: Sequence[int] = (),
    pool_used: dict[str, int] | None = None,
    by_pool: dict[str, str] | None = None,
    returns: Sequence[tuple[str, datetime]] = (),
) -> SlotPlan:
    return SlotPlan(
        key=key,
        start_minute=int(key[:2]) * 60 + int(key[2:]),
        cap=cap,
        closes_at=CLOSES,
        closed=False,
        taken=taken,
        pools=pools or {},
        pools_until=pools_until,
        pool_used=pool_used or {},
        by_pool=by_pool or {},
        returns=returns,
    )


def day_plan(
    *slots: SlotPlan,
    cap: int = 100,
    opens_at: datetime = OPENS,
    release: str = "",
    taken: Sequence[int] = (),
    returns: Sequence[tuple[str, datetime]] = (),
) -> DayPlan:
    return DayPlan(
        cap=cap,
        opens_at=opens_at,
        closed=False,
        party_max=5,
        taken=taken,
        slots=slots or (slot_plan(),),
        release=release,
        returns=returns,
    )


TWO_BATCHES = release_field([(FIRST, 0.6), (LAST, 0.4)])


@pytest.fixture
def counters(redis: Redis) -> Counters:
    return Counters(redis)


async def build(counters: Counters, plan: DayPlan) -> None:
    await counters.rebuild(DAY, plan, epoch="1")


async def sell(
    counters: Counters,
    party: int,
    *,
    channel: str = "online",
    slot: str = "0900",
    now: datetime = NOW,
    reservation: str | None = None,
) -> Allocation:
    ids = [f"id-{next(_numbers)}" for _ in range(party)]
    return await counters.allocate(
        DAY,
        slot,
        ids,
        now=now,
        reservation=reservation or f"r-{next(_numbers)}",
        channel=channel,
    )


async def fill(
    counters: Counters, channel: str = "online", slot: str = "0900", *, now: datetime = NOW
) -> int:
    """Take single places for a channel until it is refused sold-out: how many it took."""
    taken = 0
    while True:
        try:
            await sell(counters, 1, channel=channel, slot=slot, now=now)
        except SoldOut:
            return taken
        taken += 1
        assert taken <= 1000, "never sold out"


async def refusal(
    counters: Counters, channel: str = "online", slot: str = "0900", *, now: datetime = NOW
) -> tuple[int, int]:
    """The (slot_left, day_left) of a refused single place."""
    with pytest.raises(SoldOut) as refused:
        await sell(counters, 1, channel=channel, slot=slot, now=now)
    return refused.value.extra["slot_left"], refused.value.extra["day_left"]


# the release field -------------------------------------------------------------------------


def test_release_field_lists_cumulative_shares_in_time_order() -> None:
    field = release_field([(LAST, 0.4), (FIRST, 0.6)])

    assert field == f"{to_millis(FIRST)}:600000 {to_millis(LAST)}:1000000"
    assert released_share(field, to_millis(FIRST) - 1) == 0
    assert released_share(field, to_millis(FIRST)) == 600_000
    assert released_share(field, to_millis(LAST)) == 1_000_000
    assert released_share("", to_millis(NOW)) == 1_000_000
    # Shares that do not add up exactly in floating point still end at the whole cap.
    thirds = release_field([(FIRST, 0.1), (FIRST + MS, 0.2), (LAST, 0.7)])
    assert thirds.split()[-1] == f"{to_millis(LAST)}:1000000"


# release batches ---------------------------------------------------------------------------


async def test_each_batch_sells_the_floor_of_its_cumulative_share_of_slot_and_day(
    counters: Counters,
) -> None:
    await build(
        counters,
        day_plan(
            slot_plan("0900", cap=7),
            slot_plan("1000", cap=7),
            cap=10,
            opens_at=FIRST,
            release=TWO_BATCHES,
        ),
    )

    assert await fill(counters, slot="0900", now=FIRST) == 4  # floor(7 × 0.6)
    assert await fill(counters, slot="1000", now=FIRST) == 2  # the day's floor(10 × 0.6) − 4
    assert await refusal(counters, slot="1000", now=LAST - MS) == (2, 0)

    assert await fill(counters, slot="0900", now=LAST) == 3
    assert await fill(counters, slot="1000", now=LAST) == 1  # the day's 10 − 9
    assert await refusal(counters, slot="1000", now=LAST) == (4, 0)


async def test_each_pool_is_released_in_the_same_share(counters: Counters) -> None:
    slot = slot_plan(cap=20, pools={"window": 5})
    await build(counters, day_plan(slot, opens_at=FIRST, release=TWO_BATCHES))

    assert await fill(counters, "window", now=FIRST) == 3  # floor(5 × 0.6)
    assert await fill(counters, "online", now=FIRST) == 9  # floor(20 × 0.6) − 3

    assert await fill(counters, "window", now=LAST) == 2
    assert await fill(counters, "online", now=LAST) == 6


# pools -------------------------------------------------------------------------------------


async def test_channels_without_a_pool_share_what_the_pools_do_not_keep(
    counters: Counters,
) -> None:
    # The window has no pool here: it sells from the general share, as online does.
    await build(counters, day_plan(slot_plan(cap=10, pools={"group": 4})))

    await sell(counters, 3, channel="online")
    assert await fill(counters, "window") == 3
    assert await refusal(counters, "window") == (0, 94)
    assert await refusal(counters, "online") == (0, 94)
    load = await counters.load(DAY, now=NOW)
    assert load is not None
    assert (load.slots["0900"].used, load.slots["0900"].pool_used) == (6, 0)


async def test_a_full_pool_does_not_spill_into_the_general_share(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=10, pools={"window": 4})))

    assert await fill(counters, "window") == 4

    assert await refusal(counters, "window") == (0, 96)
    assert await fill(counters, "online") == 6


async def test_after_pool_until_any_channel_takes_any_unsold_place(counters: Counters) -> None:
    rolls_over = NOW + timedelta(hours=1)
    slot = slot_plan(cap=10, pools={"window": 4}, pools_until=rolls_over)
    await build(counters, day_plan(slot))
    await sell(counters, 1, channel="window")
    assert await fill(counters, "online", now=rolls_over - MS) == 6

    assert await fill(counters, "online", now=rolls_over) == 3
    assert await fill(counters, "window", now=rolls_over) == 0


# refunds off sale --------------------------------------------------------------------------


async def test_places_given_back_with_back_at_stay_off_sale_until_then(
    counters: Counters,
) -> None:
    await build(counters, day_plan(slot_plan(cap=3)))
    sold = await sell(counters, 3, reservation="r1")
    back = NOW + timedelta(minutes=30)

    freed = await counters.release(
        DAY,
        "0900",
        slot_units=sold.slot_units,
        day_units=sold.day_units,
        reservation="r1",
        back_at=back,
    )

    assert freed == (3, 3)
    assert await refusal(counters, now=back - MS) == (0, 97)
    assert await fill(counters, now=back) == 3


async def test_a_refunded_pool_party_keeps_its_places_in_its_pool(counters: Counters) -> None:
    await build(counters, day_plan(slot_plan(cap=10, pools={"window": 4})))
    sold = await sell(counters, 2, channel="window", reservation="r1")
    back = NOW + timedelta(minutes=30)
    await counters.release(
        DAY,
        "0900",
        slot_units=sold.slot_units,
        day_units=sold.day_units,
        reservation="r1",
        back_at=back,
    )

    assert await fill(counters, "window") == 2
    assert await fill(counters, "online") == 6
    assert await fill(counters, "window", now=back) == 2


async def test_releasing_a_pool_party_twice_gives_its_pool_places_back_once(
    counters: Counters,
) -> None:
    await build(counters, day_plan(slot_plan(cap=10, pools={"window": 4})))
    sold = await sell(counters, 2, channel="window", reservation="r1")

    for expected in ((2, 2), (0, 0)):
        freed = await counters.release(
            DAY, "0900", slot_units=sold.slot_units, day_units=sold.day_units, reservation="r1"
        )
        assert freed == expected

    assert await fill(counters, "window") == 4
    load = await counters.load(DAY, now=NOW)
    assert load is not None
    assert (load.slots["0900"].used, load.slots["0900"].pool_used) == (4, 4)


# moves and rebuilds ------------------------------------------------------------------------


async def test_a_move_takes_the_new_slots_pool_and_gives_the_old_one_back(
    counters: Counters,
) -> None:
    pools = {"window": 4}
    await build(counters, day_plan(slot_plan("0900", pools=pools), slot_plan("1000", pools=pools)))
    sold = await sell(counters, 3, channel="window", reservation="r1")

    await counters.move(
        DAY, "0900", "1000", slot_units=sold.slot_units, now=NOW, reservation="r1", channel="window"
    )

    assert await fill(counters, "window", "0900") == 4
    assert await fill(counters, "window", "1000") == 1
    assert await fill(counters, "online", "1000") == 6


async def test_a_rebuild_restores_pool_use_pool_members_and_refunds_off_sale(
    counters: Counters,
) -> None:
    back = NOW + timedelta(minutes=30)
    slot = slot_plan(
        cap=10,
        pools={"window": 4},
        taken=[1, 2, 3],  # r1's two window places and one online place
        pool_used={"window": 2},
        by_pool={"r1": "window"},
        returns=[("r9:2:online", back)],
    )
    await build(counters, day_plan(slot, taken=[1, 2, 3], returns=[("r9:2:online", back)]))

    assert await fill(counters, "window") == 2
    assert await fill(counters, "online") == 3  # 10 − 4 kept − 1 sold − 2 off sale
    assert await fill(counters, "online", now=back) == 2
    # r1 gives its places back to the window's pool.
    await counters.release(DAY, "0900", slot_units=[1, 2], day_units=[1, 2], reservation="r1")
    assert await fill(counters, "window", now=back) == 2
