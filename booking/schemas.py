"""What goes over the wire: request bodies and public views (ARCHITECTURE §7 shapes)."""

from __future__ import annotations

from datetime import date, datetime, time
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from booking.ids import IdType, InvalidIdNumber, normalize_id_number
from booking.passwords import MAX_LENGTH, password_problem

SLOT_ID_PATTERN = r"^[a-z0-9-]{1,64}\.\d{4}-\d{2}-\d{2}\.\d{4}$"
SITE_ID_PATTERN = r"^[a-z0-9-]{1,64}$"

SlotId = Annotated[str, StringConstraints(pattern=SLOT_ID_PATTERN, max_length=100)]

LOCAL_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"


def _time_text(value: Any) -> Any:
    """Times come as text: a number of seconds would be read as a time of day."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("time_type", "Input should be a time of day as HH:MM[:SS]")
    return value


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise PydanticCustomError(
            "local_time", "a time at the site, without an offset: the site's timezone applies"
        )
    if value.microsecond:
        raise PydanticCustomError("whole_seconds", "a time in whole seconds, HH:MM[:SS]")
    return value


# A wall-clock time at a site, "09:00" or "09:00:00", read in the site's own timezone. Not
# JSON Schema's "time" format: that is RFC 3339's full-time, which requires a UTC offset.
LocalTime = Annotated[
    time,
    BeforeValidator(_time_text),
    AfterValidator(_wall_clock),
    WithJsonSchema({"type": "string", "pattern": LOCAL_TIME_PATTERN, "examples": ["09:00"]}),
]


def _numeric(annotation: Any) -> bool:
    """An int or float field (or an optional one); bool is not a number here."""
    if get_origin(annotation) is Annotated:  # Weekday and the like: a constrained int
        annotation = get_args(annotation)[0]
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return get_origin(annotation) in (Union, UnionType) and any(a in (int, float) for a in args)


def _numbers_in(annotation: Any) -> bool:
    """A list of numbers (weekdays, ...), or an optional one."""
    if get_origin(annotation) in (Union, UnionType):
        return any(_numbers_in(a) for a in get_args(annotation))
    return get_origin(annotation) is list and any(_numeric(a) for a in get_args(annotation))


class Strict(BaseModel):
    """Every request body: unknown fields are refused, never silently dropped; a number is a
    JSON number (`"5"` and `true` are not counts: a client sending them has a bug to hear of)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Worked out once per model (not per request): which fields hold numbers, or lists of them.
    _number_fields: ClassVar[frozenset[str]] = frozenset()
    _number_lists: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields = cls.model_fields.items()
        cls._number_fields = frozenset(name for name, f in fields if _numeric(f.annotation))
        cls._number_lists = frozenset(name for name, f in fields if _numbers_in(f.annotation))

    @field_validator("*", mode="before")
    @classmethod
    def _plain_json_values(cls, value: Any, info: ValidationInfo) -> Any:
        # PostgreSQL's text cannot hold a NUL: refused here, naming the field, not there.
        if isinstance(value, str) and "\x00" in value:
            raise PydanticCustomError("string_nul", "must not contain a NUL character")
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            raise PydanticCustomError("string_nul", "items must not contain a NUL character")
        name = info.field_name
        if name in cls._number_fields and isinstance(value, str | bool):
            raise PydanticCustomError("number_type", "Input should be a JSON number")
        listed = name in cls._number_lists and isinstance(value, list)
        if listed and any(isinstance(item, str | bool) for item in value):
            raise PydanticCustomError("number_type", "Items should be JSON numbers")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the request named (a PATCH changes only those)."""
        return self.model_dump(exclude_unset=True)


class VisitorIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    id_type: IdType
    # repr=False: the number must never reach a log line through a model's repr.
    id_number: str = Field(min_length=1, max_length=40, repr=False)

    @field_validator("id_number")
    @classmethod
    def _valid_id_number(cls, value: str, info: ValidationInfo) -> str:
        id_type = info.data.get("id_type")
        if id_type is None:  # id_type itself failed; its own error says so
            return value
        try:
            # The shape and the date only: "not born in the future" needs the service's clock,
            # so `Booking.hold` checks it (never the host's date).
            return normalize_id_number(id_type, value, today=date.max)
        except InvalidIdNumber as error:
            raise PydanticCustomError(error.rule, error.message) from None


class GroupVisitorIn(VisitorIn):
    """A group member: the date of birth decides who is a minor. A resident ID carries it;
    other documents need `birth_date`."""

    birth_date: date | None = None


class GroupRequest(Strict):
    slot_id: SlotId
    visitors: list[GroupVisitorIn] = Field(min_length=1, max_length=500)


class RescheduleRequest(Strict):
    slot_id: SlotId


class HoldRequest(Strict):
    slot_id: SlotId
    visitors: list[VisitorIn] = Field(min_length=1, max_length=50)


class Login(Strict):
    """An account's login: an email address or a mainland mobile number, exactly one."""

    email: EmailStr | None = Field(default=None, max_length=254)
    phone: Annotated[str, StringConstraints(pattern=r"^(\+86)?1[3-9]\d{9}$")] | None = None

    @model_validator(mode="after")
    def _one_login(self) -> Login:
        if (self.email is None) == (self.phone is None):
            raise PydanticCustomError("one-of", "give exactly one of email or phone")
        return self

    @property
    def login(self) -> tuple[str, str]:
        if self.email is not None:
            return "email", self.email.lower()
        assert self.phone is not None
        return "phone", self.phone.removeprefix("+86")


