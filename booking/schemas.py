"""What goes over the wire: request bodies and public views (ARCHITECTURE §7 shapes)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from booking.ids import IdType, InvalidIdNumber, normalize_id_number

SLOT_ID_PATTERN = r"^[a-z0-9-]{1,64}\.\d{4}-\d{2}-\d{2}\.\d{4}$"
SITE_ID_PATTERN = r"^[a-z0-9-]{1,64}$"

SlotId = Annotated[str, StringConstraints(pattern=SLOT_ID_PATTERN, max_length=100)]


class Strict(BaseModel):
    """Every request body: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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


class HoldRequest(Strict):
    slot_id: SlotId
    visitors: list[VisitorIn] = Field(min_length=1, max_length=50)


class AccountCreate(Strict):
    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^(\+86)?1[3-9]\d{9}$")] | None = None
    password: str = Field(min_length=8, max_length=128, repr=False)

    @model_validator(mode="after")
    def _one_login(self) -> AccountCreate:
        if (self.email is None) == (self.phone is None):
            raise PydanticCustomError("one-of", "give exactly one of email or phone")
        return self

    @property
    def login(self) -> tuple[str, str]:
        if self.email is not None:
            return "email", self.email.lower()
        assert self.phone is not None
        return "phone", self.phone.removeprefix("+86")


class SessionCreate(AccountCreate):
    password: str = Field(min_length=1, max_length=128, repr=False)


class SlotPatch(Strict):
    capacity: int = Field(ge=0, le=1_000_000)


class TokenPublic(BaseModel):
    id: str
    token: str
    expires_at: datetime
    account_id: str | None = None
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
    opens: time
    closes: time
    last_entry: time
    closed_weekdays: list[int]
    daily_cap: int
    instant_cap: int
    average_stay_minutes: int
    horizon_days: int
    release_time: time
    same_day_sales: bool
    party_size_limit: int
    real_name: bool
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
    on_sale: bool
    sales_open_at: datetime
    sales_close_at: datetime


class VisitorPublic(BaseModel):
    name: str
    id_type: str
    id_number_masked: str


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


class Alternative(BaseModel):
    slot_id: str
    start: datetime
    end: datetime
    remaining: int

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
    expired: int
    entered: int
    no_show: int
