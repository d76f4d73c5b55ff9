"""The outbox: notifications waiting for delivery (an SMS or mail gateway, webhooks)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from booking.errors import Forbidden, Unauthorized
from booking.outbox import events
from booking.schemas import OutboxEventPublic
from service import access
from service.access import AdminDep
from service.api.params import MAX_ROW_ID
from service.deps import RuntimeDep
from service.errors import problem_responses

router = access.router(prefix="/v1", tags=["staff"])


@router.get(
    "/outbox",
    response_model=list[OutboxEventPublic],
    responses=problem_responses(Unauthorized, Forbidden),
)
async def outbox(
    runtime: RuntimeDep,
    staff: AdminDep,
    topic: Annotated[
        str | None, Query(max_length=60, description="e.g. account.verification")
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_ROW_ID, description="Only events with a greater id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[OutboxEventPublic]:
    """Notifications in the order they were written (admins): what a delivery worker or a
    gateway reads, `after` the last id it has seen."""
    return await events(runtime.sessions, topic=topic, after=after, limit=limit)
