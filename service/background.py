"""The loops that run beside the API: hold sweeper, reconciler, slot generation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from service import metrics
from service.runtime import Runtime

log = logging.getLogger(__name__)


async def sweep_once(runtime: Runtime) -> int:
    expired = 0
    while True:
        batch = await runtime.booking.expire_due(limit=200)
        expired += batch
        if batch < 200:
            break
    metrics.EXPIRED.inc(expired)
    # A hold admitted just before its slot closed and written just after: the closure did
    # not see it, the sweeper does.
    await runtime.management.cancel_on_closed()
    # Fair releases whose time came are drawn, and their entries served in order.
    await runtime.draws.run_due()
    # Places that came back (expiries, cancellations, raised caps, refunds back on sale after
    # their policy's delay) go to the waitlists' heads.
    await runtime.waitlist.offer()
    return expired


async def webhooks_once(runtime: Runtime) -> int:
    """New outbox events become deliveries; due deliveries are sent (with their retries)."""
    await runtime.webhooks.fan_out()
    return await runtime.webhooks.deliver_due()


async def reconcile_once(runtime: Runtime) -> int:
    await runtime.booking.warm_replays()
    report = await runtime.reconciler.reconcile()
    per_site: dict[str, int] = defaultdict(int)
    for day in report.days:
        per_site[day.site_day.site] += day.missing + day.leaked
        metrics.REBUILDS.inc(int(day.rebuilt))
        metrics.RETURNED.inc(day.returned)
    for site, drift in per_site.items():
        metrics.DRIFT.labels(site=site).set(drift)
    return report.drift


async def end_of_day_once(runtime: Runtime) -> tuple[int, int]:
    return await runtime.gates.end_of_day()


async def generate_once(runtime: Runtime) -> int:
    created = await runtime.catalog.ensure_slots()
    if created:
        await runtime.reconciler.rebuild_missing()
    return created


async def _every(
    seconds: float, step: Callable[[], Awaitable[object]], name: str, stopping: asyncio.Event
) -> None:
    # A stop flag rather than cancellation alone: a step cancelled inside a client library
    # may swallow the CancelledError, and the loop must still end at shutdown.
    while not stopping.is_set():
        try:
            await step()
        except Exception:
            log.exception("%s failed; trying again in %.0f s", name, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)


class Loops:
    """The background loops of one process, started and stopped with the app."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._stopping = asyncio.Event()
        loops = [
            (settings.sweep_seconds, lambda: sweep_once(runtime), "sweeper"),
            (settings.reconcile_seconds, lambda: reconcile_once(runtime), "reconciler"),
            (settings.sweep_seconds, lambda: webhooks_once(runtime), "webhooks"),
            (3600.0, lambda: generate_once(runtime), "slot generation"),
            (60.0, lambda: end_of_day_once(runtime), "end of day"),
        ]
        self._tasks = [
            asyncio.create_task(_every(period, step, name, self._stopping), name=name)
            for period, step, name in loops
        ]

    async def stop(self, *, grace: float = 5.0) -> None:
        """Let a running step finish (a sweep in the middle of expiring holds), then stop."""
        self._stopping.set()
        _, late = await asyncio.wait(self._tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
