"""Load the demo sites of Beijing's core area (`demo/sites.json`, with a source per figure)."""

from __future__ import annotations

import json
from datetime import time
from importlib import resources
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.models import Gate, Site, SlotTemplate
from booking.schemas import JSON_SETTINGS, SiteSettings


def demo_data() -> dict[str, Any]:
    text = resources.files("booking").joinpath("demo", "sites.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _times(raw: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: time.fromisoformat(raw[name]) for name in names}


async def load_demo(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Insert or update every demo site, its gates and its slot templates (idempotent)."""
    data = demo_data()
    async with sessions() as session, session.begin():
        for raw in data["sites"]:
            fields = {k: v for k, v in raw.items() if k not in ("gates", "slot_templates")}
            fields.update(_times(raw, "opens", "closes", "last_entry", "release_time"))
            # Schedules and policies as the API stores them (checked by the same rules).
            kept = {name: raw[name] for name in JSON_SETTINGS if name in raw}
            fields.update(SiteSettings.model_validate(kept).changes())
            site = await repo.get_site(session, raw["id"])
            if site is None:
                session.add(Site(**fields))
            else:
                for name, value in fields.items():
                    setattr(site, name, value)
            await session.flush()
            for gate in raw["gates"]:
                await session.merge(Gate(site_id=raw["id"], **gate))
            existing = {t.label: t for t in await repo.templates_of(session, raw["id"])}
            for template in raw["slot_templates"]:
                values = {**template, **_times(template, "start", "end")}
                current = existing.get(template["label"])
                if current is None:
                    session.add(SlotTemplate(site_id=raw["id"], **values))
                else:
                    for name, value in values.items():
                        setattr(current, name, value)
    return len(data["sites"])
