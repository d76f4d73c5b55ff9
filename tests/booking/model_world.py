"""The small world of the model-based test (test_model_based.py), and the model of it.

One site with two slots a day and tiny caps, seven visitors, three accounts: small enough that
random steps collide (a full slot, a visitor already booked that day, an account at its
limit), so every refusal is met often. The world is built once per test run in a template
database; every example gets its own copy of it.

`Model` is what tidegate should hold after any sequence of steps, computed from the rules
alone (ARCHITECTURE §2, the README's rules), never from what the service answered.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from booking import repository as repo
from booking.catalog import slot_id
from booking.models import Account
from booking.schemas import AlertThresholds, GateCreate, SiteCreate, TemplateCreate, VisitorIn
from capacity.clock import ManualClock
from service.runtime import Runtime
from service.settings import Settings
from tests import databases
from tests.conftest import ID_KEY, NOW, visitor

BEIJING = ZoneInfo("Asia/Shanghai")
SITE = "model-park"
GATE = "model-park.gate"
STAFF = "model-based-test"
TODAY = date(2026, 12, 1)  # NOW is 10:00 there
TOMORROW = TODAY + timedelta(days=1)
LATER = TODAY + timedelta(days=2)  # made (the horizon plus one day), not yet on sale
DAYS = (TODAY, TOMORROW, LATER)
# Entry windows: 09:00-16:00 and 12:00-17:00, so the second opens for entry (at 11:45) while
# the clock runs; the clock never passes 14:00, so sales of both are open throughout.
WINDOWS = {"0900": (time(9), time(16)), "1200": (time(12), time(17))}
SLOT_CAPS = {"0900": 2, "1200": 3}
DAY_CAP = 4  # less than the slots' sum: the day's cap binds too
INSTANT_CAP = 2
PARTY_MAX = 3
DAY_LIMIT = 2  # active reservations of one account for one site-day
HOLD_LIMIT = 2  # holds one account keeps open at once at the site
HOLD_TTL = timedelta(minutes=15)
ENTRY_GRACE = timedelta(minutes=15)
MAX_CLOCK = timedelta(hours=4)

SLOTS = tuple(
    slot_id(SITE, day, start) for day in (TODAY, TOMORROW) for start, _ in WINDOWS.values()
)
NOT_ON_SALE = tuple(slot_id(SITE, LATER, start) for start, _ in WINDOWS.values())
ACCOUNTS = ("model-account-a", "model-account-b", "model-account-c")
PEOPLE = tuple(VisitorIn.model_validate(visitor(7100 + i, name="Model")) for i in range(7))

ACTIVE = frozenset({"held", "confirmed", "checked_in"})


def key_of(slot: str) -> str:
    return slot.rsplit(".", 1)[1]


def day_of(slot: str) -> date:
    return date.fromisoformat(slot.split(".")[1])


def local(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=BEIJING)


def settings_for(database_url: str, redis_url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        id_hash_key=ID_KEY,
        background=False,
        reconcile_grace_seconds=60,
        rate_limits=False,
        hold_ttl_seconds=int(HOLD_TTL.total_seconds()),
    )


# the world ---------------------------------------------------------------------------------


async def _populate(runtime: Runtime) -> None:
    """The site, its gate, its two slot templates, three accounts; slots over the horizon."""
    management = runtime.management
    await management.create_site(
        SiteCreate(
            id=SITE,
            name_zh="模型公园",
            name_en="Model Park",
            kind="park",
            lat=39.9,
            lon=116.4,
            opens=time(6),
            closes=time(22),
            last_entry=time(21),
            daily_cap=DAY_CAP,
            instant_cap=INSTANT_CAP,
            horizon_days=1,
            release_time=time(8),
            party_size_limit=PARTY_MAX,
            account_day_limit=DAY_LIMIT,
            account_hold_limit=HOLD_LIMIT,
            entry_grace_minutes=int(ENTRY_GRACE.total_seconds() // 60),
            # Above any load this world reaches: a level change would stop sales for the day.
            alert_thresholds=AlertThresholds(yellow=1.7, orange=1.8, red=1.9, pause=2.0),
        ),
        actor=STAFF,
    )
    await management.add_gate(
        SITE, GateCreate(id=GATE, name_zh="门", name_en="Gate", lat=39.9, lon=116.4), actor=STAFF
    )
    for key, (start, end) in WINDOWS.items():
        await management.add_template(
            SITE,
            TemplateCreate(label=key, start=start, end=end, capacity=SLOT_CAPS[key]),
            actor=STAFF,
        )
    async with runtime.sessions() as session, session.begin():
        for account in ACCOUNTS:
            await repo.add_account(session, Account(id=account, password_hash="!", created_at=NOW))
    await runtime.catalog.ensure_slots()


class World:
    """A database holding the world, copied for each example (a file copy on SQLite, a
    `CREATE DATABASE … TEMPLATE` on PostgreSQL)."""

    def __init__(self, migrated: str, redis_url: str, directory: Path) -> None:
        self.redis_url = redis_url
        self.directory = directory
        self._server = databases.server_url()
        self._names: Iterator[int] = itertools.count()
        if self._server:
            self._template = databases.fresh_name("model_world")
            databases.create(self._template, template=migrated)
            url = databases.with_database(self._server, self._template)
        else:
            self._template = str(directory / "world.sqlite3")
            shutil.copy(migrated, self._template)
            url = f"sqlite+aiosqlite:///{self._template}"
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(self._build(url))
        if not self._server:
            # Every write is in the main file (the last connection checkpointed the WAL).
            assert not Path(self._template + "-wal").exists()

    async def _build(self, url: str) -> None:
        runtime = Runtime.build(
            settings_for(url, self.redis_url, self.directory), clock=ManualClock(NOW)
        )
        try:
            await _populate(runtime)
        finally:
            await runtime.close()

    def fresh(self) -> str:
        """The URL of a new copy of the world."""
        if self._server:
            name = databases.fresh_name("model")
            databases.create(name, template=self._template)
            return databases.with_database(self._server, name)
        path = self.directory / f"example-{next(self._names)}.sqlite3"
        shutil.copy(self._template, path)
        return f"sqlite+aiosqlite:///{path}"

    def discard(self, url: str) -> None:
        if self._server:
            databases.drop(url.rsplit("/", 1)[1])
            return
        path = url.removeprefix("sqlite+aiosqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        if self._server:
            databases.drop(self._template)


# the model ---------------------------------------------------------------------------------


@dataclass
class Party:
    """A reservation as the model knows it."""

    id: str
    owner: str
    slot: str
    people: tuple[int, ...]  # indexes into PEOPLE, in the party's order
    status: str
    expires_at: datetime
    entered: set[int] = field(default_factory=set)  # positions in the party
    exited: set[int] = field(default_factory=set)

    @property
    def day(self) -> date:
        return day_of(self.slot)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def inside(self) -> int:
        return len(self.entered - self.exited)


@dataclass
class Model:
    now: datetime = NOW
    slot_caps: dict[str, int] = field(
        default_factory=lambda: {slot: SLOT_CAPS[key_of(slot)] for slot in SLOTS + NOT_ON_SALE}
    )
    day_cap: int = DAY_CAP
    parties: dict[str, Party] = field(default_factory=dict)
    # Site-days whose counters Redis has (built from SQL); a flush empties this.
    built: set[date] = field(default_factory=lambda: set(DAYS))
    # Holds whose claims against the account's limit Redis lost in a flush: a rebuild of
    # their day counts them again (from SQL).
    unclaimed: set[str] = field(default_factory=set)

    # what is sold

    def active(self) -> list[Party]:
        return [p for p in self.parties.values() if p.active]

    def used(self, slot: str) -> int:
        return sum(len(p.people) for p in self.active() if p.slot == slot)

    def day_used(self, day: date) -> int:
        return sum(len(p.people) for p in self.active() if p.day == day)

    def open_holds(self, owner: str) -> list[Party]:
        """Holds counted against the account's limit: held and not past their deadline."""
        return [
            p
            for p in self.parties.values()
            if p.owner == owner
            and p.status == "held"
            and p.expires_at > self.now
            and p.id not in self.unclaimed
        ]

    def flushed(self) -> None:
        """Redis lost everything: no counters and no hold claims until a day is rebuilt."""
        self.built.clear()
        self.unclaimed.update(p.id for p in self.parties.values() if p.status == "held")

    def rebuilt(self, *days: date) -> None:
        """Days rebuilt from SQL: their counters, and the claims of their open holds."""
        self.built.update(days)
        self.unclaimed -= {p.id for p in self.parties.values() if p.day in days}

    def booked_on(self, day: date, *, owner: str | None = None) -> list[Party]:
        return [p for p in self.active() if p.day == day and owner in (None, p.owner)]

    def has_place(self, person: int, day: date, *, besides: str = "") -> bool:
        return any(person in p.people for p in self.booked_on(day) if p.id != besides)

    def due(self) -> list[Party]:
        return [p for p in self.parties.values() if p.status == "held" and p.expires_at <= self.now]

    def inside(self) -> int:
        return sum(p.inside for p in self.parties.values() if p.day == TODAY)

    def entered_today(self) -> int:
        return sum(len(p.entered) for p in self.parties.values() if p.day == TODAY)

    # what the service must answer

    def room(self, slot: str, party: int) -> bool:
        slot_left = self.slot_caps[slot] - self.used(slot)
        day_left = self.day_cap - self.day_used(day_of(slot))
        return party <= slot_left and party <= day_left

    def allocation(self, owner: str, slot: str, people: tuple[int, ...], moving: str = "") -> str:
        """What allocate.lua answers for a party new to the slot's day."""
        day = day_of(slot)
        if day not in self.built:
            return "capacity-unavailable"
        if slot in NOT_ON_SALE:
            return "outside-booking-window"
        if any(self.has_place(person, day, besides=moving) for person in people):
            return "duplicate-visitor"
        if len(self.booked_on(day, owner=owner)) >= DAY_LIMIT:
            return "account-limit:site-day"
        if not self.room(slot, len(people)):
            return "sold-out"
        return "ok"

    def hold(self, owner: str, slot: str, people: tuple[int, ...]) -> str:
        # Right after a flush nothing counts the open holds, but nothing sells either (503);
        # the first rebuild counts them again.
        if self.built and len(self.open_holds(owner)) >= HOLD_LIMIT:
            return "account-limit:open-holds"
        return self.allocation(owner, slot, people)

    def confirm(self, party: Party) -> str:
        if party.status == "held":
            return "hold-expired" if party.expires_at <= self.now else "ok"
        if party.status == "confirmed":
            return "ok"  # confirming twice answers the reservation as it is
        if party.status == "expired":
            return "hold-expired"
        return "invalid-transition"

    def cancel(self, party: Party) -> str:
        return "ok" if party.status in ("held", "confirmed") else "invalid-transition"

    def reschedule(self, party: Party, slot: str) -> str:
        if party.status not in ("held", "confirmed"):
            return "invalid-transition"
        if party.status == "held" and party.expires_at <= self.now:
            return "hold-expired"
        if slot == party.slot:
            return "validation-failed"
        if day_of(slot) != party.day:
            return self.allocation(party.owner, slot, party.people, moving=party.id)
        # The same day: one script moves the party; only the new slot's room counts.
        if party.day not in self.built:
            return "capacity-unavailable"
        if len(party.people) > self.slot_caps[slot] - self.used(slot):
            return "sold-out"
        return "ok"

    def ticket(self, party: Party) -> str:
        return "ok" if party.status in ("confirmed", "checked_in") else "not-confirmed"

    def entry(self, party: Party, positions: list[int]) -> str:
        if any(p >= len(party.people) for p in positions):
            return "unknown-visitor"
        start, end = WINDOWS[key_of(party.slot)]
        if (
            not local(party.day, start) - ENTRY_GRACE
            <= self.now
            < local(party.day, end) + ENTRY_GRACE
        ):
            return "outside-entry-window"
        waiting = [p for p in positions if p not in party.entered]
        if not waiting:
            return "already-entered"
        if self.inside() + len(waiting) > INSTANT_CAP:
            return "site-full"
        return "ok"

    def exit(self, party: Party, positions: list[int]) -> str:
        if any(p >= len(party.people) for p in positions):
            return "unknown-visitor"
        if not [p for p in positions if p in party.entered and p not in party.exited]:
            return "not-inside"
        return "ok"
