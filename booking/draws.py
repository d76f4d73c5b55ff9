"""Fair release: a draw, not a race, decides who gets a date's places.

At a site with a `fair_release`, requests that arrive in the pre-queue window before a date
goes on sale become entries with up to three ranked slots. At the release time the entries
are shuffled with a random seed, recorded with the draw so anyone can replay the shuffle, and
served in that order: each entry gets a hold on its first choice with room for its whole
party, else its second, else its third, else it lost. Entries that arrive after the release
time queue behind the drawn ones, first come first served. Until every entry is served the
day's counters refuse any other sale (`drawing`), so nobody can book around the draw.

One entry per account and one per person in each draw: sending a thousand requests, or
sending the first, gains nothing. Each entry is served through a guarded update (`queued` ->
`serving`), and the draw itself moves `open` -> `drawn` -> `served` under guards too, so two
workers never draw twice or serve one entry twice.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from booking import repository as repo
from booking.catalog import parse_slot_id, sales_open_at
from booking.errors import (
    AlreadyInDraw,
    DrawNotOpen,
    InvalidRequest,
    NotAFairRelease,
    NotFound,
)
from booking.models import (
    Draw,
    DrawEntry,
    DrawEntryStatus,
    DrawPerson,
    DrawStatus,
    OutboxEvent,
    Site,
)
from booking.reconcile import Reconciler
from booking.schemas import DrawEntryPublic, DrawPublic, VisitorIn, kept_visitors
from booking.service import Booking, Named
from capacity.clock import Clock
from capacity.errors import (
    CapacityUnavailable,
    DuplicateVisitor,
    OutsideBookingWindow,
    PartyTooLarge,
    SlotNotCounted,
    TidegateError,
)
from capacity.keys import SiteDay

log = logging.getLogger(__name__)

# An entry left in `serving` this long (its process died mid-hold) is served again.
STALE_SERVING = timedelta(minutes=2)


def draw_order(entry_ids: Sequence[str], seed: str) -> list[str]:
    """The serving order of a draw: the entries in arrival order, shuffled with the seed."""
    order = list(entry_ids)
    random.Random(seed).shuffle(order)
    return order


class Draws:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        booking: Booking,
        reconciler: Reconciler,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._booking = booking
        self._reconciler = reconciler
        self._clock = clock

    # entering ----------------------------------------------------------------------------

    async def enter(
        self, *, owner_id: str, choices: Sequence[str], visitors: Sequence[VisitorIn]
    ) -> DrawEntryPublic:
        """Enter a date's draw, from its pre-queue window until every entry is served."""
        refs = [parse_slot_id(choice) for choice in choices]
        for position, ref in enumerate(refs):
            if ref is None:
                raise NotFound(f"no slot {choices[position]}")
        site_day = refs[0].site_day if refs[0] is not None else None
        assert site_day is not None
        if any(ref is not None and ref.site_day != site_day for ref in refs):
            raise InvalidRequest(
                field="choices",
                rule="one-site-day",
                message="the choices are slots of one site on one day",
            )
        now = self._clock.now()
        async with self._sessions() as session:
            site = await repo.get_site(session, site_day.site)
            if site is None:
                raise NotFound(f"no site {site_day.site}")
            for choice in choices:
                if await repo.get_slot(session, choice) is None:
                    raise NotFound(f"no slot {choice}")
        if not site.fair_release:
            raise NotAFairRelease(f"{site.id} sells its dates first come, first served")
        if len(visitors) > site.party_size_limit:
            raise PartyTooLarge(
                f"{len(visitors)} visitors asked for; at most {site.party_size_limit} here",
                max_party_size=site.party_size_limit,
            )
        await self._booking.check_visitors(choices[0], visitors)
        opens = sales_open_at(site, site_day.visit_date)
        prequeue = opens - timedelta(minutes=int(site.fair_release["prequeue_minutes"]))
        if now < prequeue:
            raise OutsideBookingWindow(
                f"the draw takes entries from {prequeue.isoformat()}",
                sales_open_at=prequeue,
                sales_close_at=opens,
            )
        named = self._booking.named(visitors, self._booking.hash_ids(visitors))
        seen: set[str] = set()
        for position, visitor in enumerate(named):
            if visitor.id_hash in seen:
                raise DuplicateVisitor(
                    f"visitor {position + 1} is named twice in this party", visitor_index=position
                )
            seen.add(visitor.id_hash)
        draw, created = await self._draw_for(site, site_day, opens)
        if draw.status == DrawStatus.served:
            raise DrawNotOpen("the draw is over: the date is on general sale, book it directly")
        if created:
            # The day's counters must refuse any other sale until the draw is served.
            await self._reconciler.rebuild_after_change(site_day)
        entry = DrawEntry(
            public_id=secrets.token_hex(16),
            draw_id=draw.id or 0,
            owner_id=owner_id,
            choices=list(choices),
            party_size=len(named),
            visitors=[asdict(v) for v in named],
            early=now < opens,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions() as session, session.begin():
                # Guarded on the draw's row: an entry is never added to a draw whose serving
                # just ended (the last step of `_serve` takes the same row first).
                still_open = await session.execute(
                    sa.update(Draw)
                    .where(col(Draw.id) == draw.id, col(Draw.status) != DrawStatus.served.value)
                    .values(status=Draw.status)
                    .returning(col(Draw.id))
                )
                if still_open.scalar_one_or_none() is None:
                    raise DrawNotOpen(
                        "the draw is over: the date is on general sale, book it directly"
                    )
                session.add(entry)
                session.add_all(DrawPerson(draw_id=entry.draw_id, id_hash=v.id_hash) for v in named)
                await session.flush()
        except IntegrityError as error:
            raise AlreadyInDraw(
                "one entry per account and per person in a draw: this one changes nothing"
            ) from error
        async with self._sessions() as session:
            return await self._view(session, entry, draw)

    async def _draw_for(self, site: Site, site_day: SiteDay, opens: datetime) -> tuple[Draw, bool]:
        """The site-day's draw, made by its first entry."""
        async with self._sessions() as session:
            draw = await _draw_of(session, site_day)
        if draw is not None:
            return draw, False
        if self._clock.now() >= opens:
            # Nobody entered in the pre-queue window: there is nothing to draw.
            raise DrawNotOpen("nobody entered before the release: book the date directly")
        try:
            async with self._sessions() as session, session.begin():
                draw = Draw(site_id=site.id, visit_date=site_day.visit_date, opens_at=opens)
                session.add(draw)
                await session.flush()
            return draw, True
        except IntegrityError:  # made by a racing entry meanwhile
            async with self._sessions() as session:
                draw = await _draw_of(session, site_day)
            assert draw is not None
            return draw, False

    # drawing and serving -----------------------------------------------------------------

    async def run_due(self) -> int:
        """The sweeper's step: draw the draws whose release time came, then serve every drawn
        draw's entries in order. Returns how many entries were served."""
        now = self._clock.now()
        async with self._sessions() as session:
            due = list(
                (
                    await session.execute(
                        sa.select(Draw).where(
                            col(Draw.status).in_([DrawStatus.open.value, DrawStatus.drawn.value]),
                            col(Draw.opens_at) <= now,
                        )
                    )
                ).scalars()
            )
        served = 0
        for draw in due:
            if draw.status == DrawStatus.open:
                await self._shuffle(draw, now)
            try:
                served += await self._serve(draw)
            except CapacityUnavailable:
                log.warning("draw of %s %s waits for the counters", draw.site_id, draw.visit_date)
        return served

    async def _shuffle(self, draw: Draw, now: datetime) -> None:
        """Fix the serving order: a fresh seed, recorded with the draw."""
        seed = secrets.token_hex(16)
        async with self._sessions() as session, session.begin():
            claimed = await session.execute(
                sa.update(Draw)
                .where(col(Draw.id) == draw.id, col(Draw.status) == DrawStatus.open.value)
                .values(status=DrawStatus.drawn.value, seed=seed, drawn_at=now)
                .returning(col(Draw.id))
            )
            if claimed.scalar_one_or_none() is None:
                return  # another worker drew it
            early = await _early_ids(session, draw.id or 0)
            for position, public_id in enumerate(draw_order(early, seed), start=1):
                await session.execute(
                    sa.update(DrawEntry)
                    .where(col(DrawEntry.public_id) == public_id)
                    .values(position=position, updated_at=now)
                )
        log.info("drew %s %s: %d entries", draw.site_id, draw.visit_date, len(early))

    async def _serve(self, draw: Draw) -> int:
        """Serve the draw's entries strictly in order: only the head of the line is ever
        taken, so a worker never serves an entry while one ahead of it is still being served
        by another (it leaves the rest to that worker)."""
        served = 0
        while True:
            now = self._clock.now()
            async with self._sessions() as session, session.begin():
                head = await _head(session, draw.id or 0)
                if head is None:
                    break
                stale = head.updated_at < now - STALE_SERVING
                if head.status == DrawEntryStatus.serving and not stale:
                    return served  # another worker is serving the head
                marked = await _take(session, head, now)
            if not marked:
                continue  # another worker took it meanwhile: look again
            await self._serve_entry(draw, head, now)
            served += 1
        async with self._sessions() as session, session.begin():
            # Take the draw's row first, as an entry does before it is added, then look for
            # entries in a statement of its own: none can slip in between.
            claimed = await session.execute(
                sa.update(Draw)
                .where(col(Draw.id) == draw.id, col(Draw.status) == DrawStatus.drawn.value)
                .values(status=Draw.status)
                .returning(col(Draw.id))
            )
            if claimed.scalar_one_or_none() is None:
                return served  # another worker finished it
            if await _head(session, draw.id or 0) is not None:
                return served
            await session.execute(
                sa.update(Draw)
                .where(col(Draw.id) == draw.id)
                .values(status=DrawStatus.served.value, served_at=self._clock.now())
            )
            done = True
        if done:
            # The day goes on general sale: its counters stop refusing other sales.
            site_day = SiteDay(draw.site_id, draw.visit_date)
            await self._reconciler.rebuild_after_change(site_day)
            log.info("draw of %s served: on general sale", site_day)
        return served

    async def _serve_entry(self, draw: Draw, entry: DrawEntry, now: datetime) -> None:
        """Its first choice with room for the whole party, else the next; else it lost."""
        visitors = [Named(**v) for v in entry.visitors]
        reason = "sold-out"
        for rank, choice in enumerate(entry.choices, start=1):
            try:
                held = await self._booking.hold_offered(
                    owner_id=entry.owner_id, slot_id=choice, visitors=visitors, draw=True
                )
            except (SlotNotCounted, CapacityUnavailable):
                await self._requeue(entry, now)
                raise CapacityUnavailable("places are being recounted") from None
            except TidegateError as refused:
                reason = refused.code
                continue
            await self._settle(entry, DrawEntryStatus.won, now, held.id, choice, rank)
            return
        await self._settle(entry, DrawEntryStatus.lost, now, reason=reason)

    async def _settle(
        self,
        entry: DrawEntry,
        status: DrawEntryStatus,
        now: datetime,
        reservation_id: str | None = None,
        slot_id: str | None = None,
        choice: int | None = None,
        reason: str = "",
    ) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                sa.update(DrawEntry)
                .where(col(DrawEntry.id) == entry.id)
                .values(
                    status=status.value,
                    reservation_id=reservation_id,
                    slot_id=slot_id,
                    choice=choice,
                    updated_at=now,
                )
            )
            payload: dict[str, object] = {
                "draw_entry": entry.public_id,
                "account": entry.owner_id,
                "choices": entry.choices,
                "position": entry.position,
            }
            if status == DrawEntryStatus.won:
                payload.update(reservation=reservation_id, slot_id=slot_id, choice=choice)
            else:
                payload.update(reason=reason)
            ref = parse_slot_id(entry.choices[0])
            session.add(
                OutboxEvent(
                    at=now,
                    topic=f"draw.{status.value}",
                    site_id=ref.site_day.site if ref else None,
                    account_id=entry.owner_id,
                    payload=payload,
                )
            )

    async def _requeue(self, entry: DrawEntry, now: datetime) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                sa.update(DrawEntry)
                .where(
                    col(DrawEntry.id) == entry.id,
                    col(DrawEntry.status) == DrawEntryStatus.serving.value,
                )
                .values(status=DrawEntryStatus.queued.value, updated_at=now)
            )

    # reading -----------------------------------------------------------------------------

    async def entry(self, *, owner_id: str, entry_id: str) -> DrawEntryPublic:
        async with self._sessions() as session:
            entry = (
                await session.execute(
                    sa.select(DrawEntry).where(col(DrawEntry.public_id) == entry_id)
                )
            ).scalar_one_or_none()
            # Somebody else's entry is indistinguishable from a missing one.
            if entry is None or entry.owner_id != owner_id:
                raise NotFound(f"no draw entry {entry_id}")
            draw = await session.get(Draw, entry.draw_id)
            assert draw is not None
            return await self._view(session, entry, draw)

    async def draw(self, site_id: str, visit_date: str) -> DrawPublic:
        """A draw as anyone may audit it."""
        ref = parse_slot_id(f"{site_id}.{visit_date}.0000")
        if ref is None:
            raise NotFound(f"no draw of {site_id} on {visit_date}")
        async with self._sessions() as session:
            draw = await _draw_of(session, ref.site_day)
            site = await repo.get_site(session, site_id)
            if draw is None or site is None:
                raise NotFound(f"no draw of {site_id} on {visit_date}")
            early = await _early_ids(session, draw.id or 0)
            late = await session.execute(
                sa.select(sa.func.count()).where(
                    col(DrawEntry.draw_id) == draw.id, sa.not_(col(DrawEntry.early))
                )
            )
            late_entries = int(late.scalar_one())
        minutes = int((site.fair_release or {}).get("prequeue_minutes", 0))
        return DrawPublic(
            site=draw.site_id,
            date=draw.visit_date,
            prequeue_opens_at=draw.opens_at - timedelta(minutes=minutes),
            opens_at=draw.opens_at,
            status=draw.status,
            seed=draw.seed,
            drawn_at=draw.drawn_at,
            served_at=draw.served_at,
            entries=early,
            order=None if draw.seed is None else draw_order(early, draw.seed),
            late_entries=late_entries,
        )

    async def _view(self, session: AsyncSession, entry: DrawEntry, draw: Draw) -> DrawEntryPublic:
        expires = await repo.hold_deadline(session, entry.reservation_id)
        return DrawEntryPublic(
            id=entry.public_id,
            status=entry.status,
            site=draw.site_id,
            date=draw.visit_date,
            choices=entry.choices,
            party_size=entry.party_size,
            early=entry.early,
            position=entry.position,
            slot_id=entry.slot_id,
            choice=entry.choice,
            reservation_id=entry.reservation_id,
            offer_expires_at=expires,
            visitors=kept_visitors(entry.visitors),
            created_at=entry.created_at,
        )


