"""Tickets and gate scans: a confirmed reservation shows a rotating code, a gate scans it.

Each visitor enters once. The entry is one guarded UPDATE in SQL (`entered_at IS NULL`), so
two gates scanning the same ticket at the same moment give exactly one entry; the other gets
`409 already-entered`. Every scan, admitted or refused, is written to the scan log with its
reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import local, zone
from booking.crowd import Crowd
from booking.errors import (
    AlreadyEntered,
    NotConfirmed,
    NotFound,
    NotInside,
    OutsideEntryWindow,
    ScanRefused,
    TicketExpired,
    TicketInvalid,
    UnknownVisitor,
    WrongGateDirection,
    WrongSite,
)
from booking.models import (
    AlertChange,
    Gate,
    OutboxEvent,
    ReservationStatus,
    SalesStop,
    ScanEvent,
    Site,
)
from booking.reconcile import Reconciler
from booking.schemas import (
    CurvePoint,
    GateAdvice,
    GateFlow,
    LiveSite,
    OccupancyPublic,
    ScanResult,
    TicketPublic,
)
from booking.sites import Catalog
from booking.tickets import TicketRefused, TicketSigner
from capacity.alerts import ACTIONS, DEFAULT_THRESHOLDS, level_for, rank
from capacity.clock import Clock
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay
from capacity.occupancy import Count, Flow, NotCounted, Occupancy, SiteFull
from capacity.suggest import Place

log = logging.getLogger(__name__)

TICKET_TTL = timedelta(seconds=60)

# Reservations whose tickets a gate honours: confirmed, or with part of the party inside.
ADMISSIBLE = frozenset({ReservationStatus.confirmed, ReservationStatus.checked_in})


@dataclass(frozen=True, slots=True)
class Scan:
    gate_id: str
    code: str
    direction: str  # "entry" or "exit"
    positions: Sequence[int] | None = None  # named visitors, or the whole party


class Gates:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog,
        signer: TicketSigner,
        occupancy: Occupancy,
        crowd: Crowd,
        reconciler: Reconciler,
        clock: Clock,
    ) -> None:
        self._occupancy = occupancy
        self._crowd = crowd
        self._reconciler = reconciler
        self._sessions = sessions
        self._catalog = catalog
        self._signer = signer
        self._clock = clock

    async def ticket(self, *, owner_id: str, reservation_id: str) -> TicketPublic:
        """A fresh entry code for one's own confirmed reservation (about a minute's life)."""
        async with self._sessions() as session:
            reservation = await repo.get_reservation(session, reservation_id, owner_id=owner_id)
            if reservation is None:
                raise NotFound(f"no reservation {reservation_id}")
            site = await repo.get_site(session, reservation.site_id)
            gates = await repo.gates_of(session, [reservation.site_id])
        assert site is not None
        if reservation.status not in ADMISSIBLE:
            raise NotConfirmed(f"a {reservation.status} reservation has no entry ticket")
        window = await self._window(site, reservation.slot_id)
        now = self._clock.now()
        code, expires_at = self._signer.issue(
            reservation_id, site.id, window, now=now, ttl=TICKET_TTL
        )
        return TicketPublic(
            code=code,
            expires_at=expires_at,
            reservation_id=reservation_id,
            site=site.id,
            entry_from=window[0],
            entry_until=window[1],
            suggested_gate=await self._suggested_gate(site, gates),
        )

    async def scan(self, scan: Scan) -> ScanResult:
        now = self._clock.now()
        async with self._sessions() as session:
            gate = await repo.get_gate(session, scan.gate_id)
            site = None if gate is None else await repo.get_site(session, gate.site_id)
        if gate is None or site is None:
            raise NotFound(f"no gate {scan.gate_id}")
        try:
            if gate.direction not in ("both", scan.direction):
                raise WrongGateDirection(f"{gate.id} is an {gate.direction} gate")
            result = await self._scan(scan, site, now)
        except ScanRefused as refused:
            await self._log(
                scan, gate.site_id, refused.reservation_id, 0, "refused", refused.code, now
            )
            raise
        except SiteFull as full:
            rid = full.extra.get("reservation_id")
            await self._log(scan, gate.site_id, rid, 0, "refused", full.code, now)
            raise
        return result

    async def _scan(self, scan: Scan, site: Site, now: datetime) -> ScanResult:
        gate_site = site.id
        try:
            claims = self._signer.read(scan.code, now=now)
        except TicketRefused as refused:
            if refused.reason == "expired":
                raise TicketExpired(refused.message) from None
            raise TicketInvalid(refused.message) from None
        rid = claims.reservation_id
        if claims.site != gate_site:
            raise WrongSite(
                f"this ticket is for {claims.site}, not a gate of {gate_site}", reservation_id=rid
            )
        if scan.direction == "entry":
            # Counted from SQL before the scan's own transaction (one connection on SQLite).
            today = SiteDay(gate_site, now.astimezone(zone(site.timezone)).date())
            if await self._occupancy.inside(today) is None:
                await self.rebuild_occupancy(today, only_if_missing=True)
        async with self._sessions() as session, session.begin():
            reservation = await repo.get_reservation(session, rid)
            if reservation is None:  # pragma: no cover - a genuine code names a reservation
                raise TicketInvalid("no such reservation")
            if reservation.status not in ADMISSIBLE:
                raise NotConfirmed(
                    f"the reservation is {reservation.status}, not confirmed", reservation_id=rid
                )
            visitors = list(await repo.visitors_of(session, [reservation.id]))
            positions = (
                [v.position for v in visitors] if scan.positions is None else list(scan.positions)
            )
            unknown = sorted(set(positions) - {v.position for v in visitors})
            if unknown:
                raise UnknownVisitor(f"no visitor {unknown[0]} in this party", reservation_id=rid)
            if scan.direction == "entry":
                if not claims.window_start <= now < claims.window_end:
                    raise OutsideEntryWindow(
                        f"entry from {claims.window_start.isoformat()} "
                        f"until {claims.window_end.isoformat()}",
                        reservation_id=rid,
                    )
                waiting = [
                    v.position for v in visitors if v.position in positions and v.entered_at is None
                ]
                if not waiting:
                    raise AlreadyEntered(reservation_id=rid)
                site_day = SiteDay(gate_site, reservation.visit_date)
                minute = _minute(now, site)
                await self._count_in(site, site_day, scan.gate_id, len(waiting), minute, rid)
                try:
                    changed = await repo.enter(session, reservation.id, waiting, scan.gate_id, now)
                except BaseException:
                    await self._occupancy.give_back(
                        site_day, scan.gate_id, len(waiting), minute=minute
                    )
                    raise
                if len(changed) < len(waiting):  # another gate let some of them in just now
                    await self._occupancy.give_back(
                        site_day, scan.gate_id, len(waiting) - len(changed), minute=minute
                    )
                if not changed:
                    raise AlreadyEntered(reservation_id=rid)
                await repo.move_status(
                    session,
                    [reservation.id],
                    from_statuses=[ReservationStatus.confirmed],
                    to=ReservationStatus.checked_in,
                    now=now,
                )
            else:
                changed = await repo.leave(session, reservation.id, positions, scan.gate_id, now)
                if not changed:
                    raise NotInside(reservation_id=rid)
            session.add(
                ScanEvent(
                    at=now,
                    gate_id=scan.gate_id,
                    site_id=gate_site,
                    reservation_id=reservation.id,
                    direction=scan.direction,
                    people=len(changed),
                    result="admitted",
                    reason="",
                )
            )
        site_day = SiteDay(gate_site, reservation.visit_date)
        if scan.direction == "exit":
            # After the commit: SQL is the record, and a rebuild would count this exit.
            await self._count_out(site_day, scan.gate_id, len(changed), _minute(now, site))
        await self._review_level(site, site_day, now)
        return ScanResult(
            result="admitted",
            direction=scan.direction,
            reservation_id=reservation.id,
            site=gate_site,
            gate=scan.gate_id,
            people=len(changed),
            visitors=sorted(changed),
        )

    async def _count_in(
        self, site: Site, site_day: SiteDay, gate_id: str, people: int, minute: int, rid: str
    ) -> None:
        """Take room for people entering, against the site's instantaneous cap."""
        try:
            await self._occupancy.enter(
                site_day, gate_id, people, instant_cap=site.instant_cap, minute=minute
            )
        except NotCounted as error:
            # Counted before the transaction began; lost since (Redis restarted): the next
            # scan counts again from SQL.
            raise CapacityUnavailable("people inside are being counted again") from error
        except SiteFull as full:
            full.extra["reservation_id"] = rid
            raise

    async def _count_out(self, site_day: SiteDay, gate_id: str, people: int, minute: int) -> None:
        try:
            await self._occupancy.leave(site_day, gate_id, people, minute=minute)
        except NotCounted:
            await self.rebuild_occupancy(site_day, only_if_missing=True)
        except CapacityUnavailable:
            log.warning("exit not counted: Redis unreachable for %s", site_day)

    async def _review_level(self, site: Site, site_day: SiteDay, now: datetime) -> None:
        """Move the site's alert level if its loads crossed a threshold; a change is recorded
        with its action and written to the outbox, once whatever the number of replicas."""
        try:
            count = await self._occupancy.count(site_day)
            if count is None:
                return
            loads = _loads(site, count.inside, count.entered)
            level = level_for(loads, site.alert_thresholds or DEFAULT_THRESHOLDS)
            before = await self._occupancy.move_level(site_day, level)
        except CapacityUnavailable:
            log.warning("alert level not reviewed: Redis unreachable for %s", site_day)
            return
        if before is None or (before == "" and level == "green"):
            return  # no change; or the day's first review, at the usual level
        change = AlertChange(
            at=now,
            site_id=site.id,
            visit_date=site_day.visit_date,
            level_from=before or "green",
            level_to=level,
            instant_load=round(loads[0], 4),
            day_load=round(loads[1], 4),
            action=ACTIONS[level],
        )
        stop = rank(level) >= rank("yellow")
        async with self._sessions() as session, session.begin():
            session.add(change)
            if stop and not await repo.sales_stopped(session, site.id, site_day.visit_date):
                session.add(
                    SalesStop(
                        site_id=site.id,
                        visit_date=site_day.visit_date,
                        at=now,
                        reason=f"alert level {level}",
                    )
                )
            else:
                stop = False
            session.add(
                OutboxEvent(
                    at=now,
                    topic="site.alert_level",
                    site_id=site.id,
                    payload={
                        "site": site.id,
                        "date": site_day.visit_date.isoformat(),
                        "from": change.level_from,
                        "to": level,
                        "instant_load": change.instant_load,
                        "day_load": change.day_load,
                        "action": change.action,
                    },
                )
            )
        log.info("alert level of %s: %s -> %s", site.id, change.level_from, level)
        if stop:
            # Sales stop for the rest of the day: the day's counters are rebuilt closed.
            try:
                # A gate does not wait: closed now, rebuilt in the background if busy.
                await self._reconciler.rebuild_after_change(site_day, wait=timedelta(0))
            except CapacityUnavailable:
                log.warning("sales stop waits for the reconciler: Redis unreachable")

    async def occupancy(self, site_id: str) -> OccupancyPublic:
        """People inside a site now, against its instantaneous cap, and each gate's flow."""
        now = self._clock.now()
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
            if site is None:
                raise NotFound(f"no site {site_id}")
            gates = await repo.gates_of(session, [site_id])
        site_day = SiteDay(site_id, now.astimezone(zone(site.timezone)).date())
        count = await self._occupancy.count(site_day)
        if count is None:
            await self.rebuild_occupancy(site_day, only_if_missing=True)
            count = await self._occupancy.count(site_day) or Count(0, 0)
        inside = count.inside
        loads = _loads(site, count.inside, count.entered)
        level = await self._occupancy.level(site_day) or "green"
        flow = await self._occupancy.flow(site_day)
        # The last whole minute: the current one is still filling.
        last = _minute(now, site) - 1
        curve = _curve(site, site_day, flow, now)
        forecast, error = await self._crowd.beside(
            site, site_day.visit_date, [(point.at, point.inside) for point in curve]
        )
        per_gate = []
        for gate in gates:
            today = [f.get(gate.id, (0, 0)) for f in flow.by_minute.values()]
            recent = flow.by_minute.get(last, {}).get(gate.id, (0, 0))
            per_gate.append(
                GateFlow(
                    gate=gate.id,
                    entries_today=sum(t[0] for t in today),
                    exits_today=sum(t[1] for t in today),
                    entries_last_minute=recent[0],
                    exits_last_minute=recent[1],
                )
            )
        return OccupancyPublic(
            site=site_id,
            at=now,
            inside=inside,
            instant_cap=site.instant_cap,
            load=round(loads[0], 4),
            daily_cap=site.daily_cap,
            entered_today=count.entered,
            day_load=round(loads[1], 4),
            level=level,
            action=ACTIONS[level],
            entries_today=sum(g.entries_today for g in per_gate),
            exits_today=sum(g.exits_today for g in per_gate),
            entries_last_minute=sum(g.entries_last_minute for g in per_gate),
            exits_last_minute=sum(g.exits_last_minute for g in per_gate),
            gates=per_gate,
            curve=curve,
            forecast=forecast,
            forecast_error=error,
            suggested_gate=await self._suggested_gate(site, gates, flow),
        )

    async def _suggested_gate(
        self, site: Site, gates: Sequence[Gate], flow: Flow | None = None
    ) -> GateAdvice | None:
        try:
            return await self._crowd.suggested_gate(site, gates, flow)
        except CapacityUnavailable:
            return None

    async def end_of_day(self, *, limit: int = 500) -> tuple[int, int]:
        """After a site's last entry time, its unused confirmed reservations become no-shows;
        at closing, everyone still counted inside is checked out (their reservations are
        completed). Returns (no-shows, people checked out)."""
        now = self._clock.now()
        no_shows = checked_out = 0
        async with self._sessions() as session:
            sites = list(await repo.all_sites(session))
        for site in sites:
            here = now.astimezone(zone(site.timezone))
            today = here.date()
            tomorrow = today + timedelta(days=1)
            async with self._sessions() as session, session.begin():
                unused = await repo.unused_before(
                    session,
                    site.id,
                    tomorrow if here.time() >= site.last_entry else today,
                    limit=limit,
                )
                if unused:
                    no_shows += len(
                        await repo.move_status(
                            session,
                            unused,
                            from_statuses=[ReservationStatus.confirmed],
                            to=ReservationStatus.no_show,
                            now=now,
                        )
                    )
                closing = tomorrow if here.time() >= site.closes else today
                inside = list(
                    await repo.still_inside_before(session, site.id, closing, limit=limit)
                )
                for visit_date in sorted({v.visit_date for v in inside}):
                    group = [v for v in inside if v.visit_date == visit_date]
                    closed_at = min(now, local(site, visit_date, site.closes))
                    await repo.check_out(session, [v.id for v in group if v.id], closed_at)
                    reservations = sorted({v.reservation_id for v in group})
                    await repo.move_status(
                        session,
                        reservations,
                        from_statuses=[ReservationStatus.checked_in],
                        to=ReservationStatus.completed,
                        now=now,
                    )
                    for reservation_id in reservations:
                        session.add(
                            ScanEvent(
                                at=closed_at,
                                gate_id="",
                                site_id=site.id,
                                reservation_id=reservation_id,
                                direction="exit",
                                people=sum(1 for v in group if v.reservation_id == reservation_id),
                                result="closing",
                                reason="checked out at closing",
                            )
                        )
                    checked_out += len(group)
            if inside:
                await self.rebuild_occupancy(SiteDay(site.id, today))
        return no_shows, checked_out

    async def live(self, site_ids: Sequence[str] | None) -> list[LiveSite]:
        """Every site's (or the named sites') occupancy, level and places left today."""
        async with self._sessions() as session:
            sites = [
                s for s in await repo.all_sites(session) if site_ids is None or s.id in site_ids
            ]
        return await self._with_redirects(await self._feed(sites))

    async def _feed(self, sites: Sequence[Site]) -> list[LiveSite]:
        feed = []
        for site in sites:
            now = await self.occupancy(site.id)
            feed.append(
                LiveSite(
                    site=site.id,
                    date=now.at.astimezone(zone(site.timezone)).date(),
                    name=site.name_en,
                    inside=now.inside,
                    instant_cap=now.instant_cap,
                    load=now.load,
                    entered_today=now.entered_today,
                    daily_cap=now.daily_cap,
                    day_load=now.day_load,
                    level=now.level,
                    action=now.action,
                    entries_last_minute=now.entries_last_minute,
                    exits_last_minute=now.exits_last_minute,
                    places_left_today=await self._catalog.places_left_today(site),
                )
            )
        return feed

    async def _with_redirects(self, feed: list[LiveSite]) -> list[LiveSite]:
        """From yellow up, each crowded site names where to send people instead: all sites
        are compared, not only those the feed was asked for."""
        if all(rank(s.level) < rank("yellow") for s in feed):
            return feed
        everywhere = {s.site: s for s in feed}
        records = {s.id: s for s in await self._all_sites()}
        missing = [site for site in records.values() if site.id not in everywhere]
        everywhere.update({s.site: s for s in await self._feed(missing)})
        places = [
            Place(
                site=s.site,
                name=s.name,
                kind=records[s.site].kind,
                lat=records[s.site].lat,
                lon=records[s.site].lon,
                load=s.load,
                level=s.level,
                places_left_today=s.places_left_today,
            )
            for s in everywhere.values()
            if s.site in records
        ]
        return [
            s.model_copy(update={"send_to": await self._crowd.redirects(s.site, places)})
            if rank(s.level) >= rank("yellow")
            else s
            for s in feed
        ]

    async def _all_sites(self) -> list[Site]:
        return list((await self._crowd.sites()).values())

    async def levels(self, site_days: Sequence[SiteDay]) -> dict[str, str]:
        """Each site-day's alert level: Redis reads only, polled to push level changes."""
        return {d.site: await self._occupancy.level(d) or "green" for d in site_days}

    async def rebuild_occupancy(self, site_day: SiteDay, *, only_if_missing: bool = False) -> None:
        """Count the people inside and each gate's flow again from SQL (with
        `only_if_missing`: unless another scan has just done so)."""
        async with self._sessions() as session:
            site = await repo.get_site(session, site_day.site)
            if site is None:
                raise NotFound(f"no site {site_day.site}")
            midnight = local(site, site_day.visit_date, time(0, 0))
            inside = await repo.people_inside(session, site_day.site, site_day.visit_date)
            entered = await repo.people_entered(session, site_day.site, site_day.visit_date)
            scans = await repo.admitted_scans(
                session, site_day.site, midnight, midnight + timedelta(days=1)
            )
        flows: dict[tuple[int, str, str], int] = defaultdict(int)
        for at, gate_id, direction, people in scans:
            key = (_minute(at, site), gate_id, "in" if direction == "entry" else "out")
            flows[key] += people
        await self._occupancy.rebuild(
            site_day,
            inside=inside,
            entered=entered,
            flows=flows,
            only_if_missing=only_if_missing,
        )

    async def _window(self, site: Site, slot_id: str) -> tuple[datetime, datetime]:
        start, end = await self._catalog.slot_times(slot_id)
        grace = timedelta(minutes=site.entry_grace_minutes)
        return start - grace, end + grace

    async def _log(
        self,
        scan: Scan,
        site_id: str,
        reservation_id: str | None,
        people: int,
        result: str,
        reason: str,
        now: datetime,
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                ScanEvent(
                    at=now,
                    gate_id=scan.gate_id,
                    site_id=site_id,
                    reservation_id=reservation_id,
                    direction=scan.direction,
                    people=people,
                    result=result,
                    reason=reason,
                )
            )


