"""Rate-limit dependencies: which budget a route spends, and on whose account."""

from __future__ import annotations

import hashlib

from fastapi import Request

from service.runtime import Runtime


def caller_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def token_key(request: Request) -> str:
    # A digest: the token itself never becomes a Redis key.
    header = request.headers.get("authorization", "")
    return hashlib.sha256(header.encode()).hexdigest()[:32]


class Spend:
    """A route's rate-limit budget, as a dependency."""

    def __init__(self, *budgets: str) -> None:
        self.budgets = budgets

    async def __call__(self, request: Request) -> None:
        runtime: Runtime = request.app.state.runtime
        throttle = runtime.throttle
        if not throttle.enabled:
            return
        for budget in self.budgets:
            if budget == "holds":
                await throttle.hit(budget, token_key(request))
            else:
                await throttle.hit(budget, caller_address(request))


async def spend_login(runtime: Runtime, login: str) -> None:
    """Per-account throttle on log-ins, whatever address they come from."""
    digest = hashlib.sha256(login.encode()).hexdigest()[:32]
    await runtime.throttle.hit("logins-by-account", digest)


READS = Spend("reads")
HOLDS = Spend("holds", "holds-by-address")
LOGINS = Spend("logins")
