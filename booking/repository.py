"""Every SQL query of the booking domain (and no business rule)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from booking.models import (
    ACTIVE_STATUSES,
    Account,
    ApiToken,
    AuditEvent,
    Draw,
    DrawStatus,
    Gate,
    IdempotencyRecord,
    OutboxEvent,
    Registration,
    Reservation,
    ReservationStatus,
    SalesStop,
    ScanEvent,
    Site,
    Slot,
    SlotStatus,
    SlotTemplate,
    Visitor,
)


class UnitConflict(Exception):
    """An active visitor already holds that unit or that person's site-day: Redis was stale."""


class KeyConflict(Exception):
    """Another request with the same Idempotency-Key committed first."""


class MissingSlot(Exception):
    """The slot a reservation refers to is not in SQL."""


def classify(error: IntegrityError) -> Exception:
    """Name which proof failed, on SQLite ("UNIQUE constraint failed: visitor.slot_id, ...")
    and on PostgreSQL (the index name) alike."""
    text = str(error.orig)
    if "visitor" in text:
        return UnitConflict(text)
    if "idempotency_record" in text:
        return KeyConflict(text)
    if "FOREIGN KEY" in text.upper() or "foreign key" in text:
        return MissingSlot(text)
    return error


# catalog ---------------------------------------------------------------------------------


async def all_sites(session: AsyncSession) -> Sequence[Site]:
    return (await session.execute(sa.select(Site).order_by(col(Site.id)))).scalars().all()


async def get_site(session: AsyncSession, site_id: str) -> Site | None:
    return await session.get(Site, site_id)


async def gates_of(session: AsyncSession, site_ids: Iterable[str]) -> Sequence[Gate]:
    query = sa.select(Gate).where(col(Gate.site_id).in_(list(site_ids))).order_by(col(Gate.id))
    return (await session.execute(query)).scalars().all()


async def templates_of(session: AsyncSession, site_id: str) -> Sequence[SlotTemplate]:
    query = (
        sa.select(SlotTemplate)
        .where(col(SlotTemplate.site_id) == site_id)
        .order_by(col(SlotTemplate.start))
    )
    return (await session.execute(query)).scalars().all()


async def existing_slot_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await session.execute(sa.select(col(Slot.id)).where(col(Slot.id).in_(chunk)))
        found.update(rows.scalars())
    return found


async def slots_of_day(session: AsyncSession, site_id: str, visit_date: date) -> Sequence[Slot]:
    query = (
        sa.select(Slot)
        .where(col(Slot.site_id) == site_id, col(Slot.visit_date) == visit_date)
        .order_by(col(Slot.start))
    )
    return (await session.execute(query)).scalars().all()


async def slots_from(session: AsyncSession, site_id: str, first: date) -> Sequence[Slot]:
    query = sa.select(Slot).where(col(Slot.site_id) == site_id, col(Slot.visit_date) >= first)
    return (await session.execute(query)).scalars().all()


async def set_slot_status(
    session: AsyncSession,
    slot_ids: Sequence[str],
    status: SlotStatus,
    *,
    closed_reason: str | None,
) -> list[str]:
    """Open or close slots; returns the ids that changed (closing a closed slot is a no-op,
    so a closure run twice audits no change the second time)."""
    if not slot_ids:
        return []
    query = (
        sa.update(Slot)
        .where(col(Slot.id).in_(list(slot_ids)), col(Slot.status) != str(status))
        .values(status=str(status), closed_reason=closed_reason)
        .returning(col(Slot.id))
    )
    return sorted((await session.execute(query)).scalars())


