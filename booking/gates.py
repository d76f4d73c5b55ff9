"""Tickets and gate scans: a confirmed reservation shows a rotating code, a gate scans it.

Each visitor enters once. The entry is one guarded UPDATE in SQL (`entered_at IS NULL`), so
two gates scanning the same ticket at the same moment give exactly one entry; the other gets
`409 already-entered`. Every scan, admitted or refused, is written to the scan log with its
reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.errors import (
    AlreadyEntered,
    NotConfirmed,
    NotFound,
    NotInside,
    OutsideEntryWindow,
    ScanRefused,
    TicketExpired,
    TicketInvalid,
    UnknownVisitor,
    WrongSite,
)
from booking.models import ReservationStatus, ScanEvent, Site
from booking.schemas import ScanResult, TicketPublic
from booking.sites import Catalog
from booking.tickets import TicketRefused, TicketSigner
from capacity.clock import Clock

TICKET_TTL = timedelta(seconds=60)

# Reservations whose tickets a gate honours: confirmed, or with part of the party inside.
ADMISSIBLE = frozenset({ReservationStatus.confirmed, ReservationStatus.checked_in})


@dataclass(frozen=True, slots=True)
class Scan:
    gate_id: str
    code: str
    direction: str  # "entry" or "exit"
    positions: Sequence[int] | None = None  # named visitors, or the whole party


class Gates:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog,
        signer: TicketSigner,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._signer = signer
        self._clock = clock

    async def ticket(self, *, owner_id: str, reservation_id: str) -> TicketPublic:
        """A fresh entry code for one's own confirmed reservation (about a minute's life)."""
        async with self._sessions() as session:
            reservation = await repo.get_reservation(session, reservation_id, owner_id=owner_id)
            if reservation is None:
                raise NotFound(f"no reservation {reservation_id}")
            site = await repo.get_site(session, reservation.site_id)
        assert site is not None
        if reservation.status not in ADMISSIBLE:
            raise NotConfirmed(f"a {reservation.status} reservation has no entry ticket")
        window = await self._window(site, reservation.slot_id)
        now = self._clock.now()
        code, expires_at = self._signer.issue(
            reservation_id, site.id, window, now=now, ttl=TICKET_TTL
        )
        return TicketPublic(
            code=code,
            expires_at=expires_at,
            reservation_id=reservation_id,
            site=site.id,
            entry_from=window[0],
            entry_until=window[1],
        )

    async def scan(self, scan: Scan) -> ScanResult:
        now = self._clock.now()
        async with self._sessions() as session:
            gate = await repo.get_gate(session, scan.gate_id)
        if gate is None:
            raise NotFound(f"no gate {scan.gate_id}")
        try:
            result = await self._scan(scan, gate.site_id, now)
        except ScanRefused as refused:
            await self._log(
                scan, gate.site_id, refused.reservation_id, 0, "refused", refused.code, now
            )
            raise
        return result

    async def _scan(self, scan: Scan, gate_site: str, now: datetime) -> ScanResult:
        try:
            claims = self._signer.read(scan.code, now=now)
        except TicketRefused as refused:
            if refused.reason == "expired":
                raise TicketExpired(refused.message) from None
            raise TicketInvalid(refused.message) from None
        rid = claims.reservation_id
        if claims.site != gate_site:
            raise WrongSite(
                f"this ticket is for {claims.site}, not a gate of {gate_site}", reservation_id=rid
            )
        async with self._sessions() as session, session.begin():
            reservation = await repo.get_reservation(session, rid)
            if reservation is None:  # pragma: no cover - a genuine code names a reservation
                raise TicketInvalid("no such reservation")
            if reservation.status not in ADMISSIBLE:
                raise NotConfirmed(
                    f"the reservation is {reservation.status}, not confirmed", reservation_id=rid
                )
            visitors = list(await repo.visitors_of(session, [reservation.id]))
            positions = (
                [v.position for v in visitors] if scan.positions is None else list(scan.positions)
            )
            unknown = sorted(set(positions) - {v.position for v in visitors})
            if unknown:
                raise UnknownVisitor(f"no visitor {unknown[0]} in this party", reservation_id=rid)
            if scan.direction == "entry":
                if not claims.window_start <= now <= claims.window_end:
                    raise OutsideEntryWindow(
                        f"entry from {claims.window_start.isoformat()} "
                        f"until {claims.window_end.isoformat()}",
                        reservation_id=rid,
                    )
                changed = await repo.enter(session, reservation.id, positions, scan.gate_id, now)
                if not changed:
                    raise AlreadyEntered(reservation_id=rid)
                await repo.move_status(
                    session,
                    [reservation.id],
                    from_statuses=[ReservationStatus.confirmed],
                    to=ReservationStatus.checked_in,
                    now=now,
                )
            else:
                changed = await repo.leave(session, reservation.id, positions, scan.gate_id, now)
                if not changed:
                    raise NotInside(reservation_id=rid)
            session.add(
                ScanEvent(
                    at=now,
                    gate_id=scan.gate_id,
                    site_id=gate_site,
                    reservation_id=reservation.id,
                    direction=scan.direction,
                    people=len(changed),
                    result="admitted",
                    reason="",
                )
            )
        return ScanResult(
            result="admitted",
            direction=scan.direction,
            reservation_id=reservation.id,
            site=gate_site,
            gate=scan.gate_id,
            people=len(changed),
            visitors=sorted(changed),
        )

    async def _window(self, site: Site, slot_id: str) -> tuple[datetime, datetime]:
        start, end = await self._catalog.slot_times(slot_id)
        grace = timedelta(minutes=site.entry_grace_minutes)
        return start - grace, end + grace

    async def _log(
        self,
        scan: Scan,
        site_id: str,
        reservation_id: str | None,
        people: int,
        result: str,
        reason: str,
        now: datetime,
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                ScanEvent(
                    at=now,
                    gate_id=scan.gate_id,
                    site_id=site_id,
                    reservation_id=reservation_id,
                    direction=scan.direction,
                    people=people,
                    result=result,
                    reason=reason,
                )
            )
