"""Tourists' accounts and sessions.

Registering answers a bearer token at once and sends a one-time code to the email or phone;
the account is made when the code comes back with that token. Neither registering nor logging
in tells whether a login has an account.
"""

from __future__ import annotations

from fastapi import Depends

from booking.errors import Forbidden, InvalidRequest, Unauthorized
from booking.schemas import AccountCreate, AccountPublic, AccountVerify, SessionCreate, TokenPublic
from capacity.throttle import RateLimited
from service import access
from service.access import ANYONE, RegistrationDep
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import LOGINS, spend_login

router = access.router(prefix="/v1", tags=["accounts"])


@router.post(
    "/accounts",
    status_code=201,
    response_model=TokenPublic,
    responses=problem_responses(RateLimited),
    dependencies=[Depends(ANYONE), Depends(LOGINS)],
)
async def register(body: AccountCreate, runtime: RuntimeDep) -> TokenPublic:
    """Register with an email or a mainland mobile number and a password. Answers a bearer
    token with role `pending` and sends a six-digit code there (valid 15 minutes); send it
    back with POST /v1/accounts/verify and the same token becomes the tourist's."""
    await spend_login(runtime, body.login[1])
    return await runtime.accounts.register(body)


@router.post(
    "/accounts/verify",
    response_model=AccountPublic,
    responses=problem_responses(InvalidRequest, Unauthorized, Forbidden, RateLimited),
    dependencies=[Depends(LOGINS)],
)
async def verify(
    body: AccountVerify, runtime: RuntimeDep, registration: RegistrationDep
) -> AccountPublic:
    """Send back the code: the account is made and this token becomes its token. Five wrong
    codes void the registration (register again for a new code)."""
    await spend_login(runtime, registration.token_hash)
    return await runtime.accounts.verify(registration, body.code)


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