class AccountCreate(Login):
    password: str = Field(min_length=1, max_length=MAX_LENGTH, repr=False)

    @field_validator("password")
    @classmethod
    def _good_password(cls, value: str, info: ValidationInfo) -> str:
        login = str(info.data.get("email") or info.data.get("phone") or "")
        problem = password_problem(value, login)
        if problem is not None:
            raise PydanticCustomError(problem[0], problem[1])
        return value


class SessionCreate(Login):
    password: str = Field(min_length=1, max_length=MAX_LENGTH, repr=False)


class AccountVerify(Strict):
    """The code sent to the email or phone of a registration (its token says which)."""

    code: Annotated[str, StringConstraints(pattern=r"^\d{6}$")] = Field(repr=False)


class AccountPublic(BaseModel):
    account_id: str
    verified: bool


Channel = Literal["online", "window", "group"]
Pools = dict[Channel, Annotated[int, Field(ge=0, le=1_000_000)]]


class SlotPatch(Strict):
    """A slot's cap, and the places it keeps for sales channels (`pools`, null for none):
    `window` for operators' sales on site, `group` for group reservations, `online` for the
    apps. Channels without a pool share the rest; unsold pool places join the general sale at
    the site's `pool_rollover`."""

    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    pools: Pools | None = None

    @model_validator(mode="after")
    def _something(self) -> SlotPatch:
        return _a_change(self, nullable={"pools"})


# managers' tools ---------------------------------------------------------------------------

SiteId = Annotated[str, StringConstraints(pattern=SITE_ID_PATTERN)]
GateId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]{1,100}$")]
Weekday = Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=200)]


_Patch = TypeVar("_Patch", bound=BaseModel)


def _a_change(patch: _Patch, *, nullable: frozenset[str] | set[str] = frozenset()) -> _Patch:
    """A PATCH names at least one field, and sets none of the others to null."""
    if not patch.model_fields_set:
        raise PydanticCustomError("not-empty", "name at least one field to change")
    for name in patch.model_fields_set - set(nullable):
        if getattr(patch, name) is None:
            raise PydanticCustomError("not-null", f"{name} cannot be null")
    return patch


