"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

HOLDS = Counter("tidegate_holds_total", "Hold requests by outcome", ["outcome"])
EXPIRED = Counter("tidegate_holds_expired_total", "Holds expired by the sweeper")
DRIFT = Gauge(
    "tidegate_counter_drift_units",
    "Units where Redis and SQL disagreed at the last reconcile, per site",
    ["site"],
)
REBUILDS = Counter("tidegate_counter_rebuilds_total", "Site-day counter rebuilds by the reconciler")
RETURNED = Counter("tidegate_leaked_units_returned_total", "Leaked units returned to sale")
