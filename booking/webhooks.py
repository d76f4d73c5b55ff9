"""Webhooks: the outbox's events delivered to the apps and staff that subscribed to them.

- An event is written to the outbox in the same transaction as the change it announces.
- A fan-out step turns each new event into one delivery per matching subscription made
  before the event (unique per subscription and event, so two workers fanning out at once
  make it once), and marks the event handed over.
- A delivery step POSTs due deliveries, each taken with a lease (a guarded update), so two
  workers never send one delivery at the same time. A 2xx answer ends it; anything else is
  retried with exponential backoff, up to MAX_ATTEMPTS, then it is `failed` until replayed.

Every delivery is signed: `Tidegate-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`
with the subscription's secret, and carries `Tidegate-Event-Id` and `Tidegate-Timestamp`.
A delivery may arrive more than once (a timeout after the receiver acted, a replay): a
receiver that remembers the event ids it acted on gets each effect exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from booking.errors import NotFound
from booking.models import (
    DeliveryStatus,
    OutboxEvent,
    WebhookDelivery,
    WebhookSubscription,
)
from booking.schemas import WEBHOOK_TOPICS, DeliveryPublic, SubscriptionPublic
from capacity.clock import Clock

log = logging.getLogger(__name__)

TOPICS = WEBHOOK_TOPICS
MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(seconds=5)
LAST_RETRY = timedelta(hours=1)
LEASE = timedelta(seconds=60)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... doubling after each failed attempt, at most an hour."""
    later: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(later, LAST_RETRY)


