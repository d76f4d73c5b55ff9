"""Webhook subscriptions: an app's, for its account's events; a site's staff, for the site's.

Deliveries are signed (`Tidegate-Signature: v1=<HMAC-SHA256 of "<timestamp>.<body>">` with
the subscription's secret, shown once when it is made), carry `Tidegate-Event-Id`, and are
retried with backoff; the delivery log shows each, and a replay sends one again.
"""

from __future__ import annotations

from fastapi import Response

from booking.errors import Forbidden, NotFound, Unauthorized
from booking.schemas import DeliveryPublic, SubscriptionPublic, SubscriptionRequest
from service import access
from service.access import SiteManagerDep, TouristDep
from service.api.params import RowId
from service.deps import RuntimeDep
from service.errors import problem_responses

router = access.router(prefix="/v1", tags=["webhooks"])

MINE = problem_responses(Unauthorized, NotFound)
SITES = problem_responses(Unauthorized, Forbidden, NotFound)
DeliveryId = RowId


# an app's, for its account ---------------------------------------------------------------


@router.post("/webhooks", status_code=201, response_model=SubscriptionPublic, responses=MINE)
async def subscribe(
    body: SubscriptionRequest, runtime: RuntimeDep, tourist: TouristDep
) -> SubscriptionPublic:
    """Deliver this account's events (its reservations and waitlist entries) to `url`; all
    topics unless `topics` names some. The answer shows the signing `secret`, once."""
    return await runtime.webhooks.subscribe(
        url=str(body.url), topics=body.topics, actor=tourist.actor, account_id=tourist.actor
    )


@router.get("/webhooks", response_model=list[SubscriptionPublic], responses=MINE)
async def subscriptions(runtime: RuntimeDep, tourist: TouristDep) -> list[SubscriptionPublic]:
    """This account's webhook subscriptions."""
    return await runtime.webhooks.subscriptions(account_id=tourist.actor)


@router.delete("/webhooks/{subscription_id}", status_code=204, responses=MINE)
async def unsubscribe(subscription_id: str, runtime: RuntimeDep, tourist: TouristDep) -> Response:
    """Stop a subscription (its pending deliveries are not sent)."""
    await runtime.webhooks.unsubscribe(subscription_id, account_id=tourist.actor)
    return Response(status_code=204)


@router.get(
    "/webhooks/{subscription_id}/deliveries",
    response_model=list[DeliveryPublic],
    responses=MINE,
)
async def deliveries(
    subscription_id: str, runtime: RuntimeDep, tourist: TouristDep
) -> list[DeliveryPublic]:
    """The delivery log: each event, its attempts, the last answer, newest first."""
    return await runtime.webhooks.deliveries(subscription_id, account_id=tourist.actor)


@router.post(
    "/webhooks/{subscription_id}/deliveries/{delivery_id}/replay",
    response_model=DeliveryPublic,
    responses=MINE,
)
async def replay(
    subscription_id: str, delivery_id: DeliveryId, runtime: RuntimeDep, tourist: TouristDep
) -> DeliveryPublic:
    """Send a delivery again now, with the same event id."""
    return await runtime.webhooks.replay(subscription_id, delivery_id, account_id=tourist.actor)


# a site's, for its staff -----------------------------------------------------------------


@router.post(
    "/sites/{site_id}/webhooks",
    status_code=201,
    response_model=SubscriptionPublic,
    responses=SITES,
)
async def subscribe_site(
    site_id: str, body: SubscriptionRequest, runtime: RuntimeDep, staff: SiteManagerDep
) -> SubscriptionPublic:
    """Deliver this site's events (reservations, waitlists, alert levels, closures) to `url`
    (the site's managers, admins). The answer shows the signing `secret`, once."""
    await runtime.catalog.site_record(site_id)
    return await runtime.webhooks.subscribe(
        url=str(body.url), topics=body.topics, actor=staff.actor, site_id=site_id
    )


@router.get("/sites/{site_id}/webhooks", response_model=list[SubscriptionPublic], responses=SITES)
async def site_subscriptions(
    site_id: str, runtime: RuntimeDep, staff: SiteManagerDep
) -> list[SubscriptionPublic]:
    """The site's webhook subscriptions."""
    return await runtime.webhooks.subscriptions(site_id=site_id)


@router.delete("/sites/{site_id}/webhooks/{subscription_id}", status_code=204, responses=SITES)
async def unsubscribe_site(
    site_id: str, subscription_id: str, runtime: RuntimeDep, staff: SiteManagerDep
) -> Response:
    await runtime.webhooks.unsubscribe(subscription_id, site_id=site_id)
    return Response(status_code=204)


@router.get(
    "/sites/{site_id}/webhooks/{subscription_id}/deliveries",
    response_model=list[DeliveryPublic],
    responses=SITES,
)
async def site_deliveries(
    site_id: str, subscription_id: str, runtime: RuntimeDep, staff: SiteManagerDep
) -> list[DeliveryPublic]:
    return await runtime.webhooks.deliveries(subscription_id, site_id=site_id)


@router.post(
    "/sites/{site_id}/webhooks/{subscription_id}/deliveries/{delivery_id}/replay",
    response_model=DeliveryPublic,
    responses=SITES,
)
async def site_replay(
    site_id: str,
    subscription_id: str,
    delivery_id: DeliveryId,
    runtime: RuntimeDep,
    staff: SiteManagerDep,
) -> DeliveryPublic:
    return await runtime.webhooks.replay(subscription_id, delivery_id, site_id=site_id)
