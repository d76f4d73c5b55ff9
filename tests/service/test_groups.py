"""Group reservations over HTTP: `POST /v1/group-reservations` under a site's `group_rules`.

Against the real app, SQLite and Redis. The rules are checked at their edges (size, minors,
one adult per so many minors, a date of birth for documents that do not carry one); a group
skips the site's party size and per-account day limits but not the per-person rule; the day
takes at most `groups_per_day` groups, counted in Redis atomically and rebuilt from SQL; a
slot's `group` pool keeps places for groups only.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlmodel import col

from booking.ids import make_resident_id
from booking.models import Reservation
from capacity.clock import ManualClock
from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import TODAY, YONGHE_10, hold, new_tourist, visitor

PROBLEM_JSON = "application/problem+json"
GROUPS = "/v1/group-reservations"
YONGHE = "yonghe-temple"
YONGHE_TODAY = SiteDay(YONGHE, TODAY)
TOMORROW = TODAY + timedelta(days=1)
HOLD_TTL = timedelta(minutes=15)
# The Palace Museum's minors' groups.
RULES: dict[str, Any] = {
    "max_people": 35,
    "max_minors": 30,
    "minors_per_adult": 10,
    "groups_per_day": 200,
}

_minors = itertools.count()


# helpers -----------------------------------------------------------------------------------


def yonghe(hhmm: str, day: date = TODAY) -> str:
    return f"{YONGHE}.{day.isoformat()}.{hhmm}"


def born(birth: date, name: str = "Born") -> dict[str, str]:
    """A visitor whose resident ID number carries `birth` (distinct from every other)."""
    n = next(_minors)
    number = make_resident_id("310104", birth, n % 1000)
    return {"name": f"{name} {n}", "id_type": "resident_id", "id_number": number}


def minor() -> dict[str, str]:
    """A schoolchild: born in 2012-2015, so 10 to 14 on the visit date, never 18."""
    n = next(_minors)
    birth = date(2012 + n % 4, 1 + n // 4 % 12, 1 + n // 48 % 28)
    number = make_resident_id("310104", birth, n // 1344 % 1000)
    return {"name": f"Pupil {n}", "id_type": "resident_id", "id_number": number}


def passport(number: str, birth: date | None = None) -> dict[str, Any]:
    person: dict[str, Any] = {"name": f"Traveller {number}", "id_type": "passport"}
    person["id_number"] = number
    if birth is not None:
        person["birth_date"] = birth.isoformat()
    return person


def party(adults: int, minors: int = 0) -> list[dict[str, Any]]:
    return [visitor(name="Teacher") for _ in range(adults)] + [minor() for _ in range(minors)]


async def hold_group(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    visitors: list[dict[str, Any]],
    slot_id: str = YONGHE_10,
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    body = {"slot_id": slot_id, "visitors": visitors}
    return await client.post(GROUPS, json=body, headers=headers)


async def held_group(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    visitors: list[dict[str, Any]],
    slot_id: str = YONGHE_10,
) -> dict[str, Any]:
    """Hold places for a group and insist that it worked."""
    response = await hold_group(client, headers, visitors, slot_id)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def act(
    client: httpx.AsyncClient, headers: dict[str, str], reservation_id: str, action: str
) -> dict[str, Any]:
    response = await client.post(f"/v1/reservations/{reservation_id}/{action}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_site(client: httpx.AsyncClient, admin: dict[str, str], **changes: Any) -> None:
    response = await client.patch(f"/v1/sites/{YONGHE}", json=changes, headers=admin)
    assert response.status_code == 200, response.text


async def set_rules(client: httpx.AsyncClient, admin: dict[str, str], **changes: Any) -> None:
    """Yonghe Temple takes groups under the Palace Museum's rules, with these changes."""
    await set_site(client, admin, group_rules={**RULES, **changes})


async def remaining(client: httpx.AsyncClient, slot_id: str = YONGHE_10) -> int:
    response = await client.get(f"/v1/slots/{slot_id}")
    assert response.status_code == 200, response.text
    left: int = response.json()["remaining"]
    return left


async def active_groups(runtime: Runtime, visit_date: date = TODAY) -> int:
    """Active group reservations of Yonghe Temple on a day, as SQL knows them."""
    async with runtime.sessions() as session:
        query = sa.select(sa.func.count()).where(
            col(Reservation.site_id) == YONGHE,
            col(Reservation.visit_date) == visit_date,
            col(Reservation.channel) == "group",
            col(Reservation.status).in_(["held", "confirmed"]),
        )
        count: int = (await session.execute(query)).scalar_one()
        return count


