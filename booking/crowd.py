"""Crowd flow: the forecast of people inside, redistribution suggestions, the city's crowd
index and the capacity calculator, over the pure functions of `capacity.forecast`,
`capacity.suggest` and `capacity.plan`.

Everything a tourist's request reads is cached briefly per process (places left for half a
second, forecasts for half a minute, stay times for minutes), so a sold-out rush answers
its thousands of refusals with suggestions computed a couple of times a second, not per
request.
"""

from __future__ import annotations

import asyncio
import time as clock_time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import SlotRef, local, minute_of_day, parse_slot_id, slot_times, zone
from booking.errors import InvalidRequest, NotFound
from booking.models import Gate, Site
from booking.schemas import (
    Alternative,
    BestTime,
    CapacityPlanPublic,
    CapacityPlanRequest,
    CrowdSite,
    ForecastError,
    ForecastPoint,
    ForecastPublic,
    ForecastQuarter,
    GateAdvice,
    Redirect,
    SlotQuota,
    StayPublic,
    SuggestionsPublic,
)
from booking.sites import Catalog
from capacity import forecast as fc
from capacity import plan as calculator
from capacity import suggest
from capacity.clock import Clock
from capacity.counters import DayLoad
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay
from capacity.occupancy import Flow, Occupancy

SITES_TTL = 5.0
FORECAST_TTL = 30.0
STAYS_TTL = 300.0
RANKING_TTL = 0.5
INDEX_TTL = 10.0

NEXT_DAYS = 7  # later days of the same site a party is offered
NEARBY_KM = 10.0  # other sites a party is offered: within this distance,
NEARBY_SITES = 10  # the nearest this many of the same kind
OFFERS = 3  # alternatives in a sold-out answer or a closure's offer
STAY_HISTORY_DAYS = 28
STAY_SAMPLE = 5000
GATE_MINUTES = 5  # a gate's load is its entries over this many minutes
BEST_TIMES = 3
REDIRECTS = 3
READS_AT_ONCE = 8  # site-days read from Redis concurrently by one suggestion


@dataclass(frozen=True, slots=True)
class _Slot:
    key: str
    id: str
    start: datetime
    end: datetime
    start_minute: int
    end_minute: int


@dataclass(frozen=True, slots=True)
class _Outlook:
    """A site-day's slots and forecast: rebuilt at most every FORECAST_TTL seconds."""

    slots: tuple[_Slot, ...]
    quarters: tuple[fc.Quarter, ...]
    loads: dict[str, float]  # per slot id: forecast peak inside / instantaneous cap


@dataclass(frozen=True, slots=True)
class _Day:
    """A site-day as a suggestion sees it: its slots, places left and forecast."""

    site: Site
    visit_date: date
    load: DayLoad
    outlook: _Outlook

    @property
    def slots(self) -> tuple[_Slot, ...]:
        return self.outlook.slots

    @property
    def quarters(self) -> tuple[fc.Quarter, ...]:
        return self.outlook.quarters

    def slot_load(self, slot: _Slot) -> float:
        return self.outlook.loads.get(slot.id, 0.0)


class _Cache:
    """Values that expire after a few seconds, computed once however many ask at once."""

    def __init__(self, ttl: float, *, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        now = clock_time.monotonic()
        cached = self._values.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await compute()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(value)
            if len(self._values) >= self._size:
                self._values.clear()
            self._values[key] = (clock_time.monotonic() + self._ttl, value)
            return value
        finally:
            del self._pending[key]

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)

    def forget_where(self, matches: Callable[[Hashable], bool]) -> None:
        for key in [key for key in self._values if matches(key)]:
            del self._values[key]


