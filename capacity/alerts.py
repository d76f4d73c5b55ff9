"""Alert levels of a site's load, after the practice around LB/T 034-2014 and the Tourism
Law (art. 45): pure functions over plain numbers."""

from __future__ import annotations

from collections.abc import Mapping

LEVELS = ("green", "yellow", "orange", "red", "pause")

# The share of a cap at which each level starts.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "yellow": 0.80,
    "orange": 0.90,
    "red": 0.95,
    "pause": 1.00,
}

ACTIONS: Mapping[str, str] = {
    "green": "normal operation",
    "yellow": "announce the crowding; stop selling the rest of the day",
    "orange": "send visitors to less crowded areas and gates; staff the gates",
    "red": "limit entry to the flow that exits allow; prepare the emergency plan",
    "pause": "pause entry until exits make room",
}


def level_for(loads: tuple[float, ...], thresholds: Mapping[str, float]) -> str:
    """The highest level any of the loads (shares of their caps) has reached."""
    reached = "green"
    for level in LEVELS[1:]:
        if any(load >= thresholds[level] for load in loads):
            reached = level
    return reached


def rank(level: str) -> int:
    return LEVELS.index(level)
