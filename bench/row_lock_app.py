"""The naive way: book by locking the slot's row in PostgreSQL.

What most booking code does: one transaction per request that locks the slot's row
(`SELECT … FOR UPDATE`), refuses if it is full, else counts the places sold and inserts the
reservation and its visitors, then commits. Every booking of one slot waits for the one before
it to commit, which is what ARCHITECTURE §2 avoids ("no hot row is ever locked").

It is served exactly like `bench/ceiling_app.py` and `tidegate serve` (uvicorn, one worker,
uvloop and httptools, access log off), at the same path with the same JSON body as tidegate's
hold, and answers 201 with the reservation or 409 with a `sold-out` problem. Its tables live in
a database of their own, made by the bench (`prepare`); the app finds it in
`BENCH_ROW_LOCK_DSN` (an asyncpg DSN) and keeps as many connections as tidegate's engine may
(pool of 10 plus 10 overflow).

    BENCH_ROW_LOCK_DSN=postgresql://postgres@127.0.0.1:5439/rowlock \
        uvicorn row_lock_app:app --app-dir bench --port 8002 --no-access-log
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from ceiling_app import Held, Hold
from fastapi import FastAPI
from fastapi.responses import Response

POOL_SIZE = 20  # tidegate's default engine: pool_size 10 + max_overflow 10

SCHEMA = """
CREATE TABLE bench_slot (
    id text PRIMARY KEY,
    capacity integer NOT NULL,
    sold integer NOT NULL DEFAULT 0
);
CREATE TABLE bench_reservation (
    id text PRIMARY KEY,
    slot_id text NOT NULL REFERENCES bench_slot (id),
    party_size integer NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_bench_reservation_slot_id ON bench_reservation (slot_id);
CREATE TABLE bench_visitor (
    id bigserial PRIMARY KEY,
    reservation_id text NOT NULL REFERENCES bench_reservation (id),
    position integer NOT NULL,
    name text NOT NULL,
    id_type text NOT NULL,
    id_number text NOT NULL
);
CREATE INDEX ix_bench_visitor_reservation_id ON bench_visitor (reservation_id);
"""

SOLD_OUT = (
    b'{"type":"about:blank","title":"No places left in this slot","status":409,"code":"sold-out"}'
)


async def prepare(dsn: str, slot_id: str, capacity: int) -> None:
    """Create the tables in an empty database and one slot of `capacity` places."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(SCHEMA)
        await connection.execute(
            "INSERT INTO bench_slot (id, capacity) VALUES ($1, $2)", slot_id, capacity
        )
    finally:
        await connection.close()


async def sold(dsn: str, slot_id: str) -> tuple[int, int]:
    """(the slot's `sold` counter, visitor rows of its reservations): both must equal K."""
    connection = await asyncpg.connect(dsn)
    try:
        counter = await connection.fetchval("SELECT sold FROM bench_slot WHERE id = $1", slot_id)
        rows = await connection.fetchval(
            "SELECT count(*) FROM bench_visitor v JOIN bench_reservation r"
            " ON r.id = v.reservation_id WHERE r.slot_id = $1",
            slot_id,
        )
        return int(counter), int(rows)
    finally:
        await connection.close()


pool: Any = None  # asyncpg.Pool, made by the lifespan


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["BENCH_ROW_LOCK_DSN"], max_size=POOL_SIZE)
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(title="tidegate bench row lock", lifespan=lifespan)


@app.post("/v1/reservations", status_code=201, response_model=Held)
async def hold(body: Hold) -> Any:
    party = len(body.visitors)
    reservation = secrets.token_hex(16)
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            "SELECT sold, capacity FROM bench_slot WHERE id = $1 FOR UPDATE", body.slot_id
        )
        if row is None or row["sold"] + party > row["capacity"]:
            return Response(SOLD_OUT, status_code=409, media_type="application/problem+json")
        await connection.execute(
            "UPDATE bench_slot SET sold = sold + $2 WHERE id = $1", body.slot_id, party
        )
        await connection.execute(
            "INSERT INTO bench_reservation (id, slot_id, party_size, status)"
            " VALUES ($1, $2, $3, 'held')",
            reservation,
            body.slot_id,
            party,
        )
        await connection.executemany(
            "INSERT INTO bench_visitor (reservation_id, position, name, id_type, id_number)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (reservation, position, v.name, v.id_type, v.id_number)
                for position, v in enumerate(body.visitors)
            ],
        )
    return Held(id=reservation, status="held", slot_id=body.slot_id, party_size=party)
