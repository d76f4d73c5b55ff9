"""Fair release: entering a date's draw before it goes on sale, and its results."""

from __future__ import annotations

from datetime import date

from fastapi import Depends

from booking.errors import (
    AlreadyInDraw,
    DrawNotOpen,
    InvalidRequest,
    NotAFairRelease,
    NotFound,
    Unauthorized,
)
from booking.schemas import DrawEntryPublic, DrawEntryRequest, DrawPublic
from capacity.errors import OutsideBookingWindow, PartyTooLarge
from service import access
from service.access import ANYONE, TouristDep
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import HOLDS, READS

router = access.router(prefix="/v1/draws", tags=["draws"])


@router.post(
    "/entries",
    status_code=201,
    dependencies=[Depends(HOLDS)],
    response_model=DrawEntryPublic,
    responses=problem_responses(
        Unauthorized,
        NotFound,
        InvalidRequest,
        NotAFairRelease,
        OutsideBookingWindow,
        DrawNotOpen,
        AlreadyInDraw,
        PartyTooLarge,
    ),
)
async def enter(
    body: DrawEntryRequest, runtime: RuntimeDep, tourist: TouristDep
) -> DrawEntryPublic:
    """Enter the draw of a date released fairly: up to three slots of one site-day, the first
    the most wanted. Entries made in the pre-queue window are served in a random order at the
    release time; later ones queue behind them. One entry per account and per person."""
    return await runtime.draws.enter(
        owner_id=tourist.actor, choices=body.choices, visitors=body.visitors
    )


@router.get(
    "/entries/{entry_id}",
    response_model=DrawEntryPublic,
    dependencies=[Depends(READS)],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_entry(entry_id: str, runtime: RuntimeDep, tourist: TouristDep) -> DrawEntryPublic:
    """One's own entry: `won` with its hold (`reservation_id`: confirm it like any hold), or
    `lost`, with its `position` in the draw."""
    return await runtime.draws.entry(owner_id=tourist.actor, entry_id=entry_id)


@router.get(
    "/{site_id}/{visit_date}",
    response_model=DrawPublic,
    dependencies=[Depends(ANYONE), Depends(READS)],
    responses=problem_responses(NotFound),
)
async def get_draw(site_id: str, visit_date: date, runtime: RuntimeDep) -> DrawPublic:
    """A draw, for anyone to audit: its seed, its entries in arrival order and the order
    `random.Random(seed).shuffle` gives them."""
    return await runtime.draws.draw(site_id, visit_date.isoformat())