async def counted_groups(redis: Redis, site_day: SiteDay = YONGHE_TODAY) -> int:
    """The day's group reservations, as Redis counts them."""
    return int(await redis.hget(site_day.day, "groups") or 0)


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str = GROUPS,
    **extra: Any,
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": instance,
        **extra,
    }


def assert_invalid(response: httpx.Response, field: str, rule: str, message: str) -> None:
    """A 422 naming exactly one field and its rule."""
    assert_problem(
        response,
        422,
        "validation-failed",
        "The request is not valid",
        f"{field}: {message} ({rule})",
        errors=[{"in": "body", "field": field, "rule": rule, "message": message}],
    )


def assert_group_limit(
    response: httpx.Response, limit: int, day: date = TODAY, instance: str = GROUPS
) -> None:
    assert_problem(
        response,
        409,
        "group-limit",
        "No more group reservations this day",
        f"{YONGHE} takes {limit} group reservations a day and has them on {day.isoformat()}",
        instance,
        limit=limit,
    )


@pytest.fixture
async def rules(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """Yonghe Temple takes groups under the Palace Museum's rules."""
    await set_rules(client, admin)


# the composition rules ---------------------------------------------------------------------


async def test_35_people_are_a_group_36_are_not(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold_group(client, tourist, party(36))
    assert_invalid(response, "visitors", "max-people", "a group here has at most 35 people")
    assert await remaining(client) == 1000

    body = await held_group(client, tourist, party(35))
    assert (body["status"], body["party_size"], len(body["visitors"])) == ("held", 35, 35)
    assert await remaining(client) == 965


async def test_30_minors_with_3_adults_are_a_group_31_minors_are_not(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold_group(client, tourist, party(4, 31))
    assert_invalid(
        response, "visitors", "max-minors", "a group here has at most 30 minors (31 named)"
    )
    assert await remaining(client) == 1000

    body = await held_group(client, tourist, party(3, 30))
    assert body["party_size"] == 33
    assert await remaining(client) == 967


async def test_one_adult_for_every_10_minors(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    for adults, minors, needed in [(1, 20, 2), (2, 21, 3), (1, 11, 2), (0, 2, 1)]:
        response = await hold_group(client, tourist, party(adults, minors))
        assert_invalid(
            response,
            "visitors",
            "adults-per-minors",
            f"one adult for every 10 minors: {minors} minors need {needed} adults, {adults} named",
        )
    assert await remaining(client) == 1000

    body = await held_group(client, tourist, party(2, 20))
    assert body["party_size"] == 22
    assert await remaining(client) == 978


async def test_one_person_is_not_a_group_by_default(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    response = await hold_group(client, tourist, party(1))
    assert_invalid(response, "visitors", "min-people", "a group here has at least 2 people")
    assert await remaining(client) == 1000

    assert (await held_group(client, tourist, party(2)))["party_size"] == 2


async def test_min_people_is_the_sites_smallest_group(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await set_rules(client, admin, min_people=10)

    response = await hold_group(client, tourist, party(9))
    assert_invalid(response, "visitors", "min-people", "a group here has at least 10 people")
    assert await remaining(client) == 1000

    assert (await held_group(client, tourist, party(10)))["party_size"] == 10
    assert await remaining(client) == 990


async def test_passport_holder_needs_a_birth_date(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    teacher = visitor()
    response = await hold_group(client, tourist, [teacher, passport("E12345678")])
    assert_invalid(
        response,
        "visitors[1].birth_date",
        "required",
        "a group member's date of birth is needed when the ID does not carry it",
    )
    assert await remaining(client) == 1000

    body = await held_group(client, tourist, [teacher, passport("E12345678", date(1985, 6, 1))])
    assert body["party_size"] == 2
    assert body["visitors"][1] == {
        "name": "Traveller E12345678",
        "id_type": "passport",
        "id_number_masked": "E*****678",
    }
    assert await remaining(client) == 998


async def test_passport_birth_date_says_who_is_a_minor(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    """One adult per minor: a child on a passport needs a second adult, and a traveller born
    in 1984 on a passport is that adult."""
    await set_rules(client, admin, minors_per_adult=1)
    pupil, child, teacher = minor(), passport("K7654321", date(2016, 3, 4)), visitor()

    response = await hold_group(client, tourist, [pupil, child, teacher])
    assert_invalid(
        response,
        "visitors",
        "adults-per-minors",
        "one adult for every 1 minors: 2 minors need 2 adults, 1 named",
    )

    guide = passport("K1111111", date(1984, 1, 1))
    body = await held_group(client, tourist, [pupil, child, teacher, guide])
    assert body["party_size"] == 4
    assert await remaining(client) == 996


async def test_birth_date_must_match_the_resident_id_number(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    pupil = minor()
    claimed = {**pupil, "birth_date": "1990-01-01"}  # a child passed off as an adult

    response = await hold_group(client, tourist, [visitor(), claimed])
    assert_invalid(
        response,
        "visitors[1].birth_date",
        "matches-id-number",
        "the date of birth differs from the one in the resident ID number",
    )
    assert await remaining(client) == 1000

    number = pupil["id_number"]
    same = {**pupil, "birth_date": f"{number[6:10]}-{number[10:12]}-{number[12:14]}"}
    assert (await held_group(client, tourist, [visitor(), same]))["party_size"] == 2


async def test_eighteenth_birthday_on_the_visit_date_is_an_adult_the_day_after_a_minor(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    """The visit is on 1 December 2026; no minors at all are taken."""
    await set_rules(client, admin, max_minors=0)
    minor_message = "a group here has at most 0 minors (1 named)"

    response = await hold_group(client, tourist, [visitor(), born(date(2008, 12, 2))])
    assert_invalid(response, "visitors", "max-minors", minor_message)
    response = await hold_group(
        client, tourist, [visitor(), passport("P0000002", date(2008, 12, 2))]
    )
    assert_invalid(response, "visitors", "max-minors", minor_message)
    assert await remaining(client) == 1000

    await held_group(client, tourist, [visitor(), born(date(2008, 12, 1))])
    await held_group(client, tourist, [visitor(), passport("P0000001", date(2008, 12, 1))])
    assert await remaining(client) == 996


async def test_minors_are_counted_on_the_visit_date_not_today(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    """Born on 2 December 2008: 17 today (1 December 2026), 18 at tomorrow's visit."""
    await set_rules(client, admin, max_minors=0)
    person = born(date(2008, 12, 2))

    response = await hold_group(client, tourist, [visitor(), person])
    assert_invalid(
        response, "visitors", "max-minors", "a group here has at most 0 minors (1 named)"
    )
    body = await held_group(client, tourist, [visitor(), person], yonghe("1000", TOMORROW))
    assert (body["date"], body["party_size"]) == (TOMORROW.isoformat(), 2)


# the site's other limits -------------------------------------------------------------------


async def test_a_group_is_not_bound_by_the_party_size_limit(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    people = party(12)
    response = await hold(client, tourist, visitors=people)
    assert_problem(
        response,
        422,
        "party-too-large",
        "Too many visitors in one reservation",
        "12 visitors asked for; at most 5 per reservation here",
        "/v1/reservations",
        max_party_size=5,
    )

    body = await held_group(client, tourist, people)
    assert body["party_size"] == 12
    assert await remaining(client) == 988


async def test_a_tourists_groups_are_not_bound_by_the_account_day_limit(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    """One reservation a day per account; a class teacher books three classes all the same."""
    await set_site(client, admin, account_day_limit=1)
    own = await client.post(
        "/v1/reservations", json={"slot_id": YONGHE_10, "visitors": [visitor()]}, headers=tourist
    )
    assert own.status_code == 201, own.text
    await act(client, tourist, own.json()["id"], "confirm")
    refused = await hold(client, tourist)
    assert_problem(
        refused,
        409,
        "account-limit",
        "This account has reached its limit here",
        "this account has reached its limit of 1 reservations at yonghe-temple on 2026-12-01",
        "/v1/reservations",
        limit=1,
        per="site-day",
    )

    classes = []
    for _ in range(3):
        body = await held_group(client, tourist, party(2, 20))
        await act(client, tourist, body["id"], "confirm")
        classes.append(body["id"])
    assert len(set(classes)) == 3
    assert await remaining(client) == 1000 - 1 - 3 * 22


async def test_a_teachers_groups_leave_the_teachers_own_day_free(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    """Groups do not count in the account's own reservations of the day, before or after."""
    await set_site(client, admin, account_day_limit=1)
    for _ in range(2):
        body = await held_group(client, tourist, party(2, 10))
        await act(client, tourist, body["id"], "confirm")
    own = await client.post(
        "/v1/reservations", json={"slot_id": YONGHE_10, "visitors": [visitor()]}, headers=tourist
    )
    assert own.status_code == 201, own.text
    await act(client, tourist, own.json()["id"], "confirm")
    refused = await hold(client, tourist)
    assert refused.status_code == 409
    assert refused.json()["code"] == "account-limit"
    assert await remaining(client) == 1000 - 2 * 12 - 1


@pytest.mark.parametrize("birth", [date(2026, 12, 2), date(1899, 12, 31)])
async def test_a_passport_birth_date_must_be_plausible(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str], birth: date
) -> None:
    response = await hold_group(client, tourist, [visitor(), passport("E7654321", birth)])
    assert_invalid(
        response,
        "visitors[1].birth_date",
        "birth-date",
        "a date of birth between 1900-01-01 and the visit date",
    )
    assert await remaining(client) == 1000


async def test_a_visitor_booked_that_day_cannot_join_a_group(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    other = await new_tourist(client)
    person = visitor()
    first = await hold(client, other, yonghe("1400"), visitors=[person])
    assert first.status_code == 201, first.text

    response = await hold_group(client, tourist, [visitor(), person])
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 already holds a place at yonghe-temple on 2026-12-01",
        visitor_index=1,
    )
    assert await remaining(client) == 1000


async def test_a_visitor_in_one_group_cannot_be_in_another_that_day(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    people = party(2, 3)
    await held_group(client, tourist, people)

    response = await hold_group(client, tourist, [visitor(), people[3]], yonghe("1500"))
    assert_problem(
        response,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 already holds a place at yonghe-temple on 2026-12-01",
        visitor_index=1,
    )
    fresh = visitor()
    twice = await hold_group(client, tourist, [fresh, fresh], yonghe("1500"))
    assert_problem(
        twice,
        409,
        "duplicate-visitor",
        "A visitor already holds a place at this site on this day",
        "visitor 2 is named twice in this party",
        visitor_index=1,
    )
    assert await remaining(client, yonghe("1500")) == 1000


# groups_per_day ----------------------------------------------------------------------------


async def test_a_rush_of_eight_groups_gets_exactly_the_three_of_the_day(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    await set_rules(client, admin, groups_per_day=3)
    teachers = [await new_tourist(client) for _ in range(9)]
    classes = [party(2, 10) for _ in range(8)]

    answers = await asyncio.gather(*(hold_group(client, teachers[i], classes[i]) for i in range(8)))

    assert Counter(a.status_code for a in answers) == {201: 3, 409: 5}
    for answer in answers:
        if answer.status_code == 409:
            assert_group_limit(answer, 3)
    assert await active_groups(runtime) == await counted_groups(redis) == 3
    assert await remaining(client) == 1000 - 3 * 12

    winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
    await act(client, teachers[winner], answers[winner].json()["id"], "cancel")
    assert await active_groups(runtime) == await counted_groups(redis) == 2

    again = await asyncio.gather(
        hold_group(client, teachers[8], party(2, 10)),
        hold_group(client, teachers[8], party(2, 10), yonghe("1100")),
    )
    assert sorted(a.status_code for a in again) == [201, 409]
    assert_group_limit(next(a for a in again if a.status_code == 409), 3)
    assert await active_groups(runtime) == await counted_groups(redis) == 3


async def test_groups_per_day_counts_groups_not_online_reservations(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    await set_rules(client, admin, groups_per_day=1)
    await held_group(client, tourist, party(2))

    assert_group_limit(await hold_group(client, tourist, party(2), yonghe("1100")), 1)
    await held_group(client, tourist, party(2), yonghe("1000", TOMORROW))  # its own count
    other = await new_tourist(client)
    assert (await hold(client, other, yonghe("1100"))).status_code == 201


async def test_an_expired_group_hold_frees_its_place_in_the_day(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    clock: ManualClock,
    runtime: Runtime,
    redis: Redis,
) -> None:
    await set_rules(client, admin, groups_per_day=1)
    await held_group(client, tourist, party(2))
    clock.advance(HOLD_TTL + timedelta(seconds=1))

    assert await runtime.booking.expire_due() == 1
    assert await counted_groups(redis) == 0
    await held_group(client, tourist, party(2))
    assert await active_groups(runtime) == await counted_groups(redis) == 1


async def test_a_group_moved_to_another_day_counts_there(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    await set_rules(client, admin, groups_per_day=1)
    body = await held_group(client, tourist, party(2, 5))
    later = yonghe("1000", TOMORROW)

    response = await client.post(
        f"/v1/reservations/{body['id']}/reschedule", json={"slot_id": later}, headers=tourist
    )
    assert response.status_code == 200, response.text
    assert response.json()["slot_id"] == later
    assert await counted_groups(redis) == 0
    assert await counted_groups(redis, SiteDay(YONGHE, TOMORROW)) == 1
    assert await active_groups(runtime, TOMORROW) == 1

    assert_group_limit(await hold_group(client, tourist, party(2), later), 1, TOMORROW)
    await held_group(client, tourist, party(2))
    back = await client.post(
        f"/v1/reservations/{body['id']}/reschedule", json={"slot_id": YONGHE_10}, headers=tourist
    )
    assert_group_limit(back, 1, instance=f"/v1/reservations/{body['id']}/reschedule")


async def test_new_group_rules_take_effect_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    """A manager's PATCH of `group_rules` is on sale at once, like every other setting the
    counters carry (the day's counters are rebuilt), not at the reconciler's next pass."""
    await set_site(client, admin, group_rules={**RULES, "groups_per_day": 1})

    body = await held_group(client, tourist, party(2))
    assert body["party_size"] == 2
    assert_group_limit(await hold_group(client, tourist, party(2), yonghe("1100")), 1)


# pools -------------------------------------------------------------------------------------


async def set_pool(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """10:00 holds 30 people, 10 of them kept for groups."""
    response = await client.patch(
        f"/v1/slots/{YONGHE_10}", json={"capacity": 30, "pools": {"group": 10}}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["pools"] == {"group": 10}


async def test_groups_sell_from_their_pool_only(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    await set_pool(client, admin)
    assert await remaining(client) == 20

    await held_group(client, tourist, party(2, 8))
    assert await remaining(client) == 20

    response = await hold_group(client, tourist, party(2))
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "sold-out"
    assert (response.json()["slot_left"], response.json()["day_left"]) == (0, 7490)
    assert response.json()["detail"] == "2 asked for; left: 0 in this slot, 7490 this day"
    assert await remaining(client) == 20


async def test_online_sales_cannot_take_the_group_pool(
    rules: None,
    unlimited_accounts: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    await set_pool(client, admin)
    for _ in range(4):
        response = await hold(client, tourist, visitors=[visitor() for _ in range(5)])
        assert response.status_code == 201, response.text
    assert await remaining(client) == 0

    response = await hold(client, tourist)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "sold-out"
    assert response.json()["detail"] == "1 asked for; left: 0 in this slot, 7480 this day"

    body = await held_group(client, tourist, party(1, 9))
    assert body["party_size"] == 10
    refused = await hold_group(client, tourist, party(2))
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "sold-out"
    assert refused.json()["detail"] == "2 asked for; left: 0 in this slot, 7470 this day"
    assert await remaining(client) == 0


async def test_a_cancelled_group_gives_its_places_back_to_the_pool(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    await set_pool(client, admin)
    body = await held_group(client, tourist, party(2, 8))
    await act(client, tourist, body["id"], "cancel")

    assert await remaining(client) == 20
    again = await held_group(client, tourist, party(2, 8))
    assert again["party_size"] == 10
    assert await remaining(client) == 20


async def test_a_group_moved_within_the_day_takes_the_group_pool(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    runtime: Runtime,
) -> None:
    """Moved from 11:00 (no pools) to 10:00, the group takes 10:00's group pool, as a
    rebuild from SQL counts it: the general sale keeps its 20 places, the pool is full."""
    await set_pool(client, admin)
    body = await held_group(client, tourist, party(2, 8), yonghe("1100"))

    response = await client.post(
        f"/v1/reservations/{body['id']}/reschedule", json={"slot_id": YONGHE_10}, headers=tourist
    )
    assert response.status_code == 200, response.text
    moved = await remaining(client)
    assert await runtime.reconciler.rebuild(YONGHE_TODAY)
    assert (moved, await remaining(client)) == (20, 20)
    refused = await hold_group(client, tourist, party(2))
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == "2 asked for; left: 0 in this slot, 7490 this day"


# the counters, rebuilt ---------------------------------------------------------------------


async def test_the_days_groups_survive_redis_losing_its_data(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    await set_rules(client, admin, groups_per_day=2)
    first = await held_group(client, tourist, party(2, 10))
    await act(client, tourist, first["id"], "confirm")
    await held_group(client, tourist, party(2, 10), yonghe("1100"))

    await redis.flushdb()
    assert not await runtime.counters.is_built(YONGHE_TODAY)
    rebuilt = await runtime.reconciler.rebuild_missing()
    assert await counted_groups(redis) == 2

    assert_group_limit(await hold_group(client, tourist, party(2)), 2)
    report = await runtime.reconciler.reconcile()
    assert len(report.days) == rebuilt  # every active day was rebuilt, this one among them
    assert YONGHE_TODAY in [day.site_day for day in report.days]
    assert report.drift == 0
    assert [day for day in report.days if day.rebuilt] == []

    # The rebuilt count knows which reservations are groups: cancelling one frees its place.
    await act(client, tourist, first["id"], "cancel")
    assert await counted_groups(redis) == 1
    await held_group(client, tourist, party(2))
    assert await active_groups(runtime) == await counted_groups(redis) == 2


# who may, and replays ----------------------------------------------------------------------


async def test_only_a_tourist_may_hold_a_group(
    rules: None, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
) -> None:
    response = await hold_group(client, {}, party(2))
    assert_problem(
        response,
        401,
        "unauthorized",
        "A valid bearer token is required",
        "send Authorization: Bearer <token>",
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tidegate"'

    manager = await runtime.accounts.create_staff_token(role="manager", sites=[YONGHE])
    for staff in (admin, {"Authorization": f"Bearer {manager.token}"}):
        assert_problem(
            await hold_group(client, staff, party(2)),
            403,
            "forbidden",
            "This token may not do that",
            "this route is for a tourist's account",
        )
    assert await remaining(client) == 1000


async def test_a_site_without_group_rules_takes_no_groups(
    client: httpx.AsyncClient, admin: dict[str, str], tourist: dict[str, str]
) -> None:
    confucius = "confucius-temple.2026-12-01.1000"
    response = await hold_group(client, tourist, party(2), confucius)
    assert_problem(
        response,
        409,
        "no-groups",
        "This site takes no group reservations",
        "confucius-temple takes no group reservations",
    )
    assert await remaining(client, confucius) == 1000

    await set_rules(client, admin)
    await held_group(client, tourist, party(2))
    await set_site(client, admin, group_rules=None)
    assert_problem(
        await hold_group(client, tourist, party(2)),
        409,
        "no-groups",
        "This site takes no group reservations",
        "yonghe-temple takes no group reservations",
    )
    assert await remaining(client) == 998


async def test_same_key_and_body_replays_the_group(
    rules: None,
    client: httpx.AsyncClient,
    tourist: dict[str, str],
    runtime: Runtime,
    redis: Redis,
) -> None:
    people = party(2, 12)
    first = await hold_group(client, tourist, people, key="class-3b")
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers

    again = await hold_group(client, tourist, people, key="class-3b")
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = await client.get("/v1/reservations", headers=tourist)
    assert listed.json() == [first.json()]
    assert await remaining(client) == 986
    assert await active_groups(runtime) == await counted_groups(redis) == 1


async def test_a_retry_replays_the_group_after_the_rules_changed(
    rules: None,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tourist: dict[str, str],
) -> None:
    people = party(2, 12)
    first = await hold_group(client, tourist, people, key="class-3d")
    assert first.status_code == 201, first.text
    await set_site(client, admin, group_rules=None)

    again = await hold_group(client, tourist, people, key="class-3d")
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


async def test_same_key_with_another_group_is_422(
    rules: None, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    assert (await hold_group(client, tourist, party(2), key="class-3c")).status_code == 201

    response = await hold_group(client, tourist, party(3), key="class-3c")
    assert_problem(
        response,
        422,
        "idempotency-key-reused",
        "This Idempotency-Key was used for a different request",
        "This Idempotency-Key was used for a different request",
    )
    assert await remaining(client) == 998
