"""Visitor identity documents: validation, normalisation, masking and keyed hashing.

Mainland resident identity numbers follow GB 11643-1999 ("citizen identification number"):
18 characters laid out as

* positions 1-6: administrative region code of the place of registration,
* positions 7-14: date of birth as ``YYYYMMDD``,
* positions 15-17: sequence code (odd for men, even for women),
* position 18: check character, ISO 7064 MOD 11-2 over the first 17 digits. Each digit is
  multiplied by ``2**(17 - i) mod 11`` (the :data:`RESIDENT_ID_WEIGHTS`), the products are summed,
  and the remainder mod 11 selects the character from :data:`RESIDENT_ID_CHECK`. Remainder 2
  maps to the Roman numeral ``X`` (ten), which is why the last position may be a letter.

Passports and the two mainland travel permits for Hong Kong/Macau and Taiwan residents carry no
check digit, so only their shape is validated.

Everything here is pure and stdlib-only so it can be used from request handlers, tests, demos and
the benchmark alike. Error messages deliberately never echo the number being validated: they end
up in logs and API responses, where a clear-text ID number would be a personal-data leak.
"""

from __future__ import annotations

import hmac
import re
from datetime import date
from enum import StrEnum
from typing import Final

__all__ = [
    "RESIDENT_ID_CHECK",
    "RESIDENT_ID_WEIGHTS",
    "IdHasher",
    "IdType",
    "InvalidIdNumber",
    "birth_date",
    "make_resident_id",
    "mask_id_number",
    "normalize_id_number",
    "resident_id_check_character",
]


class IdType(StrEnum):
    resident_id = "resident_id"
    passport = "passport"
    hk_macau_permit = "hk_macau_permit"  # 港澳居民来往内地通行证
    taiwan_permit = "taiwan_permit"  # 台湾居民来往大陆通行证


