"""Tests for capacity.forecast: people inside per quarter hour by hand-computed examples, the
learned stay-time distribution, and the conservation of people over random days."""

from __future__ import annotations

import math
import statistics
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity.forecast import (
    MIN_PAIRS,
    STAY_BUCKET_MINUTES,
    STEP_MINUTES,
    Arrivals,
    Quarter,
    StayTimes,
    _Arrived,
    forecast,
    inside_at,
    peak_inside,
    stay_times,
)

NINE, TEN, ELEVEN, NOON, FIVE_PM = 540, 600, 660, 720, 1020
SIXTY_AT_NINE = [Arrivals(NINE, TEN, 60)]


def insides(quarters: list[Quarter]) -> list[float]:
    return [q.inside for q in quarters]


# --- the worked example ---------------------------------------------------------------------


def test_sixty_people_in_an_hour_staying_two_hours() -> None:
    quarters = forecast(SIXTY_AT_NINE, StayTimes.fixed(120), opens=NINE, closes=FIVE_PM)
    assert STEP_MINUTES == 15
    assert len(quarters) == (FIVE_PM - NINE) // 15
    assert [q.end for q in quarters[:12]] == list(range(NINE + 15, NOON + 1, 15))
    # Filling up by 15 a quarter, flat until the first arrivals leave at 11:00, then emptying
    # by 15 a quarter.
    assert insides(quarters[:12]) == [15, 30, 45, 60, 60, 60, 60, 60, 45, 30, 15, 0]
    assert all(q.inside == 0 for q in quarters[12:])
    assert [q.arrivals for q in quarters[:5]] == [15, 15, 15, 15, 0]
    assert [q.exits for q in quarters[:12]] == [0] * 8 + [15] * 4
    assert quarters[-1].inside == 0


def test_everyone_leaves_at_closing() -> None:
    # Closing at 10:30 while all 60 are still inside: the last quarter lets them all out.
    quarters = forecast(SIXTY_AT_NINE, StayTimes.fixed(120), opens=NINE, closes=630)
    assert insides(quarters) == [15, 30, 45, 60, 60, 0]
    assert quarters[-1].exits == 60
    assert sum(q.arrivals for q in quarters) == sum(q.exits for q in quarters) == 60


def test_a_last_step_shorter_than_a_quarter_ends_at_closing() -> None:
    quarters = forecast(SIXTY_AT_NINE, StayTimes.fixed(120), opens=NINE, closes=NINE + 20)
    assert [(q.start, q.end) for q in quarters] == [(540, 555), (555, 560)]
    assert [q.arrivals for q in quarters] == [15, 5]
    assert insides(quarters) == [15, 0]
    assert quarters[-1].exits == 20


def test_a_stay_distribution_mixes_the_curves() -> None:
    # Half stay one hour, half two: at 10:15, 45 of the one-hour people and all 60 of the
    # two-hour people are inside on average, (45 + 60) / 2.
    stay = StayTimes(((60, 0.5), (120, 0.5)))
    quarters = forecast(SIXTY_AT_NINE, stay, opens=NINE, closes=FIVE_PM)
    assert insides(quarters[:12]) == [15, 30, 45, 60, 52.5, 45, 37.5, 30, 22.5, 15, 7.5, 0]


def test_windows_partly_outside_opening_hours_bring_people_pro_rata() -> None:
    # 08:00–10:00 with 120 people but opening at 09:00: only the 60 of the second hour come.
    # 16:30–17:30 with 40 people, closing at 17:00: 20 come.
    arrivals = [Arrivals(480, TEN, 120), Arrivals(990, 1050, 40)]
    quarters = forecast(arrivals, StayTimes.fixed(120), opens=NINE, closes=FIVE_PM)
    assert sum(q.arrivals for q in quarters) == pytest.approx(80)
    assert insides(quarters[:4]) == [15, 30, 45, 60]


def test_windows_entirely_outside_or_empty_bring_nobody() -> None:
    arrivals = [Arrivals(420, NINE, 50), Arrivals(FIVE_PM, 1080, 50), Arrivals(600, 600, 50)]
    quarters = forecast(arrivals, StayTimes.fixed(60), opens=NINE, closes=FIVE_PM)
    assert all(q.arrivals == q.exits == q.inside == 0 for q in quarters)


def test_no_opening_hours_no_forecast() -> None:
    assert forecast(SIXTY_AT_NINE, StayTimes.fixed(60), opens=NINE, closes=NINE) == []


def test_inside_at_the_start_of_a_minute() -> None:
    arrived = _Arrived(SIXTY_AT_NINE, NINE, FIVE_PM)
    stay = StayTimes.fixed(120)
    assert inside_at(arrived, stay, NINE) == 0
    assert inside_at(arrived, stay, NINE + 1) == 1  # the first minute's arrival
    assert inside_at(arrived, stay, ELEVEN) == 60  # the first minute's arrival leaves now
    assert inside_at(arrived, stay, ELEVEN + 1) == 59
    assert inside_at(arrived, stay, NOON) == 0


def test_peak_inside_over_a_visit() -> None:
    quarters = forecast(SIXTY_AT_NINE, StayTimes.fixed(120), opens=NINE, closes=FIVE_PM)
    assert peak_inside(quarters, NINE, 570) == 30
    assert peak_inside(quarters, ELEVEN, NOON) == 60  # 11:00 still counts
    assert peak_inside(quarters, 675, NOON) == 45
    assert peak_inside(quarters, NOON, FIVE_PM) == 0
    assert peak_inside([], NINE, TEN) == 0


