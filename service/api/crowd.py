"""Crowd flow: suggestions for tourists and city apps, the public crowd index, and the
forecast and capacity calculator for staff."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated

from fastapi import Depends, Query, Response

from booking.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from booking.schemas import (
    CapacityPlanPublic,
    CapacityPlanRequest,
    CrowdSite,
    ForecastPublic,
    SuggestionsPublic,
)
from service import access
from service.access import ANYONE, SiteManagerDep, SiteStaffDep
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import READS

router = access.router(prefix="/v1", tags=["crowd flow"])

CROWD_MAX_AGE = 10  # seconds: the index is rebuilt at most this often per process


@router.get(
    "/suggestions",
    response_model=SuggestionsPublic,
    responses=problem_responses(NotFound, InvalidRequest),
    dependencies=[Depends(ANYONE), Depends(READS)],
)
async def suggestions(
    runtime: RuntimeDep,
    site: Annotated[str, Query(max_length=64, description="The site the party wants")],
    visit_date: Annotated[
        date | None, Query(alias="date", description="Default: today at the site")
    ] = None,
    at: Annotated[
        time | None,
        Query(alias="time", description="Time of day wanted (HH:MM); default: now or opening"),
    ] = None,
    party: Annotated[int, Query(ge=1, le=50)] = 1,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> SuggestionsPublic:
    """Ranked alternatives to a wanted visit: other slots of the site, the same time at
    nearby sites of the same kind, the next days. Each has places left for the whole party,
    is on sale now, and says why (`reason`), how crowded it is expected to be (`comfort`)
    and how far it is (`distance_km`, from `lat`/`lon` when given)."""
    if (lat is None) != (lon is None):
        raise InvalidRequest(
            field="lon" if lon is None else "lat",
            rule="both-or-neither",
            message="give both lat and lon, or neither",
            location="query",
        )
    origin = None if lat is None or lon is None else (lat, lon)
    return await runtime.crowd.suggestions(
        site, visit_date=visit_date, at=at, party=party, origin=origin, limit=limit
    )


@router.get(
    "/crowd", response_model=list[CrowdSite], dependencies=[Depends(ANYONE), Depends(READS)]
)
async def crowd(runtime: RuntimeDep, response: Response) -> list[CrowdSite]:
    """The city's crowd index: per site, people inside now, comfort level, places left and
    the calmest times left today; what a map or a city app shows. Cached for seconds."""
    response.headers["Cache-Control"] = f"public, max-age={CROWD_MAX_AGE}"
    return await runtime.crowd.index()


@router.get(
    "/sites/{site_id}/forecast",
    response_model=ForecastPublic,
    responses=problem_responses(Unauthorized, Forbidden, NotFound),
)
async def forecast(
    site_id: str,
    runtime: RuntimeDep,
    staff: SiteStaffDep,
    visit_date: Annotated[
        date | None, Query(alias="date", description="Default: today at the site")
    ] = None,
) -> ForecastPublic:
    """People expected inside per quarter hour, from the day's reservations and the stay
    times learned from entry and exit scans (admins, the site's managers and operators)."""
    if visit_date is None:
        visit_date = runtime.catalog.today(await runtime.catalog.site_record(site_id))
    return await runtime.crowd.forecast(site_id, visit_date)


@router.post(
    "/sites/{site_id}/capacity-plan",
    response_model=CapacityPlanPublic,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, InvalidRequest),
)
async def capacity_plan(
    site_id: str, body: CapacityPlanRequest, runtime: RuntimeDep, staff: SiteManagerDep
) -> CapacityPlanPublic:
    """The LB/T 034-2014 calculator: instantaneous cap C1 = Σ area / space per person, daily
    cap C2 = C1 × opening time / average stay, and slot quotas that keep the people inside
    under C1 (Little's law). With `"apply": true` the plan becomes the site's caps, its
    templates' and its slots' capacities from today on (audited; nobody is cancelled)."""
    plan = await runtime.crowd.capacity_plan(site_id, body)
    if not body.apply:
        return plan
    zones = [zone.model_dump() for zone in body.zones]
    await runtime.management.apply_capacity_plan(plan, zones, actor=staff.actor)
    return plan.model_copy(update={"applied": True})
