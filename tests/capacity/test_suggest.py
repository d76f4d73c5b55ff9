"""Tests for capacity.suggest: comfort words, scores and reasons by hand, and the properties of
the ranking (only bookable slots, best first, deterministic, at most `limit`, no slot twice)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity.suggest import (
    CROWDED,
    Candidate,
    Suggestion,
    Wanted,
    bookable,
    comfort,
    rank,
    reason,
    score,
)

BEIJING = timezone(timedelta(hours=8))
TEN_AM = datetime(2026, 12, 1, 10, 0, tzinfo=BEIJING)  # a Tuesday


def candidate(**changes: object) -> Candidate:
    """A bookable slot at the wanted site, the wanted day and time, half full."""
    base = Candidate(
        site="yonghe-temple",
        site_name="Yonghe Temple",
        slot_id="yonghe-temple.2026-12-01.1000",
        start=TEN_AM,
        end=TEN_AM + timedelta(hours=1),
        remaining=5,
        on_sale=True,
        open=True,
        load=0.45,
        distance_km=0.0,
        days_later=0,
        minutes_apart=0,
        same_site=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def elsewhere(**changes: object) -> Candidate:
    return replace(
        candidate(
            site="confucius-temple",
            site_name="Confucius Temple",
            slot_id="confucius-temple.2026-12-01.1000",
            distance_km=0.6,
            same_site=False,
        ),
        **changes,  # type: ignore[arg-type]
    )


# --- comfort --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "word"),
    [
        (0.0, "comfortable"),
        (0.4999, "comfortable"),
        (0.5, "moderate"),
        (0.7999, "moderate"),
        (0.8, "busy"),
        (0.9499, "busy"),
        (0.95, "crowded"),
        (1.0, "crowded"),
        (1.7, "crowded"),
    ],
)
def test_comfort_thresholds(load: float, word: str) -> None:
    assert comfort(load) == word


def test_crowded_is_the_last_word() -> None:
    assert CROWDED == "crowded"


# --- bookable and score ---------------------------------------------------------------------


def test_bookable_needs_room_sale_and_open() -> None:
    assert bookable(candidate(remaining=3), 3)
    assert not bookable(candidate(remaining=2), 3)
    assert not bookable(candidate(on_sale=False), 1)
    assert not bookable(candidate(open=False), 1)


def test_score_adds_up_what_the_party_gives_up() -> None:
    # 90 minutes apart 1.5 + a day later 2 + another site 1.5 and 3 km 1.5 + half full 1.5.
    other = elsewhere(minutes_apart=90, days_later=1, distance_km=3.0, load=0.5)
    assert score(other) == pytest.approx(8.0)


def test_score_counts_crowding_by_whole_percent() -> None:
    assert score(candidate(load=0.004)) == 0.0
    assert score(candidate(load=0.006)) == pytest.approx(0.03)


def test_score_ignores_distance_at_the_same_site() -> None:
    assert score(candidate(distance_km=12.0, load=0.0)) == 0.0


def test_score_caps_crowding_between_zero_and_three() -> None:
    assert score(candidate(load=1.8)) == 3.0
    assert score(candidate(load=-0.2)) == 0.0


# --- reason ---------------------------------------------------------------------------------


def test_reason_same_site_same_day_says_places_left() -> None:
    assert reason(Wanted(party=2, load=None), candidate()) == "5 places left at 10:00"


def test_reason_says_how_much_less_crowded() -> None:
    # 0.45 against 0.9 is half as crowded.
    assert reason(Wanted(party=2, load=0.9), candidate()) == "50% less crowded at 10:00"


def test_reason_for_another_site_names_it_and_its_distance() -> None:
    wanted = Wanted(party=2, load=0.5)
    assert (
        reason(wanted, elsewhere(load=0.7, distance_km=2.34))
        == "Confucius Temple, 2.3 km away: moderate at 10:00"
    )
    assert (
        reason(Wanted(party=2, load=0.9), elsewhere(start=TEN_AM + timedelta(minutes=30)))
        == "Confucius Temple, 0.6 km away: 50% less crowded at 10:30"
    )


def test_reason_for_a_later_day_names_the_day() -> None:
    friday = datetime(2026, 12, 4, 9, 0, tzinfo=BEIJING)
    wanted = Wanted(party=2, load=0.5)
    assert reason(wanted, candidate(days_later=3, start=friday, load=0.7)) == (
        "Fri 4 Dec: moderate at 09:00"
    )
    wednesday = datetime(2026, 12, 2, 14, 30, tzinfo=BEIJING)
    other = elsewhere(days_later=1, start=wednesday, distance_km=2.34)
    assert reason(Wanted(party=2, load=0.9), other) == (
        "Confucius Temple, 2.3 km away: Wed 2 Dec; 50% less crowded at 14:30"
    )


def test_reason_keeps_two_digit_days() -> None:
    later = datetime(2026, 12, 10, 9, 0, tzinfo=BEIJING)
    assert reason(Wanted(party=1, load=None), candidate(days_later=9, start=later)) == (
        "Thu 10 Dec: comfortable at 09:00"
    )


def test_reason_only_mentions_calm_of_ten_percent_or_more() -> None:
    assert reason(Wanted(party=2, load=0.5), candidate(load=0.455)) == "5 places left at 10:00"
    # 10% lower but by less than 5% of the cap: no crowd to speak of.
    assert reason(Wanted(party=2, load=0.3), candidate(load=0.27)) == "5 places left at 10:00"
    assert reason(Wanted(party=2, load=0.5), candidate(load=0.45)) == "10% less crowded at 10:00"
    # A more crowded slot or an unknown / empty wanted load is no reason.
    assert reason(Wanted(party=2, load=0.3), candidate()) == "5 places left at 10:00"
    assert reason(Wanted(party=2, load=0.0), candidate()) == "5 places left at 10:00"


# --- rank by example ------------------------------------------------------------------------


def test_rank_orders_by_score_then_start_then_slot_id() -> None:
    wanted = Wanted(party=2, load=0.9)
    later = TEN_AM + timedelta(hours=1)
    candidates = [
        candidate(slot_id="c", start=later, minutes_apart=60, load=0.1),  # 1 + 0.3
        candidate(slot_id="b", load=0.2),  # 0.6
        candidate(slot_id="a", load=0.2),  # 0.6, same start: slot id decides
        candidate(slot_id="d", start=later, minutes_apart=0, load=0.1, days_later=1),  # 2.3
        candidate(slot_id="full", remaining=1, load=0.0),
        candidate(slot_id="closed", open=False, load=0.0),
        candidate(slot_id="not-on-sale", on_sale=False, load=0.0),
    ]
    result = rank(wanted, candidates, limit=10)
    assert [s.slot_id for s in result] == ["a", "b", "c", "d"]
    assert [s.score for s in result] == [0.6, 0.6, 1.3, 2.3]
    assert result[0] == Suggestion(
        site="yonghe-temple",
        slot_id="a",
        start=TEN_AM,
        end=TEN_AM + timedelta(hours=1),
        remaining=5,
        comfort="comfortable",
        load=0.2,
        distance_km=0.0,
        reason="78% less crowded at 10:00",
        score=0.6,
    )
    assert [s.slot_id for s in rank(wanted, candidates, limit=2)] == ["a", "b"]


def test_rank_keeps_a_slot_once_at_its_best() -> None:
    near = elsewhere(slot_id="x", distance_km=0.5)
    far = elsewhere(slot_id="x", distance_km=4.0)
    result = rank(Wanted(party=1, load=None), [far, near], limit=5)
    assert len(result) == 1
    assert result[0].distance_km == 0.5


def test_rank_of_nothing_is_nothing() -> None:
    assert rank(Wanted(party=1, load=None), [], limit=3) == []


def test_rank_with_limit_zero_returns_nothing() -> None:
    candidates = [candidate(slot_id="a"), candidate(slot_id="b")]
    assert rank(Wanted(party=1, load=None), candidates, limit=0) == []


def test_rank_of_a_slot_seen_twice_does_not_depend_on_input_order() -> None:
    # The same slot from two snapshots: the remaining places differ, the score does not.
    first, second = candidate(remaining=5), candidate(remaining=9)
    wanted = Wanted(party=1, load=None)
    assert rank(wanted, [first, second], limit=3) == rank(wanted, [second, first], limit=3)


# --- rank: properties -----------------------------------------------------------------------

SITES = [("yonghe-temple", "Yonghe Temple"), ("confucius-temple", "Confucius Temple")]


@st.composite
def candidates(draw: st.DrawFn) -> list[Candidate]:
    """Distinct slots, with ties likely (few loads, distances and starts), plus exact repeats
    of some of them (the same slot reached twice)."""
    count = draw(st.integers(0, 25))
    slots = []
    for i in range(count):
        site, name = draw(st.sampled_from(SITES))
        start = TEN_AM + timedelta(minutes=30 * draw(st.integers(-4, 8)))
        slots.append(
            Candidate(
                site=site,
                site_name=name,
                slot_id=f"{site}.{i:02d}",
                start=start,
                end=start + timedelta(hours=1),
                remaining=draw(st.integers(0, 8)),
                on_sale=draw(st.booleans()),
                open=draw(st.booleans()),
                load=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.8, 0.95, 1.0, 1.3])),
                distance_km=draw(st.sampled_from([0.0, 0.5, 1.25, 3.0, 7.5])),
                days_later=draw(st.integers(0, 3)),
                minutes_apart=draw(st.sampled_from([0, 30, 60, 90, 120, 240])),
                same_site=draw(st.booleans()),
            )
        )
    repeats = draw(st.lists(st.sampled_from(slots), max_size=5)) if slots else []
    return slots + repeats


wanteds = st.builds(
    Wanted,
    party=st.integers(1, 6),
    load=st.none() | st.sampled_from([0.0, 0.3, 0.6, 0.9, 1.2]),
)


@settings(max_examples=200, deadline=None)
@given(wanted=wanteds, pool=candidates(), limit=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_rank_properties(wanted: Wanted, pool: list[Candidate], limit: int, seed: int) -> None:
    result = rank(wanted, pool, limit=limit)
    by_slot = {c.slot_id: c for c in pool}  # repeats are exact copies
    chosen_ids = [s.slot_id for s in result]

    # At most `limit`, each slot once, and nothing the party cannot book.
    assert len(result) <= limit
    assert len(set(chosen_ids)) == len(chosen_ids)
    for suggestion in result:
        picked = by_slot[suggestion.slot_id]
        assert picked.remaining >= wanted.party
        assert picked.open
        assert picked.on_sale
        assert suggestion.remaining == picked.remaining
        assert suggestion.comfort == comfort(picked.load)
        assert suggestion.reason == reason(wanted, picked)
        assert suggestion.score == round(score(picked), 4)

    # Best first.
    scores = [s.score for s in result]
    assert scores == sorted(scores)

    # Deterministic: the order the candidates come in does not matter.
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    assert rank(wanted, shuffled, limit=limit) == result

    # Nothing better was left out.
    left_out = [
        c for c in by_slot.values() if bookable(c, wanted.party) and c.slot_id not in chosen_ids
    ]
    if len(result) < limit:
        assert left_out == []
    elif left_out:
        last = score(by_slot[chosen_ids[-1]])
        assert all(score(c) >= last - 1e-9 for c in left_out)
