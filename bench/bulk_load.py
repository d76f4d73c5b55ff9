"""Many reservations at once, straight into tidegate's migrated schema (for `data_scale.py`).

`load(url, size, ...)` stores `size` reservations spread the way a busy city would have them:

* about half on the coming days that are on sale, confirmed, with parties of 1, 2 and 3 in
  turn and exactly `size` active visitors, holding distinct slot units, day units and ID
  hashes (the partial unique indexes hold every one of them). One Palace Museum day is sold
  out to its daily cap of 40,000 (`PALACE`, or a quarter of the visitors when fewer are
  loaded); the other site-days share the rest in proportion to their slot caps.
* the rest (about half) on the past `past_days` days of every site, in proportion to the
  sites' slot caps, finished (completed, no-show, cancelled, expired): their visitors are
  inactive, so they sit in the tables and the plain indexes but not in the partial unique ones.
* The sale's own site (`spare`, the site `flash_sale.py` picks) gets no coming-day bookings,
  as a date is empty when it goes on sale.

PostgreSQL gets the rows by COPY (asyncpg), SQLite by `executemany` in one transaction; both
through every index of the real schema, with the statistics refreshed afterwards (ANALYZE).
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from booking import repository as repo
from booking.catalog import generate_slots
from booking.models import Account, Slot

PALACE = "palace-museum"
CHUNK = 50_000  # reservations per COPY / executemany
PAST_STATUSES = (("completed", 80), ("no_show", 6), ("cancelled", 10), ("expired", 4))
RESERVATION_COLUMNS = [
    *("id", "owner_id", "site_id", "slot_id", "visit_date", "status", "party_size"),
    *("hold_expires_at", "ticket_secret", "channel", "created_at", "updated_at"),
]
VISITOR_COLUMNS = [
    *("reservation_id", "site_id", "slot_id", "visit_date", "position", "name", "id_type"),
    *("id_hash", "id_masked", "slot_unit", "day_unit", "active", "entered_at", "exited_at"),
]

Made = Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]


@dataclass
class Loaded:
    """What was stored, per site-day of the coming days."""

    reservations: int = 0
    visitors: int = 0
    active_visitors: int = 0
    seconds: float = 0.0
    owner: str = ""
    active_by_day: Counter[tuple[str, date]] = field(default_factory=Counter)

    def largest_day(self) -> tuple[str, date] | None:
        return max(self.active_by_day, key=lambda day: self.active_by_day[day], default=None)

    def smallest_day(self) -> tuple[str, date] | None:
        return min(self.active_by_day, key=lambda day: self.active_by_day[day], default=None)

    def palace_day(self) -> tuple[str, date] | None:
        days = [day for day in self.active_by_day if day[0] == PALACE]
        return max(days, key=lambda day: self.active_by_day[day], default=None)


def spread(total: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders), none above its cap."""
    whole = sum(weights)
    if not whole or not total:
        return [0] * len(weights)
    shares = [total * w / whole for w in weights]
    parts = [int(s) for s in shares]
    order = sorted(range(len(weights)), key=lambda i: parts[i] - shares[i])
    for i in itertools.islice(itertools.cycle(order), total - sum(parts)):
        parts[i] += 1
    if caps is not None:
        parts = [min(p, c) for p, c in zip(parts, caps, strict=True)]
    return parts


def _hash(n: int) -> str:
    return hashlib.sha256(b"bulk-%d" % n).hexdigest()


