"""Liveness, readiness and metrics."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
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
    checks = {"counters": runtime.ready, "redis": True, "database": True}
    try:
        await runtime.redis.ping()
    except Exception:
        checks["redis"] = False
    try:
        async with runtime.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    except Exception:
        checks["database"] = False
    ready = all(checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics."""
    # Without Redis the gauges keep their last values; /readyz tells Redis is away.
    with contextlib.suppress(CapacityUnavailable):
        await refresh(runtime)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
