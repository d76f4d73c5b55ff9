"""Reservations: hold, confirm, cancel, expire (the invariant of ARCHITECTURE §2).

Every path that takes places asks Redis first (`Counters.allocate`, one Lua script per
site-day) and then proves the units in SQL in one transaction; every path that gives places
back commits in SQL first and then returns the units to Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import SlotRef, parse_slot_id, places_back_at, sales_close_at
from booking.crowd import Crowd
from booking.errors import (
    HoldExpired,
    IdempotencyKeyReused,
    InvalidRequest,
    InvalidTransition,
    NoGroupsHere,
    NotFound,
    RequestInFlight,
)
from booking.groups import check_group
from booking.ids import IdHasher, birth_date, mask_id_number
from booking.ledger import HoldLedger, PendingHold
from booking.models import Account, OutboxEvent, Reservation, ReservationStatus, Visitor
from booking.reconcile import Reconciler
from booking.repository import KeyConflict, MissingSlot, UnitConflict, classify
from booking.schemas import (
    Alternative,
    GroupVisitorIn,
    ReservationPublic,
    VisitorIn,
    VisitorPublic,
)
from booking.sites import Catalog
from capacity.clock import Clock
from capacity.counters import Allocation, Counters
from capacity.errors import CapacityUnavailable, OutsideBookingWindow, SlotNotCounted, SoldOut
from capacity.keys import moving
from capacity.replays import RETENTION, Replays

log = logging.getLogger(__name__)

# Longer than any move takes (two Redis calls and one SQL transaction), short enough that a
# process dying mid-move blocks the reservation's moves only briefly.
MOVE_LEASE_MS = 30_000


@dataclass(frozen=True, slots=True)
class Named:
    """A visitor as tidegate keeps them: the keyed hash and the masked ID number, never the
    number itself (a waitlist entry holds its visitors this way until its offer)."""

    name: str
    id_type: str
    id_hash: str
    id_masked: str


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An `Idempotency-Key` and the fingerprint of the request that carried it."""

    owner_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Receipt:
    reservation: ReservationPublic
    replayed: bool = False


def new_id() -> str:
    return secrets.token_hex(16)


def window_account_id(site_id: str) -> str:
    return "window-" + hashlib.sha256(site_id.encode()).hexdigest()[:25]