def _distinct(days: list[int] | None) -> list[int] | None:
    if days is None:
        return None
    if len(set(days)) != len(days):
        raise PydanticCustomError("distinct", "each weekday at most once")
    return sorted(days)


class AlertThresholds(Strict):
    """Shares of the caps (instantaneous and daily) at which each alert level starts."""

    yellow: float = Field(gt=0, le=2)
    orange: float = Field(gt=0, le=2)
    red: float = Field(gt=0, le=2)
    pause: float = Field(gt=0, le=2)

    @model_validator(mode="after")
    def _rising(self) -> AlertThresholds:
        if not self.yellow < self.orange < self.red <= self.pause:
            raise PydanticCustomError("rising", "yellow < orange < red <= pause")
        return self


class ReleaseBatch(Strict):
    """A share of every slot's places going on sale `days_before` the visit, at `at` (the
    site's time). Several batches sell a day in steps; a last one with `days_before: 1` holds a
    share back for the day before."""

    days_before: int = Field(ge=0, le=90)
    at: LocalTime
    share: float = Field(gt=0, le=1)


class PoolRollover(Strict):
    """When unsold places kept for a channel's pool join the general sale."""

    days_before: int = Field(ge=0, le=90)
    at: LocalTime


class RefundPolicy(Strict):
    """When a cancelled reservation's places go back on sale: `immediate`; after a `delay`
    of `minutes`; or at a `random-batch`: one of the next daily `batches` times, drawn at
    random, so a scalper cannot time a hand-over (the places of a slot whose sales end
    before any such batch stay off sale)."""

    mode: Literal["immediate", "delay", "random-batch"]
    minutes: int | None = Field(default=None, ge=1, le=10_080)
    batches: list[time] | None = Field(default=None, min_length=1, max_length=24)

    @model_validator(mode="after")
    def _complete(self) -> RefundPolicy:
        if self.mode == "delay" and self.minutes is None:
            raise PydanticCustomError("required-for-delay", "a delay needs its minutes")
        if self.mode == "random-batch" and not self.batches:
            raise PydanticCustomError("required-for-random-batch", "name the batches' times")
        return self


