"""Sales at a site's window: operators sell places to visitors without the app."""

from __future__ import annotations

from fastapi import Depends, Response

from booking.errors import InvalidRequest, NotFound, Unauthorized
from booking.schemas import HoldRequest, ReservationPublic
from capacity.errors import (
    CapacityUnavailable,
    DuplicateVisitor,
    OutsideBookingWindow,
    PartyTooLarge,
    SiteClosed,
    SoldOut,
)
from service import access
from service.access import SiteStaffDep
from service.deps import IdempotencyKeyHeader, RuntimeDep, idempotency
from service.errors import problem_responses
from service.throttling import HOLDS

router = access.router(prefix="/v1/sites", tags=["window"])


@router.post(
    "/{site_id}/window-sales",
    status_code=201,
    dependencies=[Depends(HOLDS)],
    response_model=ReservationPublic,
    responses=problem_responses(
        Unauthorized,
        NotFound,
        InvalidRequest,
        SoldOut,
        DuplicateVisitor,
        OutsideBookingWindow,
        SiteClosed,
        PartyTooLarge,
        CapacityUnavailable,
    ),
)
async def sell_at_window(
    site_id: str,
    body: HoldRequest,
    response: Response,
    runtime: RuntimeDep,
    staff: SiteStaffDep,
    key: IdempotencyKeyHeader = None,
) -> ReservationPublic:
    """Sell places at the site's window (its operators, managers, admins): taken from the
    slot's `window` pool where it keeps one, else from the general sale, and confirmed at
    once, with the entry ticket. The per-ID rules apply; no per-account limit does."""
    receipt = await runtime.booking.sell_at_window(
        site_id=site_id,
        slot_id=body.slot_id,
        visitors=body.visitors,
        idempotency=idempotency(runtime, staff, key, f"window {site_id}", body),
    )
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return receipt.reservation