# --- stay times -----------------------------------------------------------------------------


def test_fixed_stay_is_one_certain_time_of_at_least_a_minute() -> None:
    assert StayTimes.fixed(90) == StayTimes(((90, 1.0),), learned_from=0)
    assert StayTimes.fixed(0).pmf == ((1, 1.0),)


def test_too_few_pairs_use_the_configured_average() -> None:
    learned = stay_times([45] * (MIN_PAIRS - 1), 120)
    assert learned == StayTimes.fixed(120)
    assert learned.learned_from == 0


def test_stays_that_are_not_positive_do_not_count_as_pairs() -> None:
    learned = stay_times([45] * (MIN_PAIRS - 1) + [0, -5, 0], 120)
    assert learned == StayTimes.fixed(120)


def test_enough_pairs_learn_buckets() -> None:
    # 10 stays of 3 minutes (bucket 0–4, middle 2), 10 of 61 (60–64 → 62), 10 of 119 (115–119
    # → 117).
    observed = [3] * 10 + [61] * 10 + [119] * 10
    assert len(observed) == MIN_PAIRS
    learned = stay_times(observed, 120)
    assert learned.learned_from == MIN_PAIRS
    assert learned.pmf == ((2, 1 / 3), (62, 1 / 3), (117, 1 / 3))
    assert learned.mean == pytest.approx((2 + 62 + 117) / 3)


@settings(max_examples=150, deadline=None)
@given(
    observed=st.lists(st.integers(1, 600), min_size=MIN_PAIRS, max_size=300),
    noise=st.lists(st.integers(-30, 0), max_size=10),
)
def test_learned_stays_are_a_distribution_close_to_the_sample(
    observed: list[int], noise: list[int]
) -> None:
    learned = stay_times(observed + noise, 120)
    assert learned.learned_from == len(observed)
    minutes = [m for m, _ in learned.pmf]
    assert minutes == sorted(set(minutes))
    assert all(m % STAY_BUCKET_MINUTES == STAY_BUCKET_MINUTES // 2 for m in minutes)
    assert all(p > 0 for _, p in learned.pmf)
    assert math.fsum(p for _, p in learned.pmf) == pytest.approx(1, abs=1e-12)
    assert abs(learned.mean - statistics.fmean(observed)) <= STAY_BUCKET_MINUTES / 2 + 1e-9


@settings(max_examples=50, deadline=None)
@given(
    observed=st.lists(st.integers(-10, 600), max_size=MIN_PAIRS + 20),
    average=st.integers(1, 300),
)
def test_under_min_pairs_the_average_is_used(observed: list[int], average: int) -> None:
    positive = [m for m in observed if m > 0]
    learned = stay_times(observed, average)
    if len(positive) < MIN_PAIRS:
        assert learned == StayTimes((((average, 1.0),)), learned_from=0)
    else:
        assert learned.learned_from == len(positive)


# --- property: people are conserved ---------------------------------------------------------


@st.composite
def stays(draw: st.DrawFn) -> StayTimes:
    minutes = draw(st.lists(st.integers(1, 600), min_size=1, max_size=6, unique=True))
    weights = draw(st.lists(st.floats(0.01, 1), min_size=len(minutes), max_size=len(minutes)))
    total = math.fsum(weights)
    return StayTimes(tuple((m, w / total) for m, w in zip(minutes, weights, strict=True)))


@st.composite
def arrivals_around(draw: st.DrawFn, opens: int, closes: int) -> list[Arrivals]:
    """Entry windows anywhere near opening hours: inside, partly outside, outside, or empty."""
    groups = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(opens - 120, closes + 60))
        end = draw(st.integers(start - 10, start + 240))
        groups.append(Arrivals(start, end, draw(st.floats(0, 5000))))
    return groups


def clipped_people(arrivals: list[Arrivals], opens: int, closes: int) -> float:
    total = 0.0
    for group in arrivals:
        if group.end <= group.start:
            continue
        inside = max(0, min(group.end, closes) - max(group.start, opens))
        total += group.people * inside / (group.end - group.start)
    return total


@settings(max_examples=200, deadline=None)
@given(
    hours=st.tuples(st.integers(6 * 60, 10 * 60), st.integers(1, 14 * 60)),
    stay=stays(),
    step=st.sampled_from([1, 5, 7, 15, 15, 15, 60]),
    data=st.data(),
)
def test_forecast_conserves_people(
    hours: tuple[int, int], stay: StayTimes, step: int, data: st.DataObject
) -> None:
    opens, closes = hours[0], hours[0] + hours[1]
    arrivals = data.draw(arrivals_around(opens, closes))
    quarters = forecast(arrivals, stay, opens=opens, closes=closes, step=step)

    assert quarters[0].start == opens
    assert quarters[-1].end == closes
    assert all(a.end == b.start for a, b in pairwise(quarters))
    expected = clipped_people(arrivals, opens, closes)
    tolerance = 1e-6 * max(1.0, expected)
    running = 0.0
    for quarter in quarters:
        assert quarter.arrivals >= -tolerance
        assert quarter.exits >= -1e-6
        assert quarter.inside >= -tolerance
        running += quarter.arrivals - quarter.exits
        assert abs(running - quarter.inside) <= tolerance
    assert abs(math.fsum(q.arrivals for q in quarters) - expected) <= tolerance
    assert quarters[-1].inside == 0
