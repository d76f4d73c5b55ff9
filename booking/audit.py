"""The audit: SQL and Redis checked against each other, read-only (ARCHITECTURE §2).

The reconciler repairs; the audit only reports, so it can end every fault test and benchmark
and be run against production at any time. Per site-day it reports:

- `active`: visitors active in SQL;
- `oversold`: places that should not exist: visitors beyond a slot's cap or the site's daily
  cap that no lowered cap explains, and visitors sharing a unit number with another active
  visitor (the partial unique indexes forbid it; checked all the same);
- `over_lowered_cap`: visitors beyond a cap that a manager lowered after they were sold, which
  the architecture allows (nobody is cancelled; sales stop until cancellations make room);
- `missing`: units active in SQL that Redis counts free (Redis could sell them again), counted
  as the reconciler counts them: slot units, day units, visitor ID hashes, and reservations
  the owners' limits do not count;
- `leaked`: units, ID hashes and owners' reservations Redis counts without an active visitor
  in SQL (an undersell, until the reconciler returns them);
- `orphaned_holds`: reservations still held in SQL after their hold expired (the sweeper has
  not run; their units stay taken until it does);
- `not_built`: 1 when a site-day has active visitors but Redis has no counters for it (booking
  fails closed there until a rebuild), else 0. Not drift: nothing can be sold wrongly.

It never writes: no rebuild, no suspects watched, no lock. Give it a read-only sessionmaker
where the engine allows one (`service.runtime.make_read_only_engine`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.models import AuditEvent
from booking.reconcile import compare
from capacity.clock import Clock
from capacity.counters import Counters
from capacity.keys import SiteDay

# The audited changes that can lower a cap (booking/sites.py, booking/management.py).
SLOT_CAP_ACTIONS = ("slot.capacity", "slot.update")
SITE_CAP_ACTIONS = ("site.update", "site.capacity_plan")


@dataclass
class DayAudit:
    site_day: SiteDay
    active: int = 0
    oversold: int = 0
    over_lowered_cap: int = 0
    missing: int = 0
    leaked: int = 0
    orphaned_holds: int = 0
    not_built: int = 0

    @property
    def faults(self) -> int:
        """What makes the audit fail: a lowered cap and unbuilt counters do not."""
        return self.oversold + self.missing + self.leaked + self.orphaned_holds

    def as_dict(self) -> dict[str, Any]:
        figures = {k: v for k, v in asdict(self).items() if k != "site_day"}
        return {
            "site": self.site_day.site,
            "date": self.site_day.visit_date.isoformat(),
            **figures,
        }


@dataclass
class AuditReport:
    days: list[DayAudit] = field(default_factory=list)

    def total(self, figure: str) -> int:
        return sum(int(getattr(day, figure)) for day in self.days)

    @property
    def faults(self) -> int:
        return sum(day.faults for day in self.days)

    @property
    def clean(self) -> bool:
        return self.faults == 0

    def as_dict(self) -> dict[str, Any]:
        """The `tidegate audit --json` object (docs/audit.md)."""
        totals = ("oversold", "over_lowered_cap", "missing", "leaked", "orphaned_holds")
        return {
            "clean": self.clean,
            "site_days": len(self.days),
            **{figure: self.total(figure) for figure in (*totals, "not_built")},
            "days": [day.as_dict() for day in self.days],
        }


class Auditor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._counters = counters
        self._clock = clock

    async def run(
        self,
        site_days: Sequence[SiteDay] | None = None,
        *,
        site: str | None = None,
        visit_date: date | None = None,
    ) -> AuditReport:
        """Audit the given site-days, or (None) every site-day from yesterday on that has
        active visitors or counters, optionally only those of `site` and/or `visit_date`.
        Days come sorted by date, then site."""
        report = AuditReport()
        explicit = site_days is not None
        if site_days is None:
            site_days = [
                day
                for day in await self._days_from_yesterday()
                if site in (None, day.site) and visit_date in (None, day.visit_date)
            ]
        for site_day in sorted(set(site_days), key=lambda d: (d.visit_date, d.site)):
            day = await self._audit_day(site_day, explicit=explicit)
            if day is not None:
                report.days.append(day)
        return report

    async def _audit_day(self, site_day: SiteDay, *, explicit: bool) -> DayAudit | None:
        found = await compare(self._sessions, self._counters, site_day)
        now = self._clock.now()
        async with self._sessions() as session:
            if found is not None:
                rows = found.latest
            else:
                units = await repo.active_units(session, site_day.site, site_day.visit_date)
                rows = [(r[0], r[1], r[2], r[3]) for r in units]
                if not rows and not explicit:
                    return None  # nothing sold and no counters: nothing to audit
            site = await repo.get_site(session, site_day.site)
            slots = await repo.slots_of_day(session, site_day.site, site_day.visit_date)
            first_sales = await repo.first_sales(session, site_day.site, site_day.visit_date)
            orphaned = await repo.overdue_holds(session, site_day.site, site_day.visit_date, now)
            events = await repo.audit_events(
                session, site_day.site, (*SLOT_CAP_ACTIONS, *SITE_CAP_ACTIONS)
            )
        day = DayAudit(site_day, active=len(rows), orphaned_holds=orphaned)
        if found is None:
            day.not_built = 1 if rows else 0
        else:
            day.missing = found.missing
            day.leaked = len(found.suspects)

        by_slot = Counter(row[0] for row in rows)
        shared_slot_units = _shared(Counter((row[0], row[1]) for row in rows))
        slot_over = slot_lowered = 0
        for slot in slots:
            allowance = _allowance(
                slot.capacity, _slot_lowerings(events, slot.id), since=first_sales.get(slot.id)
            )
            over, lowered = _beyond(by_slot[slot.id], slot.capacity, allowance)
            slot_over += max(over, shared_slot_units.get(slot.id, 0))
            slot_lowered += lowered
        day_over = day_lowered = 0
        if site is not None:
            since = min(first_sales.values(), default=None)
            allowance = _allowance(site.daily_cap, _day_lowerings(events), since=since)
            day_over, day_lowered = _beyond(len(rows), site.daily_cap, allowance)
        day_over = max(day_over, sum(_shared(Counter((0, row[2]) for row in rows)).values()))
        # One visitor too many is beyond its slot's cap and the day's alike: count it once.
        day.oversold = max(slot_over, day_over)
        day.over_lowered_cap = max(slot_lowered, day_lowered)
        return day

    async def _days_from_yesterday(self) -> list[SiteDay]:
        # As the reconciler: UTC against site time, one day of slack.
        first = self._clock.now().date() - timedelta(days=1)
        async with self._sessions() as session:
            days = await repo.site_days_from(session, first)
        return [SiteDay(site, visit_date) for site, visit_date in days]


def _beyond(count: int, cap: int, allowance: int) -> tuple[int, int]:
    """(oversold, over a lowered cap) among `count` visitors of a cap now `cap`.

    The rule for lowered caps: Redis never sells beyond the cap in force, so visitors beyond
    the current cap are explained only by a cap lowered after they were sold. `allowance` is
    the highest cap the slot (or the day) had just before an audited change lowered it, among
    the changes made after the oldest reservation still holding places there was made (see
    `_allowance`). Visitors beyond the current cap and within that allowance are
    `over_lowered_cap`; any beyond the allowance are oversold: no cap ever allowed them. A
    lowering made before every current sale explains nothing, and without an audited
    lowering every visitor beyond the cap is oversold.
    """
    excess = max(0, count - cap)
    lowered = min(excess, max(0, allowance - cap))
    return excess - lowered, lowered


def _allowance(
    cap: int, lowerings: Iterable[tuple[datetime, int]], *, since: datetime | None
) -> int:
    """The highest cap in force just before a lowering made at or after `since` (the oldest
    sale still active), or the current cap when there was none."""
    if since is None:
        return cap
    return max([cap, *(before for at, before in lowerings if at >= since)])


def _slot_lowerings(events: Iterable[AuditEvent], slot_id: str) -> list[tuple[datetime, int]]:
    """(when, cap before) of each audited change that lowered a slot's cap."""
    found = []
    for event in events:
        if event.action in SLOT_CAP_ACTIONS and event.target == slot_id:
            before, after = event.before.get("capacity"), event.after.get("capacity")
            if isinstance(before, int) and isinstance(after, int) and before > after:
                found.append((event.at, before))
        elif event.action == "site.capacity_plan" and event.after.get("slots_changed"):
            # A capacity plan records its templates' capacities, not each slot's: the highest
            # of them before the plan stands for the slot's.
            templates = event.before.get("templates") or {}
            caps = [cap for cap in templates.values() if isinstance(cap, int)]
            if caps:
                found.append((event.at, max(caps)))
    return found


def _day_lowerings(events: Iterable[AuditEvent]) -> list[tuple[datetime, int]]:
    """(when, cap before) of each audited change that lowered a site's daily cap."""
    found = []
    for event in events:
        if event.action in SITE_CAP_ACTIONS:
            before, after = event.before.get("daily_cap"), event.after.get("daily_cap")
            if isinstance(before, int) and isinstance(after, int) and before > after:
                found.append((event.at, before))
    return found


def _shared(units: Counter[tuple[Any, int]]) -> dict[Any, int]:
    """Per group, the active rows beyond the first on each unit number."""
    shared: Counter[Any] = Counter()
    for (group, _), holders in units.items():
        if holders > 1:
            shared[group] += holders - 1
    return dict(shared)
