"""The ceiling: the bare minimum a FastAPI endpoint costs on this machine.

One POST endpoint at the same path as tidegate's hold, taking a pydantic body shaped like the
hold request (same JSON, same size) and answering a small JSON with 201. Served exactly like
`tidegate serve` (uvicorn, one worker, uvloop and httptools, access log off), it tells how many
requests per second the framework and server allow before any booking work, so tidegate's
throughput can be read as a fraction of it.

    uvicorn ceiling_app:app --app-dir bench --port 8001 --no-access-log
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="tidegate bench ceiling")


class Visitor(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    id_type: str
    id_number: str = Field(min_length=1, max_length=40)


class Hold(BaseModel):
    slot_id: str = Field(max_length=100)
    visitors: list[Visitor] = Field(min_length=1, max_length=50)


class Held(BaseModel):
    id: str
    status: str
    slot_id: str
    party_size: int


@app.post("/v1/reservations", status_code=201)
async def hold(body: Hold) -> Held:
    return Held(
        id=secrets.token_hex(16), status="held", slot_id=body.slot_id, party_size=len(body.visitors)
    )