async def active_in_closed_slots(
    session: AsyncSession, slot_ids: Sequence[str] | None, *, since: date, limit: int
) -> Sequence[Reservation]:
    """Reservations still holding places (held or confirmed) in closed slots from `since`."""
    closed = sa.select(col(Slot.id)).where(
        col(Slot.status) == SlotStatus.closed.value, col(Slot.visit_date) >= since
    )
    if slot_ids is not None:
        closed = closed.where(col(Slot.id).in_(list(slot_ids)))
    query = (
        sa.select(Reservation)
        .where(
            col(Reservation.slot_id).in_(closed),
            col(Reservation.status).in_(
                [ReservationStatus.held.value, ReservationStatus.confirmed.value]
            ),
        )
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def closed_reasons(session: AsyncSession, slot_ids: Iterable[str]) -> dict[str, str | None]:
    query = sa.select(col(Slot.id), col(Slot.closed_reason)).where(col(Slot.id).in_(list(slot_ids)))
    return {row[0]: row[1] for row in await session.execute(query)}


async def get_template(session: AsyncSession, template_id: int) -> SlotTemplate | None:
    return await session.get(SlotTemplate, template_id)


async def get_slot(session: AsyncSession, slot_id: str) -> Slot | None:
    return await session.get(Slot, slot_id)


async def site_days_from(session: AsyncSession, first: date) -> list[tuple[str, date]]:
    """Every site-day with slots on or after `first`: the days whose counters must exist."""
    query = (
        sa.select(col(Slot.site_id), col(Slot.visit_date))
        .where(col(Slot.visit_date) >= first)
        .distinct()
        .order_by(col(Slot.visit_date), col(Slot.site_id))
    )
    return [(row[0], row[1]) for row in await session.execute(query)]


async def active_units(
    session: AsyncSession, site_id: str, visit_date: date
) -> Sequence[sa.Row[str, int, int, str, int | None]]:
    """(slot_id, slot_unit, day_unit, id_hash, visitor id) of every active visitor of a day."""
    query = sa.select(
        col(Visitor.slot_id),
        col(Visitor.slot_unit),
        col(Visitor.day_unit),
        col(Visitor.id_hash),
        col(Visitor.id),
    ).where(
        col(Visitor.site_id) == site_id, col(Visitor.visit_date) == visit_date, col(Visitor.active)
    )
    return (await session.execute(query)).all()


async def active_owners(
    session: AsyncSession, site_id: str, visit_date: date
) -> list[tuple[str, str]]:
    """(owner account, reservation id) of every reservation holding places on a site-day."""
    query = sa.select(col(Reservation.owner_id), col(Reservation.id)).where(
        col(Reservation.site_id) == site_id,
        col(Reservation.visit_date) == visit_date,
        col(Reservation.status).in_([str(s) for s in ACTIVE_STATUSES]),
    )
    return [(row[0], row[1]) for row in await session.execute(query)]


async def first_sales(session: AsyncSession, site_id: str, visit_date: date) -> dict[str, datetime]:
    """Slot id -> when the oldest reservation still holding places in it was made."""
    query = (
        sa.select(col(Reservation.slot_id), sa.func.min(col(Reservation.created_at)))
        .where(
            col(Reservation.site_id) == site_id,
            col(Reservation.visit_date) == visit_date,
            col(Reservation.status).in_([str(s) for s in ACTIVE_STATUSES]),
        )
        .group_by(col(Reservation.slot_id))
    )
    return {row[0]: row[1] for row in await session.execute(query)}


async def open_holds_of_day(
    session: AsyncSession, site_id: str, visit_date: date, now: datetime
) -> list[tuple[str, str, datetime]]:
    """(owner, reservation id, hold deadline) of every hold of a site-day still open."""
    query = sa.select(
        col(Reservation.owner_id), col(Reservation.id), col(Reservation.hold_expires_at)
    ).where(
        col(Reservation.site_id) == site_id,
        col(Reservation.visit_date) == visit_date,
        col(Reservation.status) == ReservationStatus.held.value,
        col(Reservation.hold_expires_at) > now,
    )
    return [(row[0], row[1], row[2]) for row in await session.execute(query)]


async def overdue_holds(
    session: AsyncSession, site_id: str, visit_date: date, now: datetime
) -> int:
    """Reservations of a site-day still held after their hold expired (not yet swept)."""
    query = sa.select(sa.func.count()).where(
        col(Reservation.site_id) == site_id,
        col(Reservation.visit_date) == visit_date,
        col(Reservation.status) == ReservationStatus.held.value,
        col(Reservation.hold_expires_at) < now,
    )
    return int((await session.execute(query)).scalar_one())


async def audit_events(
    session: AsyncSession, site_id: str, actions: Iterable[str]
) -> Sequence[AuditEvent]:
    """A site's audited staff changes of the given kinds, oldest first."""
    query = (
        sa.select(AuditEvent)
        .where(col(AuditEvent.site_id) == site_id, col(AuditEvent.action).in_(list(actions)))
        .order_by(col(AuditEvent.at), col(AuditEvent.id))
    )
    return (await session.execute(query)).scalars().all()


async def reservations_of_day(
    session: AsyncSession, site_id: str, visit_date: date
) -> Sequence[sa.Row[str, str, str, int, str]]:
    """(slot_id, reservation id, channel, party size, owner) of every reservation holding
    places on a site-day: what the owners' limits, the pools and the groups count."""
    query = sa.select(
        col(Reservation.slot_id),
        col(Reservation.id),
        col(Reservation.channel),
        col(Reservation.party_size),
        col(Reservation.owner_id),
    ).where(
        col(Reservation.site_id) == site_id,
        col(Reservation.visit_date) == visit_date,
        col(Reservation.status).in_([str(s) for s in ACTIVE_STATUSES]),
    )
    return (await session.execute(query)).all()


async def places_coming_back(
    session: AsyncSession, site_id: str, visit_date: date, now: datetime
) -> Sequence[sa.Row[str, str, str, int, datetime]]:
    """(slot_id, reservation id, channel, party size, back at) of cancelled reservations
    whose places a refund policy keeps off sale until later than `now`."""
    query = sa.select(
        col(Reservation.slot_id),
        col(Reservation.id),
        col(Reservation.channel),
        col(Reservation.party_size),
        col(Reservation.places_back_at),
    ).where(
        col(Reservation.site_id) == site_id,
        col(Reservation.visit_date) == visit_date,
        col(Reservation.places_back_at) > now,
    )
    return (await session.execute(query)).all()  # type: ignore[return-value]


async def has_account(session: AsyncSession, account_id: str) -> bool:
    return await session.get(Account, account_id) is not None


async def draw_pending(session: AsyncSession, site_id: str, visit_date: date) -> bool:
    """A fair release of this site-day is drawing or serving its entries."""
    query = sa.select(col(Draw.id)).where(
        col(Draw.site_id) == site_id,
        col(Draw.visit_date) == visit_date,
        col(Draw.status) != DrawStatus.served.value,
    )
    return (await session.execute(query)).first() is not None


async def hold_deadline(session: AsyncSession, reservation_id: str | None) -> datetime | None:
    """When a reservation's hold expires, while it is a hold (an offer to confirm)."""
    if reservation_id is None:
        return None
    reservation = await get_reservation(session, reservation_id)
    if reservation is None or reservation.status != ReservationStatus.held:
        return None
    return reservation.hold_expires_at


async def set_places_back_at(session: AsyncSession, reservation_id: str, at: datetime) -> None:
    await session.execute(
        sa.update(Reservation)
        .where(col(Reservation.id) == reservation_id)
        .values(places_back_at=at)
    )


async def set_slot_capacity(session: AsyncSession, slot_id: str, capacity: int) -> None:
    await session.execute(sa.update(Slot).where(col(Slot.id) == slot_id).values(capacity=capacity))


async def change_slot(
    session: AsyncSession, slot_id: str, *, capacity: int, pools: dict[str, int] | None
) -> None:
    await session.execute(
        sa.update(Slot).where(col(Slot.id) == slot_id).values(capacity=capacity, pools=pools)
    )


# reservations ------------------------------------------------------------------------------


async def add_holds(
    connection: AsyncConnection,
    reservations: list[dict[str, Any]],
    visitors: list[dict[str, Any]],
    records: list[dict[str, Any]],
    events: Sequence[dict[str, Any]] = (),
) -> None:
    """Insert holds with their visitors, idempotency records and outbox events (Core inserts:
    no ORM state)."""
    await connection.execute(Reservation.__table__.insert(), reservations)  # type: ignore[attr-defined]
    await connection.execute(Visitor.__table__.insert(), visitors)  # type: ignore[attr-defined]
    if records:
        await connection.execute(IdempotencyRecord.__table__.insert(), records)  # type: ignore[attr-defined]
    if events:
        await connection.execute(OutboxEvent.__table__.insert(), events)  # type: ignore[attr-defined]


async def get_reservation(
    session: AsyncSession, reservation_id: str, *, owner_id: str | None = None
) -> Reservation | None:
    reservation = await session.get(Reservation, reservation_id)
    if reservation is None or (owner_id is not None and reservation.owner_id != owner_id):
        return None
    return reservation


async def visitors_of(session: AsyncSession, reservation_ids: Sequence[str]) -> Sequence[Visitor]:
    query = (
        sa.select(Visitor)
        .where(col(Visitor.reservation_id).in_(list(reservation_ids)))
        .order_by(col(Visitor.reservation_id), col(Visitor.position))
    )
    return (await session.execute(query)).scalars().all()


async def reservations_of(
    session: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> Sequence[Reservation]:
    query = (
        sa.select(Reservation)
        .where(col(Reservation.owner_id) == owner_id)
        .order_by(col(Reservation.created_at).desc(), col(Reservation.id))
        .limit(limit)
        .offset(offset)
    )
    return (await session.execute(query)).scalars().all()


async def move_status(
    session: AsyncSession,
    reservation_ids: Sequence[str],
    *,
    from_statuses: Iterable[ReservationStatus],
    to: ReservationStatus,
    now: datetime,
    **values: Any,
) -> list[str]:
    """Change status only where it still is one of `from_statuses`; returns the ids changed.

    The guard makes every transition safe to race: two sweepers, or a cancel racing an
    expiry, change a reservation once, and only the one that changed it releases its places.
    """
    query = (
        sa.update(Reservation)
        .where(
            col(Reservation.id).in_(list(reservation_ids)),
            col(Reservation.status).in_([str(s) for s in from_statuses]),
        )
        .values(status=str(to), updated_at=now, **values)
        .returning(col(Reservation.id))
    )
    changed = list((await session.execute(query)).scalars())
    if changed and not to.holds_places:
        await session.execute(
            sa.update(Visitor).where(col(Visitor.reservation_id).in_(changed)).values(active=False)
        )
    return changed


async def owners_of(session: AsyncSession, reservation_ids: Iterable[str]) -> dict[str, str]:
    ids = list(reservation_ids)
    if not ids:
        return {}
    query = sa.select(col(Reservation.id), col(Reservation.owner_id)).where(
        col(Reservation.id).in_(ids)
    )
    return {row[0]: row[1] for row in await session.execute(query)}


async def enter(
    session: AsyncSession,
    reservation_id: str,
    positions: Sequence[int],
    gate_id: str,
    now: datetime,
) -> list[int]:
    """Let named visitors in, each once: the guard makes two gates racing on one ticket
    enter each visitor once. Returns the positions that entered now."""
    query = (
        sa.update(Visitor)
        .where(
            col(Visitor.reservation_id) == reservation_id,
            col(Visitor.position).in_(list(positions)),
            col(Visitor.entered_at).is_(None),
        )
        .values(entered_at=now, entry_gate=gate_id)
        .returning(col(Visitor.position))
    )
    return list((await session.execute(query)).scalars())


async def leave(
    session: AsyncSession,
    reservation_id: str,
    positions: Sequence[int],
    gate_id: str,
    now: datetime,
) -> list[int]:
    """Let named visitors out, each once, and only those who came in."""
    query = (
        sa.update(Visitor)
        .where(
            col(Visitor.reservation_id) == reservation_id,
            col(Visitor.position).in_(list(positions)),
            col(Visitor.entered_at).is_not(None),
            col(Visitor.exited_at).is_(None),
        )
        .values(exited_at=now, exit_gate=gate_id)
        .returning(col(Visitor.position))
    )
    return list((await session.execute(query)).scalars())


async def unused_before(
    session: AsyncSession, site_id: str, before: date, *, limit: int
) -> list[str]:
    """Confirmed reservations of a site for days before `before` that nobody used."""
    query = (
        sa.select(col(Reservation.id))
        .where(
            col(Reservation.site_id) == site_id,
            col(Reservation.visit_date) < before,
            col(Reservation.status) == ReservationStatus.confirmed.value,
        )
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def still_inside_before(
    session: AsyncSession, site_id: str, before: date, *, limit: int
) -> Sequence[Visitor]:
    """Visitors of a site counted inside on days before `before` (never scanned out)."""
    query = (
        sa.select(Visitor)
        .where(
            col(Visitor.site_id) == site_id,
            col(Visitor.visit_date) < before,
            col(Visitor.entered_at).is_not(None),
            col(Visitor.exited_at).is_(None),
        )
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def check_out(session: AsyncSession, visitor_ids: Sequence[int], at: datetime) -> None:
    query = (
        sa.update(Visitor)
        .where(col(Visitor.id).in_(list(visitor_ids)), col(Visitor.exited_at).is_(None))
        .values(exited_at=at)
    )
    await session.execute(query)


async def sales_stopped(session: AsyncSession, site_id: str, visit_date: date) -> bool:
    return await session.get(SalesStop, (site_id, visit_date)) is not None


async def people_inside(session: AsyncSession, site_id: str, visit_date: date) -> int:
    """Visitors of a site-day who came in and have not gone out."""
    query = sa.select(sa.func.count()).where(
        col(Visitor.site_id) == site_id,
        col(Visitor.visit_date) == visit_date,
        col(Visitor.entered_at).is_not(None),
        col(Visitor.exited_at).is_(None),
    )
    return int((await session.execute(query)).scalar_one())


async def people_entered(session: AsyncSession, site_id: str, visit_date: date) -> int:
    """Visitors of a site-day who came in (the day's load)."""
    query = sa.select(sa.func.count()).where(
        col(Visitor.site_id) == site_id,
        col(Visitor.visit_date) == visit_date,
        col(Visitor.entered_at).is_not(None),
    )
    return int((await session.execute(query)).scalar_one())


async def admitted_scans(
    session: AsyncSession, site_id: str, start: datetime, end: datetime
) -> list[tuple[datetime, str, str, int]]:
    """(time, gate, direction, people) of the admitted scans at a site in [start, end)."""
    query = sa.select(
        col(ScanEvent.at), col(ScanEvent.gate_id), col(ScanEvent.direction), col(ScanEvent.people)
    ).where(
        col(ScanEvent.site_id) == site_id,
        col(ScanEvent.result) == "admitted",
        col(ScanEvent.at) >= start,
        col(ScanEvent.at) < end,
    )
    return [(row[0], row[1], row[2], row[3]) for row in await session.execute(query)]


async def open_holds_by_site(session: AsyncSession, now: datetime) -> dict[str, int]:
    query = (
        sa.select(col(Reservation.site_id), sa.func.count())
        .where(
            col(Reservation.status) == ReservationStatus.held.value,
            col(Reservation.hold_expires_at) > now,
        )
        .group_by(col(Reservation.site_id))
    )
    return {row[0]: int(row[1]) for row in await session.execute(query)}


async def due_holds(session: AsyncSession, now: datetime, *, limit: int) -> list[str]:
    query = (
        sa.select(col(Reservation.id))
        .where(
            col(Reservation.status) == ReservationStatus.held.value,
            col(Reservation.hold_expires_at) <= now,
        )
        .order_by(col(Reservation.hold_expires_at))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


# accounts and tokens ----------------------------------------------------------------------


async def add_account(session: AsyncSession, account: Account) -> None:
    session.add(account)
    await session.flush()


async def account_by_login(session: AsyncSession, field: str, value: str) -> Account | None:
    column = col(Account.email) if field == "email" else col(Account.phone)
    return (await session.execute(sa.select(Account).where(column == value))).scalars().first()


async def registration_by_token(session: AsyncSession, token_hash: str) -> Registration | None:
    query = sa.select(Registration).where(col(Registration.token_hash) == token_hash)
    return (await session.execute(query)).scalars().first()


async def drop_registrations(session: AsyncSession, login: str) -> None:
    """Once an account is made, the other pending registrations of its login are void."""
    await session.execute(sa.delete(Registration).where(col(Registration.login) == login))


async def upgrade_token(
    session: AsyncSession, token_hash: str, account_id: str, expires_at: datetime
) -> None:
    """A registration's token becomes its new account's token."""
    await session.execute(
        sa.update(ApiToken)
        .where(col(ApiToken.token_hash) == token_hash)
        .values(role="tourist", account_id=account_id, expires_at=expires_at)
    )


async def add_token(session: AsyncSession, token: ApiToken) -> None:
    session.add(token)
    await session.flush()


async def get_token(session: AsyncSession, token_hash: str) -> ApiToken | None:
    return await session.get(ApiToken, token_hash)


async def revoke_token(session: AsyncSession, token_id: str, now: datetime) -> list[str]:
    """Revoke the active token whose hash starts with `token_id`; returns the hashes revoked."""
    query = (
        sa.update(ApiToken)
        .where(
            col(ApiToken.token_hash).startswith(token_id, autoescape=True),
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=now)
        .returning(col(ApiToken.token_hash))
    )
    return list((await session.execute(query)).scalars())


async def get_gate(session: AsyncSession, gate_id: str) -> Gate | None:
    return await session.get(Gate, gate_id)


# idempotency and audit --------------------------------------------------------------------


async def idempotency_record(
    session: AsyncSession, owner_id: str, key: str
) -> IdempotencyRecord | None:
    return await session.get(IdempotencyRecord, (owner_id, key))


async def idempotency_records_since(
    session: AsyncSession, since: datetime
) -> Sequence[IdempotencyRecord]:
    query = sa.select(IdempotencyRecord).where(col(IdempotencyRecord.created_at) >= since)
    return (await session.execute(query)).scalars().all()


async def add_idempotency_record(session: AsyncSession, record: dict[str, Any]) -> None:
    await session.execute(sa.insert(IdempotencyRecord), [record])


async def add_audit(session: AsyncSession, event: AuditEvent) -> None:
    session.add(event)
    await session.flush()


async def audit_of(
    session: AsyncSession, site_id: str, *, limit: int, offset: int
) -> Sequence[AuditEvent]:
    query = (
        sa.select(AuditEvent)
        .where(col(AuditEvent.site_id) == site_id)
        .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return (await session.execute(query)).scalars().all()


async def places_by_status(
    session: AsyncSession, site_id: str, first: date, last: date
) -> list[tuple[date, str, int]]:
    """(visit date, reservation status, places) for a site's reservations in a date range."""
    query = (
        sa.select(
            col(Reservation.visit_date),
            col(Reservation.status),
            sa.func.sum(Reservation.party_size),
        )
        .where(
            col(Reservation.site_id) == site_id,
            col(Reservation.visit_date) >= first,
            col(Reservation.visit_date) <= last,
        )
        .group_by(col(Reservation.visit_date), col(Reservation.status))
    )
    return [(row[0], row[1], int(row[2])) for row in await session.execute(query)]


async def places_offered(
    session: AsyncSession, site_id: str, first: date, last: date
) -> dict[date, int]:
    query = (
        sa.select(col(Slot.visit_date), sa.func.sum(Slot.capacity))
        .where(
            col(Slot.site_id) == site_id,
            col(Slot.visit_date) >= first,
            col(Slot.visit_date) <= last,
            col(Slot.status) == "open",
        )
        .group_by(col(Slot.visit_date))
    )
    return {row[0]: int(row[1]) for row in await session.execute(query)}


async def expected_by_slot(session: AsyncSession, site_id: str, visit_date: date) -> dict[str, int]:
    """People expected per slot of a site-day: those holding places and those already gone."""
    statuses = [*(s.value for s in ACTIVE_STATUSES), ReservationStatus.completed.value]
    query = (
        sa.select(col(Reservation.slot_id), sa.func.sum(col(Reservation.party_size)))
        .where(
            col(Reservation.site_id) == site_id,
            col(Reservation.visit_date) == visit_date,
            col(Reservation.status).in_(statuses),
        )
        .group_by(col(Reservation.slot_id))
    )
    return {row[0]: int(row[1]) for row in await session.execute(query)}


async def observed_stays(
    session: AsyncSession, site_id: str, since: date, *, limit: int
) -> list[int]:
    """Minutes between entry and exit of the most recent visitors who left through a gate
    (not those checked out at closing, whose exit time is the closing time)."""
    query = (
        sa.select(col(Visitor.entered_at), col(Visitor.exited_at))
        .where(
            col(Visitor.site_id) == site_id,
            col(Visitor.visit_date) >= since,
            col(Visitor.entered_at).is_not(None),
            col(Visitor.exit_gate).is_not(None),
        )
        .order_by(col(Visitor.visit_date).desc())
        .limit(limit)
    )
    return [
        int((row[1] - row[0]).total_seconds() // 60)
        for row in await session.execute(query)
        if row[0] is not None and row[1] is not None
    ]


async def reschedule(
    session: AsyncSession,
    reservation_id: str,
    *,
    from_slot: str,
    to_slot: str,
    visit_date: date,
    units: dict[int, tuple[int, int]],
    now: datetime,
) -> bool:
    """Move a held or confirmed reservation and its visitors to another slot, only if it is
    still where and what it was (a cancel, an expiry or another move in between wins)."""
    moved = await session.execute(
        sa.update(Reservation)
        .where(
            col(Reservation.id) == reservation_id,
            col(Reservation.slot_id) == from_slot,
            col(Reservation.status).in_(
                [ReservationStatus.held.value, ReservationStatus.confirmed.value]
            ),
        )
        .values(slot_id=to_slot, visit_date=visit_date, updated_at=now)
        .returning(col(Reservation.id))
    )
    if moved.scalar_one_or_none() is None:
        return False
    for visitor_id, (slot_unit, day_unit) in units.items():
        await session.execute(
            sa.update(Visitor)
            .where(col(Visitor.id) == visitor_id)
            .values(slot_id=to_slot, visit_date=visit_date, slot_unit=slot_unit, day_unit=day_unit)
        )
    return True
