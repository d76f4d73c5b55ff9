"""Per-account limits in the counters: allocate.lua's owners hash, release.lua, rebuild.lua
and claim_hold.lua, through `Counters`, against a real Redis (never a fake)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from capacity.counters import Allocation, Counters, DayPlan, SlotPlan
from capacity.errors import AccountLimitReached, SoldOut
from capacity.keys import SiteDay, open_holds

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DAY = SiteDay("test-site", date(2026, 12, 1))
NEXT_DAY = SiteDay("test-site", date(2026, 12, 2))
TTL = timedelta(minutes=15)


def slot_plan(key: str = "0900", *, cap: int = 10, taken: Sequence[int] = ()) -> SlotPlan:
    return SlotPlan(
        key=key,
        start_minute=int(key[:2]) * 60 + int(key[2:]),
        cap=cap,
        closes_at=NOW + timedelta(hours=6),
        closed=False,
        taken=taken,
    )


def day_plan(
    *slots: SlotPlan,
    owner_max: int = 2,
    owners: dict[str, list[str]] | None = None,
    taken: Sequence[int] = (),
    ids: Sequence[str] = (),
) -> DayPlan:
    return DayPlan(
        cap=100,
        opens_at=NOW - timedelta(days=1),
        closed=False,
        party_max=5,
        owner_max=owner_max,
        taken=taken,
        visitor_ids=ids,
        slots=slots or (slot_plan(),),
        owners=owners or {},
    )


@pytest.fixture
def counters(redis: Redis) -> Counters:
    return Counters(redis)


async def build(counters: Counters, plan: DayPlan, site_day: SiteDay = DAY) -> None:
    await counters.rebuild(site_day, plan, epoch="1")


async def take(
    counters: Counters,
    ids: Sequence[str],
    *,
    owner: str = "alice",
    reservation: str,
    slot: str = "0900",
    site_day: SiteDay = DAY,
) -> Allocation:
    return await counters.allocate(
        site_day, slot, list(ids), now=NOW, owner=owner, reservation=reservation
    )


async def give_back(
    counters: Counters,
    allocation: Allocation,
    ids: Sequence[str],
    *,
    owner: str = "alice",
    reservation: str,
    slot: str = "0900",
) -> tuple[int, int]:
    return await counters.release(
        DAY,
        slot,
        slot_units=allocation.slot_units,
        day_units=allocation.day_units,
        visitor_ids=ids,
        owner=owner,
        reservation=reservation,
    )


async def owned(redis: Redis, owner: str = "alice", site_day: SiteDay = DAY) -> list[str] | None:
    """The reservations counted against an owner, in order; None without an entry."""
    ids = await redis.hget(site_day.owners, owner)
    return None if ids is None else str(ids).split()


async def used(counters: Counters, slot: str = "0900") -> tuple[int, int]:
    load = await counters.load(DAY)
    assert load is not None
    return load.slots[slot].used, load.day.used


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


# the day limit in allocate.lua -----------------------------------------------------------


async def test_allocate_counts_each_reservation_against_its_owner(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=3))

    await take(counters, ["a", "b"], reservation="r1")
    await take(counters, ["c"], reservation="r2")

    assert await owned(redis) == ["r1", "r2"]
    assert await used(counters) == (3, 3)


async def test_an_owner_at_the_limit_is_refused_and_nothing_is_written(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=2))
    await take(counters, ["a"], reservation="r1")
    await take(counters, ["b", "c"], reservation="r2")
    before = await dump(redis)

    with pytest.raises(AccountLimitReached) as refused:
        await take(counters, ["d"], reservation="r3")

    assert refused.value.extra == {"limit": 2, "per": "site-day"}
    assert refused.value.detail == (
        "this account has reached its limit of 2 reservations at test-site on 2026-12-01"
    )
    assert refused.value.status == 409
    assert refused.value.code == "account-limit"
    assert await dump(redis) == before
    assert await used(counters) == (3, 3)
    assert await owned(redis) == ["r1", "r2"]


async def test_the_day_limit_spans_the_slots_of_the_day_only(
    counters: Counters, redis: Redis
) -> None:
    plan = day_plan(slot_plan("0900"), slot_plan("1000"), owner_max=1)
    await build(counters, plan)
    await build(counters, plan, NEXT_DAY)
    await take(counters, ["a"], reservation="r1", slot="0900")

    with pytest.raises(AccountLimitReached):
        await take(counters, ["b"], reservation="r2", slot="1000")
    await take(counters, ["b"], reservation="r3", slot="1000", site_day=NEXT_DAY)

    assert await owned(redis) == ["r1"]
    assert await owned(redis, site_day=NEXT_DAY) == ["r3"]


async def test_owners_are_counted_apart(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(owner_max=1))
    await take(counters, ["a"], owner="alice", reservation="r1")

    await take(counters, ["b"], owner="bob", reservation="r2")

    with pytest.raises(AccountLimitReached):
        await take(counters, ["c"], owner="alice", reservation="r3")
    assert await redis.hgetall(DAY.owners) == {"alice": "r1", "bob": "r2"}


async def test_allocate_without_an_owner_counts_against_nobody(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=1))

    for i in range(3):
        await take(counters, [f"v{i}"], owner="", reservation=f"r{i}")

    assert await redis.hgetall(DAY.owners) == {}
    assert await used(counters) == (3, 3)


async def test_a_refusal_for_another_reason_does_not_count(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(slot_plan(cap=1), owner_max=2))
    await take(counters, ["a"], reservation="r1")

    with pytest.raises(SoldOut):
        await take(counters, ["b"], reservation="r2")

    assert await owned(redis) == ["r1"]


async def test_many_reservations_of_one_owner_at_once_admit_exactly_the_limit(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=3))

    results = await asyncio.gather(
        *(take(counters, [f"v{i}"], reservation=f"r{i}") for i in range(10)),
        return_exceptions=True,
    )

    assert Counter(type(r).__name__ for r in results) == Counter(
        {"Allocation": 3, "AccountLimitReached": 7}
    )
    admitted = [f"r{i}" for i, r in enumerate(results) if isinstance(r, Allocation)]
    assert sorted(await owned(redis) or []) == sorted(admitted)
    assert await used(counters) == (3, 3)


# release.lua -----------------------------------------------------------------------------


async def test_release_stops_counting_the_reservation(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(owner_max=2))
    first = await take(counters, ["a"], reservation="r1")
    await take(counters, ["b"], reservation="r2")

    assert await give_back(counters, first, ["a"], reservation="r1") == (1, 1)

    assert await owned(redis) == ["r2"]
    await take(counters, ["c"], reservation="r3")
    assert await owned(redis) == ["r2", "r3"]


async def test_releasing_the_same_reservation_twice_removes_it_once(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=3))
    first = await take(counters, ["a"], reservation="r1")
    await take(counters, ["b"], reservation="r2")

    assert await give_back(counters, first, ["a"], reservation="r1") == (1, 1)
    assert await give_back(counters, first, ["a"], reservation="r1") == (0, 0)

    assert await owned(redis) == ["r2"]
    assert await used(counters) == (1, 1)


async def test_releasing_the_last_reservation_drops_the_owner(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan())
    first = await take(counters, ["a"], reservation="r1")

    await give_back(counters, first, ["a"], reservation="r1")

    assert await redis.hexists(DAY.owners, "alice") is False
    assert await redis.hgetall(DAY.owners) == {}


async def test_releasing_a_reservation_the_owner_does_not_count_keeps_the_others(
    counters: Counters, redis: Redis
) -> None:
    await build(counters, day_plan(owner_max=3))
    await take(counters, ["a"], reservation="r1")
    await take(counters, ["b"], reservation="r11")

    await counters.release(DAY, "0900", slot_units=[], day_units=[], owner="alice", reservation="r")
    await counters.release(DAY, "0900", slot_units=[], day_units=[], owner="bob", reservation="r1")

    assert await owned(redis) == ["r1", "r11"]
    assert await owned(redis, "bob") is None


async def test_release_without_counters_writes_nothing(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan())
    first = await take(counters, ["a"], reservation="r1")
    await counters.forget(DAY)
    before = await dump(redis)

    assert await give_back(counters, first, ["a"], reservation="r1") == (0, 0)

    assert await dump(redis) == before


# rebuild.lua -----------------------------------------------------------------------------


async def test_rebuild_restores_the_owners_from_the_plan(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(owner_max=2))
    await take(counters, ["a"], reservation="r1")
    await redis.flushall()

    await build(
        counters,
        day_plan(
            slot_plan(taken=[1, 2]),
            owner_max=2,
            taken=[1, 2],
            ids=["a", "b"],
            owners={"alice": ["r1", "r2"], "bob": ["r9"]},
        ),
    )

    assert await redis.hgetall(DAY.owners) == {"alice": "r1 r2", "bob": "r9"}
    with pytest.raises(AccountLimitReached):
        await take(counters, ["c"], reservation="r3")
    await take(counters, ["c"], owner="bob", reservation="r10")
    load = await counters.load(DAY)
    assert load is not None
    assert load.owner_max == 2
    assert load.settings().day[4] == 2


async def test_rebuild_replaces_owners_sql_does_not_prove(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(owner_max=1))
    await take(counters, ["a"], reservation="r1")
    await take(counters, ["b"], owner="bob", reservation="r2")

    await build(counters, day_plan(owner_max=1, owners={"bob": ["r2"]}))

    assert await redis.hgetall(DAY.owners) == {"bob": "r2"}
    await take(counters, ["c"], reservation="r3")
    assert await owned(redis) == ["r3"]


async def test_rebuild_with_no_owners_empties_the_hash(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan())
    await take(counters, ["a"], reservation="r1")

    await build(counters, day_plan())

    assert await redis.exists(DAY.owners) == 0


async def test_rebuild_takes_the_new_limit(counters: Counters, redis: Redis) -> None:
    await build(counters, day_plan(owner_max=3, owners={"alice": ["r1", "r2"]}))
    await take(counters, ["c"], reservation="r3")

    await build(counters, day_plan(owner_max=1, owners={"alice": ["r1", "r2", "r3"]}))

    with pytest.raises(AccountLimitReached) as refused:
        await take(counters, ["d"], reservation="r4")
    assert refused.value.extra == {"limit": 1, "per": "site-day"}
    assert await owned(redis) == ["r1", "r2", "r3"]


async def test_snapshot_shows_the_owners(counters: Counters) -> None:
    await build(counters, day_plan(owner_max=3))
    await take(counters, ["a"], reservation="r1")
    await take(counters, ["b"], reservation="r2")
    await take(counters, ["c"], owner="bob", reservation="r3")

    snapshot = await counters.snapshot(DAY)

    assert snapshot is not None
    assert snapshot.owners == {"alice": frozenset({"r1", "r2"}), "bob": frozenset({"r3"})}
    assert snapshot.settings.day[4] == 3


# claim_hold.lua --------------------------------------------------------------------------


@pytest.fixture
def now() -> datetime:
    """Claims expire in Redis at their hold's deadline: start near Redis's own clock (see
    test_claims_outlive_a_clock_behind_redis_time)."""
    return datetime.now(UTC).replace(microsecond=0)


async def claim(
    counters: Counters,
    reservation: str,
    now: datetime,
    *,
    owner: str = "alice",
    site: str = "test-site",
    limit: int = 2,
) -> None:
    await counters.claim_hold(owner, site, reservation, limit=limit, now=now, until=now + TTL)


async def claimed(redis: Redis, owner: str = "alice") -> list[str]:
    return sorted(str(member) for member in await redis.zrange(open_holds(owner), 0, -1))


async def test_claims_are_refused_at_the_limit_and_nothing_is_kept(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    await claim(counters, "r1", now)
    await claim(counters, "r2", now)
    before = await dump(redis)

    with pytest.raises(AccountLimitReached) as refused:
        await claim(counters, "r3", now)

    assert refused.value.extra == {"limit": 2, "per": "open-holds"}
    assert refused.value.detail == (
        "this account has reached its limit of 2 open holds at test-site: "
        "confirm or cancel one first"
    )
    assert await dump(redis) == before
    assert await claimed(redis) == ["test-site r1", "test-site r2"]


async def test_claims_are_counted_per_site_and_per_account(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    await claim(counters, "r1", now, limit=1)

    await claim(counters, "r2", now, site="other-site", limit=1)
    await claim(counters, "r3", now, owner="bob", limit=1)
    # A site whose name starts like another's is still another site.
    await claim(counters, "r4", now, site="test-site-2", limit=1)

    with pytest.raises(AccountLimitReached):
        await claim(counters, "r5", now, limit=1)
    assert await claimed(redis) == ["other-site r2", "test-site r1", "test-site-2 r4"]
    assert await claimed(redis, "bob") == ["test-site r3"]


async def test_a_claim_is_scored_by_its_deadline_and_the_key_expires_then(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    await claim(counters, "r1", now)
    later = now + timedelta(minutes=1)
    await claim(counters, "r2", later)

    scores = await redis.zrange(open_holds("alice"), 0, -1, withscores=True)
    assert scores == [
        ("test-site r1", (now + TTL).timestamp() * 1000),
        ("test-site r2", (later + TTL).timestamp() * 1000),
    ]
    # The key lives as long as the last claim, measured on tidegate's clock (the claim's
    # `now`), plus a second; Redis's own clock may differ from tidegate's.
    left_ms: int = await redis.pttl(open_holds("alice"))
    lifetime_ms = TTL.total_seconds() * 1000 + 1_000
    assert lifetime_ms - 5_000 < left_ms <= lifetime_ms


async def test_expired_claims_drop_out(counters: Counters, redis: Redis, now: datetime) -> None:
    await claim(counters, "r1", now)
    await claim(counters, "r2", now + timedelta(minutes=1))

    just_before = now + TTL - timedelta(milliseconds=1)
    with pytest.raises(AccountLimitReached):
        await claim(counters, "r3", just_before)
    await claim(counters, "r3", now + TTL)

    assert await claimed(redis) == ["test-site r2", "test-site r3"]


async def test_end_holds_frees_the_claims(counters: Counters, redis: Redis, now: datetime) -> None:
    await claim(counters, "r1", now)
    await claim(counters, "r2", now)
    await claim(counters, "r3", now, owner="bob")

    await counters.end_holds([("alice", "test-site", "r1"), ("bob", "test-site", "r3")])
    await counters.end_holds([("alice", "test-site", "r1")])
    await counters.end_holds([])

    assert await claimed(redis) == ["test-site r2"]
    assert await claimed(redis, "bob") == []
    await claim(counters, "r4", now)
    assert await claimed(redis) == ["test-site r2", "test-site r4"]


async def test_end_holds_of_another_site_frees_nothing_here(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    await claim(counters, "r1", now)
    await claim(counters, "r2", now)

    await counters.end_holds([("alice", "other-site", "r1")])

    with pytest.raises(AccountLimitReached):
        await claim(counters, "r3", now)


async def test_a_lower_limit_refuses_with_claims_above_it(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    await claim(counters, "r1", now, limit=3)
    await claim(counters, "r2", now, limit=3)

    with pytest.raises(AccountLimitReached) as refused:
        await claim(counters, "r3", now, limit=1)

    assert refused.value.extra == {"limit": 1, "per": "open-holds"}
    assert await claimed(redis) == ["test-site r1", "test-site r2"]


async def test_many_claims_at_once_keep_exactly_the_limit(
    counters: Counters, redis: Redis, now: datetime
) -> None:
    results = await asyncio.gather(
        *(claim(counters, f"r{i}", now) for i in range(20)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, AccountLimitReached)]
    assert len(refused) == 18
    assert len(await claimed(redis)) == 2


async def test_claims_outlive_a_clock_behind_redis_time(counters: Counters, redis: Redis) -> None:
    past = datetime(2025, 1, 1, tzinfo=UTC)
    await claim(counters, "r1", past)
    await claim(counters, "r2", past)

    with pytest.raises(AccountLimitReached):
        await claim(counters, "r3", past)
