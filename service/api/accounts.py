"""Tourists' accounts and sessions."""

from __future__ import annotations

from fastapi import Depends

from booking.errors import AccountExists, Unauthorized
from booking.schemas import AccountCreate, SessionCreate, TokenPublic
from capacity.throttle import RateLimited
from service import access
from service.access import ANYONE
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import LOGINS, spend_login

router = access.router(prefix="/v1", tags=["accounts"])


@router.post(
    "/accounts",
    status_code=201,
    response_model=TokenPublic,
    responses=problem_responses(AccountExists, RateLimited),
    dependencies=[Depends(ANYONE), Depends(LOGINS)],
)
async def register(body: AccountCreate, runtime: RuntimeDep) -> TokenPublic:
    """Create a tourist account with an email or a mobile number; returns a bearer token."""
    await spend_login(runtime, body.login[1])
    return await runtime.accounts.register(body)


@router.post(
    "/sessions",
    response_model=TokenPublic,
    responses=problem_responses(Unauthorized, RateLimited),
    dependencies=[Depends(ANYONE), Depends(LOGINS)],
)
async def log_in(body: SessionCreate, runtime: RuntimeDep) -> TokenPublic:
    """Log in; returns a new bearer token."""
    await spend_login(runtime, body.login[1])
    return await runtime.accounts.login(body)