class Booking:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        catalog: Catalog,
        crowd: Crowd,
        reconciler: Reconciler,
        clock: Clock,
        hasher: IdHasher,
        hold_ttl: timedelta,
        replays: Replays,
        ledger: HoldLedger,
    ) -> None:
        self._replays = replays
        self._ledger = ledger
        self._sessions = sessions
        self._counters = counters
        self._catalog = catalog
        self._crowd = crowd
        self._reconciler = reconciler
        self._clock = clock
        self._hasher = hasher
        self._hold_ttl = hold_ttl

    # holding places ----------------------------------------------------------------------

    async def hold(
        self,
        *,
        owner_id: str,
        slot_id: str,
        visitors: Sequence[VisitorIn],
        idempotency: Idempotency | None = None,
    ) -> Receipt:
        """Hold places for real-name visitors until confirmed or `hold_ttl` has passed."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            raise NotFound(f"no slot {slot_id}")
        id_hashes = self.hash_ids(visitors)
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay
            public = await self._hold(owner_id, ref, visitors, id_hashes, idempotency)
            if isinstance(public, Receipt):  # another request with the key committed first
                return public
            return await self._finish(attempt, public)

    async def check_visitors(self, slot_id: str, visitors: Sequence[VisitorIn]) -> None:
        """The checks a hold makes of its visitors before any place is taken."""
        times = await self._catalog.slot_times(slot_id)
        self._check_born(visitors, today=self._clock.now().astimezone(times[0].tzinfo).date())

    async def hold_offered(
        self, *, owner_id: str, slot_id: str, visitors: Sequence[Named], draw: bool = False
    ) -> ReservationPublic:
        """A hold the waitlist gives the first in line when places come back, or a fair
        release's `draw` to an entry in its turn. It is not one the account asked for, so it
        does not count against the account's open holds; the per-ID and per-day rules apply
        as to any hold."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            raise NotFound(f"no slot {slot_id}")
        times = await self._catalog.slot_times(ref.id)
        claim = _Claim(owner_id, ref.site_day.site, new_id())
        now = self._clock.now()
        held = await self._hold_claimed(claim, ref, visitors, None, now, times, draw=draw)
        assert isinstance(held, ReservationPublic)  # no idempotency key: never a replay
        return held

    async def hold_group(
        self,
        *,
        owner_id: str,
        slot_id: str,
        visitors: Sequence[GroupVisitorIn],
        idempotency: Idempotency | None = None,
    ) -> Receipt:
        """Hold places for a group (a school class, a tour): the site's composition rules
        apply instead of its party size limit and the per-account day limit (the limit of open
        holds stays), the day takes at most its number of groups, and the places come from
        the slot's `group` pool where it keeps one."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            raise NotFound(f"no slot {slot_id}")
        id_hashes = self.hash_ids(visitors)
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay  # a retry replays, whatever the rules became since
            async with self._sessions() as session:
                site = await repo.get_site(session, ref.site_day.site)
            if site is None:
                raise NotFound(f"no slot {slot_id}")
            if not site.group_rules:
                raise NoGroupsHere(f"{site.id} takes no group reservations")
            check_group(site.group_rules, visitors, ref.site_day.visit_date)
            public = await self._hold(owner_id, ref, visitors, id_hashes, idempotency, "group")
            if isinstance(public, Receipt):
                return public
            return await self._finish(attempt, public)

    async def sell_at_window(
        self,
        *,
        site_id: str,
        slot_id: str,
        visitors: Sequence[VisitorIn],
        idempotency: Idempotency | None = None,
    ) -> Receipt:
        """A sale at the site's window, by an operator, for visitors without the app (elderly
        visitors first): taken from the slot's window pool where it keeps one, confirmed at
        once, under the site's window account (no per-account limit; the per-ID rules apply)."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            raise NotFound(f"no slot {slot_id}")
        if ref.site_day.site != site_id:
            raise InvalidRequest(
                field="slot_id", rule="this-site", message=f"a slot of {site_id} is sold here"
            )
        id_hashes = self.hash_ids(visitors)
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay
            now = self._clock.now()
            times = await self._catalog.slot_times(ref.id)
            self._check_born(visitors, today=now.astimezone(times[0].tzinfo).date())
            owner = await self._window_account(site_id, now)
            claim = _Claim(owner, site_id, new_id())
            named = self.named(visitors, id_hashes)
            held = await self._hold_claimed(claim, ref, named, None, now, times, "window")
            assert isinstance(held, ReservationPublic)  # no idempotency key: never a replay
            async with self._sessions() as session, session.begin():
                await repo.move_status(
                    session,
                    [held.id],
                    from_statuses=[ReservationStatus.held],
                    to=ReservationStatus.confirmed,
                    now=now,
                    ticket_secret=secrets.token_urlsafe(32),
                )
                public = await self._public(session, held.id)
                session.add(_event("reservation.confirmed", public, owner, now, channel="window"))
                if idempotency is not None:
                    await self._record(session, idempotency, 201, public, now)
            return await self._finish(attempt, public)

    async def _window_account(self, site_id: str, now: datetime) -> str:
        """The account a site's window sales are made under (nobody can log in to it)."""
        account_id = window_account_id(site_id)
        async with self._sessions() as session:
            if await repo.has_account(session, account_id):
                return account_id
        try:
            async with self._sessions() as session, session.begin():
                await repo.add_account(
                    session, Account(id=account_id, password_hash="!", created_at=now)
                )
        except IntegrityError:
            pass  # made by a racing sale meanwhile
        return account_id

    async def _hold(
        self,
        owner_id: str,
        ref: SlotRef,
        visitors: Sequence[VisitorIn],
        id_hashes: Sequence[str],
        idempotency: Idempotency | None,
        channel: str = "online",
    ) -> ReservationPublic | Receipt:
        now = self._clock.now()
        times = await self._catalog.slot_times(ref.id)
        self._check_born(visitors, today=now.astimezone(times[0].tzinfo).date())
        named = self.named(visitors, id_hashes)
        reservation_id = new_id()
        site = ref.site_day.site
        await self._counters.claim_hold(
            owner_id,
            site,
            reservation_id,
            limit=await self._catalog.hold_limit(site),
            now=now,
            until=now + self._hold_ttl,
        )
        claim = _Claim(owner_id, site, reservation_id)
        try:
            held = await self._hold_claimed(claim, ref, named, idempotency, now, times, channel)
        except BaseException:
            if not claim.saved:
                await asyncio.shield(self._end_holds([claim.key]))
            raise
        if isinstance(held, Receipt):  # another request with the key made the reservation
            await self._end_holds([claim.key])
        return held

    async def _hold_claimed(
        self,
        claim: _Claim,
        ref: SlotRef,
        visitors: Sequence[Named],
        idempotency: Idempotency | None,
        now: datetime,
        times: tuple[datetime, datetime],
        channel: str = "online",
        *,
        draw: bool = False,
    ) -> ReservationPublic | Receipt:
        owner_id, reservation_id = claim.owner, claim.reservation
        id_hashes = [v.id_hash for v in visitors]
        for attempt in (1, 2):
            allocation = await self._allocate(
                ref, id_hashes, now, len(visitors), times, owner_id, reservation_id, channel, draw
            )
            public = ReservationPublic(
                id=reservation_id,
                status=ReservationStatus.held,
                site=ref.site_day.site,
                slot_id=ref.id,
                date=ref.site_day.visit_date,
                start=times[0],
                end=times[1],
                party_size=len(visitors),
                visitors=[
                    VisitorPublic(name=v.name, id_type=v.id_type, id_number_masked=v.id_masked)
                    for v in visitors
                ],
                expires_at=now + self._hold_ttl,
                created_at=now,
            )
            pending = PendingHold(
                reservation=self._reservation_row(public, owner_id, idempotency, now, channel),
                visitors=[
                    self._visitor_row(public, i, v, allocation) for i, v in enumerate(visitors)
                ],
                record=_record_row(idempotency, 201, public, now) if idempotency else None,
                event=_event_row("reservation.held", public, owner_id, now),
            )
            try:
                await self._ledger.write(pending)
            except IntegrityError as error:
                reason = classify(error)
                if isinstance(reason, UnitConflict):
                    # Redis was stale: SQL already holds one of these units. The rebuild
                    # supersedes what we took, so nothing is given back; then retry once.
                    log.warning("unit conflict, rebuilding counters of %s", ref.site_day)
                    await self._reconciler.rebuild(ref.site_day)
                    if attempt == 1:
                        continue
                    raise CapacityUnavailable("places are being recounted") from error
                await self._give_back(ref, allocation, id_hashes, owner_id, reservation_id)
                if isinstance(reason, KeyConflict) and idempotency is not None:
                    return await self._replay_committed(idempotency)
                if isinstance(reason, MissingSlot):
                    raise NotFound(f"no slot {ref.id}") from error
                raise
            except BaseException:
                # Unless SQL proved the hold after all (a cancelled request's batch may still
                # commit), the units go back, shielded so a cancellation cannot skip it.
                claim.saved = await self._ledger.outcome(pending)
                if not claim.saved:
                    await asyncio.shield(
                        self._give_back(ref, allocation, id_hashes, owner_id, reservation_id)
                    )
                raise
            return public
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check_born(visitors: Sequence[VisitorIn], *, today: date) -> None:
        for position, visitor in enumerate(visitors):
            born = birth_date(visitor.id_type, visitor.id_number)
            if born is not None and born > today:
                raise InvalidRequest(
                    field=f"visitors[{position}].id_number",
                    rule="birth-date",
                    message="The resident ID number does not contain a plausible date of birth.",
                )

    async def _allocate(
        self,
        ref: SlotRef,
        id_hashes: list[str],
        now: datetime,
        party: int,
        times: tuple[datetime, datetime],
        owner_id: str,
        reservation_id: str,
        channel: str = "online",
        draw: bool = False,
    ) -> Allocation:
        async with self._admission(ref, party, times):
            return await self._counters.allocate(
                ref.site_day,
                ref.key,
                id_hashes,
                now=now,
                owner=owner_id,
                reservation=reservation_id,
                channel=channel,
                draw=draw,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _admission(
        self, ref: SlotRef, party: int, times: tuple[datetime, datetime]
    ) -> AsyncIterator[None]:
        """Turn a counters' refusal into what the visitor is told: a missing slot, a recount,
        when the slot is on sale (in the site's time), or where else there is room."""
        try:
            yield
        except (SlotNotCounted, CapacityUnavailable) as error:
            if not await self._catalog.slot_exists(ref.id):
                raise NotFound(f"no slot {ref.id}") from error
            self._reconciler.schedule(ref.site_day)
            raise CapacityUnavailable("places are being recounted") from error
        except OutsideBookingWindow as error:
            # Say when, in the site's own time.
            zone = times[0].tzinfo
            opens = error.extra["sales_open_at"].astimezone(zone)
            closes = error.extra["sales_close_at"].astimezone(zone)
            error.extra.update(sales_open_at=opens, sales_close_at=closes)
            error.detail = f"on sale from {opens.isoformat()} until {closes.isoformat()}"
            raise
        except SoldOut as error:
            # The same ranking as GET /v1/suggestions, shared by a rush's refusals.
            offers = await self._crowd.instead_of(ref.id, party=party)
            error.extra["alternatives"] = [offer.as_dict() for offer in offers]
            raise

    async def _give_back(
        self,
        ref: SlotRef,
        allocation: Allocation,
        id_hashes: list[str],
        owner_id: str,
        reservation_id: str,
    ) -> None:
        await self._counters.release(
            ref.site_day,
            ref.key,
            slot_units=allocation.slot_units,
            day_units=allocation.day_units,
            visitor_ids=id_hashes,
            owner=owner_id,
            reservation=reservation_id,
        )

    async def _end_holds(self, claims: Sequence[tuple[str, str, str]]) -> None:
        """A hold no longer open stops counting against its account's limit. Best effort: a
        claim left behind drops out by itself when the hold would have expired."""
        try:
            await self._counters.end_holds(claims)
        except CapacityUnavailable:
            log.warning("hold claims not ended: Redis unreachable")

    # confirming, cancelling, expiring ----------------------------------------------------

    async def confirm(
        self, *, owner_id: str, reservation_id: str, idempotency: Idempotency | None = None
    ) -> Receipt:
        """Turn a live hold into a reservation with an entry ticket."""
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay
            now = self._clock.now()
            public: ReservationPublic | None = None
            expired: list[Visitor] = []
            confirmed = False
            async with self._sessions() as session, session.begin():
                reservation = await self._own(session, reservation_id, owner_id)
                status = reservation.status
                if status == ReservationStatus.held and reservation.hold_expires_at <= now:
                    # The sweeper has not come by yet: expire it here, with the same guard.
                    expired = await self._expire(session, [reservation_id], now)
                elif status == ReservationStatus.held:
                    await repo.move_status(
                        session,
                        [reservation_id],
                        from_statuses=[ReservationStatus.held],
                        to=ReservationStatus.confirmed,
                        now=now,
                        ticket_secret=secrets.token_urlsafe(32),
                    )
                    public = await self._public(session, reservation_id)
                    session.add(_event("reservation.confirmed", public, owner_id, now))
                    if idempotency is not None:
                        await self._record(session, idempotency, 200, public, now)
                    confirmed = True
                elif status == ReservationStatus.confirmed:
                    # Confirming twice is harmless: answer with the reservation as it is,
                    # and keep that answer in SQL too, so a retry replays it after Redis restarts.
                    public = await self._public(session, reservation_id)
                    if idempotency is not None:
                        await self._record(session, idempotency, 200, public, now)
                elif status == ReservationStatus.expired:
                    raise HoldExpired(f"the hold of {reservation_id} expired")
                else:
                    raise InvalidTransition(f"a {status} reservation cannot be confirmed")
            if confirmed:
                await self._end_holds([(owner_id, reservation.site_id, reservation_id)])
            if public is not None:
                return await self._finish(attempt, public)
            await self._release(expired, {reservation_id: owner_id})
            raise HoldExpired(f"the hold of {reservation_id} expired")

    async def cancel(
        self, *, owner_id: str, reservation_id: str, idempotency: Idempotency | None = None
    ) -> Receipt:
        """Cancel a hold or a reservation; its places go back on sale at once."""
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay
            now = self._clock.now()
            back_at: dict[str, datetime] = {}
            async with self._sessions() as session, session.begin():
                reservation = await self._own(session, reservation_id, owner_id)
                was = reservation.status
                changed = await repo.move_status(
                    session,
                    [reservation_id],
                    from_statuses=[ReservationStatus.held, ReservationStatus.confirmed],
                    to=ReservationStatus.cancelled,
                    now=now,
                )
                if not changed:
                    raise InvalidTransition(
                        f"a {reservation.status} reservation cannot be cancelled"
                    )
                if was == ReservationStatus.confirmed:
                    # A refund: the site's policy says when its places go back on sale.
                    when = await self._refund_back_at(session, reservation, now)
                    if when is not None:
                        await repo.set_places_back_at(session, reservation_id, when)
                        back_at[reservation_id] = when
                visitors = list(await repo.visitors_of(session, changed))
                public = await self._public(session, reservation_id)
                session.add(_event("reservation.cancelled", public, owner_id, now))
                if idempotency is not None:
                    await self._record(session, idempotency, 200, public, now)
            await release_units(self._counters, visitors, {reservation_id: owner_id}, back_at)
            return await self._finish(attempt, public)

    async def _refund_back_at(
        self, session: AsyncSession, reservation: Reservation, now: datetime
    ) -> datetime | None:
        site = await repo.get_site(session, reservation.site_id)
        if site is None or not site.refund_policy or site.refund_policy["mode"] == "immediate":
            return None
        slot = await repo.get_slot(session, reservation.slot_id)
        if slot is None:  # pragma: no cover - a reservation's slot is never deleted
            return None
        closes = sales_close_at(site, slot.visit_date, slot.end)
        when = places_back_at(site, now, closes, secrets.randbelow)
        return when if when is not None and when > now else None

    async def reschedule(
        self,
        *,
        owner_id: str,
        reservation_id: str,
        slot_id: str,
        idempotency: Idempotency | None = None,
    ) -> Receipt:
        """Move a held or confirmed reservation to another slot of its site, keeping its
        visitors (and a hold its deadline). Never both places lost, never both kept:

        - the same day: one script takes the new slot's units and gives the old ones back;
          if SQL then refuses, the day's counters are rebuilt from SQL, where the
          reservation is still in its old slot;
        - another day: the new day's places are taken first (the per-ID and per-account rules
          apply there), SQL moves the reservation, and only then are the old day's places
          given back; if SQL refuses, the new places go back instead.
        """
        async with self._idempotent(idempotency) as attempt:
            if attempt.replay is not None:
                return attempt.replay
            async with self._sessions() as session:
                await self._own(session, reservation_id, owner_id)  # 404 before any lease
            async with self._counters.lease(moving(reservation_id), ttl_ms=MOVE_LEASE_MS) as ours:
                if not ours:
                    raise InvalidTransition(
                        f"{reservation_id} changed meanwhile (another request is moving it): "
                        "try again"
                    )
                public = await self._move(owner_id, reservation_id, slot_id, idempotency)
            return await self._finish(attempt, public)

    async def _move(
        self,
        owner_id: str,
        reservation_id: str,
        slot_id: str,
        idempotency: Idempotency | None,
    ) -> ReservationPublic:
        """The move itself, under the reservation's lease: read here, the reservation is what
        SQL holds until this request changes it (only a cancel or an expiry can race it)."""
        now = self._clock.now()
        async with self._sessions() as session:
            reservation = await self._own(session, reservation_id, owner_id)
            visitors = sorted(
                await repo.visitors_of(session, [reservation_id]), key=lambda v: v.position
            )
        old, new = parse_slot_id(reservation.slot_id), parse_slot_id(slot_id)
        assert old is not None  # ids in SQL are well formed
        self._check_move(reservation, old, new, now)
        assert new is not None
        times = await self._catalog.slot_times(new.id)
        party = len(visitors)
        if new.site_day == old.site_day:
            with _offers_only_elsewhere(old):
                async with self._admission(new, party, times):
                    slot_units = await self._counters.move(
                        old.site_day,
                        old.key,
                        new.key,
                        slot_units=[v.slot_unit for v in visitors],
                        now=now,
                        reservation=reservation_id,
                        channel=reservation.channel,
                    )
            units = {
                v.id or 0: (unit, v.day_unit) for v, unit in zip(visitors, slot_units, strict=True)
            }
        else:
            id_hashes = [v.id_hash for v in visitors]
            with _offers_only_elsewhere(old):
                allocation = await self._allocate(
                    new,
                    id_hashes,
                    now,
                    party,
                    times,
                    owner_id,
                    reservation_id,
                    reservation.channel,
                )
            units = {
                v.id or 0: (allocation.slot_units[i], allocation.day_units[i])
                for i, v in enumerate(visitors)
            }
        try:
            async with self._sessions() as session, session.begin():
                moved = await repo.reschedule(
                    session,
                    reservation_id,
                    from_slot=old.id,
                    to_slot=new.id,
                    visit_date=new.site_day.visit_date,
                    units=units,
                    now=now,
                )
                if not moved:
                    raise InvalidTransition(f"{reservation_id} changed meanwhile: try again")
                public = await self._public(session, reservation_id)
                session.add(
                    _event("reservation.rescheduled", public, owner_id, now, moved_from=old.id)
                )
                if idempotency is not None:
                    await self._record(session, idempotency, 200, public, now)
        except BaseException:
            await asyncio.shield(self._undo_move(old, new, units, visitors, owner_id))
            raise
        if new.site_day != old.site_day:
            await self._give_back_old_day(old, visitors, owner_id)
        return public

    async def _give_back_old_day(
        self, old: SlotRef, visitors: Sequence[Visitor], owner_id: str
    ) -> None:
        """After a move to another day commits: the old day's places go back on sale. (A hold
        keeps its claim against the account's open holds: it is still open, elsewhere.)"""
        try:
            await self._counters.release(
                old.site_day,
                old.key,
                slot_units=[v.slot_unit for v in visitors],
                day_units=[v.day_unit for v in visitors],
                visitor_ids=[v.id_hash for v in visitors],
                owner=owner_id,
                reservation=visitors[0].reservation_id,
            )
        except CapacityUnavailable:
            # Committed in SQL: the units leak (an undersell) until the reconciler returns them.
            log.warning("release postponed: Redis unreachable for %s", old.site_day)

    @staticmethod
    def _check_move(
        reservation: Reservation, old: SlotRef, new: SlotRef | None, now: datetime
    ) -> None:
        if reservation.status not in (ReservationStatus.held, ReservationStatus.confirmed):
            raise InvalidTransition(f"a {reservation.status} reservation cannot be rescheduled")
        if reservation.status == ReservationStatus.held and reservation.hold_expires_at <= now:
            raise HoldExpired(f"the hold of {reservation.id} expired")
        if new is None:
            raise NotFound("no such slot")
        if new.site_day.site != old.site_day.site:
            raise InvalidRequest(
                field="slot_id",
                rule="same-site",
                message="a reservation moves to another slot of its own site",
            )
        if new.id == old.id:
            raise InvalidRequest(
                field="slot_id", rule="another-slot", message="the reservation is in this slot"
            )

    async def _undo_move(
        self,
        old: SlotRef,
        new: SlotRef,
        units: dict[int, tuple[int, int]],
        visitors: Sequence[Visitor],
        owner_id: str,
    ) -> None:
        """SQL did not move the reservation: undo what Redis did."""
        try:
            if new.site_day == old.site_day:
                # The old units were given back in the same step as the new ones were taken;
                # SQL, where the reservation is still in its old slot, says which are whose.
                # The tourist does not wait: closed now, rebuilt in the background if busy.
                await self._reconciler.rebuild_after_change(old.site_day, wait=timedelta(0))
                return
            await self._counters.release(
                new.site_day,
                new.key,
                slot_units=[units[v.id or 0][0] for v in visitors],
                day_units=[units[v.id or 0][1] for v in visitors],
                visitor_ids=[v.id_hash for v in visitors],
                owner=owner_id,
                reservation=visitors[0].reservation_id if visitors else "",
            )
        except CapacityUnavailable:
            # The reconciler compares Redis with SQL and returns what leaked.
            log.warning("move not undone: Redis unreachable for %s", new.site_day)

    async def expire_due(self, *, limit: int = 200) -> int:
        """The sweeper's step: expire holds past their deadline and return their places."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            due = await repo.due_holds(session, now, limit=limit)
            visitors = await self._expire(session, due, now) if due else []
            owners = await repo.owners_of(session, {v.reservation_id for v in visitors})
        await self._release(visitors, owners)
        return len({v.reservation_id for v in visitors})

    async def _expire(
        self, session: AsyncSession, reservation_ids: Sequence[str], now: datetime
    ) -> list[Visitor]:
        changed = await repo.move_status(
            session,
            reservation_ids,
            from_statuses=[ReservationStatus.held],
            to=ReservationStatus.expired,
            now=now,
        )
        if not changed:
            return []
        owners = await repo.owners_of(session, changed)
        for reservation_id in changed:
            public = await self._public(session, reservation_id)
            session.add(_event("reservation.expired", public, owners[reservation_id], now))
        return list(await repo.visitors_of(session, changed))

    async def _release(self, visitors: Sequence[Visitor], owners: dict[str, str]) -> None:
        """After commit: return the units of visitors that no longer hold places, and stop
        counting their reservations against their owners' limits."""
        await release_units(self._counters, visitors, owners)

    # reading -----------------------------------------------------------------------------

    async def open_holds(self) -> dict[str, int]:
        """Holds waiting for confirmation, per site (for the metrics)."""
        async with self._sessions() as session:
            return await repo.open_holds_by_site(session, self._clock.now())

    async def get(self, *, owner_id: str, reservation_id: str) -> ReservationPublic:
        async with self._sessions() as session:
            await self._own(session, reservation_id, owner_id)
            return await self._public(session, reservation_id)

    async def list(self, *, owner_id: str, limit: int, offset: int) -> list[ReservationPublic]:
        async with self._sessions() as session:
            reservations = await repo.reservations_of(session, owner_id, limit=limit, offset=offset)
            visitors = await repo.visitors_of(session, [r.id for r in reservations])
            by_reservation: dict[str, list[Visitor]] = defaultdict(list)
            for visitor in visitors:
                by_reservation[visitor.reservation_id].append(visitor)
            return [
                await self._view(session, reservation, by_reservation[reservation.id])
                for reservation in reservations
            ]

    async def _own(self, session: AsyncSession, reservation_id: str, owner_id: str) -> Reservation:
        # Somebody else's reservation is indistinguishable from a missing one.
        reservation = await repo.get_reservation(session, reservation_id, owner_id=owner_id)
        if reservation is None:
            raise NotFound(f"no reservation {reservation_id}")
        return reservation

    async def _public(self, session: AsyncSession, reservation_id: str) -> ReservationPublic:
        reservation = await repo.get_reservation(session, reservation_id)
        assert reservation is not None
        await session.refresh(reservation)
        visitors = await repo.visitors_of(session, [reservation_id])
        return await self._view(session, reservation, visitors)

    async def _view(
        self, session: AsyncSession, reservation: Reservation, visitors: Sequence[Visitor]
    ) -> ReservationPublic:
        start, end = await self._catalog.slot_times(reservation.slot_id, session=session)
        return ReservationPublic(
            id=reservation.id,
            status=reservation.status,
            site=reservation.site_id,
            slot_id=reservation.slot_id,
            date=reservation.visit_date,
            start=start,
            end=end,
            party_size=reservation.party_size,
            visitors=[
                VisitorPublic(name=v.name, id_type=v.id_type, id_number_masked=v.id_masked)
                for v in visitors
            ],
            expires_at=(
                reservation.hold_expires_at
                if reservation.status == ReservationStatus.held
                else None
            ),
            created_at=reservation.created_at,
            cancel_reason=reservation.cancel_reason,
            alternatives=(
                None
                if reservation.alternatives is None
                else [Alternative.model_validate(a) for a in reservation.alternatives]
            ),
        )

    # idempotency -------------------------------------------------------------------------

    @asynccontextmanager
    async def _idempotent(self, request: Idempotency | None) -> AsyncIterator[_Attempt]:
        """Same key and body: replay. Same key, other body: 422. Still running: 409.

        Redis answers from its copy of finished requests; SQL, where every record is written
        with its change, is asked only while Redis's copy is incomplete (after a data loss).
        """
        attempt = _Attempt(request)
        if request is None:
            yield attempt
            return
        begun = await self._replays.begin(request.owner_id, request.key)
        if begun.record is not None:
            attempt.replay = _replay(request, begun.record)
            yield attempt
            return
        if begun.busy:
            raise RequestInFlight()
        try:
            if not begun.warm:
                record = await self._stored_record(request)
                if record is not None:
                    # Redis learns what SQL holds: the next retry is answered from Redis.
                    await self._replays.finish(request.owner_id, request.key, record)
                    attempt.finished = True
                    attempt.replay = _replay(request, record)
            yield attempt
        finally:
            if not attempt.finished:
                await self._replays.abandon(request.owner_id, request.key)

    async def _finish(self, attempt: _Attempt, public: ReservationPublic) -> Receipt:
        """After the commit: keep the answer in Redis for retries, release the lock."""
        if attempt.request is not None:
            await self._replays.finish(
                attempt.request.owner_id,
                attempt.request.key,
                _record(attempt.request.fingerprint, public),
            )
            attempt.finished = True
        return Receipt(public)

    async def _stored(self, request: Idempotency) -> Receipt | None:
        record = await self._stored_record(request)
        return None if record is None else _replay(request, record)

    async def _stored_record(self, request: Idempotency) -> str | None:
        """The answer SQL recorded for this key with its change, if any."""
        async with self._sessions() as session:
            record = await repo.idempotency_record(session, request.owner_id, request.key)
        return None if record is None else _record_text(record.fingerprint, record.body)

    async def _replay_committed(self, request: Idempotency) -> Receipt:
        replay = await self._stored(request)
        if replay is None:  # pragma: no cover - the conflict proves the record exists
            raise RequestInFlight()
        return replay

    async def warm_replays(self) -> int:
        """After Redis lost its data: reload the last day's finished requests from SQL."""
        cold = await self._replays.cold_shards()
        if not cold:
            return 0
        since = self._clock.now() - RETENTION
        async with self._sessions() as session:
            records = await repo.idempotency_records_since(session, since)
        await self._replays.warm(
            [(r.owner_id, r.key, _record_text(r.fingerprint, r.body)) for r in records], cold
        )
        return len(records)

    @staticmethod
    async def _record(
        session: AsyncSession,
        request: Idempotency,
        status_code: int,
        public: ReservationPublic,
        now: datetime,
    ) -> None:
        await repo.add_idempotency_record(session, _record_row(request, status_code, public, now))

    # rows --------------------------------------------------------------------------------

    def named(self, visitors: Sequence[VisitorIn], id_hashes: Sequence[str]) -> Sequence[Named]:
        """Visitors as kept: hashed and masked; their ID numbers go no further."""
        return [
            Named(
                name=v.name,
                id_type=v.id_type.value,
                id_hash=id_hash,
                id_masked=mask_id_number(v.id_type, v.id_number),
            )
            for v, id_hash in zip(visitors, id_hashes, strict=True)
        ]

    def hash_ids(self, visitors: Sequence[VisitorIn]) -> Sequence[str]:
        return [self._hasher.hash(v.id_type, v.id_number) for v in visitors]

    def _reservation_row(
        self,
        public: ReservationPublic,
        owner_id: str,
        idempotency: Idempotency | None,
        now: datetime,
        channel: str,
    ) -> dict[str, object]:
        return {
            "id": public.id,
            "owner_id": owner_id,
            "channel": channel,
            "site_id": public.site,
            "slot_id": public.slot_id,
            "visit_date": public.date,
            "status": ReservationStatus.held.value,
            "party_size": public.party_size,
            "hold_expires_at": public.expires_at,
            "idempotency_key": idempotency.key if idempotency else None,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _visitor_row(
        public: ReservationPublic,
        position: int,
        visitor: Named,
        allocation: Allocation,
    ) -> dict[str, object]:
        return {
            "reservation_id": public.id,
            "site_id": public.site,
            "slot_id": public.slot_id,
            "visit_date": public.date,
            "position": position,
            "name": visitor.name,
            "id_type": visitor.id_type,
            "id_hash": visitor.id_hash,
            "id_masked": visitor.id_masked,
            "slot_unit": allocation.slot_units[position],
            "day_unit": allocation.day_units[position],
            "active": True,
        }


async def release_units(
    counters: Counters,
    visitors: Sequence[Visitor],
    owners: dict[str, str],
    back_at: dict[str, datetime] | None = None,
) -> None:
    """After commit: return the units of reservations that no longer hold places.

    `owners` maps each reservation to its account; `back_at`, a refunded reservation to when
    its places go back on sale (a refund policy), else at once. Release is idempotent, so a
    reservation released twice (a racing sweeper, a rebuild in between) frees its units once.
    """
    by_reservation: dict[str, list[Visitor]] = defaultdict(list)
    for visitor in visitors:
        by_reservation[visitor.reservation_id].append(visitor)
    claims = []
    for reservation_id, group in by_reservation.items():
        ref = parse_slot_id(group[0].slot_id)
        if ref is None:  # pragma: no cover - ids in SQL are always well formed
            continue
        owner = owners.get(reservation_id, "")
        claims.append((owner, ref.site_day.site, reservation_id))
        try:
            await counters.release(
                ref.site_day,
                ref.key,
                slot_units=[v.slot_unit for v in group],
                day_units=[v.day_unit for v in group],
                visitor_ids=[v.id_hash for v in group],
                owner=owner,
                reservation=reservation_id,
                back_at=(back_at or {}).get(reservation_id),
            )
        except CapacityUnavailable:
            # Committed in SQL already: the units leak (an undersell, never an oversell)
            # until the reconciler or a rebuild returns them.
            log.warning("release postponed: Redis unreachable for %s", ref.site_day)
    try:
        await counters.end_holds([claim for claim in claims if claim[0]])
    except CapacityUnavailable:
        log.warning("hold claims not ended: Redis unreachable")


@dataclass(slots=True)
class _Claim:
    """A hold counted against its account's limit of open holds at a site."""

    owner: str
    site: str
    reservation: str
    saved: bool = False  # SQL holds the reservation: the claim stays with it

    @property
    def key(self) -> tuple[str, str, str]:
        return self.owner, self.site, self.reservation


class _Attempt:
    """One run of an operation under an Idempotency-Key (or none)."""

    def __init__(self, request: Idempotency | None) -> None:
        self.request = request
        self.replay: Receipt | None = None
        self.finished = False


def _record(fingerprint: str, public: ReservationPublic) -> str:
    return _record_text(fingerprint, public.model_dump_json())


def _record_text(fingerprint: str, body: str) -> str:
    return f"{fingerprint}:{body}"


def _replay(request: Idempotency, record: str) -> Receipt:
    fingerprint, _, body = record.partition(":")
    if fingerprint != request.fingerprint:
        raise IdempotencyKeyReused()
    return Receipt(ReservationPublic.model_validate_json(body), replayed=True)


def _record_row(
    request: Idempotency, status_code: int, public: ReservationPublic, now: datetime
) -> dict[str, object]:
    return {
        "owner_id": request.owner_id,
        "key": request.key,
        "fingerprint": request.fingerprint,
        "status_code": status_code,
        "body": public.model_dump_json(),
        "created_at": now,
    }


@contextmanager
def _offers_only_elsewhere(current: SlotRef) -> Iterator[None]:
    """A reschedule refused as sold out offers other slots of the reservation's own site (it
    cannot move to another site), not the slot it is already in."""
    try:
        yield
    except SoldOut as error:
        error.extra["alternatives"] = [
            offer
            for offer in error.extra.get("alternatives", [])
            if offer["site"] == current.site_day.site and offer["slot_id"] != current.id
        ]
        raise


def _event_row(
    topic: str, public: ReservationPublic, owner_id: str, now: datetime, **extra: Any
) -> dict[str, Any]:
    """An outbox row announcing a change of a reservation, in the change's transaction. The
    payload is the reservation as its owner sees it (masked ID numbers only)."""
    return {
        "at": now,
        "topic": topic,
        "site_id": public.site,
        "account_id": owner_id,
        "payload": {"reservation": public.model_dump(mode="json"), **extra},
        "delivered_at": None,
    }


def _event(
    topic: str, public: ReservationPublic, owner_id: str, now: datetime, **extra: Any
) -> OutboxEvent:
    return OutboxEvent(**_event_row(topic, public, owner_id, now, **extra))
