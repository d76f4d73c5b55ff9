"""Reading the outbox: notifications written with the changes they announce."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from booking.models import OutboxEvent
from booking.schemas import OutboxEventPublic


async def events(
    sessions: async_sessionmaker[AsyncSession], *, topic: str | None, after: int, limit: int
) -> list[OutboxEventPublic]:
    query = sa.select(OutboxEvent).where(col(OutboxEvent.id) > after)
    if topic is not None:
        query = query.where(col(OutboxEvent.topic) == topic)
    query = query.order_by(col(OutboxEvent.id)).limit(limit)
    async with sessions() as session:
        rows = (await session.execute(query)).scalars().all()
    return [
        OutboxEventPublic(
            id=row.id or 0,
            at=row.at,
            topic=row.topic,
            site=row.site_id,
            account_id=row.account_id,
            payload=row.payload,
            delivered_at=row.delivered_at,
        )
        for row in rows
    ]
