"""The expected number of people inside a site through a day: pure functions.

Arrivals are spread evenly inside each entry window (a booked 09:00–10:00 party arrives
somewhere in that hour); each stays for a time drawn from the site's stay-time distribution.
A person who arrives in minute `u` and stays `d` minutes is inside during minutes
u .. u+d-1 and leaves in minute u+d; at closing everyone still inside leaves.

People inside at instant T are then Σ_d p(d) × (arrivals in the `d` minutes before T), which
costs one lookup in a prefix sum per stay time: a day of any number of reservations is
forecast in a few hundred operations per quarter hour.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

STEP_MINUTES = 15
# Stay times are learned from entry and exit scan pairs once there are this many.
MIN_PAIRS = 30
# Learned stay times are grouped by this many minutes: enough detail for a quarter-hour curve.
STAY_BUCKET_MINUTES = 5


@dataclass(frozen=True, slots=True)
class Arrivals:
    """People expected to arrive evenly inside an entry window (minutes of the day)."""

    start: int
    end: int
    people: float


@dataclass(frozen=True, slots=True)
class StayTimes:
    """How long visitors stay: (minutes, probability) pairs, probabilities summing to 1."""

    pmf: tuple[tuple[int, float], ...]
    learned_from: int = 0  # the number of entry/exit pairs, 0 for the configured average

    @classmethod
    def fixed(cls, minutes: int) -> StayTimes:
        return cls(((max(minutes, 1), 1.0),))

    @property
    def mean(self) -> float:
        return sum(minutes * p for minutes, p in self.pmf)


def stay_times(observed: Sequence[int], average_stay_minutes: int) -> StayTimes:
    """The distribution learned from observed stays (minutes), once there are enough of them;
    until then every visitor stays the configured average."""
    stays = [minutes for minutes in observed if minutes > 0]
    if len(stays) < MIN_PAIRS:
        return StayTimes.fixed(average_stay_minutes)
    # Each stay is rounded to the middle of its bucket, so the mean is kept within half a
    # bucket.
    buckets = Counter(
        (minutes // STAY_BUCKET_MINUTES) * STAY_BUCKET_MINUTES + STAY_BUCKET_MINUTES // 2 or 1
        for minutes in stays
    )
    total = len(stays)
    return StayTimes(
        tuple((minutes, count / total) for minutes, count in sorted(buckets.items())),
        learned_from=total,
    )


@dataclass(frozen=True, slots=True)
class Quarter:
    """One step of the forecast: arrivals and exits during it, people inside at its end."""

    start: int  # minute of the day
    end: int
    arrivals: float
    exits: float
    inside: float


class _Arrived:
    """Cumulative arrivals: `before(m)` is the number of people arrived in minutes < m."""

    def __init__(self, arrivals: Sequence[Arrivals], opens: int, closes: int) -> None:
        # Rates change only where windows start and end: a difference array makes the
        # per-minute arrivals in one pass, whatever the number of groups.
        changes = [0.0] * (closes - opens + 1)
        for group in arrivals:
            start, end = max(group.start, opens), min(group.end, closes)
            if end <= start or group.end <= group.start:
                continue
            # Only the part of a window inside opening hours brings people.
            rate = group.people / (group.end - group.start)
            changes[start - opens] += rate
            changes[end - opens] -= rate
        self._opens = opens
        self._prefix = [0.0]
        rate = 0.0
        for change in changes[:-1]:
            rate += change
            self._prefix.append(self._prefix[-1] + rate)
        self._last = len(self._prefix) - 1

    def before(self, minute: int) -> float:
        index = minute - self._opens
        if index <= 0:
            return 0.0
        return self._prefix[index if index < self._last else self._last]


def inside_at(arrived: _Arrived, stay: StayTimes, minute: int) -> float:
    """Expected people inside at the start of a minute."""
    now = arrived.before(minute)
    return sum(p * (now - arrived.before(minute - d)) for d, p in stay.pmf)


def forecast(
    arrivals: Sequence[Arrivals],
    stay: StayTimes,
    *,
    opens: int,
    closes: int,
    step: int = STEP_MINUTES,
) -> list[Quarter]:
    """People arriving, leaving and inside for each step from opening to closing."""
    if closes <= opens:
        return []
    arrived = _Arrived(arrivals, opens, closes)
    quarters = []
    inside_before = 0.0
    for start in range(opens, closes, step):
        end = min(start + step, closes)
        came = arrived.before(end) - arrived.before(start)
        # At closing everyone leaves.
        inside = inside_at(arrived, stay, end) if end < closes else 0.0
        quarters.append(
            Quarter(
                start=start,
                end=end,
                arrivals=came,
                exits=inside_before + came - inside,
                inside=inside,
            )
        )
        inside_before = inside
    return quarters


def peak_inside(quarters: Sequence[Quarter], start: int, end: int) -> float:
    """The most people expected inside at any quarter's end during [start, end]."""
    ends = [q.end for q in quarters]
    first = bisect.bisect_left(ends, start)
    window = [q.inside for q in quarters[first:] if q.start < end]
    return max(window, default=0.0)
