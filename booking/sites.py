"""The catalog: sites, gates, slots with places left, and slot generation."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import (
    check_pools,
    generate_slots,
    horizon_dates,
    local,
    parse_slot_id,
    sales_close_at,
    sales_open_at,
    slot_key,
    zone,
)
from booking.errors import NotFound
from booking.models import AuditEvent, Gate, Site, Slot, SlotStatus
from booking.schemas import (
    AuditEventPublic,
    DayLoadPublic,
    GatePublic,
    SitePublic,
    SlotPublic,
)
from capacity.clock import Clock
from capacity.counters import Counters, DayLoad
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay
from capacity.suggest import great_circle_km

log = logging.getLogger(__name__)

LOAD_TTL_SECONDS = 0.5
RULES_TTL_SECONDS = 5.0


def distance_km(a: Site, b: Site) -> float:
    """Great-circle distance between two sites."""
    return great_circle_km(a.lat, a.lon, b.lat, b.lon)


@dataclass(frozen=True, slots=True)
class Places:
    slots: dict[str, int]
    day_left: int
    closed: bool


class Catalog:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._counters = counters
        self._clock = clock
        # Slot times never change once a slot exists, so every replica may keep them.
        self._times: dict[str, tuple[datetime, datetime]] = {}
        self._loads: dict[SiteDay, tuple[float, DayLoad | None]] = {}
        self._hold_limits: dict[str, tuple[float, int]] = {}

    # sites -------------------------------------------------------------------------------

    async def sites(self) -> list[SitePublic]:
        async with self._sessions() as session:
            sites = await repo.all_sites(session)
            gates = await repo.gates_of(session, [site.id for site in sites])
        return [await self._site_view(site, gates) for site in sites]

    async def site(self, site_id: str) -> SitePublic:
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
            if site is None:
                raise NotFound(f"no site {site_id}")
            gates = await repo.gates_of(session, [site_id])
        return await self._site_view(site, gates)

    async def site_record(self, site_id: str) -> Site:
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
        if site is None:
            raise NotFound(f"no site {site_id}")
        return site

    async def _site_view(self, site: Site, gates: Sequence[Gate]) -> SitePublic:
        today = self.today(site)
        async with self._sessions() as session:
            slots = await repo.slots_of_day(session, site.id, today)
        places = await self._places(site, today, slots)
        return SitePublic(
            **site.model_dump(exclude={"sources"}),
            name=site.name_en,
            sources=site.sources,
            gates=[
                GatePublic.model_validate(gate, from_attributes=True)
                for gate in gates
                if gate.site_id == site.id
            ],
            today=DayLoadPublic(
                date=today,
                open=bool(slots) and not places.closed,
                offered=site.daily_cap if slots else 0,
                remaining=places.day_left if slots else 0,
            ),
        )

    async def _places(self, site: Site, visit_date: date, slots: Sequence[Slot]) -> Places:
        """Places left per slot and in the day: Redis's count, or SQL's while Redis has none
        (being rebuilt, or unreachable), so the catalog stays readable through an outage."""
        try:
            load = await self._counters.load(SiteDay(site.id, visit_date), now=self._clock.now())
        except CapacityUnavailable:
            load = None
        if load is not None:
            return Places(
                {slot.id: load.left_in(slot_key(slot.start)) for slot in slots},
                load.day.left,
                load.day.closed,
            )
        async with self._sessions() as session:
            rows = await repo.active_units(session, site.id, visit_date)
        per_slot: dict[str, int] = {}
        for row in rows:
            per_slot[row[0]] = per_slot.get(row[0], 0) + 1
        day_left = max(site.daily_cap - len(rows), 0)
        return Places(
            {
                slot.id: max(min(slot.capacity - per_slot.get(slot.id, 0), day_left), 0)
                for slot in slots
            },
            day_left,
            closed=False,
        )

    async def places_left_today(self, site: Site) -> int:
        """Places still for sale today at a site (Redis's count, or SQL's)."""
        today = self.today(site)
        async with self._sessions() as session:
            slots = await repo.slots_of_day(session, site.id, today)
        if not slots:
            return 0
        places = await self._places(site, today, slots)
        return 0 if places.closed else places.day_left

    def today(self, site: Site) -> date:
        return self._clock.now().astimezone(zone(site.timezone)).date()

    # slots -------------------------------------------------------------------------------

    async def slots(self, site_id: str, visit_date: date) -> list[SlotPublic]:
        """A day's slots with the places left in each."""
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
            if site is None:
                raise NotFound(f"no site {site_id}")
            slots = await repo.slots_of_day(session, site_id, visit_date)
        places = await self._places(site, visit_date, slots)
        now = self._clock.now()
        return [self._slot_view(site, slot, places.slots[slot.id], now) for slot in slots]

    async def slot(self, slot_id: str) -> SlotPublic:
        async with self._sessions() as session:
            slot = await repo.get_slot(session, slot_id)
            if slot is None:
                raise NotFound(f"no slot {slot_id}")
            site = await repo.get_site(session, slot.site_id)
        assert site is not None
        places = await self._places(site, slot.visit_date, [slot])
        return self._slot_view(site, slot, places.slots[slot.id], self._clock.now())

    def _slot_view(self, site: Site, slot: Slot, remaining: int, now: datetime) -> SlotPublic:
        opens = sales_open_at(site, slot.visit_date)
        closes = sales_close_at(site, slot.visit_date, slot.end)
        open_now = slot.status == SlotStatus.open and opens <= now < closes
        return SlotPublic(
            id=slot.id,
            site=slot.site_id,
            date=slot.visit_date,
            start=local(site, slot.visit_date, slot.start),
            end=local(site, slot.visit_date, slot.end),
            label=slot.label,
            capacity=slot.capacity,
            remaining=remaining if slot.status == SlotStatus.open else 0,
            status=slot.status,
            closed_reason=slot.closed_reason,
            on_sale=open_now,
            sales_open_at=opens,
            sales_close_at=closes,
            pools=slot.pools,
        )

    async def slot_times(
        self, slot_id: str, *, session: AsyncSession | None = None
    ) -> tuple[datetime, datetime]:
        """Start and end of a slot's entry window, with the site's UTC offset. A caller with a
        session open passes it: on SQLite the pool's one connection is the one it holds."""
        times = self._times.get(slot_id)
        if times is None:
            ref = parse_slot_id(slot_id)
            if ref is None:
                raise NotFound(f"no slot {slot_id}")
            if session is None:
                async with self._sessions() as own:
                    await self._remember_day(own, ref.site_day)
            else:
                await self._remember_day(session, ref.site_day)
            times = self._times.get(slot_id)
            if times is None:
                raise NotFound(f"no slot {slot_id}")
        return times

    async def _remember_day(self, session: AsyncSession, site_day: SiteDay) -> None:
        site = await repo.get_site(session, site_day.site)
        if site is None:
            return
        slots = await repo.slots_of_day(session, site.id, site_day.visit_date)
        if len(self._times) > 50_000:
            self._times.clear()
        for slot in slots:
            self._times[slot.id] = (
                local(site, slot.visit_date, slot.start),
                local(site, slot.visit_date, slot.end),
            )

    async def hold_limit(self, site_id: str) -> int:
        """Holds one account may keep open at once at a site. Read at most every few seconds
        per process, so the booking path asks SQL nothing at the 20:00 rush."""
        now = time.monotonic()
        cached = self._hold_limits.get(site_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._sessions() as session:
            site = await repo.get_site(session, site_id)
        if site is None:
            raise NotFound(f"no site {site_id}")
        self._hold_limits[site_id] = (now + RULES_TTL_SECONDS, site.account_hold_limit)
        return site.account_hold_limit

    def forget_rules(self, site_id: str) -> None:
        """After a change of this process's making; other replicas see it within the TTL."""
        self._hold_limits.pop(site_id, None)

    async def slot_exists(self, slot_id: str) -> bool:
        async with self._sessions() as session:
            return await repo.get_slot(session, slot_id) is not None

    async def recent_load(self, site_day: SiteDay, *, fresh: bool = False) -> DayLoad | None:
        """A day's counters, read at most every half second per site-day unless `fresh`."""
        now = time.monotonic()
        cached = self._loads.get(site_day)
        if not fresh and cached is not None and cached[0] > now:
            return cached[1]
        load = await self._counters.load(site_day, now=self._clock.now())
        if len(self._loads) > 10_000:
            self._loads.clear()
        self._loads[site_day] = (now + LOAD_TTL_SECONDS, load)
        return load

    # managing ----------------------------------------------------------------------------

    async def ensure_slots(self, *, site_ids: Sequence[str] | None = None) -> int:
        return await ensure_slots(self._sessions, self._clock, site_ids=site_ids)

    async def audit(self, site_id: str, *, limit: int, offset: int) -> list[AuditEventPublic]:
        """Staff changes to a site, newest first: who, when, what, before and after."""
        async with self._sessions() as session:
            if await repo.get_site(session, site_id) is None:
                raise NotFound(f"no site {site_id}")
            events = await repo.audit_of(session, site_id, limit=limit, offset=offset)
        return [
            AuditEventPublic(
                id=event.id or 0,
                at=event.at,
                actor=event.actor,
                action=event.action,
                site=event.site_id,
                target=event.target,
                before=event.before,
                after=event.after,
            )
            for event in events
        ]

    async def change_slot(
        self, slot_id: str, changes: dict[str, Any], *, actor: str
    ) -> tuple[SlotPublic, bool]:
        """Change a slot's cap and pools: SQL first, then Redis. Lowering the cap never
        cancels anyone. Returns the slot, and whether its pools changed (the day's counters
        must then be rebuilt: they count each pool's places from SQL)."""
        ref = parse_slot_id(slot_id)
        async with self._sessions() as session, session.begin():
            slot = await repo.get_slot(session, slot_id)
            if slot is None or ref is None:
                raise NotFound(f"no slot {slot_id}")
            before = {name: getattr(slot, name) for name in changes}
            capacity = changes.get("capacity", slot.capacity)
            pools = changes.get("pools", slot.pools)
            check_pools(pools, capacity)
            await repo.change_slot(session, slot_id, capacity=capacity, pools=pools or None)
            await repo.add_audit(
                session,
                AuditEvent(
                    at=self._clock.now(),
                    actor=actor,
                    action="slot.capacity" if set(changes) == {"capacity"} else "slot.update",
                    site_id=slot.site_id,
                    target=slot_id,
                    before=before,
                    after=changes,
                ),
            )
        # If Redis is unreachable here, SQL already holds the new cap; the reconciler sees the
        # caps differ and rebuilds the day.
        if "capacity" in changes:
            await self._counters.set_slot_capacity(ref.site_day, ref.key, capacity)
        return await self.slot(slot_id), "pools" in changes and pools != before.get("pools")


async def ensure_slots(
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    *,
    site_ids: Sequence[str] | None = None,
) -> int:
    """Generate the slots of every site's booking horizon from its templates (idempotent)."""
    created = 0
    async with sessions() as session:
        sites = [s for s in await repo.all_sites(session) if site_ids is None or s.id in site_ids]
    for site in sites:
        today = clock.now().astimezone(zone(site.timezone)).date()
        async with sessions() as session, session.begin():
            templates = await repo.templates_of(session, site.id)
            slots = generate_slots(site, templates, horizon_dates(site, today))
            existing = await repo.existing_slot_ids(session, [s.id for s in slots])
            new = [s for s in slots if s.id not in existing]
            session.add_all(new)
        created += len(new)
    return created
