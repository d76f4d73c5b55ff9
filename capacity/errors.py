"""The one family of domain errors.

Each error carries a stable `code` (the `code` of the problem+json answer), an HTTP status
hint and a title; `service/errors.py` renders them all in one place. Errors live in the lowest
layer so that `booking` can extend the family and `service` can render any of it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TidegateError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request refused"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}


class CapacityUnavailable(TidegateError):
    """Counters are being rebuilt from SQL or Redis is unreachable: fail closed, never guess."""

    code, status, title = "capacity-unavailable", 503, "Places cannot be counted right now"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = str(retry_after)


class SoldOut(TidegateError):
    code, status, title = "sold-out", 409, "Not enough places left in this slot"


class OutsideBookingWindow(TidegateError):
    code, status, title = "outside-booking-window", 409, "This slot is not on sale now"


class FairReleasePending(TidegateError):
    """The date is released by a fair draw: places go to its entries first."""

    code, status, title = (
        "fair-release-pending",
        409,
        "This date is released by a draw: join it with POST /v1/draws/entries",
    )


class SiteClosed(TidegateError):
    code, status, title = "site-closed", 409, "The site or slot is closed"


class DuplicateVisitor(TidegateError):
    code, status, title = (
        "duplicate-visitor",
        409,
        "A visitor already holds a place at this site on this day",
    )


class SlotNotCounted(TidegateError):
    """The counters of a site-day have no such slot (it may not exist at all)."""

    code, status, title = "not-found", 404, "No such slot"


class PartyTooLarge(TidegateError):
    code, status, title = "party-too-large", 422, "Too many visitors in one reservation"


class AccountLimitReached(TidegateError):
    """Against scalpers' accounts: too many reservations for one site-day, or too many holds
    open at once at one site. `per` says which limit, `limit` how many are allowed."""

    code, status, title = "account-limit", 409, "This account has reached its limit here"


class GroupLimitReached(TidegateError):
    """The site takes at most `limit` group reservations a day, and has them."""

    code, status, title = "group-limit", 409, "No more group reservations this day"