class InvalidIdNumber(ValueError):
    """An identity number failed validation.

    ``rule`` is a stable kebab-case name clients can branch on; ``message`` is for humans and
    never contains the number itself.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule: str = rule
        self.message: str = message

    def __reduce__(self) -> tuple[type[InvalidIdNumber], tuple[str, str]]:
        # The default exception pickling replays ``self.args`` (just the message) into
        # ``__init__``, which would fail; errors may cross process boundaries (workers, queues).
        return (type(self), (self.rule, self.message))


RESIDENT_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
RESIDENT_ID_CHECK: Final = "10X98765432"

_RESIDENT_ID_LENGTH: Final = 18
_EARLIEST_BIRTH: Final = date(1900, 1, 1)

# Explicit [0-9] rather than \d: \d also matches non-ASCII digits (e.g. Arabic-Indic), which
# int() would happily accept but no issuing authority ever prints.
_RESIDENT_ID_SHAPE: Final = re.compile(r"[0-9]{17}[0-9X]")
_FORMATS: Final[dict[IdType, re.Pattern[str]]] = {
    IdType.passport: re.compile(r"[A-Z0-9]{5,17}"),
    IdType.hk_macau_permit: re.compile(r"[HM][0-9]{8}(?:[0-9]{2})?"),
    IdType.taiwan_permit: re.compile(r"[0-9]{8}(?:[0-9]{2})?"),
}
_FORMAT_DESCRIPTIONS: Final[dict[IdType, str]] = {
    IdType.passport: "A passport number must be 5 to 17 letters or digits.",
    IdType.hk_macau_permit: (
        "A Hong Kong/Macau permit number must be H or M followed by 8 or 10 digits."
    ),
    IdType.taiwan_permit: "A Taiwan permit number must be 8 or 10 digits.",
}


def resident_id_check_character(first17: str) -> str:
    """Return the GB 11643-1999 check character for the first 17 digits of a resident ID."""
    if len(first17) != len(RESIDENT_ID_WEIGHTS) or not first17.isascii() or not first17.isdigit():
        raise ValueError("The check character needs exactly 17 ASCII digits.")
    total = sum(
        int(digit) * weight for digit, weight in zip(first17, RESIDENT_ID_WEIGHTS, strict=True)
    )
    return RESIDENT_ID_CHECK[total % 11]


def normalize_id_number(id_type: IdType, raw: str, *, today: date | None = None) -> str:
    """Validate ``raw`` and return its canonical form (trimmed, upper case).

    Raises :class:`InvalidIdNumber` naming the first rule that failed. ``today`` only matters for
    resident IDs (a birth date cannot be in the future) and exists so tests can pin the clock.
    """
    candidate = raw.strip().upper()
    if id_type is IdType.resident_id:
        _check_resident_id(candidate, date.today() if today is None else today)
        return candidate
    if _FORMATS[id_type].fullmatch(candidate) is None:
        raise InvalidIdNumber("format", _FORMAT_DESCRIPTIONS[id_type])
    return candidate


def _check_resident_id(candidate: str, today: date) -> None:
    # Rules run from cheapest/most obvious to most specific, so a visitor who mistyped gets the
    # most useful message first (a missing digit reports "length", not a bogus birth date).
    if len(candidate) != _RESIDENT_ID_LENGTH:
        raise InvalidIdNumber("length", "A resident ID number must be exactly 18 characters.")
    if _RESIDENT_ID_SHAPE.fullmatch(candidate) is None:
        raise InvalidIdNumber(
            "characters",
            "A resident ID number must be 17 digits followed by a digit or the letter X.",
        )
    try:
        birth = date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        birth = None
    if birth is None or not _EARLIEST_BIRTH <= birth <= today:
        raise InvalidIdNumber(
            "birth-date", "The resident ID number does not contain a plausible date of birth."
        )
    if resident_id_check_character(candidate[:17]) != candidate[17]:
        raise InvalidIdNumber(
            "check-digit",
            "The resident ID number's check character does not match; please check it for typos.",
        )


def birth_date(id_type: IdType, normalized: str) -> date | None:
    """The date of birth inside a valid resident ID number; None for other documents."""
    if id_type is not IdType.resident_id:
        return None
    return date(int(normalized[6:10]), int(normalized[10:12]), int(normalized[12:14]))


def mask_id_number(id_type: IdType, normalized: str) -> str:
    """Return a display-safe form keeping only enough characters for a visitor to recognise it.

    Resident IDs keep the first 4 and last 4 characters (``1101**********002X``); other documents
    keep the first character and the last 3. The result has the input's length. Input too short to
    mask with at least one asterisk is masked entirely: masking runs on display and logging paths,
    where leaking is worse than losing the hint and raising would be worse than both.
    """
    head, tail = (4, 4) if id_type is IdType.resident_id else (1, 3)
    hidden = len(normalized) - head - tail
    if hidden < 1:
        return "*" * len(normalized)
    return normalized[:head] + "*" * hidden + normalized[-tail:]


def make_resident_id(region: str, birth: date, sequence: int) -> str:
    """Build a valid 18-character resident ID (for tests, demos and the benchmark).

    ``region`` is a 6-digit region code, ``sequence`` 0..999. Birth dates in the future are
    accepted here but rejected by :func:`normalize_id_number`, since "future" depends on the clock.
    """
    if len(region) != 6 or not region.isascii() or not region.isdigit():
        raise ValueError("region must be exactly 6 ASCII digits")
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be between 0 and 999")
    if birth < _EARLIEST_BIRTH:
        raise ValueError("birth must be on or after 1900-01-01")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + resident_id_check_character(first17)


class IdHasher:
    """Keyed HMAC-SHA256 fingerprint of an identity document.

    The number never leaves the process in clear text: storage, logs and other services only see
    this hash. It is still deterministic for a given key, which is what lets us enforce "one
    reservation per person per site and day" across accounts (two accounts booking with the same
    document collide on the hash). A keyed HMAC rather than a plain hash because the ID space is
    small and structured enough (region, birth date, sequence) to brute-force an unkeyed digest.
    The document type is part of the message so equal numbers on different documents differ.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            # An empty key degrades HMAC to a public, brute-forceable function.
            raise ValueError("IdHasher needs a non-empty secret key")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "IdHasher(key=<redacted>)"

    def hash(self, id_type: IdType, normalized: str) -> str:
        """Return the 64-character lowercase hex HMAC-SHA256 of ``"{id_type}:{normalized}"``."""
        return hmac.new(self._key, f"{id_type}:{normalized}".encode(), "sha256").hexdigest()

    def fingerprint(self, payload: bytes) -> str:
        """Keyed digest of a request body that may contain ID numbers (idempotency records)."""
        return hmac.new(self._key, b"request\x00" + payload, "sha256").hexdigest()
