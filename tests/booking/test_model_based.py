"""A model-based test of booking (issue 8 §1): random sequences of every operation on a small
world, against the real service layer, the real SQL database and the real Redis.

Steps: hold, confirm, cancel, move the clock (past hold deadlines), sweep expired holds,
reschedule (the same day and another), change a slot's cap or the day's cap (up, and below
what is sold), flush Redis and rebuild it from SQL, entry and exit scans of tickets, and the
retry of an earlier request under its Idempotency-Key (the same body: the first answer again,
nothing changed; another body: 422). Each step asserts its own answer: exactly what the model
(tests/booking/model_world.py) says, down to the kind of refusal.

After every step, whatever happened (ARCHITECTURE §2):
- the active units in SQL never exceed a slot's cap or the day's cap (a cap lowered below
  what is sold cancels nobody, but no new unit is sold beyond it), and no unit is held twice;
- Redis counts exactly the units, visitors and owners SQL proves, and a reconcile finds no
  drift; each account's open-hold claims are its open holds;
- no visitor ID has two active reservations at the site on one day;
- every reservation's status, slot, party and scans, every slot's use and the people inside
  are what the model says.

Examples: 200 of up to 50 steps on SQLite, the same 200 every run (TIDEGATE_MODEL_EXAMPLES
changes the number; TIDEGATE_MODEL_EXPLORE=1 draws new ones, for a soak run); 100 on
PostgreSQL, which CI runs twice (with Redis 7 and with the cluster). The bugs it found are
the tests at the end, each its shortest sequence, now passing.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import col

from booking import repository as repo
from booking.accounts import Principal
from booking.gates import Scan
from booking.models import Reservation, Slot, Visitor
from booking.schemas import HoldRequest, RescheduleRequest, ReservationPublic, SitePatch
from booking.service import Idempotency, Receipt
from capacity.clock import ManualClock, to_millis
from capacity.errors import AccountLimitReached, TidegateError
from capacity.keys import SiteDay, open_holds
from capacity.occupancy import Occupancy
from service.app import start
from service.deps import idempotency
from service.runtime import Runtime
from tests import databases
from tests.booking.model_world import (
    ACCOUNTS,
    DAYS,
    GATE,
    HOLD_TTL,
    MAX_CLOCK,
    NOT_ON_SALE,
    PEOPLE,
    SITE,
    SLOTS,
    STAFF,
    TODAY,
    WINDOWS,
    Model,
    Party,
    World,
    day_of,
    settings_for,
)
from tests.conftest import NOW

T = TypeVar("T")

EXAMPLES = int(
    os.environ.get("TIDEGATE_MODEL_EXAMPLES") or (100 if databases.server_url() else 200)
)
STEPS = 50
# Set, the examples are new random ones each run (a soak run looking for bugs); unset, CI
# runs the same examples every time (a failure there always reproduces).
EXPLORE = bool(os.environ.get("TIDEGATE_MODEL_EXPLORE"))

picks = st.integers(min_value=0, max_value=63)  # which reservation: modulo how many there are
# Parties of one to three visitors, mostly small ones (the caps are tiny).
parties = (
    st.sampled_from([1, 1, 2, 3])
    .flatmap(
        lambda n: st.lists(st.integers(0, len(PEOPLE) - 1), min_size=n, max_size=n, unique=True)
    )
    .map(tuple)
)
# Mostly today's slots (their tickets can enter), then tomorrow's, now and then one not yet
# on sale.
targets = st.sampled_from((*SLOTS[:2], *SLOTS[:2], *SLOTS, *SLOTS, NOT_ON_SALE[0]))


def outcome(error: TidegateError) -> str:
    """A refusal as the model names it: its code (and which limit, for an account's)."""
    if isinstance(error, AccountLimitReached):
        return f"{error.code}:{error.extra['per']}"
    return error.code


@dataclass(frozen=True)
class Keyed:
    """A request sent with an Idempotency-Key that succeeded, and its first answer."""

    operation: str  # hold, confirm, cancel, reschedule
    owner: str
    key: str
    target: str  # the slot (hold, reschedule) or the reservation (confirm, cancel)
    people: tuple[int, ...]
    answer: ReservationPublic


class BookingMachine(RuleBasedStateMachine):
    """One example: a fresh copy of the world, a flushed Redis, counters built from SQL."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.model = Model()
        self.order: list[str] = []  # reservation ids, in the order they were made
        self.keyed: list[Keyed] = []
        self.keys: Iterator[int] = itertools.count()
        self.units: dict[int, tuple[str, int, int]] = {}  # visitor row -> units last seen
        self.sold: dict[object, int] = {}  # slot id or day -> active units last seen
        self.refusal: TidegateError | None = None  # the last step's, if it was refused
        self.clock = ManualClock(NOW)
        self.url = world.fresh()
        self.runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        try:
            self.runtime = self.runner.run(self._open())
        except BaseException:
            self.runner.close()
            world.discard(self.url)
            raise
        self.occupancy = Occupancy(self.runtime.redis)

    async def _open(self) -> Runtime:
        settings = settings_for(self.url, self.world.redis_url, self.world.directory)
        runtime = Runtime.build(settings, clock=self.clock)
        try:
            await runtime.redis.flushdb()  # on a cluster: on every master
            await start(runtime)
        except BaseException:
            await runtime.close()
            raise
        return runtime

    def teardown(self) -> None:
        try:
            self.runner.run(self.runtime.close())
        finally:
            self.runner.close()
            self.world.discard(self.url)

    # driving the service -----------------------------------------------------------------

    def run(self, step: Awaitable[T]) -> T:
        async def whole() -> T:
            try:
                return await step
            finally:
                # A refusal for want of counters schedules their rebuild: let it finish, so
                # that the next step meets the state the model expects.
                await self.runtime.reconciler.wait_pending()

        return self.runner.run(whole())

    def attempt(self, step: Awaitable[T]) -> tuple[str, T | None]:
        """Run a step; ("ok", its result) or (the refusal's kind, None)."""
        self.refusal = None
        try:
            return "ok", self.run(step)
        except TidegateError as error:
            self.refusal = error
            return outcome(error), None

    def answered(self, step: str, got: str, expected: str) -> None:
        """Insist on the model's answer (saying what the refusal was, and why)."""
        why = "" if self.refusal is None else f" ({self.refusal!r} from {self.refusal.__cause__!r})"
        assert got == expected, f"{step} answered {got}{why}; the model says {expected}"

    def idempotency(
        self, owner: str, key: str | None, operation: str, body: Any
    ) -> Idempotency | None:
        principal = Principal(token_hash="model", role="tourist", account_id=owner)
        return idempotency(self.runtime, principal, key, operation, body)

    def send(
        self,
        operation: str,
        owner: str,
        target: str,
        people: tuple[int, ...] = (),
        key: str | None = None,
        reservation: str = "",
    ) -> Awaitable[Receipt]:
        """The request the API would make of the booking service, with its key."""
        booking = self.runtime.booking
        if operation == "hold":
            body = HoldRequest(slot_id=target, visitors=[PEOPLE[i] for i in people])
            return booking.hold(
                owner_id=owner,
                slot_id=target,
                visitors=body.visitors,
                idempotency=self.idempotency(owner, key, "hold", body),
            )
        if operation == "reschedule":
            move = RescheduleRequest(slot_id=target)
            return booking.reschedule(
                owner_id=owner,
                reservation_id=reservation,
                slot_id=target,
                idempotency=self.idempotency(owner, key, f"reschedule {reservation}", move),
            )
        action = booking.confirm if operation == "confirm" else booking.cancel
        return action(
            owner_id=owner,
            reservation_id=target,
            idempotency=self.idempotency(owner, key, f"{operation} {target}", None),
        )

    def new_key(self, keyed: bool) -> str | None:
        return f"model-key-{next(self.keys)}" if keyed else None

    def remember(self, key: str | None, request: Keyed) -> None:
        if key is not None:
            self.keyed.append(request)

    def party(self, pick: int, *statuses: str) -> Party:
        """A reservation: three times in four one in one of `statuses` (if any is), so that
        steps mostly act on reservations they can change; else any, for the refusals."""
        likely = [rid for rid in self.order if self.model.parties[rid].status in statuses]
        if likely and pick % 4:
            return self.model.parties[likely[pick // 4 % len(likely)]]
        return self.model.parties[self.order[pick % len(self.order)]]

    def has_parties(self) -> bool:
        return bool(self.order)

    # rules -------------------------------------------------------------------------------

    def _hold(self, owner: str, slot: str, people: tuple[int, ...], keyed: bool) -> None:
        model = self.model
        expected = model.hold(owner, slot, people)
        key = self.new_key(keyed)
        got, receipt = self.attempt(self.send("hold", owner, slot, people, key))
        self.answered("hold", got, expected)
        if got == "capacity-unavailable":
            model.rebuilt(day_of(slot))  # the refusal had the day rebuilt
        if receipt is None:
            return
        held = receipt.reservation
        assert not receipt.replayed
        assert (held.status, held.slot_id, held.party_size) == ("held", slot, len(people))
        assert held.expires_at == model.now + HOLD_TTL
        model.parties[held.id] = Party(held.id, owner, slot, people, "held", model.now + HOLD_TTL)
        self.order.append(held.id)
        self.remember(key, Keyed("hold", owner, key or "", slot, people, held))

    @rule(owner=st.sampled_from(ACCOUNTS), slot=targets, people=parties, keyed=st.booleans())
    def hold(self, owner: str, slot: str, people: tuple[int, ...], keyed: bool) -> None:
        self._hold(owner, slot, people, keyed)

    @rule(owner=st.sampled_from(ACCOUNTS), slot=targets, people=parties)
    def hold_and_confirm(self, owner: str, slot: str, people: tuple[int, ...]) -> None:
        """What most visitors do: hold, and confirm at once (makes tickets to scan)."""
        made = len(self.order)
        self._hold(owner, slot, people, keyed=False)
        if len(self.order) > made:
            self._confirm(self.model.parties[self.order[-1]], keyed=False)

    @precondition(has_parties)
    @rule(pick=picks, keyed=st.booleans())
    def confirm(self, pick: int, keyed: bool) -> None:
        self._confirm(self.party(pick, "held"), keyed)

    def _confirm(self, party: Party, keyed: bool) -> None:
        expected = self.model.confirm(party)
        key = self.new_key(keyed)
        got, receipt = self.attempt(self.send("confirm", party.owner, party.id, key=key))
        self.answered(f"confirm of a {party.status}", got, expected)
        if got == "hold-expired" and party.status == "held":
            party.status = "expired"  # expired by the confirm itself, the sweeper not by yet
        if receipt is None:
            return
        assert not receipt.replayed
        assert receipt.reservation.status == "confirmed"
        party.status = "confirmed"
        self.remember(
            key, Keyed("confirm", party.owner, key or "", party.id, (), receipt.reservation)
        )

    @precondition(has_parties)
    @rule(pick=picks, keyed=st.booleans())
    def cancel(self, pick: int, keyed: bool) -> None:
        party = self.party(pick, "held", "confirmed")
        expected = self.model.cancel(party)
        key = self.new_key(keyed)
        got, receipt = self.attempt(self.send("cancel", party.owner, party.id, key=key))
        self.answered(f"cancel of a {party.status}", got, expected)
        if receipt is None:
            return
        assert not receipt.replayed
        assert receipt.reservation.status == "cancelled"
        party.status = "cancelled"
        self.remember(
            key, Keyed("cancel", party.owner, key or "", party.id, (), receipt.reservation)
        )

    @precondition(lambda self: self.model.now < NOW + MAX_CLOCK)
    @rule(minutes=st.sampled_from([1, 5, 14, 15, 16]))
    def advance_clock(self, minutes: int) -> None:
        """Hold deadlines are 15 minutes away: 15 lands exactly on one."""
        step = min(timedelta(minutes=minutes), NOW + MAX_CLOCK - self.model.now)
        self.clock.advance(step)
        self.model.now += step

    @rule()
    def sweep(self) -> None:
        due = self.model.due()
        expired = self.run(self.runtime.booking.expire_due())
        assert expired == len(due)
        for party in due:
            party.status = "expired"

    @precondition(has_parties)
    @rule(pick=picks, slot=targets, keyed=st.booleans())
    def reschedule(self, pick: int, slot: str, keyed: bool) -> None:
        party = self.party(pick, "held", "confirmed")
        expected = self.model.reschedule(party, slot)
        key = self.new_key(keyed)
        move = self.send("reschedule", party.owner, slot, key=key, reservation=party.id)
        got, receipt = self.attempt(move)
        self.answered(f"move of a {party.status}", got, expected)
        if got == "capacity-unavailable":
            self.model.rebuilt(day_of(slot))
        if receipt is None:
            return
        moved = receipt.reservation
        assert not receipt.replayed
        assert (moved.status, moved.slot_id, moved.date) == (party.status, slot, day_of(slot))
        if party.status == "held":
            assert moved.expires_at == party.expires_at  # a hold keeps its deadline
        party.slot = slot
        self.remember(key, Keyed("reschedule", party.owner, key or "", slot, (), moved))

    @rule(slot=st.sampled_from(SLOTS), cap=st.integers(0, 4))
    def change_slot_cap(self, slot: str, cap: int) -> None:
        """As PATCH /v1/slots/{id}: SQL, then Redis; lowering it cancels nobody."""
        self.run(self.runtime.catalog.change_slot(slot, {"capacity": cap}, actor=STAFF))
        self.run(self.runtime.waitlist.offer([slot]))
        self.model.slot_caps[slot] = cap

    @rule(cap=st.integers(3, 6))
    def change_day_cap(self, cap: int) -> None:
        """As PATCH /v1/sites/{id}: the site's days are recounted from SQL."""
        patch = SitePatch(daily_cap=cap)
        self.run(self.runtime.management.update_site(SITE, patch, actor=STAFF))
        self.model.day_cap = cap
        self.model.rebuilt(*DAYS)

    @rule()
    def flush_redis(self) -> None:
        """Redis restarts empty: bookings fail closed until the counters are rebuilt."""
        self.run(self.runtime.redis.flushdb())
        self.model.flushed()

    @precondition(lambda self: self.model.built != set(DAYS))
    @rule()
    def rebuild(self) -> None:
        """What a restart does: every missing counter rebuilt from SQL, replays reloaded."""
        self.run(start(self.runtime))
        self.model.rebuilt(*DAYS)

    def _scan(self, pick: int, position: int | None, direction: str) -> None:
        party, model = self.party(pick, "confirmed", "checked_in"), self.model
        expected = model.ticket(party)
        gates = self.runtime.gates
        got, ticket = self.attempt(gates.ticket(owner_id=party.owner, reservation_id=party.id))
        self.answered(f"ticket of a {party.status}", got, expected)
        if ticket is None:
            return
        everyone = list(range(len(party.people)))
        positions = everyone if position is None else [position]
        named = None if position is None else [position]
        if direction == "entry":
            expected = model.entry(party, positions)
            passing = [p for p in positions if p not in party.entered]
        else:
            expected = model.exit(party, positions)
            passing = [p for p in positions if p in party.entered and p not in party.exited]
        got, result = self.attempt(gates.scan(Scan(GATE, ticket.code, direction, named)))
        self.answered(direction, got, expected)
        if result is None:
            return
        assert (result.people, result.visitors) == (len(passing), sorted(passing))
        if direction == "entry":
            party.entered.update(passing)
            party.status = "checked_in"
        else:
            party.exited.update(passing)

    @precondition(has_parties)
    @rule(pick=picks, position=st.none() | st.integers(0, 2))
    def enter(self, pick: int, position: int | None) -> None:
        self._scan(pick, position, "entry")

    @precondition(has_parties)
    @rule(pick=picks, position=st.none() | st.integers(0, 2))
    def leave(self, pick: int, position: int | None) -> None:
        self._scan(pick, position, "exit")

    @precondition(lambda self: bool(self.keyed))
    @rule(pick=picks, same_body=st.booleans())
    def retry(self, pick: int, same_body: bool) -> None:
        """An earlier keyed request again: the same body replays the first answer; another
        body under the same key is refused. Either way nothing changes."""
        request = self.keyed[pick % len(self.keyed)]
        owner, key, target = request.owner, request.key, request.target
        reservation = request.answer.id
        if same_body:
            got, receipt = self.attempt(
                self.send(request.operation, owner, target, request.people, key, reservation)
            )
            self.answered(f"retry of a {request.operation}", got, "ok")
            assert receipt is not None
            assert receipt.replayed
            assert receipt.reservation == request.answer
            return
        if request.operation in ("hold", "reschedule"):
            other = SLOTS[(SLOTS.index(target) + 1) % len(SLOTS)] if target in SLOTS else SLOTS[0]
            changed = self.send(request.operation, owner, other, request.people, key, reservation)
        else:  # the other of confirm and cancel, for the same reservation
            operation = "cancel" if request.operation == "confirm" else "confirm"
            changed = self.send(operation, owner, target, key=key)
        got, _ = self.attempt(changed)
        self.answered(f"another body for a {request.operation} key", got, "idempotency-key-reused")

    @rule()
    def reconcile(self) -> None:
        """The reconciler's pass: it rebuilds the days Redis lost, and finds nothing to mend
        in the others (no unit missing, none leaked, the caps as in SQL)."""
        report = self.run(self.runtime.reconciler.reconcile())
        assert {day.site_day.visit_date for day in report.days if day.site_day.site == SITE} == set(
            DAYS
        )
        for day in report.days:
            if day.site_day.site != SITE:
                continue
            lost = day.site_day.visit_date not in self.model.built
            assert (day.missing, day.leaked, day.returned, day.rebuilt) == (0, 0, 0, lost), day
        self.model.rebuilt(*DAYS)

    # what must hold after every step -----------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        runtime, model = self.runtime, self.model
        async with runtime.sessions() as session:
            reservations = list(
                (
                    await session.execute(
                        sa.select(Reservation).where(col(Reservation.site_id) == SITE)
                    )
                )
                .scalars()
                .all()
            )
            visitors = list(
                (await session.execute(sa.select(Visitor).where(col(Visitor.site_id) == SITE)))
                .scalars()
                .all()
            )
            slots = {
                slot.id: slot.capacity
                for slot in (
                    await session.execute(sa.select(Slot).where(col(Slot.site_id) == SITE))
                ).scalars()
            }
            site = await repo.get_site(session, SITE)
            inside = await repo.people_inside(session, SITE, TODAY)
        assert site is not None

        # Every reservation and its visitors are what the model says.
        assert {r.id for r in reservations} == set(model.parties)
        rows: dict[str, list[Visitor]] = defaultdict(list)
        for visitor in sorted(visitors, key=lambda v: v.position):
            rows[visitor.reservation_id].append(visitor)
        for reservation in reservations:
            party = model.parties[reservation.id]
            assert (
                reservation.status,
                reservation.slot_id,
                reservation.visit_date,
                reservation.owner_id,
                reservation.party_size,
            ) == (party.status, party.slot, party.day, party.owner, len(party.people))
            if party.status == "held":
                assert reservation.hold_expires_at == party.expires_at
            group = rows[reservation.id]
            assert [v.id_hash for v in group] == [self.id_hash(i) for i in party.people]
            assert {(v.slot_id, v.visit_date, v.active) for v in group} == {
                (party.slot, party.day, party.active)
            }
            assert {v.position for v in group if v.entered_at is not None} == party.entered
            assert {v.position for v in group if v.exited_at is not None} == party.exited
        assert inside == model.inside()

        # Caps: as set, and never exceeded by a new unit.
        assert {s: slots[s] for s in model.slot_caps} == model.slot_caps
        assert site.daily_cap == model.day_cap
        active = [v for v in visitors if v.active]
        for slot in SLOTS:
            used = sum(1 for v in active if v.slot_id == slot)
            assert used == model.used(slot)
            assert used <= model.slot_caps[slot] or used <= self.sold.get(slot, 0), slot
            self.sold[slot] = used
        for day in DAYS:
            used = sum(1 for v in active if v.visit_date == day)
            assert used <= model.day_cap or used <= self.sold.get(day, 0), day
            self.sold[day] = used
        units = {v.id or 0: (v.slot_id, v.slot_unit, v.day_unit) for v in active}
        for row, (slot, slot_unit, day_unit) in units.items():
            if self.units.get(row) != (slot, slot_unit, day_unit):  # sold in this step
                assert 1 <= slot_unit <= model.slot_caps[slot], (slot, slot_unit)
                assert 1 <= day_unit <= model.day_cap, (slot, day_unit)
        self.units = units
        assert len({(v.slot_id, v.slot_unit) for v in active}) == len(active)
        assert len({(v.visit_date, v.day_unit) for v in active}) == len(active)

        # One active reservation per visitor ID per site and day.
        per_visitor = Counter((v.visit_date, v.id_hash) for v in active)
        assert max(per_visitor.values(), default=0) <= 1

        # Redis counts what SQL proves; a reconcile finds nothing to mend.
        for day in DAYS:
            site_day = SiteDay(SITE, day)
            assert await runtime.counters.is_built(site_day) == (day in model.built), day
            if day not in model.built:
                continue
            await self._check_counters(site_day, [v for v in active if v.visit_date == day])

        # Each account's open-hold claims are its open holds (those of days rebuilt since a flush).
        for owner in ACCOUNTS:
            claims = await runtime.redis.zrangebyscore(
                open_holds(owner), f"({to_millis(model.now)}", "+inf"
            )
            assert set(claims) == {f"{SITE} {p.id}" for p in model.open_holds(owner)}, owner

        # The people inside, as the gates count them (once counted since a flush).
        count = await self.occupancy.count(SiteDay(SITE, TODAY))
        if count is not None:
            assert (count.inside, count.entered) == (model.inside(), model.entered_today())

    async def _check_counters(self, site_day: SiteDay, active: list[Visitor]) -> None:
        model, day = self.model, site_day.visit_date
        snapshot = await self.runtime.counters.snapshot(site_day)
        load = await self.runtime.counters.load(site_day)
        assert snapshot is not None
        assert load is not None
        assert snapshot.day_taken == {v.day_unit for v in active}
        assert snapshot.visitor_ids == {v.id_hash for v in active}
        assert snapshot.day_cap == model.day_cap
        assert load.day.used == model.day_used(day)
        for key in WINDOWS:
            slot = f"{SITE}.{day.isoformat()}.{key}"
            assert snapshot.slot_taken[key] == {v.slot_unit for v in active if v.slot_id == slot}
            assert snapshot.slot_caps[key] == model.slot_caps[slot]
            assert load.slots[key].used == model.used(slot)
        owners: dict[str, set[str]] = defaultdict(set)
        for party in model.booked_on(day):
            owners[party.owner].add(party.id)
        assert {o: set(r) for o, r in snapshot.owners.items() if r} == owners

    def id_hash(self, person: int) -> str:
        visitor = PEOPLE[person]
        return self.runtime.hasher.hash(visitor.id_type, visitor.id_number)


@pytest.fixture(scope="module")
def world(
    migrated_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    made = World(migrated_database, redis_url, tmp_path_factory.mktemp("model"))
    yield made
    made.close()


@pytest.mark.timeout(1200)
def test_booking_agrees_with_its_model(world: World) -> None:
    class OnThisWorld(BookingMachine):
        def __init__(self) -> None:
            super().__init__(world)

    run_state_machine_as_test(
        OnThisWorld,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=not EXPLORE,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# bugs the model found, each as its shortest sequence (fixed) -----------------------------


@pytest.fixture
def machine(world: World) -> Iterator[BookingMachine]:
    made = BookingMachine(world)
    yield made
    made.teardown()


def restart_redis(machine: BookingMachine) -> None:
    """Redis restarts empty, and tidegate rebuilds what it can from SQL (as at start-up)."""
    machine.run(machine.runtime.redis.flushdb())
    machine.run(start(machine.runtime))


def test_open_hold_limit_survives_a_redis_restart(machine: BookingMachine) -> None:
    owner = ACCOUNTS[0]
    for slot, person in ((SLOTS[0], 0), (SLOTS[2], 1)):  # two holds open: the limit
        assert machine.attempt(machine.send("hold", owner, slot, (person,)))[0] == "ok"
    restart_redis(machine)

    got, _ = machine.attempt(machine.send("hold", owner, SLOTS[1], (2,)))

    assert got == "account-limit:open-holds"


def test_confirming_twice_replays_after_a_redis_restart(machine: BookingMachine) -> None:
    owner = ACCOUNTS[0]
    got, held = machine.attempt(machine.send("hold", owner, SLOTS[0], (0,)))
    assert got == "ok"
    assert held is not None
    rid = held.reservation.id
    assert machine.attempt(machine.send("confirm", owner, rid))[0] == "ok"
    got, first = machine.attempt(machine.send("confirm", owner, rid, key="again"))
    assert got == "ok"
    assert first is not None
    assert machine.attempt(machine.send("cancel", owner, rid))[0] == "ok"
    restart_redis(machine)

    got, retried = machine.attempt(machine.send("confirm", owner, rid, key="again"))

    assert got == "ok"  # not 409 invalid-transition: the confirm must not run again
    assert retried is not None
    assert retried.replayed
    assert retried.reservation == first.reservation
