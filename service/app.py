"""The FastAPI application: `create_app()` and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

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
from service.metrics import RequestTimer
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


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
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
            if own:
                await current.close()

    app = FastAPI(
        title="tidegate",
        version="0.1.0",
        summary="Timed-entry booking and crowd capacity for Beijing's core-area scenic spots",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    # Every body here is a small JSON object; anything bigger is refused unread (413).
    app.add_middleware(BodyRules, max_bytes=MAX_BODY_BYTES)
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
