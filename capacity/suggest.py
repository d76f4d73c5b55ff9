"""Redistribution: where else a party could go when the visit it wants is full or crowded.
Pure functions over plain candidates, so the ranking is the same for the suggestions API, a
sold-out answer, a closure's offer and the live feed.

A candidate is a slot with room for the party, on sale now and open. Its score adds up what
the party gives up by taking it instead (lower is better):

- an hour further from the wanted time costs 1 point;
- each day later costs 2 points (plans, hotels and trains were made for a day);
- another site costs 1.5 points (the party chose this one), and each kilometre to it 0.5
  point (a walk of ten minutes or so);
- crowding costs up to 3 points: the forecast share of the site's instantaneous cap.

Ties go to the earlier start, then the slot id, so the order is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

HOUR_WEIGHT = 1.0
DAY_WEIGHT = 2.0
OTHER_SITE_WEIGHT = 1.5
KM_WEIGHT = 0.5
CROWD_WEIGHT = 3.0

# Comfort levels for visitors, by the forecast share of the instantaneous cap.
COMFORT = (("comfortable", 0.5), ("moderate", 0.8), ("busy", 0.95))
CROWDED = "crowded"
CALMER_BY_AT_LEAST = 0.05  # of the cap, before a reason says "less crowded"


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance between two points on the Earth (haversine)."""
    phi1, lam1, phi2, lam2 = map(math.radians, (lat1, lon1, lat2, lon2))
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin((lam2 - lam1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(min(h, 1.0)))


def comfort(load: float) -> str:
    """A word a visitor understands for a share of the site's instantaneous cap (judged as
    shown, to four decimals: 4.999999 people of 10 is half full)."""
    load = round(load, 4)
    for word, below in COMFORT:
        if load < below:
            return word
    return CROWDED


@dataclass(frozen=True, slots=True)
class Candidate:
    site: str
    site_name: str
    slot_id: str
    start: datetime  # with the site's UTC offset
    end: datetime
    remaining: int
    on_sale: bool  # inside its booking window now
    open: bool  # not closed by the site, not stopped by an alert
    load: float  # forecast people inside during the slot / instantaneous cap
    distance_km: float  # from the wanted site, or from the visitor when they said where
    days_later: int  # days after the wanted date (0 the same day)
    minutes_apart: int  # between its start and the wanted time of day
    same_site: bool


@dataclass(frozen=True, slots=True)
class Wanted:
    party: int
    load: float | None  # forecast load of the wanted visit, when known
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class Suggestion:
    site: str
    slot_id: str
    start: datetime
    end: datetime
    remaining: int
    comfort: str
    load: float
    distance_km: float
    reason: str
    score: float


def bookable(candidate: Candidate, party: int) -> bool:
    return candidate.open and candidate.on_sale and candidate.remaining >= party


def score(candidate: Candidate) -> float:
    return (
        HOUR_WEIGHT * candidate.minutes_apart / 60
        + DAY_WEIGHT * candidate.days_later
        + (0.0 if candidate.same_site else OTHER_SITE_WEIGHT + KM_WEIGHT * candidate.distance_km)
        # By whole percent: one more person in an empty site changes no choice.
        + CROWD_WEIGHT * round(min(max(candidate.load, 0.0), 1.0), 2)
    )


def rank(wanted: Wanted, candidates: Sequence[Candidate], *, limit: int) -> list[Suggestion]:
    """The best `limit` bookable candidates, best first."""
    if limit < 1:
        return []
    scored = sorted(
        ((score(c), c) for c in candidates if bookable(c, wanted.party)),
        # Every field breaks ties, so the input's order never shows in the output.
        key=lambda item: (
            round(item[0], 9),
            item[1].start,
            item[1].slot_id,
            -item[1].remaining,
            item[1].load,
            item[1].distance_km,
            item[1].site,
        ),
    )
    chosen: list[Suggestion] = []
    seen: set[str] = set()
    for points, candidate in scored:
        slot_id = candidate.slot_id
        if slot_id in seen:
            continue
        seen.add(slot_id)
        chosen.append(
            Suggestion(
                site=candidate.site,
                slot_id=slot_id,
                start=candidate.start,
                end=candidate.end,
                remaining=candidate.remaining,
                comfort=comfort(candidate.load),
                load=round(candidate.load, 4),
                distance_km=round(candidate.distance_km, 2),
                reason=reason(wanted, candidate),
                score=round(points, 4),
            )
        )
        if len(chosen) == limit:
            break
    return chosen


def reason(wanted: Wanted, candidate: Candidate) -> str:
    """One short line saying why this one: where, when, and how much calmer."""
    at = candidate.start.strftime("%H:%M")
    parts = []
    if not candidate.same_site:
        parts.append(f"{candidate.site_name}, {candidate.distance_km:.1f} km away")
    if candidate.days_later:
        parts.append(candidate.start.strftime("%a %d %b").replace(" 0", " "))
    calmer = _calmer_by(wanted.load, candidate.load)
    if calmer:
        parts.append(f"{calmer}% less crowded at {at}")
    elif candidate.same_site and not candidate.days_later:
        places = "place" if candidate.remaining == 1 else "places"
        parts.append(f"{candidate.remaining} {places} left at {at}")
    else:
        parts.append(f"{comfort(candidate.load)} at {at}")
    head, *rest = parts
    return f"{head}: {'; '.join(rest)}" if rest else head


def _calmer_by(wanted: float | None, load: float) -> int:
    """Whole percent by which a load is lower than the wanted one: 0 unless it is at least
    10% lower and by at least 5% of the cap (one person in an empty site is no crowd)."""
    if wanted is None or wanted - load < CALMER_BY_AT_LEAST - 1e-9:
        return 0
    share = (wanted - load) / wanted * 100
    return round(share) if share >= 10 - 1e-9 else 0


@dataclass(frozen=True, slots=True)
class Place:
    """A site as the live feed sees it now."""

    site: str
    name: str
    kind: str
    lat: float
    lon: float
    load: float  # people inside / instantaneous cap
    level: str  # alert level
    places_left_today: int


@dataclass(frozen=True, slots=True)
class Redirection:
    site: str
    name: str
    distance_km: float
    load: float
    comfort: str
    places_left_today: int


def redirect(
    crowded: Place, places: Sequence[Place], *, within_km: float, limit: int
) -> list[Redirection]:
    """Where to send people while a site is crowded: nearby sites at the usual (green)
    level, calmer than it and still selling today; the same kind of place first, then the
    calmest, then the nearest."""
    options = []
    for place in places:
        if place.site == crowded.site or place.level != "green" or place.places_left_today < 1:
            continue
        if place.load >= crowded.load:
            continue
        km = great_circle_km(crowded.lat, crowded.lon, place.lat, place.lon)
        if km > within_km:
            continue
        options.append(((place.kind != crowded.kind, round(place.load, 4), km, place.site), place))
    options.sort(key=lambda option: option[0])
    return [
        Redirection(
            site=place.site,
            name=place.name,
            distance_km=round(key[2], 2),
            load=round(place.load, 4),
            comfort=comfort(place.load),
            places_left_today=place.places_left_today,
        )
        for key, place in options[:limit]
    ]


@dataclass(frozen=True, slots=True)
class GateLoad:
    gate: str
    entries: int  # over the last few minutes
    passes_per_minute: int
    minutes: int

    @property
    def load(self) -> float:
        return self.entries / max(self.passes_per_minute * self.minutes, 1)


def least_loaded(gates: Sequence[GateLoad]) -> GateLoad | None:
    """The gate a party arriving now should use: the one with the most room in its flow."""
    return min(gates, key=lambda g: (round(g.load, 6), g.gate), default=None)
