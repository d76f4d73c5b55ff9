"""The operators' live feed (Server-Sent Events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from sse_starlette import EventSourceResponse

from booking.accounts import Principal
from booking.errors import Forbidden, Unauthorized
from service import access
from service.access import SITE_STAFF
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.live import live_events

router = access.router(prefix="/v1", tags=["operators"])


@router.get(
    "/live",
    responses={
        **problem_responses(Unauthorized, Forbidden),
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
    },
    response_class=EventSourceResponse,
)
async def live(
    runtime: RuntimeDep,
    staff: Annotated[Principal, Depends(SITE_STAFF)],
    events: Annotated[
        int | None, Query(ge=1, le=10_000, description="Stop after this many events")
    ] = None,
) -> EventSourceResponse:
    """Every site of the token's (an admin's: all) with people inside, the load against both
    caps, the alert level and its action, the flow in and out in the last minute and the places
    left today: an `occupancy` event at least every 2 s, a `level` event as soon as a site's
    alert level changes."""
    sites = None if staff.role == "admin" else list(staff.sites)
    return EventSourceResponse(live_events(runtime, sites, limit=events), ping=15)
