"""Slots and sales windows: pure functions over sites and templates (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from booking.errors import InvalidRequest
from booking.models import Site, Slot, SlotStatus, SlotTemplate
from capacity.keys import SiteDay

_SLOT_ID = re.compile(r"^([a-z0-9-]{1,64})\.(\d{4}-\d{2}-\d{2})\.(\d{2})(\d{2})$")


@dataclass(frozen=True, slots=True)
class SlotRef:
    """What a slot id says by itself: its site-day and its key inside the day."""

    site_day: SiteDay
    key: str

    @property
    def id(self) -> str:
        return f"{self.site_day.site}.{self.site_day.visit_date.isoformat()}.{self.key}"


def slot_key(start: time) -> str:
    return f"{start.hour:02d}{start.minute:02d}"


def slot_id(site_id: str, visit_date: date, start: time) -> str:
    return f"{site_id}.{visit_date.isoformat()}.{slot_key(start)}"


@lru_cache(maxsize=65536)
def parse_slot_id(value: str) -> SlotRef | None:
    """A slot id names its site-day, so the booking path needs no SQL to find the counters."""
    match = _SLOT_ID.fullmatch(value)
    if match is None:
        return None
    site, day, hour, minute = match.groups()
    try:
        visit_date = date.fromisoformat(day)
        time(int(hour), int(minute))
    except ValueError:
        return None
    return SlotRef(SiteDay(site, visit_date), hour + minute)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local(site: Site, visit_date: date, at: time) -> datetime:
    return datetime.combine(visit_date, at, tzinfo=zone(site.timezone))


def sales_open_at(site: Site, visit_date: date) -> datetime:
    """A date goes on sale `horizon_days` before it, at the site's release time, or with its
    first release batch."""
    return release_batches(site, visit_date)[0][0]


def release_batches(site: Site, visit_date: date) -> list[tuple[datetime, float]]:
    """When each share of a date's places goes on sale, in time order."""
    if not site.release_batches:
        opens = local(site, visit_date - timedelta(days=site.horizon_days), site.release_time)
        return [(opens, 1.0)]
    return sorted(
        (
            local(site, visit_date - timedelta(days=batch["days_before"]), _time(batch["at"])),
            float(batch["share"]),
        )
        for batch in site.release_batches
    )


def pools_roll_over_at(site: Site, visit_date: date) -> datetime | None:
    """When unsold pool places join the general sale (None: they stay kept until sales end)."""
    rollover = site.pool_rollover
    if not rollover:
        return None
    return local(site, visit_date - timedelta(days=rollover["days_before"]), _time(rollover["at"]))


def places_back_at(
    site: Site, now: datetime, sales_close: datetime, draw: Callable[[int], int]
) -> datetime | None:
    """When a refund's places go back on sale under the site's policy (None: at once).
    `draw(k)` picks one of k batches at random."""
    policy = site.refund_policy or {"mode": "immediate"}
    if policy["mode"] == "delay":
        return now + timedelta(minutes=int(policy["minutes"]))
    if policy["mode"] == "random-batch":
        here = now.astimezone(zone(site.timezone))
        moments = sorted(
            datetime.combine(here.date() + timedelta(days=day), _time(at), tzinfo=here.tzinfo)
            for day in (0, 1)
            for at in policy["batches"]
        )
        later = [m for m in moments if here < m < min(sales_close, here + timedelta(days=1))]
        # No batch left before sales end: the places stay off sale (the scalper gains nothing).
        return later[draw(len(later))] if later else sales_close
    return None


def check_pools(pools: dict[str, int] | None, capacity: int) -> None:
    if pools and sum(pools.values()) > capacity:
        raise InvalidRequest(
            field="pools",
            rule="within-capacity",
            message=f"the pools keep {sum(pools.values())} places of a slot of {capacity}",
        )


def _time(value: str | time) -> time:
    return value if isinstance(value, time) else time.fromisoformat(value)


def sales_close_at(site: Site, visit_date: date, slot_end: time) -> datetime:
    """Sales stop when the slot's entry window ends, or the night before without same-day sales."""
    if not site.same_day_sales:
        return local(site, visit_date, time(0, 0))
    return local(site, visit_date, slot_end)


def is_open_on(site: Site, visit_date: date) -> bool:
    return visit_date.weekday() not in site.closed_weekdays


def slot_times(template: SlotTemplate) -> Iterator[tuple[time, time]]:
    """The (start, end) entry windows one template makes in a day."""
    if template.repeat_minutes is None:
        yield template.start, template.end
        return
    day = date(2000, 1, 1)
    start = datetime.combine(day, template.start)
    end_of_template = datetime.combine(day, template.end)
    step = timedelta(minutes=template.repeat_minutes)
    while start + step <= end_of_template:
        yield start.time(), (start + step).time()
        start += step


def generate_slots(
    site: Site, templates: Sequence[SlotTemplate], dates: Iterable[date]
) -> list[Slot]:
    """Slots for the given dates from the site's templates; closed weekdays get none."""
    slots: list[Slot] = []
    for visit_date in dates:
        if not is_open_on(site, visit_date):
            continue
        for template in templates:
            if visit_date.weekday() not in template.weekdays:
                continue
            for start, end in slot_times(template):
                slots.append(
                    Slot(
                        id=slot_id(site.id, visit_date, start),
                        site_id=site.id,
                        visit_date=visit_date,
                        start=start,
                        end=end,
                        label=template.label,
                        capacity=template.capacity,
                        pools=template.pools,
                        # A site closed by its managers gets its new days closed too.
                        status=SlotStatus.closed if site.closed_reason else SlotStatus.open,
                        closed_reason=site.closed_reason,
                    )
                )
    return slots


def horizon_dates(site: Site, today: date) -> list[date]:
    """Today and every date that is or will soon be on sale (the horizon plus one day)."""
    return [today + timedelta(days=offset) for offset in range(site.horizon_days + 2)]


def minute_of_day(at: time) -> int:
    return at.hour * 60 + at.minute
