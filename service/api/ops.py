"""Liveness, readiness and metrics."""

from __future__ import annotations

import contextlib

from fastapi import Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from capacity.errors import CapacityUnavailable
from service import access
from service.access import ANYONE
from service.deps import RuntimeDep
from service.metrics import refresh

# Probes and scrapers carry no token; nothing here reveals a visitor or a reservation.
router = access.router(tags=["ops"], dependencies=[Depends(ANYONE)])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready once counters were rebuilt from SQL and Redis and the database answer."""
    ready = runtime.ready
    try:
        await runtime.redis.ping()
    except Exception:
        ready = False
    status = 200 if ready else 503
    return JSONResponse({"ready": ready}, status_code=status)


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics."""
    # Without Redis the gauges keep their last values; /readyz tells Redis is away.
    with contextlib.suppress(CapacityUnavailable):
        await refresh(runtime)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
