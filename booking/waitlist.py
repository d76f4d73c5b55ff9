"""Waitlists: parties waiting for a full slot, served first come first served.

When places come back to a slot (a cancellation, an expired hold, a move, a raised cap), the
first party in line gets a hold with the usual deadline, then the next, as long as the
places left hold the whole party at the head of the line. The line is strict: a smaller party
behind never jumps a larger one ahead of it, so arriving first is what counts.

Offers are made right after the change that freed places (in the same request) and by the
sweeper every few seconds. Each entry is taken with a guarded update (`waiting` ->
`offering`), so two processes never make two holds for one entry.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from booking import repository as repo
from booking.catalog import parse_slot_id
from booking.errors import (
    AlreadyWaiting,
    InvalidTransition,
    NotFound,
    SlotHasRoom,
    WaitlistClosed,
)
from booking.models import OutboxEvent, WaitlistEntry, WaitlistStatus
from booking.schemas import VisitorIn, WaitlistPublic, kept_visitors
from booking.service import Booking, Named
from capacity.clock import Clock, to_millis
from capacity.counters import Counters
from capacity.errors import (
    AccountLimitReached,
    CapacityUnavailable,
    DuplicateVisitor,
    OutsideBookingWindow,
    PartyTooLarge,
    SiteClosed,
    SlotNotCounted,
    SoldOut,
)

log = logging.getLogger(__name__)

# An entry left in `offering` this long (its process died mid-offer) goes back in line.
STALE_OFFERING = timedelta(minutes=2)
WAITING = (WaitlistStatus.waiting, WaitlistStatus.offering)


class Waitlist:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        booking: Booking,
        counters: Counters,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._booking = booking
        self._counters = counters
        self._clock = clock

    async def join(
        self, *, owner_id: str, slot_id: str, visitors: Sequence[VisitorIn]
    ) -> WaitlistPublic:
        """Wait for a full slot that is on sale. A slot with room for the party is booked,
        not waited for."""
        ref = parse_slot_id(slot_id)
        if ref is None:
            raise NotFound(f"no slot {slot_id}")
        now = self._clock.now()
        load = await self._counters.load(ref.site_day, now=now)
        if load is None or ref.key not in load.slots:
            async with self._sessions() as session:
                if await repo.get_slot(session, slot_id) is None:
                    raise NotFound(f"no slot {slot_id}")
            raise CapacityUnavailable("places are being recounted")
        state = load.slots[ref.key]
        if state.closed or load.day.closed:
            raise WaitlistClosed("the slot is closed")
        if not load.on_sale(ref.key, now):
            raise WaitlistClosed("the slot is not on sale now")
        if len(visitors) > load.party_max:
            raise PartyTooLarge(
                f"{len(visitors)} visitors asked for; at most {load.party_max} per reservation",
                max_party_size=load.party_max,
            )
        await self._booking.check_visitors(slot_id, visitors)
        id_hashes = self._booking.hash_ids(visitors)
        for index, id_hash in enumerate(id_hashes):
            if id_hash in id_hashes[:index]:
                raise DuplicateVisitor(
                    f"visitor {index + 1} is named twice in this party", visitor_index=index
                )
        left = load.left_in(ref.key)
        if left >= len(visitors):
            raise SlotHasRoom(f"{left} places left: hold them instead", remaining=left)
        named = self._booking.named(visitors, id_hashes)
        entry = WaitlistEntry(
            public_id=secrets.token_hex(16),
            owner_id=owner_id,
            site_id=ref.site_day.site,
            slot_id=slot_id,
            visit_date=ref.site_day.visit_date,
            party_size=len(visitors),
            visitors=[asdict(v) for v in named],
            created_at=now,
            updated_at=now,
        )
        async with self._sessions() as session, session.begin():
            waiting = await session.execute(
                sa.select(sa.func.count()).where(
                    col(WaitlistEntry.owner_id) == owner_id,
                    col(WaitlistEntry.slot_id) == slot_id,
                    col(WaitlistEntry.status).in_([s.value for s in WAITING]),
                )
            )
            if waiting.scalar_one():
                raise AlreadyWaiting(f"this account already waits for {slot_id}")
            session.add(entry)
            await session.flush()
            return await self._view(session, entry)

    async def get(self, *, owner_id: str, entry_id: str) -> WaitlistPublic:
        async with self._sessions() as session:
            return await self._view(session, await self._own(session, owner_id, entry_id))

    async def leave(self, *, owner_id: str, entry_id: str) -> None:
        """Leave the line. An offered hold is a reservation: cancel that instead."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            entry = await self._own(session, owner_id, entry_id)
            if entry.status == WaitlistStatus.left:
                return
            if not await _move(session, [entry.id or 0], WAITING, WaitlistStatus.left, now):
                raise InvalidTransition(
                    f"a {entry.status} waitlist entry cannot be left"
                    + (": cancel its reservation instead" if entry.reservation_id else "")
                )

    # offers ------------------------------------------------------------------------------

    async def offer(self, slot_ids: Iterable[str] | None = None, *, limit: int = 200) -> int:
        """Give places that came back to the first parties in line, slot by slot. Returns
        the number of holds offered."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            await session.execute(
                sa.update(WaitlistEntry)
                .where(
                    col(WaitlistEntry.status) == WaitlistStatus.offering.value,
                    col(WaitlistEntry.updated_at) < now - STALE_OFFERING,
                )
                .values(status=WaitlistStatus.waiting.value, updated_at=now)
            )
            query = sa.select(col(WaitlistEntry.slot_id)).where(
                col(WaitlistEntry.status) == WaitlistStatus.waiting.value
            )
            if slot_ids is not None:
                query = query.where(col(WaitlistEntry.slot_id).in_(list(slot_ids)))
            slots = sorted(set((await session.execute(query.limit(limit))).scalars()))
        offered = 0
        for slot_id in slots:
            try:
                offered += await self._offer_slot(slot_id)
            except CapacityUnavailable:
                log.warning("waitlist of %s waits: Redis unreachable", slot_id)
        return offered

    async def _offer_slot(self, slot_id: str) -> int:
        ref = parse_slot_id(slot_id)
        assert ref is not None
        offered = 0
        while True:
            now = self._clock.now()
            load = await self._counters.load(ref.site_day, now=now)
            if load is None:
                return offered
            state = load.slots.get(ref.key)
            if state is None or state.closed or load.day.closed:
                await self._close_line(slot_id, now, "slot-closed")
                return offered
            if to_millis(now) >= state.closes_at_ms:
                await self._close_line(slot_id, now, "sales-ended")
                return offered
            async with self._sessions() as session, session.begin():
                head = (
                    await session.execute(
                        sa.select(WaitlistEntry)
                        .where(
                            col(WaitlistEntry.slot_id) == slot_id,
                            col(WaitlistEntry.status).in_([s.value for s in WAITING]),
                        )
                        .order_by(col(WaitlistEntry.id))
                        .limit(1)
                    )
                ).scalar_one_or_none()
                if head is None or head.status != WaitlistStatus.waiting:
                    return offered  # nobody waits, or the head is being served elsewhere
                if load.left_in(ref.key) < head.party_size:
                    return offered  # strict line: the head waits for room for its party
                taken = await _move(
                    session, [head.id or 0], [WaitlistStatus.waiting], WaitlistStatus.offering, now
                )
            if not taken:
                continue
            outcome = await self._serve(head, now)
            if outcome == "full":
                return offered
            offered += outcome == "offered"

    async def _serve(self, entry: WaitlistEntry, now: datetime) -> str:
        """Make the head's hold: "offered"; "refused" when this party cannot have the places
        (the next one may); "full" when the slot turned out full again."""
        visitors = [Named(**v) for v in entry.visitors]
        try:
            held = await self._booking.hold_offered(
                owner_id=entry.owner_id, slot_id=entry.slot_id, visitors=visitors
            )
        except SoldOut:
            await self._back_in_line(entry, now)
            return "full"
        except (SlotNotCounted, CapacityUnavailable):
            await self._back_in_line(entry, now)
            raise CapacityUnavailable("places are being recounted") from None
        except (
            DuplicateVisitor,
            AccountLimitReached,
            PartyTooLarge,
            SiteClosed,
            OutsideBookingWindow,
        ) as refused:
            # This party cannot have the places (one of its visitors booked elsewhere that
            # day, say): it leaves the line, and the next one is served.
            await self._close([entry], now, refused.code, [WaitlistStatus.offering])
            return "refused"
        async with self._sessions() as session, session.begin():
            # Guarded: an entrant who left the line while the hold was being made gets none.
            marked = await session.execute(
                sa.update(WaitlistEntry)
                .where(
                    col(WaitlistEntry.id) == entry.id,
                    col(WaitlistEntry.status) == WaitlistStatus.offering.value,
                )
                .values(status=WaitlistStatus.offered.value, reservation_id=held.id, updated_at=now)
                .returning(col(WaitlistEntry.id))
            )
            kept = marked.scalar_one_or_none() is not None
            if kept:
                session.add(
                    OutboxEvent(
                        at=now,
                        topic="waitlist.offered",
                        site_id=entry.site_id,
                        account_id=entry.owner_id,
                        payload={
                            "waitlist_entry": entry.public_id,
                            "account": entry.owner_id,
                            "reservation": held.id,
                            "slot_id": entry.slot_id,
                            "party_size": entry.party_size,
                            "confirm_before": (
                                held.expires_at.isoformat() if held.expires_at else None
                            ),
                        },
                    )
                )
        if not kept:
            # The places go back on sale, to the next in line first.
            await self._booking.cancel(owner_id=entry.owner_id, reservation_id=held.id)
            return "refused"
        log.info("waitlist of %s: offered %s to %s", entry.slot_id, held.id, entry.public_id)
        return "offered"

    async def _back_in_line(self, entry: WaitlistEntry, now: datetime) -> None:
        async with self._sessions() as session, session.begin():
            await _move(
                session, [entry.id or 0], [WaitlistStatus.offering], WaitlistStatus.waiting, now
            )

    async def _close(
        self,
        entries: Sequence[WaitlistEntry],
        now: datetime,
        reason: str,
        from_statuses: Sequence[WaitlistStatus],
    ) -> None:
        """Close entries that will not be served, and tell each entrant why."""
        async with self._sessions() as session, session.begin():
            for entry in entries:
                if not await _move(
                    session, [entry.id or 0], from_statuses, WaitlistStatus.closed, now
                ):
                    continue
                session.add(
                    OutboxEvent(
                        at=now,
                        topic="waitlist.closed",
                        site_id=entry.site_id,
                        account_id=entry.owner_id,
                        payload={
                            "waitlist_entry": entry.public_id,
                            "account": entry.owner_id,
                            "slot_id": entry.slot_id,
                            "reason": reason,
                        },
                    )
                )

    async def _close_line(self, slot_id: str, now: datetime, reason: str) -> None:
        """Nobody waiting for this slot will be served (its sales ended, or it closed)."""
        async with self._sessions() as session:
            waiting = list(
                (
                    await session.execute(
                        sa.select(WaitlistEntry).where(
                            col(WaitlistEntry.slot_id) == slot_id,
                            col(WaitlistEntry.status) == WaitlistStatus.waiting.value,
                        )
                    )
                ).scalars()
            )
        await self._close(waiting, now, reason, [WaitlistStatus.waiting])

    # reading -----------------------------------------------------------------------------

    async def _own(self, session: AsyncSession, owner_id: str, entry_id: str) -> WaitlistEntry:
        entry = (
            await session.execute(
                sa.select(WaitlistEntry).where(col(WaitlistEntry.public_id) == entry_id)
            )
        ).scalar_one_or_none()
        # Somebody else's entry is indistinguishable from a missing one.
        if entry is None or entry.owner_id != owner_id:
            raise NotFound(f"no waitlist entry {entry_id}")
        return entry

    async def _view(self, session: AsyncSession, entry: WaitlistEntry) -> WaitlistPublic:
        position = None
        if entry.status in WAITING:
            ahead = await session.execute(
                sa.select(sa.func.count()).where(
                    col(WaitlistEntry.slot_id) == entry.slot_id,
                    col(WaitlistEntry.status).in_([s.value for s in WAITING]),
                    col(WaitlistEntry.id) < entry.id,
                )
            )
            position = int(ahead.scalar_one()) + 1
        expires = await repo.hold_deadline(session, entry.reservation_id)
        return WaitlistPublic(
            id=entry.public_id,
            status=entry.status,
            site=entry.site_id,
            slot_id=entry.slot_id,
            date=entry.visit_date,
            party_size=entry.party_size,
            position=position,
            reservation_id=entry.reservation_id,
            offer_expires_at=expires,
            visitors=kept_visitors(entry.visitors),
            created_at=entry.created_at,
        )


async def _move(
    session: AsyncSession,
    ids: Sequence[int],
    from_statuses: Iterable[WaitlistStatus],
    to: WaitlistStatus,
    now: datetime,
) -> bool:
    """A guarded change of status: only where it still is one of `from_statuses`."""
    result = await session.execute(
        sa.update(WaitlistEntry)
        .where(
            col(WaitlistEntry.id).in_(list(ids)),
            col(WaitlistEntry.status).in_([s.value for s in from_statuses]),
        )
        .values(status=to.value, updated_at=now)
        .returning(col(WaitlistEntry.id))
    )
    return bool(list(result.scalars()))
