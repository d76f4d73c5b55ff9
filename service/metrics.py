"""Prometheus metrics (served at /metrics).

Counters move where things happen; the per-site gauges (people inside, alert level, open
holds) are read from Redis and SQL when Prometheus scrapes, so every replica reports the same
shared state and none has to keep it.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from capacity.alerts import rank
from service.runtime import Runtime

BOOKINGS = Counter(
    "tidegate_bookings_total",
    "Reservation changes that succeeded: held, confirmed, cancelled, rescheduled",
    ["change"],
)
REFUSALS = Counter("tidegate_refusals_total", "Requests refused, by problem code", ["code"])
EXPIRED = Counter("tidegate_holds_expired_total", "Holds expired by the sweeper")
OPEN_HOLDS = Gauge("tidegate_open_holds", "Holds waiting for confirmation, per site", ["site"])
INSIDE = Gauge("tidegate_people_inside", "People inside now, per site", ["site"])
LEVEL = Gauge(
    "tidegate_alert_level",
    "Alert level per site: 0 green, 1 yellow, 2 orange, 3 red, 4 pause",
    ["site"],
)
DRIFT = Gauge(
    "tidegate_counter_drift_units",
    "Units where Redis and SQL disagreed at the last reconcile, per site",
    ["site"],
)
REBUILDS = Counter("tidegate_counter_rebuilds_total", "Site-day counter rebuilds by the reconciler")
RETURNED = Counter("tidegate_leaked_units_returned_total", "Leaked units returned to sale")
REQUEST_SECONDS = Histogram(
    "tidegate_request_seconds",
    "Time to answer a request, by method and route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class RequestTimer:
    """A plain ASGI middleware timing each request by its route's path template (never the
    raw path: ids would make a label per reservation)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], path).observe(time.perf_counter() - started)


async def refresh(runtime: Runtime) -> None:
    """Read the shared per-site state into the gauges, just before a scrape."""
    holds = await runtime.booking.open_holds()
    for entry in await runtime.gates.live(None):
        OPEN_HOLDS.labels(site=entry.site).set(holds.get(entry.site, 0))
        INSIDE.labels(site=entry.site).set(entry.inside)
        LEVEL.labels(site=entry.site).set(rank(entry.level))
