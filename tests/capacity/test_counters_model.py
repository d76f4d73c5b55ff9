"""The allocation scripts against a model, over random sequences of bookings, releases and cap
changes on a real Redis: whatever happens, no unit is ever held twice, no cap is exceeded by a
new allocation, and Redis's counts equal the model's."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from capacity.counters import Counters
from capacity.errors import DuplicateVisitor, SoldOut
from capacity.keys import SiteDay
from tests.capacity.test_counters import NOW, day_plan, slot_plan

SLOTS = ("0900", "1000")
PEOPLE = [f"person-{i}" for i in range(8)]
_days = itertools.count()

allocate = st.tuples(
    st.just("allocate"),
    st.sampled_from(SLOTS),
    st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=3),
)
release = st.tuples(st.just("release"), st.integers(0, 20), st.just(()))
slot_cap = st.tuples(st.just("slot-cap"), st.sampled_from(SLOTS), st.integers(0, 5))
day_cap = st.tuples(st.just("day-cap"), st.integers(0, 7), st.just(()))
operations = st.lists(st.one_of(allocate, release, slot_cap, day_cap), max_size=40)


@dataclass
class Model:
    slot_caps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SLOTS, 3))
    day_cap: int = 5
    held: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[str, ...]]] = field(
        default_factory=list
    )

    def used(self, slot: str | None = None) -> int:
        return sum(len(h[1]) for h in self.held if slot is None or h[0] == slot)

    def people(self) -> set[str]:
        return {person for h in self.held for person in h[3]}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=operations)
async def test_random_bookings_never_double_allocate(redis: Redis, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    counters = Counters(redis)
    day = SiteDay(f"model-{next(_days)}", date(2026, 12, 1))
    model = Model()
    plan = day_plan(*(slot_plan(key, cap=3) for key in SLOTS), cap=model.day_cap)
    await counters.rebuild(day, plan, epoch="1")

    for kind, first, second in steps:
        if kind == "allocate":
            slot, party = first, list(second)
            fits = (
                model.used(slot) + len(party) <= model.slot_caps[slot]
                and model.used() + len(party) <= model.day_cap
            )
            clash = len(set(party)) < len(party) or bool(model.people() & set(party))
            try:
                got = await counters.allocate(day, slot, party, now=NOW)
            except DuplicateVisitor:
                assert clash
                continue
            except SoldOut:
                assert not clash
                assert not fits
                continue
            assert fits
            assert not clash
            assert all(1 <= unit <= model.slot_caps[slot] for unit in got.slot_units)
            assert all(1 <= unit <= model.day_cap for unit in got.day_units)
            model.held.append((slot, got.slot_units, got.day_units, tuple(party)))
        elif kind == "release" and model.held:
            slot, slot_units, day_units, visitors = model.held.pop(first % len(model.held))
            await counters.release(
                day, slot, slot_units=slot_units, day_units=day_units, visitor_ids=visitors
            )
        elif kind == "slot-cap":
            model.slot_caps[first] = second
            assert await counters.set_slot_capacity(day, first, second)
        elif kind == "day-cap":
            model.day_cap = first
            assert await counters.set_day_capacity(day, first)

        held_slot_units = [(h[0], u) for h in model.held for u in h[1]]
        held_day_units = [u for h in model.held for u in h[2]]
        assert len(set(held_slot_units)) == len(held_slot_units), "a slot unit is held twice"
        assert len(set(held_day_units)) == len(held_day_units), "a day unit is held twice"
        load = await counters.load(day)
        assert load is not None
        assert load.day.used == model.used()
        assert {key: s.used for key, s in load.slots.items()} == {
            key: model.used(key) for key in SLOTS
        }
