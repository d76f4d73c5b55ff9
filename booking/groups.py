"""Group reservations: the composition rules a site sets for them (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from booking.errors import InvalidRequest
from booking.ids import birth_date
from booking.schemas import GroupVisitorIn

ADULT_AGE = 18
EARLIEST_BIRTH = date(1900, 1, 1)


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def check_group(rules: dict[str, Any], visitors: Sequence[GroupVisitorIn], visit_date: date) -> int:
    """Refuse a group the site's rules do not allow, naming the rule; returns its minors."""
    size = len(visitors)
    if size < rules.get("min_people", 2):
        raise InvalidRequest(
            field="visitors",
            rule="min-people",
            message=f"a group here has at least {rules.get('min_people', 2)} people",
        )
    if size > rules["max_people"]:
        raise InvalidRequest(
            field="visitors",
            rule="max-people",
            message=f"a group here has at most {rules['max_people']} people",
        )
    minors = 0
    for position, visitor in enumerate(visitors):
        on_id = birth_date(visitor.id_type, visitor.id_number)
        if on_id is not None and visitor.birth_date not in (None, on_id):
            raise InvalidRequest(
                field=f"visitors[{position}].birth_date",
                rule="matches-id-number",
                message="the date of birth differs from the one in the resident ID number",
            )
        born = on_id or visitor.birth_date
        if born is not None and not EARLIEST_BIRTH <= born <= visit_date:
            raise InvalidRequest(
                field=f"visitors[{position}].birth_date",
                rule="birth-date",
                message=f"a date of birth between {EARLIEST_BIRTH} and the visit date",
            )
        if born is None:
            raise InvalidRequest(
                field=f"visitors[{position}].birth_date",
                rule="required",
                message="a group member's date of birth is needed when the ID does not carry it",
            )
        if age_on(born, visit_date) < ADULT_AGE:
            minors += 1
    if minors > rules["max_minors"]:
        raise InvalidRequest(
            field="visitors",
            rule="max-minors",
            message=f"a group here has at most {rules['max_minors']} minors ({minors} named)",
        )
    adults = size - minors
    if minors and adults * rules["minors_per_adult"] < minors:
        raise InvalidRequest(
            field="visitors",
            rule="adults-per-minors",
            message=(
                f"one adult for every {rules['minors_per_adult']} minors: {minors} minors "
                f"need {-(-minors // rules['minors_per_adult'])} adults, {adults} named"
            ),
        )
    return minors
