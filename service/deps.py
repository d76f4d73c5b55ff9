"""Annotated dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel

from booking.accounts import Principal
from booking.service import Idempotency
from booking.sites import Catalog
from service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_catalog(runtime: RuntimeDep) -> Catalog:
    return runtime.catalog


CatalogDep = Annotated[Catalog, Depends(get_catalog)]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe key: same key and body replays the first answer",
    ),
]


def idempotency(
    runtime: Runtime,
    principal: Principal,
    key: str | None,
    operation: str,
    body: BaseModel | None = None,
) -> Idempotency | None:
    """The key and a keyed fingerprint of the request (keyed: bodies carry ID numbers)."""
    if key is None:
        return None
    payload = operation.encode() + b"\x00" + (body.model_dump_json().encode() if body else b"")
    return Idempotency(
        owner_id=principal.account_id or principal.actor,
        key=key,
        fingerprint=runtime.hasher.fingerprint(payload),
    )
