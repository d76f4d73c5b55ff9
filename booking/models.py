"""The record: SQL tables (ARCHITECTURE §4).

SQL is the proof half of "Redis decides, SQL proves": the partial unique indexes on
`visitor` make it impossible for two *active* visitors to hold the same slot unit, the same
day unit, or the same person's place twice on one site-day, whatever Redis said.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import JSON, Column, Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stores instants as naive UTC and gives them back aware, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give a UTC offset")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _instant(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class ReservationStatus(StrEnum):
    held = "held"
    confirmed = "confirmed"
    cancelled = "cancelled"
    expired = "expired"
    checked_in = "checked_in"
    completed = "completed"
    no_show = "no_show"
    cancelled_by_site = "cancelled_by_site"

    @property
    def holds_places(self) -> bool:
        return self in ACTIVE_STATUSES


ACTIVE_STATUSES = frozenset(
    {ReservationStatus.held, ReservationStatus.confirmed, ReservationStatus.checked_in}
)


class SlotStatus(StrEnum):
    open = "open"
    closed = "closed"


class Site(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name_zh: str = Field(max_length=100)
    name_en: str = Field(max_length=200)
    kind: str = Field(max_length=20)
    lat: float
    lon: float
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    opens: time
    closes: time
    last_entry: time
    closed_weekdays: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    daily_cap: int
    instant_cap: int
    average_stay_minutes: int
    horizon_days: int
    release_time: time
    same_day_sales: bool = True
    party_size_limit: int = 5
    real_name: bool = True
    # Against scalpers' accounts: active reservations one account may have at this site for
    # one visit day, and holds it may keep open here at once.
    account_day_limit: int = 3
    account_hold_limit: int = 2
    # Minutes a ticket may enter before its slot starts and after it ends (0 where the slots
    # are themselves the entry windows, like the Palace Museum's two sessions).
    entry_grace_minutes: int = 15
    # Shares of the caps at which the alert levels start; None: the LB/T 034-2014 practice.
    alert_thresholds: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    # The visiting zones of the applied capacity plan: name, area_m2, m2_per_person.
    zones: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    # Group reservations (schemas.GroupRules as JSON); None: the site takes no groups.
    group_rules: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # A fair release (schemas.FairRelease as JSON): requests in the pre-queue window before a
    # date goes on sale are drawn in a random order; None: first come, first served.
    fair_release: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # How places go on sale (schemas.ReleaseBatch, PoolRollover, RefundPolicy as JSON); None:
    # all at `horizon_days` before at `release_time`, pools kept until sales end, refunds at once.
    release_batches: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    pool_rollover: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    refund_policy: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Set while the whole site is closed by its managers (weather, a state event).
    closed_reason: str | None = Field(default=None, max_length=200)
    sources: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))


class Gate(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=100)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=64)
    name_zh: str = Field(max_length=100)
    name_en: str = Field(max_length=200)
    lat: float
    lon: float
    direction: str = Field(default="both", max_length=10)
    flow_per_minute: int = 60


class SlotTemplate(SQLModel, table=True):
    __tablename__: ClassVar[str] = "slot_template"

    id: int | None = Field(default=None, primary_key=True)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=64)
    label: str = Field(max_length=40)
    start: time
    end: time
    capacity: int
    repeat_minutes: int | None = None
    weekdays: list[int] = Field(default_factory=lambda: list(range(7)), sa_column=Column(JSON))
    # Places kept for a sales channel (online, window, group) in each slot made from it.
    pools: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))


class Slot(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("site_id", "visit_date", "start"),)

    id: str = Field(primary_key=True, max_length=100)
    site_id: str = Field(foreign_key="site.id", max_length=64)
    visit_date: date
    start: time
    end: time
    label: str = Field(default="", max_length=40)
    capacity: int
    status: SlotStatus = Field(default=SlotStatus.open, sa_type=sa.String(10))
    closed_reason: str | None = Field(default=None, max_length=200)
    # Places kept for a sales channel until the site's pool roll-over; the other channels
    # share the rest.
    pools: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))


class Account(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    email: str | None = Field(default=None, unique=True, max_length=254)
    phone: str | None = Field(default=None, unique=True, max_length=20)
    password_hash: str = Field(max_length=200)
    created_at: datetime = _instant()


class Registration(SQLModel, table=True):
    """A registration waiting for the code sent to its email or phone. The account exists
    only once the code comes back, so registering never tells whether a login is taken.
    Its bearer token (role "pending") may only send the code back."""

    id: str = Field(primary_key=True, max_length=32)
    token_hash: str = Field(unique=True, max_length=64)
    login: str = Field(index=True, max_length=254)
    channel: str = Field(max_length=10)
    password_hash: str = Field(max_length=200)
    code_hash: str = Field(max_length=64)
    attempts: int = 0
    created_at: datetime = _instant()
    expires_at: datetime = _instant()


class ApiToken(SQLModel, table=True):
    __tablename__: ClassVar[str] = "api_token"

    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: str | None = Field(default=None, foreign_key="account.id", index=True)
    role: str = Field(max_length=20)
    sites: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    gate: str | None = Field(default=None, max_length=100)
    label: str = Field(default="", max_length=100)
    created_at: datetime = _instant()
    expires_at: datetime = _instant()
    revoked_at: datetime | None = _instant(default=None)


class Reservation(SQLModel, table=True):
    __table_args__ = (
        sa.Index("ix_reservation_hold_expiry", "status", "hold_expires_at"),
        # A site-day's reservations, as a counter rebuild and the audit read them: without it
        # each read scans every reservation ever made (35 s to rebuild at 1,000,000).
        sa.Index("ix_reservation_site_day", "site_id", "visit_date", "status"),
    )

    id: str = Field(primary_key=True, max_length=32)
    owner_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", max_length=64)
    slot_id: str = Field(foreign_key="slot.id", index=True, max_length=100)
    visit_date: date
    status: ReservationStatus = Field(sa_type=sa.String(20))
    party_size: int
    hold_expires_at: datetime = _instant()
    ticket_secret: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    cancel_reason: str | None = Field(default=None, max_length=200)
    # Where it was sold: online (the apps), window (operators, on site) or group.
    channel: str = Field(default="online", max_length=10)
    # When a refund policy puts its places back on sale, if not at once.
    places_back_at: datetime | None = _instant(default=None)
    # What the owner is offered instead when the site cancels (a closure).
    alternatives: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = _instant()
    updated_at: datetime = _instant()


class Visitor(SQLModel, table=True):
    __table_args__ = (
        # The proof: two active visitors can never share a unit or a person's site-day.
        sa.Index(
            "uq_visitor_slot_unit",
            "slot_id",
            "slot_unit",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
        sa.Index(
            "uq_visitor_day_unit",
            "site_id",
            "visit_date",
            "day_unit",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
        sa.Index(
            "uq_visitor_person_day",
            "site_id",
            "visit_date",
            "id_hash",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: str = Field(foreign_key="reservation.id", index=True, max_length=32)
    site_id: str = Field(max_length=64)
    slot_id: str = Field(max_length=100)
    visit_date: date
    position: int
    name: str = Field(max_length=100)
    id_type: str = Field(max_length=20)
    id_hash: str = Field(max_length=64)
    id_masked: str = Field(max_length=40)
    slot_unit: int
    day_unit: int
    active: bool = True
    entered_at: datetime | None = _instant(default=None)
    entry_gate: str | None = Field(default=None, max_length=100)
    exited_at: datetime | None = _instant(default=None)
    exit_gate: str | None = Field(default=None, max_length=100)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__: ClassVar[str] = "idempotency_record"

    owner_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int
    body: str
    created_at: datetime = _instant()


class AuditEvent(SQLModel, table=True):
    __tablename__: ClassVar[str] = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _instant()
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60)
    site_id: str | None = Field(default=None, max_length=64, index=True)
    target: str = Field(max_length=200)
    before: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    after: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class OutboxEvent(SQLModel, table=True):
    """A notification to deliver, written in the same transaction as the change it announces,
    so no change goes unannounced and no announcement is of a change that was rolled back."""

    __tablename__: ClassVar[str] = "outbox_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _instant()
    topic: str = Field(max_length=60)
    site_id: str | None = Field(default=None, max_length=64, index=True)
    account_id: str | None = Field(default=None, max_length=32, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # When the webhook worker handed it to the subscriptions' deliveries.
    delivered_at: datetime | None = _instant(default=None, index=True)


class ScanEvent(SQLModel, table=True):
    """Every scan at a gate, admitted or refused, with its reason: the log that live
    occupancy is rebuilt from."""

    __tablename__: ClassVar[str] = "scan_event"
    __table_args__ = (sa.Index("ix_scan_event_site_at", "site_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _instant()
    gate_id: str = Field(max_length=100)
    site_id: str = Field(max_length=64)
    reservation_id: str | None = Field(default=None, max_length=32, index=True)
    direction: str = Field(max_length=10)
    people: int = 0
    result: str = Field(max_length=10)
    reason: str = Field(default="", max_length=40)


class AlertChange(SQLModel, table=True):
    """A site's alert level moving, with the loads that moved it and the action it calls for."""

    __tablename__: ClassVar[str] = "alert_change"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _instant()
    site_id: str = Field(max_length=64, index=True)
    visit_date: date
    level_from: str = Field(max_length=10)
    level_to: str = Field(max_length=10)
    instant_load: float
    day_load: float
    action: str = Field(max_length=200)


