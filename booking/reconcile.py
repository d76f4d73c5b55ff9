"""Bringing Redis back to what SQL proves (ARCHITECTURE §2, points 3, 5 and 6).

- `rebuild` replaces one site-day's counters with the units active in SQL. It runs at
  start-up for days without counters, whenever a booking finds a unit conflict (Redis was
  stale), and whenever a booking finds no counters at all (Redis restarted empty).
- `reconcile` compares Redis with SQL for every active site-day: units that SQL holds but Redis
  counts free are dangerous (Redis could sell them again), so the day is rebuilt at once; units
  Redis counts taken without an active visitor in SQL are leaks (an undersell), returned once
  they have stayed leaked longer than the grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import (
    is_open_on,
    minute_of_day,
    pools_roll_over_at,
    release_batches,
    sales_close_at,
    sales_open_at,
    slot_key,
)
from booking.models import SlotStatus
from capacity.clock import Clock, to_millis
from capacity.counters import Counters, DayPlan, SlotPlan, Snapshot, release_field
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay

log = logging.getLogger(__name__)


@dataclass
class DayDrift:
    """What one reconcile pass found for one site-day."""

    site_day: SiteDay
    missing: int = 0  # units active in SQL that Redis counted free
    leaked: int = 0  # units Redis counted taken without an active visitor
    returned: int = 0  # leaked units returned this pass (older than the grace period)
    rebuilt: bool = False


@dataclass
class ReconcileReport:
    days: list[DayDrift] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return sum(day.missing + day.leaked for day in self.days)


@dataclass(frozen=True)
class Comparison:
    """Redis against SQL for one site-day, as read by `compare` (nothing written)."""

    snapshot: Snapshot
    # (slot_id, slot_unit, day_unit, id_hash) of each visitor active in SQL after the snapshot
    latest: list[tuple[str, int, int, str]]
    missing: int  # units (and owners' reservations) active in SQL in both reads, free in Redis
    suspects: frozenset[str]  # what Redis counts taken without an active visitor in SQL


async def compare(
    sessions: async_sessionmaker[AsyncSession], counters: Counters, site_day: SiteDay
) -> Comparison | None:
    """Read one site-day's counters and its active visitors and compare them; None when Redis
    has no counters for it. Read-only: the reconciler acts on the result, the audit reports it.

    SQL is read before and after the Redis snapshot: only visitors active in both reads count
    as "SQL holds it", so a cancel or a new booking racing the comparison is not mistaken for
    a missing unit; and a unit counts as leaked only if no visitor holds it in the later read.
    """
    if not await counters.is_built(site_day):
        return None
    before = await _active_rows(sessions, site_day)
    owners_before = await _active_owners(sessions, site_day)
    snapshot = await counters.snapshot(site_day)
    after = await _active_rows(sessions, site_day)
    owners_after = await _active_owners(sessions, site_day)
    if snapshot is None:
        return None
    stable = {row_id: row for row_id, row in before.items() if after.get(row_id) == row}
    latest = list(after.values())

    missing = 0
    for slot_id, slot_unit, day_unit, id_hash in stable.values():
        key = slot_id.rsplit(".", 1)[1]
        if slot_unit not in snapshot.slot_taken.get(key, frozenset()):
            missing += 1
        if day_unit not in snapshot.day_taken:
            missing += 1
        if id_hash not in snapshot.visitor_ids:
            missing += 1
    counted = {(o, r) for o, rs in snapshot.owners.items() for r in rs}
    missing += len((owners_before & owners_after) - counted)

    held_slot_units = {(r[0].rsplit(".", 1)[1], r[1]) for r in latest}
    held_day_units = {r[2] for r in latest}
    held_ids = {r[3] for r in latest}
    suspects: set[str] = set()
    for key, units in snapshot.slot_taken.items():
        suspects.update(f"s:{key}:{u}" for u in units if (key, u) not in held_slot_units)
    suspects.update(f"d:{u}" for u in snapshot.day_taken if u not in held_day_units)
    suspects.update(f"i:{h}" for h in snapshot.visitor_ids if h not in held_ids)
    suspects.update(f"o:{o}:{r}" for o, r in counted - owners_after)
    return Comparison(snapshot, latest, missing, frozenset(suspects))


async def _active_rows(
    sessions: async_sessionmaker[AsyncSession], site_day: SiteDay
) -> dict[int, tuple[str, int, int, str]]:
    async with sessions() as session:
        rows = await repo.active_units(session, site_day.site, site_day.visit_date)
    # Keyed by visitor row id: a unit freed and taken again by someone else is a new row.
    return {row[4] or 0: (row[0], row[1], row[2], row[3]) for row in rows}


async def _active_owners(
    sessions: async_sessionmaker[AsyncSession], site_day: SiteDay
) -> set[tuple[str, str]]:
    async with sessions() as session:
        return set(await repo.active_owners(session, site_day.site, site_day.visit_date))


class Reconciler:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        clock: Clock,
        grace: timedelta = timedelta(seconds=60),
    ) -> None:
        self._sessions = sessions
        self._counters = counters
        self._clock = clock
        self._grace = grace
        self._pending: dict[SiteDay, asyncio.Task[bool]] = {}

    async def rebuild(self, site_day: SiteDay) -> bool:
        """Rebuild one site-day from SQL; False if another replica is already doing it."""
        return bool(await self._rebuild_if_free(site_day))

    async def rebuild_after_change(
        self, site_day: SiteDay, *, wait: timedelta = timedelta(seconds=10)
    ) -> bool:
        """Rebuild one site-day after a change committed to SQL (pools, a closure, a draw).

        A rebuild already running elsewhere (the periodic reconciler, another API process)
        may have read SQL before the change: its counters would miss it. So the day fails
        closed, this waits for that rebuild to finish and rebuilds again; should it outlast
        `wait`, the rebuild goes on in the background and the day stays closed until then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait.total_seconds()
        built = await self._rebuild_if_free(site_day)
        if built is not None:
            return built
        await self._counters.forget(site_day)
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            built = await self._rebuild_if_free(site_day)
            if built is not None:
                return built
        self.schedule(site_day)
        return False

    async def _rebuild_if_free(self, site_day: SiteDay) -> bool | None:
        """None if another replica holds the day's rebuild lock."""
        async with self._counters.lease(site_day.rebuild_lock, ttl_ms=30_000) as taken:
            if not taken:
                return None
            # Fail closed while SQL is read: bookings answer 503 instead of using old counters.
            await self._counters.forget(site_day)
            plan = await self._plan(site_day)
            if plan is None:
                return False
            await self._counters.rebuild(site_day, plan, epoch=str(to_millis(self._clock.now())))
            await self._restore_holds(site_day)
            log.info("counters rebuilt", extra={"site_day": str(site_day)})
            return True

    async def _restore_holds(self, site_day: SiteDay) -> None:
        """The claims that count each account's open holds live in Redis only: after a
        restart, count the day's open holds again. (A hold confirmed between this read and
        the claim keeps a stale claim until its deadline: stricter, never looser, for minutes.)"""
        now = self._clock.now()
        async with self._sessions() as session:
            holds = await repo.open_holds_of_day(session, site_day.site, site_day.visit_date, now)
        await self._counters.restore_holds(site_day.site, holds, now=now)

    def schedule(self, site_day: SiteDay) -> None:
        """Rebuild in the background, once per site-day at a time (the booking path never waits)."""
        if site_day in self._pending:
            return
        task = asyncio.get_running_loop().create_task(self._rebuild_quietly(site_day))
        self._pending[site_day] = task
        task.add_done_callback(lambda _: self._pending.pop(site_day, None))

    async def wait_pending(self) -> None:
        """For tests and shutdown: wait for scheduled rebuilds to finish."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def rebuild_missing(self) -> int:
        """Build the counters of every active site-day that has none (start-up, Redis restart)."""
        built = 0
        for site_day in await self._active_days():
            if not await self._counters.is_built(site_day) and await self.rebuild(site_day):
                built += 1
        return built

    async def reconcile(self) -> ReconcileReport:
        report = ReconcileReport()
        for site_day in await self._active_days():
            report.days.append(await self.reconcile_day(site_day))
        return report

    async def reconcile_day(self, site_day: SiteDay) -> DayDrift:
        drift = DayDrift(site_day)
        found = await compare(self._sessions, self._counters, site_day)
        if found is None:
            drift.rebuilt = await self.rebuild(site_day)
            return drift
        plan = await self._plan(site_day)
        settings_differ = plan is not None and plan.settings() != found.snapshot.settings
        if found.missing or settings_differ:
            drift.missing = found.missing
            drift.rebuilt = await self.rebuild(site_day)
            return drift
        suspects = set(found.suspects)
        drift.leaked = len(suspects)

        now = self._clock.now()
        first_seen = await self._counters.watch_suspects(site_day, suspects, now=now)
        cutoff = to_millis(now - self._grace)
        overdue = [name for name, seen in first_seen.items() if seen <= cutoff]
        if overdue:
            drift.returned = await self._return(site_day, overdue)
            await self._counters.clear_suspects(site_day, overdue)
        return drift

    async def _return(self, site_day: SiteDay, names: Iterable[str]) -> int:
        slot_units: dict[str, list[int]] = defaultdict(list)
        day_units: list[int] = []
        ids: list[str] = []
        owned: list[tuple[str, str]] = []
        for name in names:
            kind, _, rest = name.partition(":")
            if kind == "o":
                owner, _, reservation = rest.partition(":")
                owned.append((owner, reservation))
            elif kind == "s":
                key, _, unit = rest.partition(":")
                slot_units[key].append(int(unit))
            elif kind == "d":
                day_units.append(int(rest))
            else:
                ids.append(rest)
        returned = 0
        for key, units in slot_units.items():
            freed, _ = await self._counters.release(site_day, key, slot_units=units, day_units=[])
            returned += freed
        if day_units or ids:
            # Any slot key works for a day-only release: slot units are empty.
            _, freed = await self._counters.release(
                site_day, "-", slot_units=[], day_units=day_units, visitor_ids=ids
            )
            returned += freed
        for owner, reservation in owned:
            # No units: this only stops counting the reservation against its owner's limit.
            await self._counters.release(
                site_day, "-", slot_units=[], day_units=[], owner=owner, reservation=reservation
            )
            returned += 1
        log.warning("leaked units returned", extra={"site_day": str(site_day), "units": returned})
        return returned

    async def _plan(self, site_day: SiteDay) -> DayPlan | None:
        now = self._clock.now()
        async with self._sessions() as session:
            site = await repo.get_site(session, site_day.site)
            if site is None:
                return None
            slots = await repo.slots_of_day(session, site.id, site_day.visit_date)
            rows = await repo.active_units(session, site.id, site_day.visit_date)
            stopped = await repo.sales_stopped(session, site.id, site_day.visit_date)
            # One read of the day's reservations: owners, pools and groups all come from it.
            sold = await repo.reservations_of_day(session, site.id, site_day.visit_date)
            drawing = bool(site.fair_release) and await repo.draw_pending(
                session, site.id, site_day.visit_date
            )
            coming_back = await repo.places_coming_back(session, site.id, site_day.visit_date, now)
        taken: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            taken[row[0]].append(row[1])
        owners: dict[str, list[str]] = defaultdict(list)
        for _, reservation, _, _, owner in sold:
            owners[owner].append(reservation)
        pools = {slot.id: slot.pools or {} for slot in slots}
        by_pool: dict[str, dict[str, str]] = defaultdict(dict)
        pool_used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for slot_id, reservation, channel, party, _ in sold:
            if channel in pools.get(slot_id, {}):
                by_pool[slot_id][reservation] = channel
                pool_used[slot_id][channel] += party
        returns: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        for slot_id, reservation, channel, party, back_at in coming_back:
            pool = channel if channel in pools.get(slot_id, {}) else "online"
            returns[slot_id].append((f"{reservation}:{party}:{pool}", back_at))
        rolls_over = pools_roll_over_at(site, site_day.visit_date)
        return DayPlan(
            cap=site.daily_cap,
            opens_at=sales_open_at(site, site_day.visit_date),
            closed=(
                not is_open_on(site, site_day.visit_date)
                or site.closed_reason is not None
                or stopped
            ),
            party_max=site.party_size_limit,
            owner_max=site.account_day_limit,
            owners=dict(owners),
            taken=[row[2] for row in rows],
            visitor_ids=[row[3] for row in rows],
            release=(
                release_field(release_batches(site, site_day.visit_date))
                if site.release_batches
                else ""
            ),
            returns=[entry for entries in returns.values() for entry in entries],
            drawing=drawing,
            group_max=int((site.group_rules or {}).get("groups_per_day", 0)),
            groups=[reservation for _, reservation, channel, _, _ in sold if channel == "group"],
            slots=[
                SlotPlan(
                    key=slot_key(slot.start),
                    start_minute=minute_of_day(slot.start),
                    cap=slot.capacity,
                    closes_at=sales_close_at(site, slot.visit_date, slot.end),
                    closed=slot.status == SlotStatus.closed,
                    taken=taken.get(slot.id, []),
                    pools=pools[slot.id],
                    pools_until=rolls_over if pools[slot.id] else None,
                    pool_used=dict(pool_used.get(slot.id, {})),
                    by_pool=by_pool.get(slot.id, {}),
                    returns=returns.get(slot.id, []),
                )
                for slot in slots
            ],
        )

    async def _active_days(self) -> list[SiteDay]:
        today = self._clock.now().date() - timedelta(days=1)  # UTC vs site time: one day slack
        async with self._sessions() as session:
            days = await repo.site_days_from(session, today)
        return [SiteDay(site, visit_date) for site, visit_date in days]

    async def _rebuild_quietly(self, site_day: SiteDay) -> bool:
        try:
            return await self.rebuild(site_day)
        except CapacityUnavailable:
            log.warning("rebuild postponed: Redis unreachable", extra={"site_day": str(site_day)})
            return False
        except Exception:
            log.exception("rebuild failed", extra={"site_day": str(site_day)})
            return False
