"""Tests for capacity.plan: the LB/T 034-2014 caps (C1, C2) and the slot quotas, by hand-computed
examples, and a property that a plan keeps the forecast people inside under C1 at every minute
whatever the stay distribution, as long as its mean is the configured stay."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from capacity.forecast import Arrivals, StayTimes, forecast
from capacity.plan import Window, Zone, daily_cap, instant_cap, plan, slot_quotas

NINE = 9 * 60
HOURLY = [Window(NINE + 60 * h, NINE + 60 * (h + 1)) for h in range(10)]  # 09:00–19:00
HALL_AND_GARDEN = [Zone("hall", 3000, 1.5), Zone("garden", 500, 2.5)]


# --- C1 -------------------------------------------------------------------------------------


def test_instant_cap_sums_area_over_space_per_person() -> None:
    # 3000 / 1.5 = 2000 and 500 / 2.5 = 200.
    assert instant_cap(HALL_AND_GARDEN) == 2200


def test_instant_cap_floors_a_fraction_of_a_person() -> None:
    # 100 / 3 = 33.33 and 10 / 4 = 2.5: 35.83 people is 35 places.
    assert instant_cap([Zone("a", 100, 3), Zone("b", 10, 4)]) == 35


def test_instant_cap_forgives_float_noise() -> None:
    # 0.7 / 0.1 is 6.999999999999999 in floating point: still 7 people.
    assert 0.7 / 0.1 < 7
    assert instant_cap([Zone("kiosk", 0.7, 0.1)]) == 7


def test_instant_cap_of_no_zones_is_zero() -> None:
    assert instant_cap([]) == 0


# --- C2 -------------------------------------------------------------------------------------


def test_daily_cap_is_instant_cap_times_opening_over_stay() -> None:
    assert daily_cap(2200, 600, 120) == 11000  # 2200 × 600 / 120
    assert daily_cap(2200, 600, 90) == 14666  # 14666.67 floors
    assert daily_cap(2200, 480, 90) == 11733  # 11733.33 floors
    assert daily_cap(35, 60, 45) == 46  # 46.67 floors


# --- quotas ---------------------------------------------------------------------------------


def test_disjoint_hourly_windows_get_the_rate_for_an_hour() -> None:
    # C1 / stay × 60 = 2200 / 90 × 60 = 1466.67 → 1466 each; 10 × 1466 = 14660 ≤ C2 = 14666.
    result = plan(HALL_AND_GARDEN, average_stay_minutes=90, open_minutes=600, windows=HOURLY)
    assert result.instant_cap == 2200
    assert result.daily_cap == 14666
    assert result.slot_quotas == (1466,) * 10
    assert result.arrivals_per_minute == 2200 / 90


def test_hourly_quota_that_is_a_whole_number_is_not_lost_to_float_noise() -> None:
    # 2200 / 120 × 60 = 1100 exactly; 10 × 1100 = C2 = 11000, so nothing is scaled down.
    result = plan(HALL_AND_GARDEN, average_stay_minutes=120, open_minutes=600, windows=HOURLY)
    assert result.daily_cap == 11000
    assert result.slot_quotas == (1100,) * 10
    assert sum(result.slot_quotas) == result.daily_cap


def test_overlapping_windows_share_the_rate() -> None:
    # 09:00–10:00 and 09:30–10:30 overlap: each gets half the rate for its hour, 1100 / 2.
    windows = [Window(540, 600), Window(570, 630)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (550, 550)


def test_a_window_shares_at_its_busiest_minute() -> None:
    # 09:00–11:00 is shared from 10:00 by 10:00–11:00: both take half the rate all along.
    windows = [Window(540, 660), Window(600, 660)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (1100, 550)


def test_three_deep_overlap_takes_a_third() -> None:
    # 09:00–12:00 is covered three deep during 10:00–11:00, so it gets a third of 3300.
    windows = [Window(540, 720), Window(600, 660), Window(570, 690)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (1100, 366, 733)


def test_windows_that_only_touch_do_not_share() -> None:
    windows = [Window(540, 600), Window(600, 660)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (1100, 1100)


def test_identical_windows_share_equally() -> None:
    windows = [Window(540, 600), Window(540, 600)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (550, 550)


def test_quotas_are_scaled_down_to_the_daily_cap() -> None:
    windows = [Window(540, 600), Window(600, 660)]
    assert slot_quotas(windows, 2200, 120, 1500) == (750, 750)  # 1100 × 1500 / 2200


def test_uneven_quotas_are_scaled_down_proportionally_and_floored() -> None:
    # 1100 and 550 (total 1650) to a cap of 1000: 666.67 → 666 and 333.33 → 333.
    windows = [Window(540, 660), Window(600, 660)]
    quotas = slot_quotas(windows, 2200, 120, 1000)
    assert quotas == (666, 333)
    assert sum(quotas) <= 1000


def test_plan_scales_down_when_windows_outlast_the_opening_time() -> None:
    # Four hourly windows but two hours open: C2 = 2200 × 120 / 120 = 2200, 4 × 1100 = 4400.
    result = plan(HALL_AND_GARDEN, average_stay_minutes=120, open_minutes=120, windows=HOURLY[:4])
    assert result.daily_cap == 2200
    assert result.slot_quotas == (550, 550, 550, 550)


def test_a_zero_length_window_gets_nothing_and_shares_nothing() -> None:
    windows = [Window(540, 600), Window(570, 570), Window(600, 600)]
    assert slot_quotas(windows, 2200, 120, 10**9) == (1100, 0, 0)


def test_a_backwards_window_gets_nothing() -> None:
    assert slot_quotas([Window(600, 540)], 2200, 120, 10**9) == (0,)


def test_no_windows_no_quotas() -> None:
    result = plan(HALL_AND_GARDEN, average_stay_minutes=120, open_minutes=600, windows=[])
    assert result.slot_quotas == ()


# --- property: the plan keeps the forecast under C1 -----------------------------------------

zones = st.lists(
    st.builds(
        Zone,
        name=st.just("zone"),
        area_m2=st.floats(10, 5000, allow_nan=False),
        m2_per_person=st.floats(0.5, 5, allow_nan=False),
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def day(draw: st.DrawFn) -> tuple[int, int, list[Window]]:
    """Opening hours and entry windows inside them: disjoint (consecutive) or overlapping."""
    opens = draw(st.integers(6 * 60, 10 * 60))
    closes = opens + draw(st.integers(30, 12 * 60))
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(opens, closes), min_size=2, max_size=8)))
        windows = [Window(a, b) for a, b in pairwise(cuts)]
    else:
        windows = []
        for _ in range(draw(st.integers(1, 6))):
            start = draw(st.integers(opens, closes))
            windows.append(Window(start, draw(st.integers(start, closes))))
    return opens, closes, windows


@st.composite
def stays_with_mean(draw: st.DrawFn, mean: int) -> StayTimes:
    """A fixed stay, or two whole-minute stays around `mean` weighted to have that mean."""
    if mean == 1 or draw(st.booleans()):
        return StayTimes.fixed(mean)
    short = draw(st.integers(1, mean - 1))
    long = draw(st.integers(mean + 1, mean + 400))
    p_long = (mean - short) / (long - short)
    return StayTimes(((short, 1 - p_long), (long, p_long)))


@settings(max_examples=200, deadline=None)
@given(zones=zones, stay=st.integers(10, 300), day=day(), data=st.data())
def test_plan_keeps_the_forecast_under_the_instant_cap_every_minute(
    zones: list[Zone], stay: int, day: tuple[int, int, list[Window]], data: st.DataObject
) -> None:
    opens, closes, windows = day
    result = plan(zones, average_stay_minutes=stay, open_minutes=closes - opens, windows=windows)
    assert len(result.slot_quotas) == len(windows)
    assert all(quota >= 0 for quota in result.slot_quotas)
    assert sum(result.slot_quotas) <= result.daily_cap

    stay_times = data.draw(stays_with_mean(stay))
    assert abs(stay_times.mean - stay) < 1e-9
    arrivals = [
        Arrivals(w.start, w.end, quota)
        for w, quota in zip(windows, result.slot_quotas, strict=True)
    ]
    minutes = forecast(arrivals, stay_times, opens=opens, closes=closes, step=1)
    assert len(minutes) == closes - opens
    busiest = max(minute.inside for minute in minutes)
    assert busiest <= result.instant_cap + 1e-6
