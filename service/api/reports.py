"""Reports for site managers, as JSON or CSV (`Accept: text/csv`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Header, Query, Response

from booking.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from booking.reports import as_csv, day_reports
from booking.schemas import DayReport
from service import access
from service.access import SiteManagerDep
from service.deps import RuntimeDep
from service.errors import problem_responses

router = access.router(prefix="/v1", tags=["staff"])


@router.get(
    "/sites/{site_id}/reports",
    response_model=list[DayReport],
    responses={
        **problem_responses(Unauthorized, Forbidden, NotFound, InvalidRequest),
        200: {"content": {"text/csv": {}}, "description": "One row per day"},
    },
)
async def site_report(
    site_id: str,
    runtime: RuntimeDep,
    staff: SiteManagerDep,
    first: Annotated[date, Query(alias="from", description="First visit date")],
    last: Annotated[date | None, Query(alias="to", description="Last date; default: from")] = None,
    accept: Annotated[str, Header()] = "application/json",
) -> list[DayReport] | Response:
    """Places offered, held, confirmed, cancelled, expired, entered and no-shows per day."""
    reports = await day_reports(runtime.sessions, site_id, first, last or first)
    if "text/csv" in accept:
        return Response(as_csv(reports), media_type="text/csv; charset=utf-8")
    return reports
