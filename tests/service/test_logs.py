"""Logs: one JSON object a line on stderr, the request id on every line written while a
request is served (and echoed in `X-Request-ID`), no visitor's ID number anywhere."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from service import logs
from service.app import create_app
from service.runtime import Runtime
from tests.conftest import YONGHE_10, visitor
from tests.service.processes import cli
from tests.service.serving import register_tourist, serving

NEW_ID = re.compile(r"[0-9a-f]{32}")
YONGHE_TODAY = "yonghe-temple:2026-12-01"


def access_lines(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, int]]]:
    """uvicorn's access lines by request id: (method, path, status) of each."""
    found: dict[str, list[tuple[str, str, int]]] = {}
    for record in records:
        if record["logger"] == "uvicorn.access":
            line = (record["method"], record["path"], record["status"])
            found.setdefault(record["request_id"], []).append(line)
    return found


@pytest.mark.slow
def test_a_served_process_logs_json_lines_with_the_id_of_each_request(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = env | {"TIDEGATE_LOG_LEVEL": "info"}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    admin = cli(env, "token", "create", "--role", "admin")
    guest = visitor(name="Guest")
    with serving(env, tmp_path / "stderr.log", "--access-log") as served:
        with httpx.Client(base_url=served.url) as client:
            given = client.get("/v1/sites", headers={"X-Request-ID": "gate-7.scan_0042"})
            fresh = client.get("/healthz")
            spaced = client.get("/healthz", headers={"X-Request-ID": "two words"})
            long = client.get("/healthz", headers={"X-Request-ID": "x" * 65})
            tourist = register_tourist(client, admin, "li@example.com")
            held = client.post(
                "/v1/reservations",
                json={"slot_id": YONGHE_10, "visitors": [guest]},
                headers=tourist | {"X-Request-ID": "hold-1"},
            )
            # A new pool makes the slot's site-day be counted again: booking/ logs it.
            pooled = client.patch(
                f"/v1/slots/{YONGHE_10}",
                json={"pools": {"group": 10}},
                headers={"Authorization": f"Bearer {admin}", "X-Request-ID": "pools-1"},
            )
        assert served.stop() == 0

    assert (given.status_code, pooled.status_code, held.status_code) == (200, 200, 201)
    assert given.headers["X-Request-ID"] == "gate-7.scan_0042"
    assert pooled.headers["X-Request-ID"] == "pools-1"
    assert held.headers["X-Request-ID"] == "hold-1"
    made = [fresh.headers["X-Request-ID"], spaced.headers["X-Request-ID"]]
    made.append(long.headers["X-Request-ID"])
    assert all(NEW_ID.fullmatch(request_id) for request_id in made)
    assert len(set(made)) == 3

    records = served.records()  # every line parses as a JSON object
    for record in records:
        assert {"timestamp", "level", "logger", "event"} <= record.keys(), record
        assert record["timestamp"].endswith("Z")
        assert datetime.fromisoformat(record["timestamp"]).tzinfo == UTC
    access = access_lines(records)
    assert access["gate-7.scan_0042"] == [("GET", "/v1/sites", 200)]
    assert access["pools-1"] == [("PATCH", f"/v1/slots/{YONGHE_10}", 200)]
    assert access["hold-1"] == [("POST", "/v1/reservations", 201)]
    for request_id in made:
        assert access[request_id] == [("GET", "/healthz", 200)]
    # Every request has its own id (the readiness polls included), none of them a bad one.
    assert all(len(lines) == 1 for lines in access.values())
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", request_id) for request_id in access)

    # The rebuild for the new pool is the one line, besides the access line, of its request.
    during = [record for record in records if record.get("request_id") == "pools-1"]
    assert [record["logger"] for record in during] == ["booking.reconcile", "uvicorn.access"]
    assert (during[0]["event"], during[0]["level"], during[0]["site_day"]) == (
        "counters rebuilt",
        "info",
        YONGHE_TODAY,
    )
    # The same rebuild at startup, outside any request, has no id.
    counted = [
        record
        for record in records
        if record["event"] == "counters rebuilt" and record["site_day"] == YONGHE_TODAY
    ]
    assert "request_id" not in counted[0]
    started = [r for r in records if r["event"] == "Application startup complete."]
    assert [(r["logger"], r.get("request_id")) for r in started] == [("uvicorn.error", None)]
    ready = [r for r in records if r["logger"] == "service.app"]
    assert [r["event"].startswith("ready: ") for r in ready] == [True]
    assert "request_id" not in ready[0]

    text = served.log.read_text(encoding="utf-8")
    assert guest["id_number"] not in text
    assert guest["name"] not in text
    assert "correct horse" not in text
    assert tourist["Authorization"].removeprefix("Bearer ") not in text


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"gate-7.scan_0042", True),
        (b"A" * 64, True),
        (b"A" * 65, False),
        (b"", False),
        (b"two words", False),
        (b"line\nbreak", False),
        (b'{"request_id": "forged"}', False),
        ("b\u00e4d".encode(), False),
    ],
)
def test_a_callers_request_id_is_kept_only_if_it_is_a_sane_token(header: bytes, kept: bool) -> None:
    request_id = logs.request_id_of([(b"accept", b"*/*"), (b"x-request-id", header)])
    if kept:
        assert request_id == header.decode()
    else:
        assert NEW_ID.fullmatch(request_id)


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The lines this process logs at info and above, rendered as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


async def test_a_domain_log_line_inside_a_request_carries_its_id(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    response = await client.patch(
        f"/v1/slots/{YONGHE_10}",
        json={"pools": {"group": 10}},
        headers=admin | {"X-Request-ID": "pools-2"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "pools-2"
    rebuilt = [r for r in logged() if r["event"] == "counters rebuilt"]
    assert [(r["logger"], r["site_day"], r["request_id"]) for r in rebuilt] == [
        ("booking.reconcile", YONGHE_TODAY, "pools-2")
    ]
    # Unbound once answered: the next line outside a request has no id.
    assert structlog.contextvars.get_contextvars() == {}


async def test_an_unexpected_error_is_logged_and_answered_with_the_request_id(
    runtime: Runtime, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    app = create_app(runtime=runtime)

    async def fails() -> None:
        raise RuntimeError("the disk caught fire")

    app.add_api_route("/fails", fails)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidegate.test") as client:
        response = await client.get("/fails", headers={"X-Request-ID": "fire-1"})

    assert response.status_code == 500
    assert response.json()["code"] == "internal-error"
    assert response.headers["X-Request-ID"] == "fire-1"
    [line] = [r for r in logged() if r["logger"] != "httpx"]  # the test client's own line
    assert (line["logger"], line["level"], line["request_id"], line["event"]) == (
        "service.errors",
        "error",
        "fire-1",
        "unexpected error on GET /fails",
    )
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: the disk caught fire")


def test_the_text_format_is_one_readable_line_per_record() -> None:
    record = logging.LogRecord(
        "booking.reconcile", logging.INFO, __file__, 1, "counters rebuilt", None, None
    )
    record.site_day = YONGHE_TODAY
    tokens = structlog.contextvars.bind_contextvars(request_id="text-1")
    try:
        line = logs.formatter(logs.LogFormat.text).format(record)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)

    assert "\n" not in line
    assert re.fullmatch(
        r"\S+Z \[info\s*\] counters rebuilt\s+\[booking\.reconcile\] "
        rf"request_id=text-1 site_day={YONGHE_TODAY}",
        line,
    ), line