class _Rows:
    """Reservation and visitor rows of slots, made lazily and numbered from one counter."""

    def __init__(self, owners: Sequence[str], now: datetime) -> None:
        self.owners = owners
        self.now = now
        self.reservation = 0
        self.visitor = 0
        self.day_units: Counter[tuple[str, date]] = Counter()
        self.slot_units: Counter[str] = Counter()
        self.loaded = Loaded()

    def past(self, slot: Slot, count: int) -> Made:
        statuses = [name for name, weight in PAST_STATUSES for _ in range(weight)]
        made = datetime.combine(slot.visit_date, time(12), UTC).replace(tzinfo=None)
        for _ in range(count):
            status = statuses[self.reservation % len(statuses)]
            party = 1 + (self.reservation % 3)
            came = status == "completed"
            yield self._reservation(slot, status, party, made - timedelta(days=3), came, False)

    def coming(self, slot: Slot, visitors: int) -> Made:
        made = self.now.replace(tzinfo=None) - timedelta(hours=1)
        while visitors > 0:
            party = min(1 + (self.reservation % 3), visitors)
            visitors -= party
            yield self._reservation(slot, "confirmed", party, made, False, True)

    def _reservation(
        self, slot: Slot, status: str, party: int, made: datetime, came: bool, active: bool
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        number = self.reservation
        self.reservation += 1
        rid = f"b{number:031x}"
        owner = self.owners[number % len(self.owners)]
        row = (
            rid, owner, slot.site_id, slot.id, slot.visit_date, status, party,
            made + timedelta(minutes=15), f"t{number:031x}" if status != "expired" else None,
            "online", made, made,
        )  # fmt: skip
        day = (slot.site_id, slot.visit_date)
        entered = datetime.combine(slot.visit_date, slot.start).replace(tzinfo=None)
        visitors = []
        for position in range(party):
            self.visitor += 1
            self.day_units[day] += 1
            self.slot_units[slot.id] += 1
            visitors.append(
                (
                    rid,
                    slot.site_id,
                    slot.id,
                    slot.visit_date,
                    position,
                    f"Visitor {self.visitor}",
                    "resident_id",
                    _hash(self.visitor),
                    f"110101********{self.visitor % 10000:04d}",
                    self.slot_units[slot.id],
                    self.day_units[day],
                    active,
                    entered if came else None,
                    entered + timedelta(hours=3) if came else None,
                )
            )
        self.loaded.reservations += 1
        self.loaded.visitors += party
        if active:
            self.loaded.active_visitors += party
            self.loaded.active_by_day[day] += party
        return row, visitors


async def load(
    url: str, size: int, *, past_days: int, spare: str, now: datetime, owners: int = 2000
) -> Loaded:
    """Store `size` reservations (and `size` active visitors) as the module says."""
    started = datetime.now(UTC)
    engine = create_async_engine(url)
    try:
        coming, past = await _slots(engine, now.date(), past_days)
        owner_ids = await _accounts(engine, owners, now)
    finally:
        await engine.dispose()

    rows = _Rows(owner_ids, now)
    on_sale = [s for s in coming if s.visit_date >= now.date() and s.site_id != spare]
    palace = _palace_day(on_sale)
    palace_slots = [s for s in on_sale if (s.site_id, s.visit_date) == palace]
    others = [s for s in on_sale if (s.site_id, s.visit_date) != palace]
    palace_visitors = min(sum(s.capacity for s in palace_slots), size // 4)
    per_palace = spread(palace_visitors, [s.capacity for s in palace_slots])
    rest = size - sum(per_palace)
    per_other = spread(rest, [s.capacity for s in others], [s.capacity for s in others])
    if sum(per_palace) + sum(per_other) != size:
        raise ValueError(f"{size} active visitors do not fit in the coming days' slots")
    future = itertools.chain(
        *(
            rows.coming(s, n)
            for s, n in zip([*palace_slots, *others], [*per_palace, *per_other], strict=True)
        )
    )

    def finished() -> Made:
        # Made once the coming days' rows are: the rest of `size` are finished bookings.
        left = max(0, size - rows.loaded.reservations)
        for slot, count in zip(past, spread(left, [s.capacity for s in past]), strict=True):
            yield from rows.past(slot, count)

    if make_url(url).get_backend_name() == "postgresql":
        await _copy(url, itertools.chain(future, finished()))
    else:
        _insert_sqlite(make_url(url).database or "", itertools.chain(future, finished()))
    rows.loaded.owner = owner_ids[0]
    rows.loaded.seconds = round((datetime.now(UTC) - started).total_seconds(), 1)
    return rows.loaded


def _palace_day(slots: Sequence[Slot]) -> tuple[str, date] | None:
    """The last Palace Museum day on sale: the one sold out to its cap."""
    days = sorted({s.visit_date for s in slots if s.site_id == PALACE})
    return (PALACE, days[-1]) if days else None


async def _slots(engine: AsyncEngine, today: date, past_days: int) -> tuple[list[Slot], list[Slot]]:
    """The slots the seed made (today and on), and new ones of the past days."""
    dates = [today - timedelta(days=d) for d in range(past_days, 0, -1)]
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        coming: list[Slot] = []
        past: list[Slot] = []
        for site in await repo.all_sites(session):
            coming += await repo.slots_from(session, site.id, today)
            past += generate_slots(site, await repo.templates_of(session, site.id), dates)
        existing = await repo.existing_slot_ids(session, [s.id for s in past])
        session.add_all([s for s in past if s.id not in existing])
    return coming, past


async def _accounts(engine: AsyncEngine, count: int, now: datetime) -> list[str]:
    ids = [f"bulk{i:028d}" for i in range(count)]
    async with engine.begin() as connection:
        await connection.execute(
            Account.__table__.insert(),  # type: ignore[attr-defined]
            [
                {"id": i, "email": f"{i}@bulk.example.com", "password_hash": "-", "created_at": now}
                for i in ids
            ],
        )
    return ids


def _chunks(made: Made) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    while True:
        batch = list(itertools.islice(made, CHUNK))
        if not batch:
            return
        yield [r for r, _ in batch], [v for _, vs in batch for v in vs]


async def _copy(url: str, made: Made) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            for reservations, visitors in _chunks(made):
                await connection.copy_records_to_table(
                    "reservation", records=reservations, columns=RESERVATION_COLUMNS
                )
                await connection.copy_records_to_table(
                    "visitor", records=visitors, columns=VISITOR_COLUMNS
                )
        await connection.execute("ANALYZE reservation; ANALYZE visitor")
    finally:
        await connection.close()


def _sqlite_value(value: Any) -> Any:
    """As SQLAlchemy stores it in SQLite."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _insert_sqlite(path: str, made: Made) -> None:
    def insert(table: str, columns: Sequence[str]) -> str:
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )

    connection = sqlite3.connect(path, timeout=60)
    try:
        with connection:
            for reservations, visitors in _chunks(made):
                connection.executemany(
                    insert("reservation", RESERVATION_COLUMNS),
                    ([_sqlite_value(v) for v in row] for row in reservations),
                )
                connection.executemany(
                    insert("visitor", VISITOR_COLUMNS),
                    ([_sqlite_value(v) for v in row] for row in visitors),
                )
        connection.execute("ANALYZE")
    finally:
        connection.close()
