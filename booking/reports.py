"""Reports for site managers: per site and day, places offered and what became of them."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.errors import InvalidRequest, NotFound
from booking.models import ReservationStatus
from booking.schemas import DayReport

MAX_DAYS = 92

# Which column each reservation status counts in ("entered": the visitor came in).
COLUMN = {
    ReservationStatus.held: "held",
    ReservationStatus.confirmed: "confirmed",
    ReservationStatus.cancelled: "cancelled",
    ReservationStatus.cancelled_by_site: "cancelled_by_site",
    ReservationStatus.expired: "expired",
    ReservationStatus.checked_in: "entered",
    ReservationStatus.completed: "entered",
    ReservationStatus.no_show: "no_show",
}
FIELDS = list(DayReport.model_fields)


async def day_reports(
    sessions: async_sessionmaker[AsyncSession], site_id: str, first: date, last: date
) -> list[DayReport]:
    if last < first:
        raise InvalidRequest(field="to", rule="after-from", message="to is before from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(
            field="to", rule="max-range", message=f"at most {MAX_DAYS} days per report"
        )
    async with sessions() as session:
        if await repo.get_site(session, site_id) is None:
            raise NotFound(f"no site {site_id}")
        offered = await repo.places_offered(session, site_id, first, last)
        rows = await repo.places_by_status(session, site_id, first, last)
    counts: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMN.values(), 0))
    for visit_date, status, places in rows:
        counts[visit_date][COLUMN[ReservationStatus(status)]] += places
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [DayReport(date=day, offered=offered.get(day, 0), **counts[day]) for day in days]


def as_csv(reports: Sequence[DayReport]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for report in reports:
        writer.writerow(report.model_dump(mode="json"))
    return out.getvalue()
