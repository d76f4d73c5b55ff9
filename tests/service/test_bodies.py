"""Request bodies: size, media type and shape are checked before anything is done."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import YONGHE_10, visitor


async def test_a_body_over_64_kib_is_refused_with_413(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    body = {"slot_id": YONGHE_10, "visitors": [visitor()], "padding": "x" * 70_000}

    response = await client.post("/v1/reservations", json=body, headers=tourist)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload-too-large"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_refused_with_415(
    client: httpx.AsyncClient, tourist: dict[str, str], content_type: str
) -> None:
    body = json.dumps({"slot_id": YONGHE_10, "visitors": [visitor()]})

    response = await client.post(
        "/v1/reservations",
        content=body,
        headers=tourist | {"Content-Type": content_type},
    )

    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unsupported-media-type"


async def test_a_chunked_body_over_the_limit_is_refused_with_413(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"slot_id": "' + YONGHE_10.encode() + b'", "visitors": [], "padding": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}'

    response = await client.post(
        "/v1/reservations",
        content=chunks(),
        headers=tourist | {"Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload-too-large"


async def test_a_write_without_a_body_needs_no_content_type(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    held = await client.post(
        "/v1/reservations", json={"slot_id": YONGHE_10, "visitors": [visitor()]}, headers=tourist
    )

    confirmed = await client.post(f"/v1/reservations/{held.json()['id']}/confirm", headers=tourist)

    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "confirmed"