class SalesStop(SQLModel, table=True):
    """A site-day whose sales stopped for the rest of the day, at yellow or above: the
    counters keep the day closed (the reconciler rebuilds it so)."""

    __tablename__: ClassVar[str] = "sales_stop"

    site_id: str = Field(primary_key=True, max_length=64)
    visit_date: date = Field(primary_key=True)
    at: datetime = _instant()
    reason: str = Field(max_length=200)


class WaitlistStatus(StrEnum):
    waiting = "waiting"
    offering = "offering"  # a worker is making its hold
    offered = "offered"  # a hold was made: `reservation_id`
    left = "left"  # the entrant left the line
    closed = "closed"  # the slot's sales ended before places came back


class WaitlistEntry(SQLModel, table=True):
    """A party waiting for a full slot, first come first served. Its visitors are kept as a
    booking keeps them (keyed hash, masked number), never with their ID numbers."""

    __tablename__: ClassVar[str] = "waitlist_entry"
    __table_args__ = (sa.Index("ix_waitlist_line", "slot_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(unique=True, max_length=32)
    owner_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    site_id: str = Field(max_length=64)
    slot_id: str = Field(foreign_key="slot.id", max_length=100)
    visit_date: date
    party_size: int
    visitors: list[dict[str, str]] = Field(sa_column=Column(JSON, nullable=False))
    status: WaitlistStatus = Field(default=WaitlistStatus.waiting, sa_type=sa.String(10))
    reservation_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = _instant()
    updated_at: datetime = _instant()


class WebhookSubscription(SQLModel, table=True):
    """Where an app (for its account's events) or a site's staff (for a site's events) wants
    events delivered. The secret signs each delivery; it is shown once, at creation."""

    __tablename__: ClassVar[str] = "webhook_subscription"

    id: str = Field(primary_key=True, max_length=32)
    account_id: str | None = Field(default=None, max_length=32, index=True)
    site_id: str | None = Field(default=None, max_length=64, index=True)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=100)
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    created_by: str = Field(max_length=100)
    created_at: datetime = _instant()
    disabled_at: datetime | None = _instant(default=None)


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # gave up after the last retry; a replay tries again


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription, and what became of it: the delivery log."""

    __tablename__: ClassVar[str] = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("subscription_id", "event_id"),
        sa.Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(foreign_key="webhook_subscription.id", max_length=32)
    event_id: int = Field(foreign_key="outbox_event.id")
    topic: str = Field(max_length=60)
    status: DeliveryStatus = Field(default=DeliveryStatus.pending, sa_type=sa.String(10))
    attempts: int = 0
    next_attempt_at: datetime = _instant()
    lease_until: datetime | None = _instant(default=None)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    delivered_at: datetime | None = _instant(default=None)
    created_at: datetime = _instant()


class DrawStatus(StrEnum):
    open = "open"  # taking entries; drawn at the release time
    drawn = "drawn"  # the order is fixed (`seed`); its entries are being served
    served = "served"  # every entry drawn was served: the day is on general sale


class Draw(SQLModel, table=True):
    """A fair release of one site-day: who entered before the release time is served in an
    order shuffled with `seed`, recorded so that anyone can check the order."""

    __table_args__ = (sa.UniqueConstraint("site_id", "visit_date"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: str = Field(foreign_key="site.id", max_length=64)
    visit_date: date
    opens_at: datetime = _instant()
    status: DrawStatus = Field(default=DrawStatus.open, sa_type=sa.String(10))
    seed: str | None = Field(default=None, max_length=64)
    drawn_at: datetime | None = _instant(default=None)
    served_at: datetime | None = _instant(default=None)


class DrawEntryStatus(StrEnum):
    queued = "queued"
    serving = "serving"  # a worker is making its hold
    won = "won"  # a hold was made: `reservation_id`, in its `slot_id`
    lost = "lost"  # none of its choices had room for the party


class DrawEntry(SQLModel, table=True):
    """One entrant's request in a fair release: up to three ranked slots for one party. One
    per account and one per person in each draw, so sending more requests gains nothing."""

    __tablename__: ClassVar[str] = "draw_entry"
    __table_args__ = (
        sa.UniqueConstraint("draw_id", "owner_id"),
        sa.Index("ix_draw_entry_order", "draw_id", "status", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(unique=True, max_length=32)
    draw_id: int = Field(foreign_key="draw.id")
    owner_id: str = Field(foreign_key="account.id", max_length=32)
    choices: list[str] = Field(sa_column=Column(JSON, nullable=False))
    party_size: int
    # Kept as a booking keeps them (keyed hash, masked number), never with ID numbers.
    visitors: list[dict[str, str]] = Field(sa_column=Column(JSON, nullable=False))
    early: bool  # arrived in the pre-queue window: drawn; later ones queue behind, in order
    position: int | None = None  # in the serving order, once drawn
    status: DrawEntryStatus = Field(default=DrawEntryStatus.queued, sa_type=sa.String(10))
    slot_id: str | None = Field(default=None, max_length=100)
    choice: int | None = None  # which of its choices it won (1 = its first)
    reservation_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = _instant()
    updated_at: datetime = _instant()


class DrawPerson(SQLModel, table=True):
    """A person (keyed hash of the ID number) entered in a draw: one entry per person."""

    __tablename__: ClassVar[str] = "draw_person"

    draw_id: int = Field(foreign_key="draw.id", primary_key=True)
    id_hash: str = Field(primary_key=True, max_length=64)
