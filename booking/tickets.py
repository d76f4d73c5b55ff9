"""Rotating entry codes: what the QR on a visitor's phone says, and how a gate checks it.

A code is `TG1.<key id>.<payload>.<signature>`: the payload (reservation, site, entry window,
expiry) in base64url JSON, signed with HMAC-SHA256 under the named key. It expires about a
minute after it was made, so a screenshot passed to a scalper's customer is worthless; the
gate needs no network call to trust it, only the key. Several keys may be known at once, so
the signing key can be rotated without refusing the codes already on screens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PREFIX = "TG1"


class TicketRefused(Exception):
    """A code a gate must refuse; `reason` is the stable name logged with the scan."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class TicketClaims:
    reservation_id: str
    site: str
    window_start: datetime
    window_end: datetime
    expires_at: datetime


class TicketSigner:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"no ticket key {current}")
        self._keys = keys
        self._current = current

    def issue(
        self,
        reservation_id: str,
        site: str,
        window: tuple[datetime, datetime],
        *,
        now: datetime,
        ttl: timedelta,
    ) -> tuple[str, datetime]:
        expires_at = (now + ttl).replace(microsecond=0)
        payload = {
            "r": reservation_id,
            "s": site,
            "w": [int(window[0].timestamp()), int(window[1].timestamp())],
            "e": int(expires_at.timestamp()),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signed = f"{PREFIX}.{self._current}.{body}"
        return f"{signed}.{self._sign(self._current, signed)}", expires_at

    def read(self, code: str, *, now: datetime) -> TicketClaims:
        """The claims of a genuine, unexpired code, or TicketRefused."""
        parts = code.split(".")
        if len(parts) != 4 or parts[0] != PREFIX:
            raise TicketRefused("malformed", "not a tidegate entry code")
        _, key_id, body, signature = parts
        if key_id not in self._keys:
            raise TicketRefused("unknown-key", "the code is signed with an unknown key")
        expected = self._sign(key_id, f"{PREFIX}.{key_id}.{body}")
        if not hmac.compare_digest(expected, signature):
            raise TicketRefused("bad-signature", "the code's signature does not match")
        try:
            payload = json.loads(_unb64(body))
            claims = TicketClaims(
                reservation_id=str(payload["r"]),
                site=str(payload["s"]),
                window_start=datetime.fromtimestamp(int(payload["w"][0]), tz=UTC),
                window_end=datetime.fromtimestamp(int(payload["w"][1]), tz=UTC),
                expires_at=datetime.fromtimestamp(int(payload["e"]), tz=UTC),
            )
        except (ValueError, KeyError, IndexError, TypeError, OverflowError, OSError) as error:
            raise TicketRefused("malformed", "the code's payload is not readable") from error
        if now >= claims.expires_at:
            raise TicketRefused("expired", "the code expired: show the ticket again")
        return claims

    def _sign(self, key_id: str, text: str) -> str:
        return _b64(hmac.new(self._keys[key_id], text.encode(), hashlib.sha256).digest())


def derive_key(master: bytes, purpose: str) -> bytes:
    """A key for one purpose from the service's master secret (HMAC as a KDF), so one secret
    to configure does not mean one key for two jobs."""
    return hmac.new(master, purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
