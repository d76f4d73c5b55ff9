"""The catalog: sites, slots and places left."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Depends, Query

from booking.catalog import parse_slot_id
from booking.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from booking.schemas import SitePublic, SlotPatch, SlotPublic
from service import access
from service.access import ANYONE, SlotManagerDep
from service.deps import CatalogDep, RuntimeDep
from service.errors import problem_responses
from service.throttling import READS

router = access.router(prefix="/v1", tags=["catalog"])


@router.get(
    "/sites", response_model=list[SitePublic], dependencies=[Depends(ANYONE), Depends(READS)]
)
async def list_sites(catalog: CatalogDep) -> list[SitePublic]:
    """Every site with its gates and today's places offered and left."""
    return await catalog.sites()


@router.get(
    "/sites/{site_id}",
    response_model=SitePublic,
    responses=problem_responses(NotFound),
    dependencies=[Depends(ANYONE), Depends(READS)],
)
async def get_site(site_id: str, catalog: CatalogDep) -> SitePublic:
    """One site with its gates and today's load."""
    return await catalog.site(site_id)


@router.get(
    "/sites/{site_id}/slots",
    response_model=list[SlotPublic],
    responses=problem_responses(NotFound),
    dependencies=[Depends(ANYONE), Depends(READS)],
)
async def list_slots(
    site_id: str,
    catalog: CatalogDep,
    visit_date: Annotated[
        date | None, Query(alias="date", description="Visit date; default: today at the site")
    ] = None,
) -> list[SlotPublic]:
    """The slots of one day with the places left in each (counted in Redis)."""
    if visit_date is None:
        visit_date = catalog.today(await catalog.site_record(site_id))
    return await catalog.slots(site_id, visit_date)


@router.get(
    "/slots/{slot_id}",
    response_model=SlotPublic,
    responses=problem_responses(NotFound),
    dependencies=[Depends(ANYONE), Depends(READS)],
)
async def get_slot(slot_id: str, catalog: CatalogDep) -> SlotPublic:
    """One slot with its places left."""
    return await catalog.slot(slot_id)


@router.patch(
    "/slots/{slot_id}",
    response_model=SlotPublic,
    responses=problem_responses(NotFound, InvalidRequest, Unauthorized, Forbidden),
)
async def change_slot(
    slot_id: str, body: SlotPatch, catalog: CatalogDep, runtime: RuntimeDep, staff: SlotManagerDep
) -> SlotPublic:
    """Change a slot's capacity and the places it keeps for sales channels (`pools`: `window`
    for the site's window, `group` for groups, `online` for the apps; the channels without a
    pool share the rest) (its site's managers, admins). Lowering a cap cancels nobody."""
    _, pools_changed = await catalog.change_slot(slot_id, body.changes(), actor=staff.actor)
    if pools_changed:
        ref = parse_slot_id(slot_id)
        assert ref is not None  # the slot exists
        await runtime.reconciler.rebuild_after_change(ref.site_day)
    # A raised cap serves the slot's waitlist first.
    await runtime.waitlist.offer([slot_id])
    return await catalog.slot(slot_id)