class GroupRules(Strict):
    """What a group reservation must be at a site (the Palace Museum's minors' groups: at most
    35 people, at most 30 minors, one adult for every 10 minors, 200 groups a day)."""

    min_people: int = Field(default=2, ge=1, le=500)
    max_people: int = Field(ge=1, le=500)
    max_minors: int = Field(ge=0, le=500)
    minors_per_adult: int = Field(ge=1, le=500, description="at least one adult per so many")
    groups_per_day: int = Field(ge=0, le=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> GroupRules:
        if self.min_people > self.max_people:
            raise PydanticCustomError("min-at-most-max", "min_people <= max_people")
        return self


class FairRelease(Strict):
    """Requests in the `prequeue_minutes` before a date goes on sale become draw entries,
    served in a random order at the release time (POST /v1/draws/entries)."""

    prequeue_minutes: int = Field(ge=1, le=10_080)


# Site settings kept as JSON: stored as their JSON form.
JSON_SETTINGS = frozenset(
    {"release_batches", "pool_rollover", "refund_policy", "fair_release", "group_rules"}
)


class SiteSettings(Strict):
    """What a site's managers may change. Every field optional: a PATCH names only what
    changes; the whole site is checked again after the change (opening hours in order...)."""

    name_zh: Name | None = None
    name_en: LongName | None = None
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z-]{1,20}$")] | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    opens: LocalTime | None = None
    closes: LocalTime | None = None
    last_entry: LocalTime | None = None
    closed_weekdays: list[Weekday] | None = Field(default=None, max_length=7)
    daily_cap: int | None = Field(default=None, ge=1, le=1_000_000)
    instant_cap: int | None = Field(default=None, ge=1, le=1_000_000)
    average_stay_minutes: int | None = Field(default=None, ge=1, le=1440)
    horizon_days: int | None = Field(default=None, ge=0, le=90)
    release_time: LocalTime | None = None
    same_day_sales: bool | None = None
    party_size_limit: int | None = Field(default=None, ge=1, le=50)
    real_name: bool | None = None
    account_day_limit: int | None = Field(default=None, ge=1, le=100)
    account_hold_limit: int | None = Field(default=None, ge=1, le=100)
    entry_grace_minutes: int | None = Field(default=None, ge=0, le=240)
    alert_thresholds: AlertThresholds | None = None
    release_batches: list[ReleaseBatch] | None = Field(default=None, min_length=1, max_length=10)
    pool_rollover: PoolRollover | None = None
    refund_policy: RefundPolicy | None = None
    fair_release: FairRelease | None = None
    group_rules: GroupRules | None = None

    @field_validator("closed_weekdays")
    @classmethod
    def _distinct_weekdays(cls, value: list[int] | None) -> list[int] | None:
        return _distinct(value)

    @field_validator("release_batches")
    @classmethod
    def _whole_release(cls, value: list[ReleaseBatch] | None) -> list[ReleaseBatch] | None:
        if value is None:
            return None
        if abs(sum(batch.share for batch in value) - 1) > 1e-9:
            raise PydanticCustomError("shares-add-up", "the batches' shares add up to 1")
        moments = [(-batch.days_before, batch.at) for batch in value]
        if len(set(moments)) != len(moments):
            raise PydanticCustomError("distinct", "two batches at the same moment")
        return sorted(value, key=lambda batch: (-batch.days_before, batch.at))

    def changes(self) -> dict[str, Any]:
        changes = super().changes()
        for name in JSON_SETTINGS & changes.keys():
            value = getattr(self, name)
            changes[name] = (
                None
                if value is None
                else [b.model_dump(mode="json") for b in value]
                if isinstance(value, list)
                else value.model_dump(mode="json", exclude_none=True)
            )
        return changes


class SitePatch(SiteSettings):
    @model_validator(mode="after")
    def _something(self) -> SitePatch:
        # Null puts a schedule or policy back to the default.
        return _a_change(self, nullable=JSON_SETTINGS)


class SiteCreate(SiteSettings):
    id: SiteId
    name_zh: Name
    name_en: LongName
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z-]{1,20}$")]
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: Annotated[str, StringConstraints(max_length=64)] = "Asia/Shanghai"
    opens: LocalTime
    closes: LocalTime
    last_entry: LocalTime
    closed_weekdays: list[Weekday] = Field(default_factory=list, max_length=7)
    daily_cap: int = Field(ge=1, le=1_000_000)
    instant_cap: int = Field(ge=1, le=1_000_000)
    average_stay_minutes: int = Field(default=120, ge=1, le=1440)
    horizon_days: int = Field(default=7, ge=0, le=90)
    release_time: LocalTime = time(20, 0)
    same_day_sales: bool = True
    party_size_limit: int = Field(default=5, ge=1, le=50)
    real_name: bool = True
    account_day_limit: int = Field(default=3, ge=1, le=100)
    account_hold_limit: int = Field(default=2, ge=1, le=100)
    entry_grace_minutes: int = Field(default=15, ge=0, le=240)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError("time-zone", "not an IANA time zone name") from None
        return value


class GateSettings(Strict):
    name_zh: Name | None = None
    name_en: LongName | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    direction: Literal["entry", "exit", "both"] | None = None
    flow_per_minute: int | None = Field(default=None, ge=1, le=10_000)


class GatePatch(GateSettings):
    @model_validator(mode="after")
    def _something(self) -> GatePatch:
        return _a_change(self)


class GateCreate(GateSettings):
    id: GateId
    name_zh: Name
    name_en: LongName
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    direction: Literal["entry", "exit", "both"] = "both"
    flow_per_minute: int = Field(default=60, ge=1, le=10_000)