class Webhooks:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        http: httpx.AsyncClient,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._http = http

    # subscriptions -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        url: str,
        topics: Sequence[str],
        actor: str,
        account_id: str | None = None,
        site_id: str | None = None,
    ) -> SubscriptionPublic:
        """A subscription to one account's events or one site's; its secret is shown once."""
        assert (account_id is None) != (site_id is None)
        subscription = WebhookSubscription(
            id=secrets.token_hex(16),
            account_id=account_id,
            site_id=site_id,
            url=url,
            secret=f"whsec_{secrets.token_urlsafe(32)}",
            topics=sorted(set(topics)),
            created_by=actor,
            created_at=self._clock.now(),
        )
        async with self._sessions() as session, session.begin():
            session.add(subscription)
        return _public(subscription, with_secret=True)

    async def subscriptions(
        self, *, account_id: str | None = None, site_id: str | None = None
    ) -> list[SubscriptionPublic]:
        async with self._sessions() as session:
            rows = await session.execute(
                sa.select(WebhookSubscription)
                .where(*_scope(account_id, site_id), col(WebhookSubscription.disabled_at).is_(None))
                .order_by(col(WebhookSubscription.created_at))
            )
            return [_public(s) for s in rows.scalars()]

    async def unsubscribe(
        self, subscription_id: str, *, account_id: str | None = None, site_id: str | None = None
    ) -> None:
        """Stop a subscription; stopping it again changes nothing."""
        async with self._sessions() as session, session.begin():
            subscription = await self._own(
                session, subscription_id, account_id, site_id, stopped_too=True
            )
            subscription.disabled_at = subscription.disabled_at or self._clock.now()

    async def deliveries(
        self,
        subscription_id: str,
        *,
        account_id: str | None = None,
        site_id: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryPublic]:
        """The delivery log of a subscription, newest first."""
        async with self._sessions() as session:
            await self._own(session, subscription_id, account_id, site_id)
            rows = await session.execute(
                sa.select(WebhookDelivery)
                .where(col(WebhookDelivery.subscription_id) == subscription_id)
                .order_by(col(WebhookDelivery.id).desc())
                .limit(limit)
            )
            return [_delivery(d) for d in rows.scalars()]

    async def replay(
        self,
        subscription_id: str,
        delivery_id: int,
        *,
        account_id: str | None = None,
        site_id: str | None = None,
    ) -> DeliveryPublic:
        """Send a delivery again, now (its event id is the same: receivers deduplicate)."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            await self._own(session, subscription_id, account_id, site_id)
            delivery = await session.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.subscription_id != subscription_id:
                raise NotFound(f"no delivery {delivery_id}")
            # The lease stays: a send in progress is not doubled by the replay.
            delivery.status = DeliveryStatus.pending
            delivery.next_attempt_at = now
            return _delivery(delivery)

    # the worker's steps ------------------------------------------------------------------

    async def fan_out(self, *, limit: int = 500) -> int:
        """One delivery per new event and matching subscription; the event is then marked
        handed over (`delivered_at` on the outbox). Events are found by that mark, not by a
        cursor over ids, so one committed late (a longer transaction with a lower id) is not
        skipped. Returns the deliveries made."""
        now = self._clock.now()
        made = 0
        async with self._sessions() as session, session.begin():
            events = list(
                (
                    await session.execute(
                        sa.select(OutboxEvent)
                        .where(col(OutboxEvent.delivered_at).is_(None))
                        .order_by(col(OutboxEvent.id))
                        .limit(limit)
                    )
                ).scalars()
            )
            if not events:
                return 0
            subscriptions = list(
                (
                    await session.execute(
                        sa.select(WebhookSubscription).where(
                            col(WebhookSubscription.disabled_at).is_(None)
                        )
                    )
                ).scalars()
            )
            for event in events:
                for subscription in subscriptions:
                    if not _matches(subscription, event):
                        continue
                    # In a savepoint: a delivery another worker made already is skipped.
                    try:
                        async with session.begin_nested():
                            await session.execute(
                                sa.insert(WebhookDelivery).values(
                                    subscription_id=subscription.id,
                                    event_id=event.id,
                                    topic=event.topic,
                                    status=DeliveryStatus.pending.value,
                                    attempts=0,
                                    next_attempt_at=event.at,
                                    created_at=now,
                                )
                            )
                        made += 1
                    except IntegrityError:
                        continue
            await session.execute(
                sa.update(OutboxEvent)
                .where(
                    col(OutboxEvent.id).in_([e.id for e in events]),
                    col(OutboxEvent.delivered_at).is_(None),
                )
                .values(delivered_at=now)
            )
        return made

    async def deliver_due(self, *, limit: int = 50) -> int:
        """Send the deliveries that are due, each under a lease. Returns those delivered."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            due = list(
                (
                    await session.execute(
                        sa.select(col(WebhookDelivery.id))
                        .where(
                            col(WebhookDelivery.status) == DeliveryStatus.pending.value,
                            # An unsubscribed app gets nothing more, retries included.
                            col(WebhookDelivery.subscription_id).in_(
                                sa.select(col(WebhookSubscription.id)).where(
                                    col(WebhookSubscription.disabled_at).is_(None)
                                )
                            ),
                            col(WebhookDelivery.next_attempt_at) <= now,
                            sa.or_(
                                col(WebhookDelivery.lease_until).is_(None),
                                col(WebhookDelivery.lease_until) < now,
                            ),
                        )
                        .order_by(col(WebhookDelivery.id))
                        .limit(limit)
                    )
                ).scalars()
            )
            if not due:
                return 0
            claimed = [
                delivery_id or 0
                for delivery_id in (
                    await session.execute(
                        sa.update(WebhookDelivery)
                        .where(
                            col(WebhookDelivery.id).in_(due),
                            col(WebhookDelivery.status) == DeliveryStatus.pending.value,
                            sa.or_(
                                col(WebhookDelivery.lease_until).is_(None),
                                col(WebhookDelivery.lease_until) < now,
                            ),
                        )
                        .values(lease_until=now + LEASE)
                        .returning(col(WebhookDelivery.id))
                    )
                ).scalars()
            ]
        delivered = 0
        for delivery_id in sorted(claimed):
            delivered += await self._send(delivery_id)
        return delivered

    async def _send(self, delivery_id: int) -> int:
        async with self._sessions() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            event = await session.get(OutboxEvent, delivery.event_id)
            subscription = await session.get(WebhookSubscription, delivery.subscription_id)
        assert event is not None
        assert subscription is not None
        body = json.dumps(
            {
                "id": event.id,
                "topic": event.topic,
                "at": event.at.isoformat(),
                "site": event.site_id,
                "data": event.payload,
            },
            separators=(",", ":"),
        ).encode()
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tidegate-webhooks/1",
            "Tidegate-Event-Id": str(event.id),
            "Tidegate-Topic": event.topic,
            "Tidegate-Timestamp": str(timestamp),
            "Tidegate-Signature": signature(subscription.secret, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            answer = await self._http.post(subscription.url, content=body, headers=headers)
            status = answer.status_code
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:300]
        now = self._clock.now()
        attempts = delivery.attempts + 1
        ok = status is not None and 200 <= status < 300
        if ok:
            values: dict[str, object] = {
                "status": DeliveryStatus.delivered.value,
                "delivered_at": now,
            }
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": DeliveryStatus.failed.value}
        else:
            values = {"next_attempt_at": now + backoff(attempts)}
        async with self._sessions() as session, session.begin():
            await session.execute(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id)
                .values(
                    attempts=attempts,
                    last_status=status,
                    last_error=error or (None if ok else f"HTTP {status}"),
                    lease_until=None,
                    **values,
                )
            )
        if not ok:
            log.info("webhook %s for event %s: %s", delivery_id, event.id, error or status)
        return 1 if ok else 0

    async def _own(
        self,
        session: AsyncSession,
        subscription_id: str,
        account_id: str | None,
        site_id: str | None,
        *,
        stopped_too: bool = False,
    ) -> WebhookSubscription:
        subscription = await session.get(WebhookSubscription, subscription_id)
        if (
            subscription is None
            or (subscription.disabled_at is not None and not stopped_too)
            or subscription.account_id != account_id
            or subscription.site_id != site_id
        ):
            raise NotFound(f"no webhook {subscription_id}")
        return subscription


def _scope(account_id: str | None, site_id: str | None) -> list[sa.ColumnElement[bool]]:
    return [
        col(WebhookSubscription.account_id) == account_id
        if account_id is not None
        else col(WebhookSubscription.account_id).is_(None),
        col(WebhookSubscription.site_id) == site_id
        if site_id is not None
        else col(WebhookSubscription.site_id).is_(None),
    ]


def _matches(subscription: WebhookSubscription, event: OutboxEvent) -> bool:
    if event.topic not in TOPICS or event.at < subscription.created_at:
        return False
    if subscription.topics and event.topic not in subscription.topics:
        return False
    if subscription.account_id is not None:
        return event.account_id == subscription.account_id
    return subscription.site_id is not None and event.site_id == subscription.site_id


def _public(subscription: WebhookSubscription, *, with_secret: bool = False) -> SubscriptionPublic:
    return SubscriptionPublic(
        id=subscription.id,
        url=subscription.url,
        topics=list(subscription.topics),
        account=subscription.account_id,
        site=subscription.site_id,
        created_at=subscription.created_at,
        secret=subscription.secret if with_secret else None,
    )


def _delivery(delivery: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic(
        id=delivery.id or 0,
        event_id=delivery.event_id,
        topic=delivery.topic,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
    )
