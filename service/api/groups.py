"""Group reservations: a school class or a tour, under the site's composition rules."""

from __future__ import annotations

from fastapi import Depends, Response

from booking.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    NoGroupsHere,
    NotFound,
    RequestInFlight,
    Unauthorized,
)
from booking.schemas import GroupRequest, ReservationPublic
from capacity.errors import (
    AccountLimitReached,
    CapacityUnavailable,
    DuplicateVisitor,
    FairReleasePending,
    GroupLimitReached,
    OutsideBookingWindow,
    SiteClosed,
    SoldOut,
)
from service import access
from service.access import TouristDep
from service.deps import IdempotencyKeyHeader, RuntimeDep, idempotency
from service.errors import problem_responses
from service.metrics import BOOKINGS
from service.throttling import HOLDS

router = access.router(prefix="/v1/group-reservations", tags=["reservations"])


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(
        Unauthorized,
        NotFound,
        InvalidRequest,
        NoGroupsHere,
        GroupLimitReached,
        SoldOut,
        DuplicateVisitor,
        AccountLimitReached,
        OutsideBookingWindow,
        FairReleasePending,
        SiteClosed,
        IdempotencyKeyReused,
        RequestInFlight,
        CapacityUnavailable,
    ),
)
async def hold_group(
    body: GroupRequest,
    response: Response,
    runtime: RuntimeDep,
    tourist: TouristDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Hold places for a group under the site's `group_rules` (its size, its minors, one
    adult per so many minors, so many groups a day; each refusal is a 422 naming its rule, or
    409 `group-limit`). Places come from the slot's `group` pool where it keeps one. Confirm,
    cancel and reschedule it like any reservation."""
    receipt = await runtime.booking.hold_group(
        owner_id=tourist.actor,
        slot_id=body.slot_id,
        visitors=body.visitors,
        idempotency=idempotency(runtime, tourist, key, "group", body),
    )
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        BOOKINGS.labels("held").inc()
    return receipt.reservation
