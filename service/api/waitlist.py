"""Waitlists: a tourist waits for a full slot and is offered a hold when places come back."""

from __future__ import annotations

from fastapi import Depends, Response

from booking.errors import (
    AlreadyWaiting,
    InvalidTransition,
    NotFound,
    SlotHasRoom,
    Unauthorized,
    WaitlistClosed,
)
from booking.schemas import WaitlistPublic, WaitlistRequest
from capacity.errors import CapacityUnavailable, DuplicateVisitor, PartyTooLarge
from service import access
from service.access import TouristDep
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import HOLDS, READS

router = access.router(prefix="/v1/waitlist", tags=["waitlist"])


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(HOLDS)],
    response_model=WaitlistPublic,
    responses=problem_responses(
        Unauthorized,
        NotFound,
        SlotHasRoom,
        WaitlistClosed,
        AlreadyWaiting,
        PartyTooLarge,
        DuplicateVisitor,
        CapacityUnavailable,
    ),
)
async def join(body: WaitlistRequest, runtime: RuntimeDep, tourist: TouristDep) -> WaitlistPublic:
    """Wait for a full slot that is on sale: `position` 1 is next. When places come back the
    first in line gets a hold (`status: "offered"`, `reservation_id`, `offer_expires_at`):
    confirm it like any hold. A slot with room answers `409 slot-has-room`."""
    return await runtime.waitlist.join(
        owner_id=tourist.actor, slot_id=body.slot_id, visitors=body.visitors
    )


@router.get(
    "/{entry_id}",
    response_model=WaitlistPublic,
    dependencies=[Depends(READS)],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_entry(entry_id: str, runtime: RuntimeDep, tourist: TouristDep) -> WaitlistPublic:
    """One's own waitlist entry: its position while waiting, its hold once offered."""
    return await runtime.waitlist.get(owner_id=tourist.actor, entry_id=entry_id)


@router.delete(
    "/{entry_id}",
    status_code=204,
    responses=problem_responses(Unauthorized, NotFound, InvalidTransition),
)
async def leave(entry_id: str, runtime: RuntimeDep, tourist: TouristDep) -> Response:
    """Leave the line (an offered hold is a reservation: cancel that instead)."""
    await runtime.waitlist.leave(owner_id=tourist.actor, entry_id=entry_id)
    return Response(status_code=204)