async def _draw_of(session: AsyncSession, site_day: SiteDay) -> Draw | None:
    return (
        await session.execute(
            sa.select(Draw).where(
                col(Draw.site_id) == site_day.site, col(Draw.visit_date) == site_day.visit_date
            )
        )
    ).scalar_one_or_none()


async def _early_ids(session: AsyncSession, draw_id: int) -> list[str]:
    """The public ids of a draw's early entries, in the order they arrived."""
    rows = await session.execute(
        sa.select(col(DrawEntry.public_id))
        .where(col(DrawEntry.draw_id) == draw_id, col(DrawEntry.early))
        .order_by(col(DrawEntry.id))
    )
    return list(rows.scalars())


async def _head(session: AsyncSession, draw_id: int) -> DrawEntry | None:
    """The head of the line: the first entry not yet served (queued, or being served), the
    drawn ones by position, then the late ones by arrival."""
    query = (
        sa.select(DrawEntry)
        .where(
            col(DrawEntry.draw_id) == draw_id,
            col(DrawEntry.status).in_(
                [DrawEntryStatus.queued.value, DrawEntryStatus.serving.value]
            ),
        )
        .order_by(sa.desc(col(DrawEntry.early)), col(DrawEntry.position), col(DrawEntry.id))
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _take(session: AsyncSession, entry: DrawEntry, now: datetime) -> bool:
    """Take an entry to serve, guarded: only where it is still as it was read."""
    result = await session.execute(
        sa.update(DrawEntry)
        .where(
            col(DrawEntry.id) == entry.id,
            col(DrawEntry.status) == str(entry.status),
            col(DrawEntry.updated_at) == entry.updated_at,
        )
        .values(status=DrawEntryStatus.serving.value, updated_at=now)
        .returning(col(DrawEntry.id))
    )
    return result.scalar_one_or_none() is not None
