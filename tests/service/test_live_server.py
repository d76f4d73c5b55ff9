"""The real thing: `tidegate migrate`, `seed --demo`, `token create` and `serve` as processes
on the embedded defaults (SQLite file + embedded redis-server), spoken to over real HTTP."""

from __future__ import annotations

import http.client
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import visitor
from tests.service.processes import cli

pytestmark = pytest.mark.slow


def embedded_redis_of(server: subprocess.Popen[bytes]) -> list[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(server.pid), "-f", "redis-server"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in children.stdout.split()]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return "X"


def test_served_on_embedded_defaults_books_over_real_http(
    server: tuple[str, subprocess.Popen[bytes]], env: dict[str, str]
) -> None:
    url, _ = server
    with httpx.Client(base_url=url) as client:
        sites = client.get("/v1/sites").json()
        assert len(sites) == 11
        slots = client.get("/v1/sites/yonghe-temple/slots", params={"date": "2026-12-01"}).json()
        on_sale = [slot["id"] for slot in slots if slot["on_sale"]]
        assert on_sale[0] == "yonghe-temple.2026-12-01.1000"

        admin = cli(env, "token", "create", "--role", "admin")
        started = client.post(
            "/v1/accounts", json={"email": "li@example.com", "password": "correct horse"}
        )
        assert started.status_code == 201, started.text
        headers = {"Authorization": f"Bearer {started.json()['token']}"}
        # The code goes out through the outbox (an SMS or mail gateway reads it there).
        sent = client.get(
            "/v1/outbox",
            params={"topic": "account.verification"},
            headers={"Authorization": f"Bearer {admin}"},
        ).json()
        assert [event["payload"]["to"] for event in sent] == ["li@example.com"]
        verified = client.post(
            "/v1/accounts/verify", json={"code": sent[0]["payload"]["code"]}, headers=headers
        )
        assert verified.status_code == 200, verified.text
        held = client.post(
            "/v1/reservations",
            json={"slot_id": on_sale[0], "visitors": [visitor()]},
            headers=headers | {"Idempotency-Key": "live-1"},
        )
        assert held.status_code == 201, held.text
        confirmed = client.post(f"/v1/reservations/{held.json()['id']}/confirm", headers=headers)
        assert confirmed.json()["status"] == "confirmed"
        slot = client.get(f"/v1/slots/{on_sale[0]}").json()
        assert slot["remaining"] == 999

        changed = client.patch(
            f"/v1/slots/{on_sale[0]}",
            json={"capacity": 1},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert changed.json()["remaining"] == 0
        assert client.get("/metrics").text.count("tidegate_holds_expired_total") >= 1


def test_an_idle_connection_outlives_the_clients_idle_timeout(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """One connection, idle for 6 s (more than httpx's and uvicorn's default 5 s): the server
    has kept it open, so a client that reuses it still gets its answer."""
    url, _ = server
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        statuses = []
        sockets = []
        for pause in (6, 0):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(connection.sock)
            time.sleep(pause)
    finally:
        connection.close()
    assert statuses == [200, 200]
    # The same socket both times: http.client opens a new one only once it has closed the
    # first, and it keeps a kept-alive connection open.
    assert sockets[0] is sockets[1]


def test_embedded_redis_stops_with_the_server(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = server
    redis = embedded_redis_of(process)
    assert len(redis) == 1, "the server runs its own redis-server"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0

    assert not alive(redis[0])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz")


def test_embedded_redis_dies_with_a_killed_server(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, process = server
    redis = embedded_redis_of(process)

    process.kill()
    process.wait(timeout=10)

    deadline = time.monotonic() + 10
    while alive(redis[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(redis[0])