class Crowd:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog,
        occupancy: Occupancy,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._occupancy = occupancy
        self._clock = clock
        self._sites = _Cache(SITES_TTL)
        self._stays = _Cache(STAYS_TTL)
        self._day_forecasts = _Cache(FORECAST_TTL)
        self._record_forecasts = _Cache(FORECAST_TTL)
        self._rankings = _Cache(RANKING_TTL)
        self._index = _Cache(INDEX_TTL)

    # inputs ------------------------------------------------------------------------------

    async def sites(self) -> dict[str, Site]:
        async def load() -> dict[str, Site]:
            async with self._sessions() as session:
                return {site.id: site for site in await repo.all_sites(session)}

        sites: dict[str, Site] = await self._sites.get("all", load)
        return sites

    async def _site(self, site_id: str) -> Site:
        site = (await self.sites()).get(site_id)
        if site is None:
            # A site created a moment ago on another replica.
            site = await self._catalog.site_record(site_id)
        return site

    async def stay(self, site: Site) -> fc.StayTimes:
        """Stay times learned from the last weeks' entry/exit pairs, or the configured
        average until there are enough of them."""

        async def learn() -> fc.StayTimes:
            since = self._catalog.today(site) - timedelta(days=STAY_HISTORY_DAYS)
            async with self._sessions() as session:
                stays = await repo.observed_stays(session, site.id, since, limit=STAY_SAMPLE)
            return fc.stay_times(stays, site.average_stay_minutes)

        stay: fc.StayTimes = await self._stays.get((site.id, site.average_stay_minutes), learn)
        return stay

    async def _day(self, site: Site, visit_date: date, *, fresh: bool = False) -> _Day | None:
        """Places left now (at most half a second old, unless `fresh`) and the forecast (half
        a minute)."""
        site_day = SiteDay(site.id, visit_date)
        load = await self._catalog.recent_load(site_day, fresh=fresh)
        if load is None:
            return None

        async def outlook() -> _Outlook:
            slots = []
            for key in load.slots:
                slot_id = SlotRef(site_day, key).id
                try:
                    start, end = await self._catalog.slot_times(slot_id)
                except NotFound:
                    continue
                slots.append(
                    _Slot(key, slot_id, start, end, _minutes(start), _minutes(end, end_of_day=True))
                )
            arrivals = [
                fc.Arrivals(slot.start_minute, slot.end_minute, load.slots[slot.key].used)
                for slot in slots
            ]
            quarters = fc.forecast(arrivals, await self.stay(site), **_hours(site))
            cap = site.instant_cap or 1
            return _Outlook(
                tuple(slots),
                tuple(quarters),
                {
                    slot.id: fc.peak_inside(quarters, slot.start_minute, slot.end_minute) / cap
                    for slot in slots
                },
            )

        return _Day(site, visit_date, load, await self._day_forecasts.get(site_day, outlook))

    # suggestions -------------------------------------------------------------------------

    async def suggestions(
        self,
        site_id: str,
        *,
        visit_date: date | None,
        at: time | None,
        party: int,
        origin: tuple[float, float] | None,
        limit: int,
    ) -> SuggestionsPublic:
        """Ranked alternatives to visiting a site on a date at a time of day."""
        site = await self._site(site_id)
        here = self._clock.now().astimezone(zone(site.timezone))
        visit_date = visit_date or here.date()
        if visit_date < here.date():
            raise InvalidRequest(
                field="date", rule="not-past", message="the date has passed", location="query"
            )
        if at is None:
            at = here.time() if visit_date == here.date() else site.opens
        at = at.replace(second=0, microsecond=0, tzinfo=None)
        wanted_minute = minute_of_day(at)
        day = await self._day(site, visit_date)
        wanted = None if day is None else _covering(day.slots, wanted_minute)
        wanted_load = None
        if day is not None:
            if wanted is not None:
                wanted_load = day.slot_load(wanted)
            else:
                inside = fc.peak_inside(day.quarters, wanted_minute, wanted_minute + 1)
                wanted_load = inside / site.instant_cap if site.instant_cap else 0.0
        ranked = await self._rank(
            site,
            visit_date,
            wanted_minute,
            party=party,
            wanted_load=wanted_load,
            exclude=None if wanted is None else wanted.id,
            origin=origin,
            limit=limit,
        )
        return SuggestionsPublic(
            site=site.id,
            date=visit_date,
            time=at,
            party=party,
            wanted_slot_id=None if wanted is None else wanted.id,
            wanted_remaining=(
                None if day is None or wanted is None else day.load.left_in(wanted.key)
            ),
            wanted_comfort=None if wanted_load is None else suggest.comfort(wanted_load),
            suggestions=ranked,
        )

    async def instead_of(
        self, slot_id: str, *, party: int, limit: int = OFFERS, fresh: bool = False
    ) -> list[Alternative]:
        """What to offer a party that cannot have this slot (sold out, or closed): the same
        ranking as the suggestions. Shared for half a second unless `fresh` (a closure's offer
        must not name what the closure just closed), which also reads places left afresh."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            return []

        async def compute() -> list[Alternative]:
            try:
                site = await self._site(ref.site_day.site)
                start, _ = await self._catalog.slot_times(slot_id)
                day = await self._day(site, ref.site_day.visit_date)
                wanted = (
                    None if day is None else next((s for s in day.slots if s.id == slot_id), None)
                )
                wanted_load = None if day is None or wanted is None else day.slot_load(wanted)
                return await self._rank(
                    site,
                    ref.site_day.visit_date,
                    _minutes(start),
                    party=party,
                    wanted_load=wanted_load,
                    exclude=slot_id,
                    origin=None,
                    limit=limit,
                    fresh=fresh,
                )
            except (NotFound, CapacityUnavailable):
                # Suggestions are a courtesy: a refusal or a closure never fails for them.
                return []

        if fresh:
            return await compute()
        offers: list[Alternative] = await self._rankings.get((slot_id, party, limit), compute)
        return offers

    async def _rank(
        self,
        site: Site,
        visit_date: date,
        wanted_minute: int,
        *,
        party: int,
        wanted_load: float | None,
        exclude: str | None,
        origin: tuple[float, float] | None,
        limit: int,
        fresh: bool = False,
    ) -> list[Alternative]:
        now = self._clock.now()
        places: list[tuple[Site, date, int]] = [
            (site, visit_date + timedelta(days=offset), offset) for offset in range(NEXT_DAYS + 1)
        ]
        nearby = sorted(
            (
                (_km(site, other), other.id, other)
                for other in (await self.sites()).values()
                if other.id != site.id and other.kind == site.kind
            ),
            key=lambda item: item[:2],
        )
        places += [
            (other, visit_date, 0) for km, _, other in nearby[:NEARBY_SITES] if km <= NEARBY_KM
        ]
        # Several site-days' counters at once, so their round trips to Redis overlap; not all
        # of a city's at once, which would take every connection of the pool.
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def day_of(where: Site, day_date: date) -> _Day | None:
            async with gate:
                return await self._day(where, day_date, fresh=fresh)

        days = await asyncio.gather(*(day_of(where, day_date) for where, day_date, _ in places))
        candidates = []
        for (where, _, days_later), day in zip(places, days, strict=True):
            if day is None:
                continue
            km = (
                suggest.great_circle_km(origin[0], origin[1], where.lat, where.lon)
                if origin is not None
                else _km(site, where)
            )
            for slot in day.slots:
                left = day.load.left_in(slot.key)
                # The ranking filters too; skipping here saves building what it would drop.
                if slot.id == exclude or left < party or not day.load.on_sale(slot.key, now):
                    continue
                state = day.load.slots[slot.key]
                candidates.append(
                    suggest.Candidate(
                        site=where.id,
                        site_name=where.name_en,
                        slot_id=slot.id,
                        start=slot.start,
                        end=slot.end,
                        remaining=left,
                        on_sale=True,
                        open=not (state.closed or day.load.day.closed),
                        load=day.slot_load(slot),
                        distance_km=km,
                        days_later=days_later,
                        minutes_apart=abs(slot.start_minute - wanted_minute),
                        same_site=where.id == site.id,
                    )
                )
        wanted = suggest.Wanted(party=party, load=wanted_load)
        return [
            Alternative.model_validate(s, from_attributes=True)
            for s in suggest.rank(wanted, candidates, limit=limit)
        ]

    # forecast ----------------------------------------------------------------------------

    async def forecast(
        self, site_id: str, visit_date: date, *, site: Site | None = None
    ) -> ForecastPublic:
        """A day's expected people inside per quarter hour, from its reservations (the SQL
        record) and the site's stay times. Cached: the live feed asks for every site every
        two seconds, and only a miss reads SQL."""

        async def build() -> ForecastPublic:
            nonlocal site
            if site is None:
                site = await self._catalog.site_record(site_id)
            async with self._sessions() as session:
                slots = await repo.slots_of_day(session, site.id, visit_date)
                expected = await repo.expected_by_slot(session, site.id, visit_date)
            stay = await self.stay(site)
            arrivals = [
                fc.Arrivals(
                    minute_of_day(slot.start),
                    _minutes_of(slot.end),
                    expected.get(slot.id, 0),
                )
                for slot in slots
            ]
            quarters = fc.forecast(arrivals, stay, **_hours(site))
            cap = site.instant_cap or 1
            peak = max(quarters, key=lambda q: q.inside, default=None)
            if peak is not None and peak.inside <= 0:
                peak = None
            return ForecastPublic(
                site=site.id,
                date=visit_date,
                instant_cap=site.instant_cap,
                expected_visitors=sum(expected.values()),
                stay=StayPublic(
                    source="learned" if stay.learned_from else "configured",
                    pairs=stay.learned_from,
                    mean_minutes=round(stay.mean, 1),
                ),
                peak_inside=round(peak.inside, 2) if peak else 0.0,
                peak_at=_at(site, visit_date, peak.end) if peak else None,
                quarters=[
                    ForecastQuarter(
                        start=_at(site, visit_date, q.start),
                        end=_at(site, visit_date, q.end),
                        arrivals=round(q.arrivals, 2),
                        exits=round(q.exits, 2),
                        inside=round(q.inside, 2),
                        load=round(q.inside / cap, 4),
                    )
                    for q in quarters
                ],
            )

        result: ForecastPublic = await self._record_forecasts.get((site_id, visit_date), build)
        return result

    async def beside(
        self, site: Site, visit_date: date, measured: Sequence[tuple[datetime, int]]
    ) -> tuple[list[ForecastPoint], ForecastError]:
        """The forecast at every quarter hour of the day, and its error against the people
        counted inside at the quarter hours so far."""
        day = await self.forecast(site.id, visit_date, site=site)
        opens = local(site, visit_date, site.opens)
        points = [ForecastPoint(at=opens, inside=0.0)] + [
            ForecastPoint(at=q.end, inside=q.inside) for q in day.quarters
        ]
        expected = {point.at: point.inside for point in points}
        errors = [abs(expected[at] - inside) for at, inside in measured if at in expected]
        mean = sum(errors) / len(errors) if errors else 0.0
        return points, ForecastError(
            points=len(errors),
            mean_abs=round(mean, 2),
            max_abs=round(max(errors, default=0.0), 2),
            mean_abs_share=round(mean / site.instant_cap, 4) if site.instant_cap else 0.0,
        )

    # gates and redirects -----------------------------------------------------------------

    async def suggested_gate(
        self, site: Site, gates: Sequence[Gate], flow: Flow | None = None
    ) -> GateAdvice | None:
        """The entry gate with the most room in its flow for a party arriving now (`flow`:
        today's, when the caller has just read it)."""
        here = self._clock.now().astimezone(zone(site.timezone))
        if flow is None:
            flow = await self._occupancy.flow(SiteDay(site.id, here.date()))
        minute = here.hour * 60 + here.minute
        loads = [
            suggest.GateLoad(
                gate=gate.id,
                entries=sum(
                    flow.by_minute.get(m, {}).get(gate.id, (0, 0))[0]
                    for m in range(minute - GATE_MINUTES, minute)
                ),
                passes_per_minute=gate.flow_per_minute,
                minutes=GATE_MINUTES,
            )
            for gate in gates
            if gate.site_id == site.id and gate.direction in ("both", "entry")
        ]
        best = suggest.least_loaded(loads)
        if best is None:
            return None
        name = next(g.name_en for g in gates if g.id == best.gate)
        return GateAdvice(gate=best.gate, name=name, load=round(best.load, 4))

    async def redirects(self, crowded: str, places: Sequence[suggest.Place]) -> list[Redirect]:
        here = next((p for p in places if p.site == crowded), None)
        if here is None:
            return []
        return [
            Redirect.model_validate(r, from_attributes=True)
            for r in suggest.redirect(here, places, within_km=NEARBY_KM, limit=REDIRECTS)
        ]

    # the city's crowd index --------------------------------------------------------------

    async def index(self) -> list[CrowdSite]:
        """Per site: people inside now, comfort, places left, the calmest times left today."""
        index: list[CrowdSite] = await self._index.get("all", self._build_index)
        return index

    async def _build_index(self) -> list[CrowdSite]:
        sites = list((await self.sites()).values())
        async with self._sessions() as session:
            gates = list(await repo.gates_of(session, [site.id for site in sites]))
        now = self._clock.now()
        index = []
        for site in sorted(sites, key=lambda s: s.id):
            today = self._catalog.today(site)
            site_day = SiteDay(site.id, today)
            try:
                count = await self._occupancy.count(site_day)
                level = await self._occupancy.level(site_day) or "green"
                day = await self._day(site, today)
                gate = await self.suggested_gate(site, gates)
            except CapacityUnavailable:
                count, level, day, gate = None, "green", None, None
            if count is None:
                async with self._sessions() as session:
                    inside = await repo.people_inside(session, site.id, today)
            else:
                inside = count.inside
            load = inside / site.instant_cap if site.instant_cap else 0.0
            best = []
            if day is not None:
                open_slots = [
                    s
                    for s in day.slots
                    if day.load.on_sale(s.key, now) and day.load.left_in(s.key) > 0
                ]
                open_slots.sort(key=lambda s: (round(day.slot_load(s), 4), s.start))
                best = [
                    BestTime(
                        slot_id=s.id,
                        start=s.start,
                        end=s.end,
                        remaining=day.load.left_in(s.key),
                        load=round(day.slot_load(s), 4),
                        comfort=suggest.comfort(day.slot_load(s)),
                    )
                    for s in open_slots[:BEST_TIMES]
                ]
            index.append(
                CrowdSite(
                    site=site.id,
                    name=site.name_en,
                    name_zh=site.name_zh,
                    kind=site.kind,
                    lat=site.lat,
                    lon=site.lon,
                    date=today,
                    inside=inside,
                    instant_cap=site.instant_cap,
                    load=round(load, 4),
                    comfort=suggest.comfort(load),
                    level=level,
                    places_left_today=0 if day is None else _left_today(day),
                    best_times=best,
                    suggested_gate=None if gate is None else gate.gate,
                )
            )
        return index

    # the capacity calculator -------------------------------------------------------------

    async def capacity_plan(self, site_id: str, body: CapacityPlanRequest) -> CapacityPlanPublic:
        """Caps and slot quotas for a site's zones and stay time (LB/T 034-2014)."""
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
            if site is None:
                raise NotFound(f"no site {site_id}")
            templates = list(await repo.templates_of(session, site_id))
        windows = [
            (template, start, end) for template in templates for start, end in slot_times(template)
        ]
        open_minutes = minute_of_day(site.closes) - minute_of_day(site.opens)
        result = calculator.plan(
            [calculator.Zone(z.name, z.area_m2, z.m2_per_person) for z in body.zones],
            average_stay_minutes=body.average_stay_minutes,
            open_minutes=open_minutes,
            windows=[calculator.Window(minute_of_day(s), _minutes_of(e)) for _, s, e in windows],
        )
        if result.instant_cap < 1:
            raise InvalidRequest(
                field="zones",
                rule="room-for-one",
                message="the zones do not hold one person at their space per person",
            )
        # A template's windows share one capacity: the smallest of their quotas.
        per_template: dict[int, int] = {}
        for (template, _, _), quota in zip(windows, result.slot_quotas, strict=True):
            key = template.id or 0
            per_template[key] = min(per_template.get(key, quota), quota)
        quarters = fc.forecast(
            [
                fc.Arrivals(minute_of_day(s), _minutes_of(e), per_template[t.id or 0])
                for t, s, e in windows
            ],
            fc.StayTimes.fixed(body.average_stay_minutes),
            **_hours(site),
        )
        return CapacityPlanPublic(
            site=site.id,
            instant_cap=result.instant_cap,
            daily_cap=result.daily_cap,
            open_minutes=open_minutes,
            average_stay_minutes=body.average_stay_minutes,
            arrivals_per_minute=round(result.arrivals_per_minute, 3),
            slot_quotas=[
                SlotQuota(
                    template_id=template.id or 0,
                    label=template.label,
                    start=start,
                    end=end,
                    quota=per_template[template.id or 0],
                )
                for template, start, end in windows
            ],
            peak_forecast_inside=round(max((q.inside for q in quarters), default=0.0), 2),
            applied=False,
        )

    def forget(self, site_id: str) -> None:
        """After a manager's change to a site: this process's next answers use it at once
        (other replicas within the caches' lifetimes)."""
        self._sites.forget("all")
        self._index.forget("all")
        for cache in (self._day_forecasts, self._record_forecasts, self._stays):
            cache.forget_where(lambda key: _names_site(key, site_id))


def _minutes(at: datetime, *, end_of_day: bool = False) -> int:
    minutes = at.hour * 60 + at.minute
    return 24 * 60 if end_of_day and minutes == 0 else minutes


def _minutes_of(at: time) -> int:
    """An end time as minutes of the day (midnight ends the day)."""
    return minute_of_day(at) or 24 * 60


def _hours(site: Site) -> dict[str, int]:
    return {"opens": minute_of_day(site.opens), "closes": _minutes_of(site.closes)}


def _at(site: Site, visit_date: date, minute: int) -> datetime:
    midnight = local(site, visit_date, time(0, 0))
    return (midnight + timedelta(minutes=minute)).astimezone(zone(site.timezone))


def _km(a: Site, b: Site) -> float:
    return suggest.great_circle_km(a.lat, a.lon, b.lat, b.lon)


def _covering(slots: Sequence[_Slot], minute: int) -> _Slot | None:
    """The slot whose entry window holds a minute, if any."""
    for slot in slots:
        if slot.start_minute <= minute < slot.end_minute:
            return slot
    return None


def _names_site(key: Hashable, site_id: str) -> bool:
    """Whether a cache key (a SiteDay, or a tuple starting with a site id) is about a site."""
    if isinstance(key, SiteDay):
        return key.site == site_id
    return isinstance(key, tuple) and bool(key) and key[0] == site_id


def _left_today(day: _Day) -> int:
    return 0 if day.load.day.closed else day.load.day.left
