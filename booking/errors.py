"""Booking's errors: the rest of the family started in `capacity.errors`."""

from __future__ import annotations

from capacity.errors import TidegateError


class NotFound(TidegateError):
    code, status, title = "not-found", 404, "Not found"


class HoldExpired(TidegateError):
    code, status, title = "hold-expired", 410, "The hold expired and its places were released"


class InvalidTransition(TidegateError):
    code, status, title = "invalid-transition", 409, "The reservation cannot do that now"


class Conflict(TidegateError):
    code, status, title = "conflict", 409, "It exists already"


class Unauthorized(TidegateError):
    code, status, title = "unauthorized", 401, "A valid bearer token is required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = 'Bearer realm="tidegate"'


class Forbidden(TidegateError):
    code, status, title = "forbidden", 403, "This token may not do that"


class AccountUnverified(TidegateError):
    code, status, title = (
        "account-unverified",
        403,
        "Send back the code sent to your email or phone first",
    )


class IdempotencyKeyReused(TidegateError):
    code, status, title = (
        "idempotency-key-reused",
        422,
        "This Idempotency-Key was used for a different request",
    )


class RequestInFlight(TidegateError):
    code, status, title = (
        "request-in-flight",
        409,
        "A request with this Idempotency-Key is still being processed",
    )

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = "1"


class InvalidRequest(TidegateError):
    """A rule on one field that needs the domain (the clock, say) rather than the schema."""

    code, status, title = "validation-failed", 422, "The request is not valid"

    def __init__(self, *, field: str, rule: str, message: str, location: str = "body") -> None:
        super().__init__(f"{field}: {message} ({rule})")
        self.field = field
        self.extra["errors"] = [{"in": location, "field": field, "rule": rule, "message": message}]


class ScanRefused(TidegateError):
    """A ticket a gate must refuse. The `code` is also the reason in the scan log."""

    code, status, title = "scan-refused", 409, "The gate refuses this ticket"

    def __init__(self, detail: str | None = None, *, reservation_id: str | None = None) -> None:
        super().__init__(detail)
        self.reservation_id = reservation_id


class TicketInvalid(ScanRefused):
    code, status, title = "ticket-invalid", 422, "Not a genuine tidegate entry code"


class TicketExpired(ScanRefused):
    code, status, title = "ticket-expired", 410, "The entry code expired: show the ticket again"


class WrongSite(ScanRefused):
    code, status, title = "wrong-site", 409, "This ticket is for another site"


class NotConfirmed(ScanRefused):
    code, status, title = "not-confirmed", 409, "The reservation is not confirmed"


class OutsideEntryWindow(ScanRefused):
    code, status, title = "outside-entry-window", 409, "Not the time to enter on this ticket"


class AlreadyEntered(ScanRefused):
    code, status, title = (
        "already-entered",
        409,
        "These visitors have already entered (one entry per visitor)",
    )


class WrongGateDirection(ScanRefused):
    code, status, title = "wrong-gate-direction", 409, "This gate is not for that direction"


class NotInside(ScanRefused):
    code, status, title = "not-inside", 409, "These visitors have not entered, or have left"


class UnknownVisitor(ScanRefused):
    code, status, title = "unknown-visitor", 422, "No such visitor in this party"


class SlotHasRoom(TidegateError):
    code, status, title = "slot-has-room", 409, "The slot has places: book them instead"


class WaitlistClosed(TidegateError):
    code, status, title = "waitlist-closed", 409, "This slot takes no waitlist now"


class AlreadyWaiting(TidegateError):
    code, status, title = "already-waiting", 409, "This account already waits for this slot"


class AlreadyInDraw(TidegateError):
    code, status, title = (
        "already-in-draw",
        409,
        "This account or one of these visitors already has an entry in this draw",
    )


class NotAFairRelease(TidegateError):
    code, status, title = "not-a-fair-release", 409, "This date is not released by a draw"


class DrawNotOpen(TidegateError):
    code, status, title = "draw-not-open", 409, "This draw takes no entries now"


class NoGroupsHere(TidegateError):
    code, status, title = "no-groups", 409, "This site takes no group reservations"
