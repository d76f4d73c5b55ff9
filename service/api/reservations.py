"""A tourist's reservations: hold, confirm, cancel, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Response

from booking.errors import (
    HoldExpired,
    IdempotencyKeyReused,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RequestInFlight,
    Unauthorized,
)
from booking.schemas import HoldRequest, RescheduleRequest, ReservationPublic
from booking.service import Receipt
from capacity.errors import (
    AccountLimitReached,
    CapacityUnavailable,
    DuplicateVisitor,
    OutsideBookingWindow,
    PartyTooLarge,
    SiteClosed,
    SoldOut,
)
from capacity.throttle import RateLimited
from service import access
from service.access import TouristDep
from service.deps import IdempotencyKeyHeader, RuntimeDep, idempotency
from service.errors import problem_responses
from service.metrics import BOOKINGS
from service.throttling import HOLDS, READS

router = access.router(prefix="/v1/reservations", tags=["reservations"])

_COMMON = (
    Unauthorized,
    NotFound,
    IdempotencyKeyReused,
    RequestInFlight,
    CapacityUnavailable,
    RateLimited,
)


def _answer(receipt: Receipt, response: Response, change: str) -> ReservationPublic:
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        BOOKINGS.labels(change).inc()
    return receipt.reservation


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(
        *_COMMON, SoldOut, DuplicateVisitor, OutsideBookingWindow, SiteClosed, PartyTooLarge
    ),
)
async def hold_places(
    body: HoldRequest,
    response: Response,
    runtime: RuntimeDep,
    tourist: TouristDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Hold places on a timed-entry slot for real-name visitors until confirmed or expired."""
    receipt = await runtime.booking.hold(
        owner_id=tourist.actor,
        slot_id=body.slot_id,
        visitors=body.visitors,
        idempotency=idempotency(runtime, tourist, key, "hold", body),
    )
    return _answer(receipt, response, "held")


@router.post(
    "/{reservation_id}/confirm",
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(*_COMMON, HoldExpired, InvalidTransition),
)
async def confirm(
    reservation_id: str,
    response: Response,
    runtime: RuntimeDep,
    tourist: TouristDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Confirm a live hold; the reservation then carries an entry ticket."""
    receipt = await runtime.booking.confirm(
        owner_id=tourist.actor,
        reservation_id=reservation_id,
        idempotency=idempotency(runtime, tourist, key, f"confirm {reservation_id}"),
    )
    return _answer(receipt, response, "confirmed")


@router.post(
    "/{reservation_id}/cancel",
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(*_COMMON, InvalidTransition),
)
async def cancel(
    reservation_id: str,
    response: Response,
    runtime: RuntimeDep,
    tourist: TouristDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Cancel a hold or a reservation; its places go back on sale at once."""
    receipt = await runtime.booking.cancel(
        owner_id=tourist.actor,
        reservation_id=reservation_id,
        idempotency=idempotency(runtime, tourist, key, f"cancel {reservation_id}"),
    )
    if not receipt.replayed:
        # The places went back on sale: the slot's waitlist is served first.
        await runtime.waitlist.offer([receipt.reservation.slot_id])
    return _answer(receipt, response, "cancelled")


@router.post(
    "/{reservation_id}/reschedule",
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(
        *_COMMON,
        HoldExpired,
        InvalidTransition,
        InvalidRequest,
        SoldOut,
        DuplicateVisitor,
        OutsideBookingWindow,
        SiteClosed,
        AccountLimitReached,
    ),
)
async def reschedule(
    reservation_id: str,
    body: RescheduleRequest,
    response: Response,
    runtime: RuntimeDep,
    tourist: TouristDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Move a held or confirmed reservation to another slot of its site, keeping its
    visitors: the new places are taken and the old ones given back together, or nothing
    changes (a full slot answers `409 sold-out` with alternatives)."""
    before = await runtime.booking.get(owner_id=tourist.actor, reservation_id=reservation_id)
    receipt = await runtime.booking.reschedule(
        owner_id=tourist.actor,
        reservation_id=reservation_id,
        slot_id=body.slot_id,
        idempotency=idempotency(runtime, tourist, key, f"reschedule {reservation_id}", body),
    )
    if not receipt.replayed and before.slot_id != receipt.reservation.slot_id:
        # The old slot's places went back on sale: its waitlist is served first.
        await runtime.waitlist.offer([before.slot_id])
    return _answer(receipt, response, "rescheduled")


@router.get("", response_model=list[ReservationPublic], responses=problem_responses(Unauthorized))
async def list_reservations(
    runtime: RuntimeDep,
    tourist: TouristDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[ReservationPublic]:
    """The caller's own reservations, newest first."""
    return await runtime.booking.list(owner_id=tourist.actor, limit=limit, offset=offset)


@router.get(
    "/{reservation_id}",
    response_model=ReservationPublic,
    dependencies=[Depends(READS)],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_reservation(
    reservation_id: str, runtime: RuntimeDep, tourist: TouristDep
) -> ReservationPublic:
    """One of the caller's own reservations (anybody else's answers 404)."""
    return await runtime.booking.get(owner_id=tourist.actor, reservation_id=reservation_id)