def _minute(at: datetime, site: Site) -> int:
    """Minute of the day at the site (flows are counted per local minute)."""
    here = at.astimezone(zone(site.timezone))
    return here.hour * 60 + here.minute


def _loads(site: Site, inside: int, entered: int) -> tuple[float, float]:
    """The instantaneous load (inside / instant cap) and the day's (entered / daily cap)."""
    return (
        inside / site.instant_cap if site.instant_cap else 0.0,
        entered / site.daily_cap if site.daily_cap else 0.0,
    )


CURVE_STEP_MINUTES = 15


def _curve(site: Site, site_day: SiteDay, flow: Flow, now: datetime) -> list[CurvePoint]:
    """People inside at every quarter hour of the day so far, from the gates' flows."""
    opens = site.opens.hour * 60 + site.opens.minute
    here = now.astimezone(zone(site.timezone))
    today = here.date() == site_day.visit_date
    until = here.hour * 60 + here.minute if today else 24 * 60 - 1
    balance = sorted(
        (minute, sum(v[0] - v[1] for v in gates.values()))
        for minute, gates in flow.by_minute.items()
    )
    points = []
    inside = index = 0
    start = opens - opens % CURVE_STEP_MINUTES
    for minute in range(start, until + 1, CURVE_STEP_MINUTES):
        while index < len(balance) and balance[index][0] < minute:
            inside += balance[index][1]
            index += 1
        at = local(site, site_day.visit_date, time(minute // 60, minute % 60))
        points.append(CurvePoint(at=at, inside=max(inside, 0)))
    if today and until % CURVE_STEP_MINUTES:
        # And now, with every scan so far.
        at = local(site, site_day.visit_date, time(until // 60, until % 60))
        points.append(CurvePoint(at=at, inside=max(sum(b for _, b in balance), 0)))
    return points