class TemplateSettings(Strict):
    label: Annotated[str, StringConstraints(max_length=40)] | None = None
    start: LocalTime | None = None
    end: LocalTime | None = None
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    repeat_minutes: int | None = Field(default=None, ge=5, le=720)
    weekdays: list[Weekday] | None = Field(default=None, min_length=1, max_length=7)
    pools: Pools | None = None  # the places its slots keep for sales channels

    @field_validator("weekdays")
    @classmethod
    def _distinct_weekdays(cls, value: list[int] | None) -> list[int] | None:
        return _distinct(value)


class TemplateCreate(TemplateSettings):
    """Slots a site offers each day: one entry window (`start`-`end`), or, with
    `repeat_minutes`, one slot every so many minutes between `start` and `end`."""

    label: Annotated[str, StringConstraints(max_length=40)] = ""
    start: LocalTime
    end: LocalTime
    capacity: int = Field(ge=0, le=1_000_000)
    weekdays: list[Weekday] = Field(default_factory=lambda: list(range(7)), min_length=1)


class TemplatePatch(TemplateSettings):
    @model_validator(mode="after")
    def _something(self) -> TemplatePatch:
        # A template may become one window again: repeat_minutes null is a change.
        return _a_change(self, nullable={"repeat_minutes", "pools"})


class TemplatePublic(BaseModel):
    id: int
    site: str
    label: str
    start: LocalTime
    end: LocalTime
    capacity: int
    repeat_minutes: int | None
    weekdays: list[int]
    pools: dict[str, int] | None = None


class SlotGeneration(Strict):
    first: date = Field(alias="from")
    last: date = Field(alias="to")

    @model_validator(mode="after")
    def _in_order(self) -> SlotGeneration:
        if self.last < self.first:
            raise PydanticCustomError("date-order", "`to` is before `from`")
        if (self.last - self.first).days >= 366:
            raise PydanticCustomError("date-range", "at most 366 days at once")
        return self


class GeneratedSlots(BaseModel):
    site: str
    first: date
    last: date
    created: int


class Closure(Strict):
    reason: Reason


class ClosureResult(BaseModel):
    """What a closure or a reopening did."""

    site: str
    slots: list[str]
    reason: str | None
    cancelled_reservations: int
    released_places: int


class TokenPublic(BaseModel):
    id: str
    token: str
    expires_at: datetime
    account_id: str | None = None
    # "pending" for a registration whose code has not come back yet: it may only verify.
    role: str = "tourist"
    sites: list[str] = Field(default_factory=list)
    gate: str | None = None


StaffRole = Literal["admin", "manager", "operator", "gate"]


