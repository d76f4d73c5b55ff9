"""Site managers' tools: the catalog, its rules, and closures. Every change is audited.

Changes go to SQL first, in one transaction with their audit event; then the counters of the
site's days are rebuilt from SQL, so Redis takes the new caps, windows, limits and closures
at once. If Redis is unreachable at that moment, nothing is lost: the reconciler finds the
counters saying otherwise than SQL and rebuilds them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.catalog import check_pools, generate_slots, minute_of_day, parse_slot_id, zone
from booking.crowd import Crowd
from booking.errors import Conflict, InvalidRequest, NotFound
from booking.models import (
    AuditEvent,
    Gate,
    OutboxEvent,
    ReservationStatus,
    Site,
    SlotStatus,
    SlotTemplate,
)
from booking.reconcile import Reconciler
from booking.schemas import (
    CapacityPlanPublic,
    ClosureResult,
    GateCreate,
    GatePatch,
    GatePublic,
    GeneratedSlots,
    SiteCreate,
    SitePatch,
    TemplateCreate,
    TemplatePatch,
    TemplatePublic,
)
from booking.service import release_units
from booking.sites import Catalog
from capacity.clock import Clock
from capacity.counters import Counters
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay

log = logging.getLogger(__name__)

# Settings the counters carry: changing one rebuilds the site's days.
COUNTED = frozenset(
    {
        "daily_cap",
        "closed_weekdays",
        "horizon_days",
        "release_time",
        "same_day_sales",
        "party_size_limit",
        "account_day_limit",
        # kept in the counters too (capacity/scripts/room.lua, allocate.lua)
        "release_batches",
        "pool_rollover",
        "fair_release",
        "group_rules",
    }
)

CANCELLED_BY_SITE = "reservation.cancelled_by_site"


class Management:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        catalog: Catalog,
        crowd: Crowd,
        reconciler: Reconciler,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._counters = counters
        self._catalog = catalog
        self._crowd = crowd
        self._reconciler = reconciler
        self._clock = clock

    # sites -------------------------------------------------------------------------------

    async def create_site(self, body: SiteCreate, *, actor: str) -> None:
        site = Site(**{**body.model_dump(), **body.changes()})
        _check_hours(site)
        _check_release(site)
        try:
            async with self._sessions() as session, session.begin():
                if await repo.get_site(session, site.id) is not None:
                    raise Conflict(f"site {site.id} exists")
                session.add(site)
                await session.flush()
                await self._audit(session, actor, "site.create", site.id, site.id, {}, _row(site))
        except IntegrityError as error:  # created by a racing request
            raise Conflict(f"site {site.id} exists") from error

    async def update_site(self, site_id: str, body: SitePatch, *, actor: str) -> None:
        changes = body.changes()
        async with self._sessions() as session, session.begin():
            site = await self._site(session, site_id)
            before = {name: _plain(getattr(site, name)) for name in changes}
            for name, value in changes.items():
                setattr(site, name, value)
            _check_hours(site)
            _check_release(site)
            after = {name: _plain(getattr(site, name)) for name in changes}
            await self._audit(session, actor, "site.update", site_id, site_id, before, after)
        self._catalog.forget_rules(site_id)
        self._crowd.forget(site_id)
        made = 0
        if {"horizon_days", "closed_weekdays"} & changes.keys():
            # Days newly open or newly in the horizon get their slots now, not within the hour.
            made = await self._catalog.ensure_slots(site_ids=[site_id])
        if made or COUNTED & changes.keys():
            await self._recount(await self._days_from_today(site))

    async def apply_capacity_plan(
        self, plan: CapacityPlanPublic, zones: list[dict[str, Any]], *, actor: str
    ) -> None:
        """A capacity plan becomes the site's caps, its templates' capacities and those of its
        slots from today on, in one audited transaction; then the counters are rebuilt.
        Lowering a cap cancels nobody: sales stop until cancellations make room."""
        quotas = {quota.template_id: quota.quota for quota in plan.slot_quotas}
        by_start = {quota.start: quota.quota for quota in plan.slot_quotas}
        async with self._sessions() as session, session.begin():
            site = await self._site(session, plan.site)
            before: dict[str, Any] = {
                "instant_cap": site.instant_cap,
                "daily_cap": site.daily_cap,
                "average_stay_minutes": site.average_stay_minutes,
                "zones": site.zones,
            }
            site.zones = zones
            site.instant_cap = plan.instant_cap
            site.daily_cap = plan.daily_cap
            site.average_stay_minutes = plan.average_stay_minutes
            _check_hours(site)
            templates = await repo.templates_of(session, site.id)
            before["templates"] = {str(t.id): t.capacity for t in templates}
            for template in templates:
                template.capacity = quotas.get(template.id or 0, template.capacity)
            changed = 0
            for slot in await repo.slots_from(session, site.id, self._today(site)):
                quota = by_start.get(slot.start)
                if quota is not None and quota != slot.capacity:
                    slot.capacity = quota
                    changed += 1
            after = {
                "instant_cap": plan.instant_cap,
                "daily_cap": plan.daily_cap,
                "average_stay_minutes": plan.average_stay_minutes,
                "templates": {str(t.id): t.capacity for t in templates},
                "slots_changed": changed,
                "zones": zones,
            }
            await self._audit(session, actor, "site.capacity_plan", site.id, site.id, before, after)
        self._catalog.forget_rules(site.id)
        self._crowd.forget(site.id)
        await self._recount(await self._days_from_today(site))

    # gates -------------------------------------------------------------------------------

    async def add_gate(self, site_id: str, body: GateCreate, *, actor: str) -> GatePublic:
        gate = Gate(site_id=site_id, **body.model_dump())
        try:
            async with self._sessions() as session, session.begin():
                await self._site(session, site_id)
                if await repo.get_gate(session, gate.id) is not None:
                    raise Conflict(f"gate {gate.id} exists")
                session.add(gate)
                await session.flush()
                await self._audit(session, actor, "gate.create", site_id, gate.id, {}, _row(gate))
        except IntegrityError as error:
            raise Conflict(f"gate {gate.id} exists") from error
        return GatePublic.model_validate(gate, from_attributes=True)

    async def update_gate(
        self, site_id: str, gate_id: str, body: GatePatch, *, actor: str
    ) -> GatePublic:
        changes = body.changes()
        async with self._sessions() as session, session.begin():
            gate = await repo.get_gate(session, gate_id)
            if gate is None or gate.site_id != site_id:
                raise NotFound(f"no gate {gate_id} at {site_id}")
            before = {name: _plain(getattr(gate, name)) for name in changes}
            for name, value in changes.items():
                setattr(gate, name, value)
            await self._audit(session, actor, "gate.update", site_id, gate_id, before, changes)
            public = GatePublic.model_validate(gate, from_attributes=True)
        return public

    # slot templates and slots ------------------------------------------------------------

    async def templates(self, site_id: str) -> list[TemplatePublic]:
        async with self._sessions() as session:
            await self._site(session, site_id)
            return [_template_view(t) for t in await repo.templates_of(session, site_id)]

    async def add_template(
        self, site_id: str, body: TemplateCreate, *, actor: str
    ) -> TemplatePublic:
        """A template's slots are made at once over the site's horizon, and go on sale."""
        template = SlotTemplate(site_id=site_id, **body.model_dump())
        _check_template(template)
        async with self._sessions() as session, session.begin():
            site = await self._site(session, site_id)
            session.add(template)
            await session.flush()
            public = _template_view(template)
            await self._audit(
                session,
                actor,
                "template.create",
                site_id,
                f"template:{template.id}",
                {},
                public.model_dump(mode="json"),
            )
        if await self._catalog.ensure_slots(site_ids=[site_id]):
            await self._recount(await self._days_from_today(site))
        return public

    async def update_template(
        self, site_id: str, template_id: int, body: TemplatePatch, *, actor: str
    ) -> TemplatePublic:
        """Changes the slots generated from now on; slots that exist keep their times and caps
        (change a slot's cap with PATCH /v1/slots/{id})."""
        changes = body.changes()
        async with self._sessions() as session, session.begin():
            template = await self._template(session, site_id, template_id)
            before = _template_view(template).model_dump(mode="json")
            for name, value in changes.items():
                setattr(template, name, value)
            _check_template(template)
            public = _template_view(template)
            await self._audit(
                session,
                actor,
                "template.update",
                site_id,
                f"template:{template_id}",
                before,
                public.model_dump(mode="json"),
            )
        return public

    async def delete_template(self, site_id: str, template_id: int, *, actor: str) -> None:
        async with self._sessions() as session, session.begin():
            template = await self._template(session, site_id, template_id)
            before = _template_view(template).model_dump(mode="json")
            await session.delete(template)
            await self._audit(
                session, actor, "template.delete", site_id, f"template:{template_id}", before, {}
            )

    async def generate(
        self, site_id: str, first: date, last: date, *, actor: str
    ) -> GeneratedSlots:
        """Make the slots of a date range from the site's templates (existing slots stay)."""
        async with self._sessions() as session, session.begin():
            site = await self._site(session, site_id)
            today = self._today(site)
            if first < today:
                raise InvalidRequest(
                    field="from", rule="not-past", message="slots cannot be made for past days"
                )
            templates = await repo.templates_of(session, site_id)
            dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            slots = generate_slots(site, templates, dates)
            existing = await repo.existing_slot_ids(session, [s.id for s in slots])
            new = [s for s in slots if s.id not in existing]
            session.add_all(new)
            await self._audit(
                session,
                actor,
                "slots.generate",
                site_id,
                f"{site_id}:{first.isoformat()}..{last.isoformat()}",
                {},
                {"from": first.isoformat(), "to": last.isoformat(), "created": len(new)},
            )
        await self._recount({SiteDay(site_id, s.visit_date) for s in new})
        return GeneratedSlots(site=site_id, first=first, last=last, created=len(new))

    # closures ----------------------------------------------------------------------------

    async def close_slot(self, slot_id: str, reason: str, *, actor: str) -> ClosureResult:
        async with self._sessions() as session:
            slot = await repo.get_slot(session, slot_id)
        if slot is None:
            raise NotFound(f"no slot {slot_id}")
        return await self._close(slot.site_id, [slot_id], reason, actor, "slot.close", slot_id)

    async def close_day(
        self, site_id: str, visit_date: date, reason: str, *, actor: str
    ) -> ClosureResult:
        async with self._sessions() as session:
            await self._site(session, site_id)
            slots = await repo.slots_of_day(session, site_id, visit_date)
        target = f"{site_id}:{visit_date.isoformat()}"
        return await self._close(site_id, [s.id for s in slots], reason, actor, "day.close", target)

    async def close_site(self, site_id: str, reason: str, *, actor: str) -> ClosureResult:
        """Close a whole site from today on: every slot, and every day generated later."""
        async with self._sessions() as session, session.begin():
            site = await self._site(session, site_id)
            before = site.closed_reason
            site.closed_reason = reason
            await self._audit(
                session,
                actor,
                "site.close",
                site_id,
                site_id,
                {"closed_reason": before},
                {"closed_reason": reason},
            )
            session.add(
                OutboxEvent(
                    at=self._clock.now(),
                    topic="site.closed",
                    site_id=site_id,
                    payload={
                        "site": site_id,
                        "reason": reason,
                        "from": self._today(site).isoformat(),
                    },
                )
            )
            slots = await repo.slots_from(session, site_id, self._today(site))
        return await self._close(
            site_id, [s.id for s in slots], reason, actor, "site.close.slots", site_id
        )

    async def reopen_slot(self, slot_id: str, *, actor: str) -> ClosureResult:
        async with self._sessions() as session:
            slot = await repo.get_slot(session, slot_id)
        if slot is None:
            raise NotFound(f"no slot {slot_id}")
        return await self._reopen(slot.site_id, [slot_id], actor, "slot.reopen", slot_id)

    async def reopen_day(self, site_id: str, visit_date: date, *, actor: str) -> ClosureResult:
        async with self._sessions() as session:
            await self._site(session, site_id)
            slots = await repo.slots_of_day(session, site_id, visit_date)
        target = f"{site_id}:{visit_date.isoformat()}"
        return await self._reopen(site_id, [s.id for s in slots], actor, "day.reopen", target)

    async def reopen_site(self, site_id: str, *, actor: str) -> ClosureResult:
        """Reopen a site and every one of its slots from today on."""
        async with self._sessions() as session, session.begin():
            site = await self._site(session, site_id)
            before = site.closed_reason
            site.closed_reason = None
            await self._audit(
                session,
                actor,
                "site.reopen",
                site_id,
                site_id,
                {"closed_reason": before},
                {"closed_reason": None},
            )
            slots = await repo.slots_from(session, site_id, self._today(site))
        return await self._reopen(
            site_id, [s.id for s in slots], actor, "site.reopen.slots", site_id
        )

    async def _close(
        self,
        site_id: str,
        slot_ids: Sequence[str],
        reason: str,
        actor: str,
        action: str,
        target: str,
    ) -> ClosureResult:
        # 1. SQL: the slots are closed (audited).
        async with self._sessions() as session, session.begin():
            changed = await repo.set_slot_status(
                session, slot_ids, SlotStatus.closed, closed_reason=reason
            )
            await self._audit(
                session,
                actor,
                action,
                site_id,
                target,
                {"status": "open", "slots": changed},
                {"status": "closed", "reason": reason, "slots": changed},
            )
        # 2. Redis: stop selling them, before anyone is cancelled.
        days = {ref.site_day for ref in map(parse_slot_id, slot_ids) if ref is not None}
        await self._recount(days)
        # 3. SQL, then Redis: cancel what they held, and give the places back.
        cancelled, released = await self.cancel_on_closed(slot_ids=slot_ids)
        return ClosureResult(
            site=site_id,
            slots=list(changed),
            reason=reason,
            cancelled_reservations=cancelled,
            released_places=released,
        )

    async def _reopen(
        self, site_id: str, slot_ids: Sequence[str], actor: str, action: str, target: str
    ) -> ClosureResult:
        """Put closed slots back on sale. Reservations the closure cancelled stay cancelled:
        their owners were told and may have booked elsewhere."""
        async with self._sessions() as session, session.begin():
            changed = await repo.set_slot_status(
                session, slot_ids, SlotStatus.open, closed_reason=None
            )
            await self._audit(
                session,
                actor,
                action,
                site_id,
                target,
                {"status": "closed", "slots": changed},
                {"status": "open", "slots": changed},
            )
        await self._recount({ref.site_day for ref in map(parse_slot_id, changed) if ref})
        return ClosureResult(
            site=site_id, slots=changed, reason=None, cancelled_reservations=0, released_places=0
        )

    async def cancel_on_closed(
        self, *, slot_ids: Sequence[str] | None = None, limit: int = 500
    ) -> tuple[int, int]:
        """Cancel the reservations that still hold places in closed slots, tell their owners
        what they can have instead (an outbox event each), and give the places back.

        Run by every closure and by the sweeper, which catches a hold that was admitted just
        before its slot closed and written just after. Returns (reservations, places).
        """
        now = self._clock.now()
        since = now.date() - timedelta(days=1)  # UTC against site time: a day of slack
        async with self._sessions() as session:
            due = await repo.active_in_closed_slots(session, slot_ids, since=since, limit=limit)
        if not due:
            return 0, 0
        offers = {
            reservation.id: await self._crowd.instead_of(
                reservation.slot_id, party=reservation.party_size, fresh=True
            )
            for reservation in due
        }
        async with self._sessions() as session, session.begin():
            reasons = await repo.closed_reasons(session, {r.slot_id for r in due})
            changed: list[str] = []
            for reservation in due:
                reason = reasons.get(reservation.slot_id) or "closed by the site"
                alternatives = [a.as_dict() for a in offers[reservation.id]]
                moved = await repo.move_status(
                    session,
                    [reservation.id],
                    from_statuses=[ReservationStatus.held, ReservationStatus.confirmed],
                    to=ReservationStatus.cancelled_by_site,
                    now=now,
                    cancel_reason=reason,
                    alternatives=alternatives,
                )
                if not moved:  # cancelled or expired meanwhile: its own path released it
                    continue
                changed.append(reservation.id)
                session.add(
                    OutboxEvent(
                        at=now,
                        topic=CANCELLED_BY_SITE,
                        site_id=reservation.site_id,
                        account_id=reservation.owner_id,
                        payload={
                            "reservation_id": reservation.id,
                            "site": reservation.site_id,
                            "slot_id": reservation.slot_id,
                            "date": reservation.visit_date.isoformat(),
                            "party_size": reservation.party_size,
                            "reason": reason,
                            "alternatives": alternatives,
                        },
                    )
                )
            visitors = list(await repo.visitors_of(session, changed)) if changed else []
        await release_units(
            self._counters, visitors, {r.id: r.owner_id for r in due if r.id in changed}
        )
        if changed:
            log.info("reservations cancelled by site", extra={"count": len(changed)})
        return len(changed), len(visitors)

    # helpers -----------------------------------------------------------------------------

    async def _recount(self, days: Iterable[SiteDay]) -> None:
        """Rebuild the counters of these days from SQL (the reconciler retries on failure)."""
        for site_day in sorted(days, key=str):
            try:
                await self._reconciler.rebuild_after_change(site_day)
            except CapacityUnavailable:
                log.warning("counters not rebuilt: Redis unreachable for %s", site_day)

    async def _days_from_today(self, site: Site) -> set[SiteDay]:
        async with self._sessions() as session:
            slots = await repo.slots_from(session, site.id, self._today(site))
        return {SiteDay(site.id, slot.visit_date) for slot in slots}

    def _today(self, site: Site) -> date:
        return self._clock.now().astimezone(zone(site.timezone)).date()

    async def _site(self, session: AsyncSession, site_id: str) -> Site:
        site = await repo.get_site(session, site_id)
        if site is None:
            raise NotFound(f"no site {site_id}")
        return site

    async def _template(
        self, session: AsyncSession, site_id: str, template_id: int
    ) -> SlotTemplate:
        template = await repo.get_template(session, template_id)
        if template is None or template.site_id != site_id:
            raise NotFound(f"no slot template {template_id} at {site_id}")
        return template

    async def _audit(
        self,
        session: AsyncSession,
        actor: str,
        action: str,
        site_id: str,
        target: str,
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> None:
        await repo.add_audit(
            session,
            AuditEvent(
                at=self._clock.now(),
                actor=actor,
                action=action,
                site_id=site_id,
                target=target,
                before={k: _plain(v) for k, v in before.items()},
                after={k: _plain(v) for k, v in after.items()},
            ),
        )


def _check_release(site: Site) -> None:
    """A date's slots are made `horizon_days` ahead: no batch may put it on sale earlier."""
    for position, batch in enumerate(site.release_batches or []):
        if batch["days_before"] > site.horizon_days:
            raise InvalidRequest(
                field=f"release_batches[{position}].days_before",
                rule="within-horizon",
                message=f"a date's slots exist {site.horizon_days} days ahead (horizon_days)",
            )


def _check_hours(site: Site) -> None:
    if not site.opens < site.closes:
        raise InvalidRequest(field="closes", rule="after-opens", message="closes before it opens")
    if not site.opens <= site.last_entry <= site.closes:
        raise InvalidRequest(
            field="last_entry",
            rule="within-opening-hours",
            message="the last entry must be between opening and closing",
        )
    if site.instant_cap > site.daily_cap:
        raise InvalidRequest(
            field="instant_cap",
            rule="at-most-daily-cap",
            message="more people inside at once than a whole day admits",
        )


def _check_template(template: SlotTemplate) -> None:
    check_pools(template.pools, template.capacity)
    if not template.start < template.end:
        raise InvalidRequest(field="end", rule="after-start", message="a slot ends after it starts")
    span = minute_of_day(template.end) - minute_of_day(template.start)
    if template.repeat_minutes is not None and template.repeat_minutes > span:
        raise InvalidRequest(
            field="repeat_minutes",
            rule="fits-window",
            message="the repeat is longer than the window between start and end",
        )


def _template_view(template: SlotTemplate) -> TemplatePublic:
    return TemplatePublic(
        id=template.id or 0,
        site=template.site_id,
        label=template.label,
        start=template.start,
        end=template.end,
        capacity=template.capacity,
        repeat_minutes=template.repeat_minutes,
        weekdays=list(template.weekdays),
        pools=template.pools,
    )


def _row(model: Site | Gate) -> dict[str, Any]:
    return {k: _plain(v) for k, v in model.model_dump(exclude={"sources"}).items()}


def _plain(value: Any) -> Any:
    """JSON-ready: times and dates as ISO text."""
    if isinstance(value, date | datetime) or hasattr(value, "isoformat"):
        return value.isoformat()
    return value
