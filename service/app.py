"""The FastAPI application: `create_app()` and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service import background, errors
from service.api import (
    accounts,
    audit,
    crowd,
    dashboard,
    draws,
    groups,
    live,
    manage,
    ops,
    outbox,
    reports,
    reservations,
    sites,
    tickets,
    tokens,
    waitlist,
    webhooks,
    window,
)
from service.bodies import BodyRules
from service.logs import RequestIds
from service.metrics import RequestTimer
from service.runtime import Runtime
from service.settings import Settings
from service.text_rules import NoNulCharacters

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# At shutdown, uvicorn waits for the requests being answered (`serve --graceful-seconds`), then
# cancels the rest and shuts the app down at once. The cancelled ones still give their units
# back to Redis as they unwind: the runtime stays open this much longer for them.
UNWIND_SECONDS = 10.0


class InFlight:
    """A plain ASGI middleware counting the requests being answered, so that the lifespan
    closes the runtime only after the last one has finished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def finished(self, seconds: float) -> bool:
        """Wait until no request is being answered; False if some still are after `seconds`."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True


class Tidegate(FastAPI):
    """The app, with what must wrap even Starlette's own error handling."""

    in_flight: InFlight | None = None

    def build_middleware_stack(self) -> ASGIApp:
        # Outside ServerErrorMiddleware: an unexpected error's log line and its 500 answer
        # carry the request id too, and the runtime outlives the request that failed.
        self.in_flight = InFlight(super().build_middleware_stack())
        return RequestIds(self.in_flight)


async def start(runtime: Runtime) -> None:
    """Make today's horizon of slots and build every missing counter before serving."""
    created = await runtime.catalog.ensure_slots()
    built = await runtime.reconciler.rebuild_missing()
    await runtime.booking.warm_replays()
    runtime.ready = True
    log.info("ready: %d new slots, %d site-days counted from SQL", created, built)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; a given `runtime` is used as is (tests), otherwise one is made."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        current = runtime or Runtime.build(settings or Settings())
        app.state.runtime = current
        loops = None
        try:
            await start(current)
            if current.settings.background:
                loops = background.Loops(current)
            yield
        finally:
            if loops is not None:
                await loops.stop()
            in_flight = app.in_flight
            if in_flight is not None and not await in_flight.finished(UNWIND_SECONDS):
                log.error("closing with %d requests still being answered", in_flight.count)
            if own:
                await current.close()

    app = Tidegate(
        title="tidegate",
        version="0.1.0",
        summary="Timed-entry booking and crowd capacity for Beijing's core-area scenic spots",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    # Every body here is a small JSON object; anything bigger is refused unread (413).
    app.add_middleware(BodyRules, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(NoNulCharacters)
    app.add_middleware(RequestTimer)
    errors.install(app)
    modules = (
        sites,
        manage,
        accounts,
        reservations,
        waitlist,
        draws,
        groups,
        webhooks,
        window,
        tickets,
        crowd,
        live,
        tokens,
        audit,
        reports,
        outbox,
        ops,
        dashboard,
    )
    for module in modules:
        app.include_router(module.router)
    return app