class TokenCreate(Strict):
    """A staff token: a role, the sites it acts on and, for a gate device, its gate."""

    role: StaffRole
    sites: list[Annotated[str, StringConstraints(pattern=SITE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=100
    )
    gate: Annotated[str, StringConstraints(max_length=100)] | None = None
    days: int = Field(default=30, ge=1, le=365)
    label: str = Field(default="", max_length=100)

    @model_validator(mode="after")
    def _scope_fits_the_role(self) -> TokenCreate:
        if self.role in ("manager", "operator") and not self.sites:
            raise PydanticCustomError("sites-required", "a manager or operator needs its sites")
        if self.role == "gate" and self.gate is None:
            raise PydanticCustomError("gate-required", "a gate token needs its gate")
        if self.role != "gate" and self.gate is not None:
            raise PydanticCustomError("gate-only", "only a gate token names a gate")
        return self


class GatePublic(BaseModel):
    id: str
    name_zh: str
    name_en: str
    lat: float
    lon: float
    direction: str
    flow_per_minute: int


class DayLoadPublic(BaseModel):
    date: date
    open: bool
    offered: int
    remaining: int


class SitePublic(BaseModel):
    id: str
    name: str
    name_zh: str
    name_en: str
    kind: str
    lat: float
    lon: float
    timezone: str
    opens: LocalTime
    closes: LocalTime
    last_entry: LocalTime
    closed_weekdays: list[int]
    daily_cap: int
    instant_cap: int
    average_stay_minutes: int
    horizon_days: int
    release_time: LocalTime
    same_day_sales: bool
    party_size_limit: int
    real_name: bool
    account_day_limit: int
    account_hold_limit: int
    entry_grace_minutes: int
    alert_thresholds: dict[str, float] | None = None
    # As stored (see ReleaseBatch, PoolRollover, RefundPolicy, FairRelease, GroupRules).
    release_batches: list[dict[str, Any]] | None = None
    pool_rollover: dict[str, Any] | None = None
    refund_policy: dict[str, Any] | None = None
    fair_release: dict[str, Any] | None = None
    group_rules: dict[str, Any] | None = None
    closed_reason: str | None = None
    zones: list[ZoneIn] | None = None  # of the applied capacity plan
    gates: list[GatePublic]
    today: DayLoadPublic | None = None
    sources: dict[str, str] = Field(default_factory=dict)


class SlotPublic(BaseModel):
    id: str
    site: str
    date: date
    start: datetime
    end: datetime
    label: str
    capacity: int
    remaining: int
    status: str
    closed_reason: str | None = None
    on_sale: bool
    sales_open_at: datetime
    sales_close_at: datetime
    pools: dict[str, int] | None = None


class VisitorPublic(BaseModel):
    name: str
    id_type: str
    id_number_masked: str


def kept_visitors(kept: list[dict[str, str]]) -> list[VisitorPublic]:
    """Visitors as a waitlist entry or a draw entry keeps them (never their ID numbers)."""
    return [
        VisitorPublic(name=v["name"], id_type=v["id_type"], id_number_masked=v["id_masked"])
        for v in kept
    ]


class Alternative(BaseModel):
    """Another visit a party could make: a suggestion, a sold-out answer's offer, or what a
    closure offers instead. (Offers stored before the crowd forecast lack its four fields.)"""

    site: str
    slot_id: str
    start: datetime
    end: datetime
    remaining: int
    comfort: str | None = None  # comfortable, moderate, busy, crowded (forecast)
    load: float | None = None  # forecast people inside / instantaneous cap
    distance_km: float | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ReservationPublic(BaseModel):
    id: str
    status: str
    site: str
    slot_id: str
    date: date
    start: datetime
    end: datetime
    party_size: int
    visitors: list[VisitorPublic]
    expires_at: datetime | None
    created_at: datetime
    cancel_reason: str | None = None
    alternatives: list[Alternative] | None = None


class OutboxEventPublic(BaseModel):
    id: int
    at: datetime
    topic: str
    site: str | None
    account_id: str | None
    payload: dict[str, Any]
    delivered_at: datetime | None


class TicketPublic(BaseModel):
    """A rotating entry code: show it as a QR (`?format=svg|png`) and fetch a new one when
    it expires."""

    code: str
    expires_at: datetime
    reservation_id: str
    site: str
    entry_from: datetime
    entry_until: datetime
    suggested_gate: GateAdvice | None = None  # the entry gate with the most room now


class ScanRequest(Strict):
    code: str = Field(min_length=1, max_length=1000)
    direction: Literal["entry", "exit"]
    visitors: list[Annotated[int, Field(ge=0, le=49)]] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Positions of the visitors passing (0 = first); default: the whole party",
    )


class ScanResult(BaseModel):
    result: Literal["admitted"]
    direction: str
    reservation_id: str
    site: str
    gate: str
    people: int
    visitors: list[int]


class GateFlow(BaseModel):
    gate: str
    entries_today: int
    exits_today: int
    entries_last_minute: int
    exits_last_minute: int


class CurvePoint(BaseModel):
    at: datetime
    inside: int


class OccupancyPublic(BaseModel):
    site: str
    at: datetime
    inside: int
    instant_cap: int
    load: float  # inside / instant_cap
    daily_cap: int
    entered_today: int
    day_load: float  # entered today / daily_cap
    level: str  # green, yellow, orange, red, pause
    action: str
    entries_today: int
    exits_today: int
    entries_last_minute: int
    exits_last_minute: int
    gates: list[GateFlow]
    curve: list[CurvePoint]  # people inside every 15 minutes of today, from opening to now
    # The forecast for the whole day beside the counted curve, and how far off it was so far.
    forecast: list[ForecastPoint]
    forecast_error: ForecastError
    suggested_gate: GateAdvice | None  # where a party arriving now gets in soonest


class LiveSite(BaseModel):
    """One site in the operators' live feed."""

    site: str
    date: date  # the site's today
    name: str
    inside: int
    instant_cap: int
    load: float
    entered_today: int
    daily_cap: int
    day_load: float
    level: str
    action: str
    entries_last_minute: int
    exits_last_minute: int
    places_left_today: int
    # From yellow up: nearby calmer sites to send people to instead.
    send_to: list[Redirect] = Field(default_factory=list)


class AuditEventPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    site: str | None
    target: str
    before: dict[str, Any]
    after: dict[str, Any]


class DayReport(BaseModel):
    """Places (visitors, not reservations) of one site on one day, by what became of them."""

    date: date
    offered: int
    held: int
    confirmed: int
    cancelled: int
    cancelled_by_site: int
    expired: int
    entered: int
    no_show: int


class SuggestionsPublic(BaseModel):
    """Ranked alternatives to a wanted visit, best first."""

    site: str
    date: date
    time: LocalTime
    party: int
    wanted_slot_id: str | None  # the slot covering the wanted time, if any
    wanted_remaining: int | None
    wanted_comfort: str | None
    suggestions: list[Alternative]


class StayPublic(BaseModel):
    source: Literal["learned", "configured"]
    pairs: int  # entry/exit scan pairs it was learned from
    mean_minutes: float


class ForecastQuarter(BaseModel):
    start: datetime
    end: datetime
    arrivals: float
    exits: float
    inside: float  # at the quarter's end
    load: float  # inside / instantaneous cap


class ForecastPublic(BaseModel):
    site: str
    date: date
    instant_cap: int
    expected_visitors: int
    stay: StayPublic
    peak_inside: float
    peak_at: datetime | None
    quarters: list[ForecastQuarter]


class ForecastPoint(BaseModel):
    at: datetime
    inside: float


class ForecastError(BaseModel):
    """How far the forecast was from the people counted inside, over today's quarters so far."""

    points: int
    mean_abs: float
    max_abs: float
    mean_abs_share: float  # mean absolute error / instantaneous cap


class GateAdvice(BaseModel):
    gate: str
    name: str
    load: float  # entries over the last minutes / what the gate passes


class Redirect(BaseModel):
    """A nearby site to send people to while this one is crowded."""

    site: str
    name: str
    distance_km: float
    load: float
    comfort: str
    places_left_today: int


class BestTime(BaseModel):
    slot_id: str
    start: datetime
    end: datetime
    remaining: int
    load: float
    comfort: str


class CrowdSite(BaseModel):
    """One site on a city's crowd map."""

    site: str
    name: str
    name_zh: str
    kind: str
    lat: float
    lon: float
    date: date
    inside: int
    instant_cap: int
    load: float
    comfort: str
    level: str
    places_left_today: int
    best_times: list[BestTime]
    suggested_gate: str | None


class ZoneIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    area_m2: float = Field(gt=0, le=10_000_000)
    m2_per_person: float = Field(ge=0.1, le=1000)


class CapacityPlanRequest(Strict):
    zones: list[ZoneIn] = Field(min_length=1, max_length=200)
    average_stay_minutes: int = Field(ge=10, le=1440)
    apply: bool = False


class SlotQuota(BaseModel):
    template_id: int
    label: str
    start: LocalTime
    end: LocalTime
    quota: int


class CapacityPlanPublic(BaseModel):
    site: str
    instant_cap: int
    daily_cap: int
    open_minutes: int
    average_stay_minutes: int
    arrivals_per_minute: float
    slot_quotas: list[SlotQuota]
    peak_forecast_inside: float  # people inside at the busiest moment if every quota sells
    applied: bool


class WaitlistRequest(HoldRequest):
    """The party that waits: the same as for a hold."""


class WaitlistPublic(BaseModel):
    id: str
    status: str  # waiting, offering, offered, left, closed
    site: str
    slot_id: str
    date: date
    party_size: int
    position: int | None  # 1 = next in line; only while waiting
    reservation_id: str | None  # the hold offered, once offered
    offer_expires_at: datetime | None  # confirm the offered hold before this
    visitors: list[VisitorPublic]
    created_at: datetime


# What may leave the service by webhook. Verification codes and registration attempts never do.
WEBHOOK_TOPICS = frozenset(
    {
        "reservation.held",
        "reservation.confirmed",
        "reservation.cancelled",
        "reservation.expired",
        "reservation.rescheduled",
        "reservation.cancelled_by_site",
        "waitlist.offered",
        "waitlist.closed",
        "draw.won",
        "draw.lost",
        "site.alert_level",
        "site.closed",
    }
)


class SubscriptionRequest(Strict):
    url: AnyHttpUrl
    topics: list[Annotated[str, StringConstraints(max_length=60)]] = Field(
        default_factory=list, max_length=20, description="Topics to receive; none: all"
    )

    @field_validator("topics")
    @classmethod
    def _known(cls, topics: list[str]) -> list[str]:
        unknown = sorted(set(topics) - WEBHOOK_TOPICS)
        if unknown:
            raise PydanticCustomError(
                "known-topic", "unknown topics: {unknown}", {"unknown": ", ".join(unknown)}
            )
        return topics


class SubscriptionPublic(BaseModel):
    id: str
    url: str
    topics: list[str]
    account: str | None
    site: str | None
    created_at: datetime
    secret: str | None = None  # only in the answer that created it


class DeliveryPublic(BaseModel):
    id: int
    event_id: int
    topic: str
    status: str  # pending, delivered, failed
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


# fair release ------------------------------------------------------------------------------


class DrawEntryRequest(Strict):
    """Up to three slots of one site-day, the first the most wanted, for one party."""

    choices: list[SlotId] = Field(min_length=1, max_length=3)
    visitors: list[VisitorIn] = Field(min_length=1, max_length=50)

    @field_validator("choices")
    @classmethod
    def _distinct_choices(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("distinct", "a slot is chosen once")
        return value


class DrawEntryPublic(BaseModel):
    id: str
    status: str  # queued, serving, won, lost
    site: str
    date: date
    choices: list[str]
    party_size: int
    early: bool  # entered before the release time: drawn
    position: int | None  # in the serving order, once drawn
    slot_id: str | None  # won
    choice: int | None  # which choice was won (1 = the first)
    reservation_id: str | None  # the hold won: confirm it before `offer_expires_at`
    offer_expires_at: datetime | None
    visitors: list[VisitorPublic]
    created_at: datetime


class DrawPublic(BaseModel):
    """A fair release, open to anyone's audit: shuffling `entries` (the early entries' ids in
    the order they arrived) with Python's `random.Random(seed).shuffle` gives `order`."""

    site: str
    date: date
    prequeue_opens_at: datetime
    opens_at: datetime
    status: str  # open, drawn, served
    seed: str | None
    drawn_at: datetime | None
    served_at: datetime | None
    entries: list[str]
    order: list[str] | None
    late_entries: int  # entered after the release time: served after the draw, in order
