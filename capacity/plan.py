"""The capacity calculator of LB/T 034-2014: caps from the space a site offers and how long
people stay. Pure functions over plain numbers.

- Instantaneous cap C1 = Σ (effective visiting area of a zone / space per person).
- Daily cap C2 = C1 × opening time / average stay.
- Slot quotas by Little's law (people inside = arrival rate × stay): if no minute of the day
  admits more than C1 / stay arrivals, the people inside never exceed C1 on average, whatever
  the spread of stays around their mean. Each entry window gets that rate, shared with the
  windows that overlap it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Areas and spaces are decimals: 0.7 / 0.1 is 6.999999999999999 in floating point, 7 places.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    area_m2: float
    m2_per_person: float

    @property
    def people(self) -> float:
        return self.area_m2 / self.m2_per_person


@dataclass(frozen=True, slots=True)
class Window:
    """An entry window, in minutes of the day: arrivals from `start` until before `end`."""

    start: int
    end: int

    @property
    def minutes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    instant_cap: int
    daily_cap: int
    slot_quotas: tuple[int, ...]  # one per window, in the order given
    arrivals_per_minute: float  # the highest arrival rate that keeps people inside under C1


def instant_cap(zones: Sequence[Zone]) -> int:
    """C1: how many people the zones hold at once, at their space per person."""
    return math.floor(sum(zone.people for zone in zones) + _EPSILON)


def daily_cap(instant: int, open_minutes: int, average_stay_minutes: int) -> int:
    """C2: how many people a day can receive, each staying the average time."""
    return math.floor(instant * open_minutes / average_stay_minutes + _EPSILON)


def slot_quotas(
    windows: Sequence[Window], instant: int, average_stay_minutes: int, day_cap: int
) -> tuple[int, ...]:
    """Places per entry window so that arrivals never exceed C1 / stay in any minute, and
    the day's total stays within C2."""
    rate = instant / average_stay_minutes
    quotas = []
    for window in windows:
        if window.minutes <= 0:
            quotas.append(0)
            continue
        # Windows that overlap this one share its minutes' arrival rate.
        sharing = max(
            sum(1 for other in windows if other.start <= minute < other.end)
            for minute in _corners(window, windows)
        )
        quotas.append(math.floor(rate * window.minutes / sharing + _EPSILON))
    total = sum(quotas)
    if total > day_cap:
        # Scaling down keeps every minute's rate under the bound.
        quotas = [math.floor(quota * day_cap / total) for quota in quotas]
    return tuple(quotas)


def plan(
    zones: Sequence[Zone],
    *,
    average_stay_minutes: int,
    open_minutes: int,
    windows: Sequence[Window],
) -> CapacityPlan:
    instant = instant_cap(zones)
    day = daily_cap(instant, open_minutes, average_stay_minutes)
    return CapacityPlan(
        instant_cap=instant,
        daily_cap=day,
        slot_quotas=slot_quotas(windows, instant, average_stay_minutes, day),
        arrivals_per_minute=instant / average_stay_minutes,
    )


def _corners(window: Window, windows: Sequence[Window]) -> list[int]:
    """The minutes inside a window where the set of windows covering it may change."""
    points = {window.start}
    for other in windows:
        for minute in (other.start, other.end):
            if window.start <= minute < window.end:
                points.add(minute)
    return sorted(points)
