"""The loops that run beside the API: hold sweeper, reconciler, slot generation."""

from __future__ import annotations

import asyncio
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
    return expired


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


async def generate_once(runtime: Runtime) -> int:
    created = await runtime.catalog.ensure_slots()
    if created:
        await runtime.reconciler.rebuild_missing()
    return created


async def _every(seconds: float, step: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; trying again in %.0f s", name, seconds)
        await asyncio.sleep(seconds)


def start(runtime: Runtime) -> list[asyncio.Task[None]]:
    settings = runtime.settings
    loops = [
        (settings.sweep_seconds, lambda: sweep_once(runtime), "sweeper"),
        (settings.reconcile_seconds, lambda: reconcile_once(runtime), "reconciler"),
        (3600.0, lambda: generate_once(runtime), "slot generation"),
    ]
    return [asyncio.create_task(_every(s, step, name), name=name) for s, step, name in loops]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
