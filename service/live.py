"""The operators' live feed: every site's occupancy, flow, alert level and places left today,
pushed at least every `interval` seconds and at once when a site's alert level changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence

from capacity.keys import SiteDay
from service.runtime import Runtime


async def live_events(
    runtime: Runtime,
    site_ids: Sequence[str] | None,
    *,
    interval: float = 2.0,
    tick: float = 0.25,
    limit: int | None = None,
) -> AsyncGenerator[dict[str, str]]:
    """Server-sent events: `occupancy` every `interval` (every site's state), `level` as soon
    as a level changes (checked every `tick`), then the sites' state again."""
    sent = 0
    levels: dict[str, str] = {}
    while limit is None or sent < limit:
        feed = await runtime.gates.live(site_ids)
        changed = [s for s in feed if levels and levels.get(s.site) != s.level]
        levels = {s.site: s.level for s in feed}
        days = [SiteDay(s.site, s.date) for s in feed]
        event = "level" if changed else "occupancy"
        yield {
            "event": event,
            "data": json.dumps([s.model_dump(mode="json") for s in feed], separators=(",", ":")),
        }
        sent += 1
        if limit is not None and sent >= limit:
            return
        waited = 0.0
        while waited < interval:
            await asyncio.sleep(tick)
            waited += tick
            if await runtime.gates.levels(days) != levels:
                break
