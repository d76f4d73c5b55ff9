"""The audit log of staff changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from booking.errors import Forbidden, NotFound, Unauthorized
from booking.schemas import AuditEventPublic
from service import access
from service.access import ManagerDep, ensure_site
from service.deps import CatalogDep
from service.errors import problem_responses

router = access.router(prefix="/v1", tags=["staff"])


@router.get(
    "/audit",
    response_model=list[AuditEventPublic],
    responses=problem_responses(Unauthorized, Forbidden, NotFound),
)
async def audit_log(
    site: Annotated[str, Query(max_length=64, description="The site whose changes to list")],
    catalog: CatalogDep,
    staff: ManagerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditEventPublic]:
    """Every staff change to a site, newest first (admins, and the site's managers)."""
    ensure_site(staff, site)
    return await catalog.audit(site, limit=limit, offset=offset)
