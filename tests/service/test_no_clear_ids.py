"""Visitor ID numbers never appear in clear text: not in any answer, log line, Redis key or
value, or database row (issue 8, §3). A booking day touches every path that carries them
(hold, confirm, ticket, gate scan, reschedule, waitlist, window sale, cancel), then the test
greps everything the service wrote or said for each number."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from capacity.store import RedisClient
from service.runtime import Runtime
from tests.conftest import YONGHE_10, hold, visitor

YONGHE_11 = "yonghe-temple.2026-12-01.1100"
YONGHE_13 = "yonghe-temple.2026-12-01.1300"
SOUTH = "yonghe-temple.south-gate"


async def redis_text(redis: RedisClient) -> str:
    """Every key and every value in Redis, as text."""
    parts: list[str] = []
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = kind
        parts.append(f"{key} {value}")
    return "\n".join(parts)


async def database_text(runtime: Runtime) -> str:
    """Every row of every table, as text."""
    parts: list[str] = []
    async with runtime.sessions() as session:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await session.execute(sa.select(table))).all()
            parts.extend(f"{table.name} {tuple(row)}" for row in rows)
    return "\n".join(parts)


@pytest.mark.slow
async def test_no_id_number_in_answers_logs_redis_or_the_database(
    client: httpx.AsyncClient,
    runtime: Runtime,
    redis: RedisClient,
    tourist: dict[str, str],
    admin: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    passport = {"name": "Ana Lima", "id_type": "passport", "id_number": "E12345678"}
    party = [visitor(name="Wang Fang"), visitor(name="Li Lei"), passport]
    waiting = [visitor(name="Zhao Min")]
    at_window = [visitor(name="Sun Li")]
    changed_mind = [visitor(name="Qian Yu")]
    numbers = [v["id_number"] for v in [*party, *waiting, *at_window, *changed_mind]]
    answers: list[httpx.Response] = []

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        answers.append(response)
        return response

    held = await hold(client, tourist, YONGHE_10, party)
    assert held.status_code == 201, held.text
    answers.append(held)
    rid = held.json()["id"]
    await call("POST", f"/v1/reservations/{rid}/confirm", headers=tourist)
    code = (await call("GET", f"/v1/reservations/{rid}/ticket", headers=tourist)).json()["code"]
    await call("POST", f"/v1/reservations/{rid}/reschedule", json={"slot_id": YONGHE_11},
               headers=tourist)  # fmt: skip
    gate = await runtime.accounts.create_staff_token(role="gate", sites=[], gate=SOUTH)
    gate_headers = {"Authorization": f"Bearer {gate.token}"}
    scanned = await client.post(
        f"/v1/gates/{SOUTH}/scans", json={"code": code, "direction": "entry"}, headers=gate_headers
    )
    answers.append(scanned)  # refused or admitted: either way its answer is grepped
    # A full slot, and a party that waits for it.
    await call("PATCH", f"/v1/slots/{YONGHE_13}", json={"capacity": 0}, headers=admin)
    await call("POST", "/v1/waitlist", json={"slot_id": YONGHE_13, "visitors": waiting},
               headers=tourist)  # fmt: skip
    await call("POST", "/v1/sites/yonghe-temple/window-sales",
               json={"slot_id": YONGHE_10, "visitors": at_window}, headers=admin)  # fmt: skip
    await call("GET", "/v1/reservations", headers=tourist)
    await call("GET", f"/v1/reservations/{rid}", headers=tourist)
    other = await call("POST", "/v1/reservations", json={"slot_id": YONGHE_10,
                       "visitors": changed_mind}, headers=tourist)  # fmt: skip
    await call("POST", f"/v1/reservations/{other.json()['id']}/cancel", headers=tourist)
    await call("GET", "/v1/outbox", headers=admin)
    await call("GET", "/v1/audit", params={"site": "yonghe-temple"}, headers=admin)

    said = "\n".join(f"{r.headers}\n{r.text}" for r in answers)
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    stored = await database_text(runtime)
    counted = await redis_text(redis)
    # The grep reads what it should: names are kept, and the masked numbers are answered.
    assert all(name in stored for name in ("Wang Fang", "Zhao Min", "Sun Li")), stored
    assert ":ids " in counted, counted
    assert held.json()["visitors"][2]["id_number_masked"] in said
    assert len(caplog.records) > 0
    for number in numbers:
        for where, text in (
            ("answers", said),
            ("logs", logged),
            ("database", stored),
            ("redis", counted),
        ):
            assert number not in text, f"an ID number in clear text in the {where}"
            assert number.lower() not in text, f"an ID number in clear text in the {where}"
