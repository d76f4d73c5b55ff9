"""Tests for booking.catalog: slot ids, slots made from templates, sales windows (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest

from booking.catalog import (
    SlotRef,
    generate_slots,
    horizon_dates,
    is_open_on,
    minute_of_day,
    parse_slot_id,
    sales_close_at,
    sales_open_at,
    slot_id,
    slot_key,
)
from booking.models import Site, Slot, SlotStatus, SlotTemplate
from capacity.keys import SiteDay

BEIJING = timezone(timedelta(hours=8))
MONDAY = date(2026, 11, 30)
TUESDAY = date(2026, 12, 1)
SATURDAY = date(2026, 12, 5)
SUNDAY = date(2026, 12, 6)


def site(**overrides: Any) -> Site:
    fields: dict[str, Any] = {
        "id": "yonghe-temple",
        "name_zh": "雍和宫",
        "name_en": "Yonghe Temple",
        "kind": "temple",
        "lat": 39.9473,
        "lon": 116.4168,
        "timezone": "Asia/Shanghai",
        "opens": time(9, 0),
        "closes": time(16, 30),
        "last_entry": time(16, 0),
        "closed_weekdays": [],
        "daily_cap": 7500,
        "instant_cap": 1500,
        "average_stay_minutes": 90,
        "horizon_days": 1,
        "release_time": time(0, 0),
        "same_day_sales": True,
        "party_size_limit": 5,
    }
    fields.update(overrides)
    return Site(**fields)


def palace() -> Site:
    return site(
        id="palace-museum",
        name_zh="故宫博物院",
        name_en="The Palace Museum",
        kind="museum",
        opens=time(8, 30),
        closes=time(17, 0),
        last_entry=time(16, 0),
        closed_weekdays=[0],
        daily_cap=40000,
        instant_cap=18000,
        horizon_days=7,
        release_time=time(20, 0),
        same_day_sales=False,
    )


def template(
    start: time,
    end: time,
    *,
    capacity: int = 1000,
    repeat_minutes: int | None = None,
    label: str = "session",
    weekdays: list[int] | None = None,
    site_id: str = "yonghe-temple",
) -> SlotTemplate:
    return SlotTemplate(
        site_id=site_id,
        label=label,
        start=start,
        end=end,
        capacity=capacity,
        repeat_minutes=repeat_minutes,
        weekdays=list(range(7)) if weekdays is None else weekdays,
    )


HOURLY = template(time(9, 0), time(16, 0), repeat_minutes=60, label="hourly")
PALACE_SESSIONS = [
    template(time(8, 30), time(12, 0), capacity=20000, label="morning", site_id="palace-museum"),
    template(time(11, 0), time(16, 0), capacity=20000, label="afternoon", site_id="palace-museum"),
]


def windows(slots: list[Slot]) -> list[tuple[str, time, time]]:
    return [(slot.id, slot.start, slot.end) for slot in slots]


# slot ids --------------------------------------------------------------------------------


def test_slot_id_names_site_date_and_start() -> None:
    assert slot_id("palace-museum", TUESDAY, time(8, 30)) == "palace-museum.2026-12-01.0830"
    assert slot_key(time(8, 30)) == "0830"


def test_parse_slot_id_reads_site_day_and_key() -> None:
    assert parse_slot_id("palace-museum.2026-12-01.0830") == SlotRef(
        SiteDay("palace-museum", TUESDAY), "0830"
    )


@pytest.mark.parametrize(
    ("site_id", "visit_date", "start"),
    [
        ("palace-museum", TUESDAY, time(8, 30)),
        ("yonghe-temple", date(2026, 1, 9), time(0, 0)),
        ("a", date(2028, 2, 29), time(23, 59)),
        ("x" * 64, date(2026, 12, 31), time(12, 5)),
    ],
)
def test_parse_slot_id_round_trips(site_id: str, visit_date: date, start: time) -> None:
    value = slot_id(site_id, visit_date, start)
    ref = parse_slot_id(value)
    assert ref is not None
    assert ref.id == value
    assert ref.site_day == SiteDay(site_id, visit_date)
    assert ref.key == slot_key(start)


@pytest.mark.parametrize(
    "value",
    [
        "palace-museum.2026-02-30.0900",  # no such date
        "palace-museum.2026-13-01.0900",  # no such month
        "palace-museum.2026-12-01.2460",  # no such time
        "palace-museum.2026-12-01.2400",  # 24:00 is not a start
        "palace-museum.2026-12-01.0960",  # minute 60
        "Palace-Museum.2026-12-01.0900",  # uppercase site
        "palace-museum.2026-12-01.0900A",
        "palace_museum.2026-12-01.0900",  # underscore
        "palace-museum.2026-12-01",  # no start
        "palace-museum.0900",  # no date
        "2026-12-01.0900",  # no site
        ".2026-12-01.0900",  # empty site
        "palace-museum.2026-12-01.900",  # three-digit start
        "palace-museum.20261201.0900",  # date without dashes
        "palace-museum.2026-12-01.09:00",
        "x" * 65 + ".2026-12-01.0900",  # site id too long
        "",
    ],
)
def test_parse_slot_id_rejects(value: str) -> None:
    assert parse_slot_id(value) is None


def test_parse_slot_id_rejects_a_trailing_newline() -> None:
    assert parse_slot_id("palace-museum.2026-12-01.0900\n") is None


# slots from templates --------------------------------------------------------------------


def test_hourly_template_makes_one_slot_per_hour() -> None:
    slots = generate_slots(site(), [HOURLY], [TUESDAY])
    assert windows(slots) == [
        (f"yonghe-temple.2026-12-01.{hour:02d}00", time(hour, 0), time(hour + 1, 0))
        for hour in range(9, 16)
    ]
    assert len(slots) == 7


def test_generated_slots_carry_the_template_and_site() -> None:
    slot = generate_slots(site(), [HOURLY], [TUESDAY])[0]
    assert slot.id == "yonghe-temple.2026-12-01.0900"
    assert slot.site_id == "yonghe-temple"
    assert slot.visit_date == TUESDAY
    assert slot.label == "hourly"
    assert slot.capacity == 1000
    assert slot.status == SlotStatus.open


def test_repeat_that_does_not_divide_the_window_drops_the_partial_slot() -> None:
    ninety = template(time(8, 30), time(16, 0), repeat_minutes=90)
    assert windows(generate_slots(site(), [ninety], [TUESDAY])) == [
        ("yonghe-temple.2026-12-01.0830", time(8, 30), time(10, 0)),
        ("yonghe-temple.2026-12-01.1000", time(10, 0), time(11, 30)),
        ("yonghe-temple.2026-12-01.1130", time(11, 30), time(13, 0)),
        ("yonghe-temple.2026-12-01.1300", time(13, 0), time(14, 30)),
        ("yonghe-temple.2026-12-01.1430", time(14, 30), time(16, 0)),
    ]
    short = template(time(9, 0), time(10, 30), repeat_minutes=60)
    assert windows(generate_slots(site(), [short], [TUESDAY])) == [
        ("yonghe-temple.2026-12-01.0900", time(9, 0), time(10, 0))
    ]


def test_palace_sessions_make_two_overlapping_slots() -> None:
    slots = generate_slots(palace(), PALACE_SESSIONS, [TUESDAY])
    assert windows(slots) == [
        ("palace-museum.2026-12-01.0830", time(8, 30), time(12, 0)),
        ("palace-museum.2026-12-01.1100", time(11, 0), time(16, 0)),
    ]
    assert [(s.label, s.capacity) for s in slots] == [("morning", 20000), ("afternoon", 20000)]
    morning, afternoon = slots
    assert afternoon.start < morning.end


def test_closed_weekday_gets_no_slots() -> None:
    assert generate_slots(palace(), PALACE_SESSIONS, [MONDAY]) == []


def test_a_week_of_palace_slots_skips_monday() -> None:
    week = [MONDAY + timedelta(days=i) for i in range(7)]
    slots = generate_slots(palace(), PALACE_SESSIONS, week)
    assert len(slots) == 12
    assert sorted({s.visit_date for s in slots}) == week[1:]


def test_template_weekdays_are_respected() -> None:
    weekend = template(time(9, 0), time(12, 0), weekdays=[5, 6], label="weekend")
    every_day = template(time(13, 0), time(16, 0), label="daily")
    dates = [TUESDAY, SATURDAY, SUNDAY]
    slots = generate_slots(site(), [weekend, every_day], dates)
    assert [s.id for s in slots] == [
        "yonghe-temple.2026-12-01.1300",
        "yonghe-temple.2026-12-05.0900",
        "yonghe-temple.2026-12-05.1300",
        "yonghe-temple.2026-12-06.0900",
        "yonghe-temple.2026-12-06.1300",
    ]


def test_no_dates_no_slots() -> None:
    assert generate_slots(site(), [HOURLY], []) == []


def test_is_open_on_follows_closed_weekdays() -> None:
    assert is_open_on(palace(), MONDAY) is False
    assert is_open_on(palace(), TUESDAY) is True
    assert is_open_on(site(), MONDAY) is True


# sales windows ---------------------------------------------------------------------------


def test_sales_open_horizon_days_before_at_release_time() -> None:
    opens = sales_open_at(palace(), TUESDAY)
    assert opens == datetime(2026, 11, 24, 20, 0, tzinfo=BEIJING)
    assert opens.utcoffset() == timedelta(hours=8)


def test_sales_open_at_midnight_release() -> None:
    opens = sales_open_at(site(), TUESDAY)
    assert opens == datetime(2026, 11, 30, 0, 0, tzinfo=BEIJING)
    assert opens.utcoffset() == timedelta(hours=8)


def test_sales_close_at_slot_end_with_same_day_sales() -> None:
    closes = sales_close_at(site(), TUESDAY, time(11, 0))
    assert closes == datetime(2026, 12, 1, 11, 0, tzinfo=BEIJING)
    assert closes.utcoffset() == timedelta(hours=8)


def test_sales_close_at_midnight_before_the_visit_without_same_day_sales() -> None:
    closes = sales_close_at(palace(), TUESDAY, time(12, 0))
    assert closes == datetime(2026, 12, 1, 0, 0, tzinfo=BEIJING)
    assert closes.utcoffset() == timedelta(hours=8)


def test_sales_windows_use_the_site_timezone() -> None:
    london = site(timezone="Europe/London", horizon_days=2, release_time=time(18, 0))
    assert sales_open_at(london, TUESDAY) == datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
    assert sales_close_at(london, TUESDAY, time(10, 0)) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_horizon_dates_run_from_today_over_the_horizon_plus_one_day() -> None:
    assert horizon_dates(palace(), TUESDAY) == [TUESDAY + timedelta(days=i) for i in range(9)]
    assert horizon_dates(site(), TUESDAY) == [
        date(2026, 12, 1),
        date(2026, 12, 2),
        date(2026, 12, 3),
    ]


def test_minute_of_day() -> None:
    assert minute_of_day(time(0, 0)) == 0
    assert minute_of_day(time(8, 30)) == 510
    assert minute_of_day(time(23, 59)) == 1439
