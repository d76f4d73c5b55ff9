"""Staff tokens (admins only): each with a role, its sites and, for gate devices, a gate."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Path, Response

from booking.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from booking.schemas import TokenCreate, TokenPublic
from service import access
from service.access import AdminDep
from service.deps import RuntimeDep
from service.errors import problem_responses

router = access.router(prefix="/v1/tokens", tags=["staff"])

TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="The id POST returned")]


@router.post(
    "",
    status_code=201,
    response_model=TokenPublic,
    responses=problem_responses(Unauthorized, Forbidden, InvalidRequest),
)
async def create_token(body: TokenCreate, runtime: RuntimeDep, admin: AdminDep) -> TokenPublic:
    """Create a staff token; it is shown once, only its hash is kept."""
    return await runtime.accounts.create_staff_token(
        role=body.role,
        sites=body.sites,
        gate=body.gate,
        label=body.label or f"by {admin.actor}",
        ttl=timedelta(days=body.days),
    )


@router.delete(
    "/{token_id}",
    status_code=204,
    responses=problem_responses(Unauthorized, Forbidden, NotFound),
)
async def revoke_token(token_id: TokenId, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Revoke a token: it stops working at once here, within seconds on every replica."""
    await runtime.accounts.revoke(token_id)
    return Response(status_code=204)
