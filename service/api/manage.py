"""Site managers' tools: sites, gates, slot templates, slot generation and closures.

Admins create sites and act on every site; a manager on the sites of its token (any other
site: 403, checked before the body). Every change is audited (GET /v1/audit?site=).
"""

from __future__ import annotations

from datetime import date

from fastapi import Response

from booking.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from booking.schemas import (
    Closure,
    ClosureResult,
    GateCreate,
    GatePatch,
    GatePublic,
    GeneratedSlots,
    SiteCreate,
    SitePatch,
    SitePublic,
    SlotGeneration,
    TemplateCreate,
    TemplatePatch,
    TemplatePublic,
)
from service import access
from service.access import AdminDep, SiteManagerDep, SlotManagerDep
from service.api.params import RowId
from service.deps import RuntimeDep
from service.errors import problem_responses

router = access.router(prefix="/v1", tags=["site managers"])

REFUSALS = problem_responses(Unauthorized, Forbidden, NotFound, InvalidRequest)


# sites -------------------------------------------------------------------------------------


@router.post(
    "/sites",
    status_code=201,
    response_model=SitePublic,
    responses={**REFUSALS, **problem_responses(Conflict)},
)
async def create_site(body: SiteCreate, runtime: RuntimeDep, staff: AdminDep) -> SitePublic:
    """Add a site (admins; then give its managers tokens for it). It sells nothing until it
    has slot templates, whose slots are made over its horizon."""
    await runtime.management.create_site(body, actor=staff.actor)
    return await runtime.catalog.site(body.id)


@router.patch("/sites/{site_id}", response_model=SitePublic, responses=REFUSALS)
async def change_site(
    site_id: str, body: SitePatch, runtime: RuntimeDep, staff: SiteManagerDep
) -> SitePublic:
    """Change a site's rules: daily cap, party size limit, horizon, release time, per-account
    limits, opening hours... Caps and windows take effect on sale at once."""
    await runtime.management.update_site(site_id, body, actor=staff.actor)
    return await runtime.catalog.site(site_id)


@router.post("/sites/{site_id}/close", response_model=ClosureResult, responses=REFUSALS)
async def close_site(
    site_id: str, body: Closure, runtime: RuntimeDep, staff: SiteManagerDep
) -> ClosureResult:
    """Close a whole site from today on (weather, a state event): its reservations become
    `cancelled_by_site`, their places are released and each owner is offered alternatives."""
    return await runtime.management.close_site(site_id, body.reason, actor=staff.actor)


@router.post("/sites/{site_id}/reopen", response_model=ClosureResult, responses=REFUSALS)
async def reopen_site(site_id: str, runtime: RuntimeDep, staff: SiteManagerDep) -> ClosureResult:
    """Reopen a closed site and its slots from today on."""
    return await runtime.management.reopen_site(site_id, actor=staff.actor)


@router.post(
    "/sites/{site_id}/days/{visit_date}/close", response_model=ClosureResult, responses=REFUSALS
)
async def close_day(
    site_id: str, visit_date: date, body: Closure, runtime: RuntimeDep, staff: SiteManagerDep
) -> ClosureResult:
    """Close every slot of one day."""
    return await runtime.management.close_day(site_id, visit_date, body.reason, actor=staff.actor)


@router.post(
    "/sites/{site_id}/days/{visit_date}/reopen", response_model=ClosureResult, responses=REFUSALS
)
async def reopen_day(
    site_id: str, visit_date: date, runtime: RuntimeDep, staff: SiteManagerDep
) -> ClosureResult:
    return await runtime.management.reopen_day(site_id, visit_date, actor=staff.actor)


# gates -------------------------------------------------------------------------------------


@router.post(
    "/sites/{site_id}/gates",
    status_code=201,
    response_model=GatePublic,
    responses={**REFUSALS, **problem_responses(Conflict)},
)
async def add_gate(
    site_id: str, body: GateCreate, runtime: RuntimeDep, staff: SiteManagerDep
) -> GatePublic:
    return await runtime.management.add_gate(site_id, body, actor=staff.actor)


@router.patch("/sites/{site_id}/gates/{gate_id}", response_model=GatePublic, responses=REFUSALS)
async def change_gate(
    site_id: str, gate_id: str, body: GatePatch, runtime: RuntimeDep, staff: SiteManagerDep
) -> GatePublic:
    return await runtime.management.update_gate(site_id, gate_id, body, actor=staff.actor)


# slot templates and slots ------------------------------------------------------------------


@router.get(
    "/sites/{site_id}/slot-templates", response_model=list[TemplatePublic], responses=REFUSALS
)
async def list_templates(
    site_id: str, runtime: RuntimeDep, staff: SiteManagerDep
) -> list[TemplatePublic]:
    return await runtime.management.templates(site_id)


@router.post(
    "/sites/{site_id}/slot-templates",
    status_code=201,
    response_model=TemplatePublic,
    responses=REFUSALS,
)
async def add_template(
    site_id: str, body: TemplateCreate, runtime: RuntimeDep, staff: SiteManagerDep
) -> TemplatePublic:
    """Add the slots a site offers each day from now on (generated over its horizon)."""
    return await runtime.management.add_template(site_id, body, actor=staff.actor)


@router.patch(
    "/sites/{site_id}/slot-templates/{template_id}",
    response_model=TemplatePublic,
    responses=REFUSALS,
)
async def change_template(
    site_id: str,
    template_id: RowId,
    body: TemplatePatch,
    runtime: RuntimeDep,
    staff: SiteManagerDep,
) -> TemplatePublic:
    """Change a template; slots already made keep their times and caps."""
    return await runtime.management.update_template(site_id, template_id, body, actor=staff.actor)


@router.delete("/sites/{site_id}/slot-templates/{template_id}", status_code=204, responses=REFUSALS)
async def delete_template(
    site_id: str, template_id: RowId, runtime: RuntimeDep, staff: SiteManagerDep
) -> Response:
    """Stop making slots from a template; slots already made stay."""
    await runtime.management.delete_template(site_id, template_id, actor=staff.actor)
    return Response(status_code=204)


@router.post("/sites/{site_id}/slots/generate", response_model=GeneratedSlots, responses=REFUSALS)
async def generate_slots(
    site_id: str, body: SlotGeneration, runtime: RuntimeDep, staff: SiteManagerDep
) -> GeneratedSlots:
    """Make the slots of a date range from the site's templates (existing slots stay)."""
    return await runtime.management.generate(site_id, body.first, body.last, actor=staff.actor)


@router.post("/slots/{slot_id}/close", response_model=ClosureResult, responses=REFUSALS)
async def close_slot(
    slot_id: str, body: Closure, runtime: RuntimeDep, staff: SlotManagerDep
) -> ClosureResult:
    """Close one slot: its reservations become `cancelled_by_site` with alternatives."""
    return await runtime.management.close_slot(slot_id, body.reason, actor=staff.actor)


@router.post("/slots/{slot_id}/reopen", response_model=ClosureResult, responses=REFUSALS)
async def reopen_slot(slot_id: str, runtime: RuntimeDep, staff: SlotManagerDep) -> ClosureResult:
    return await runtime.management.reopen_slot(slot_id, actor=staff.actor)
