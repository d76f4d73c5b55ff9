"""`tidegate serve` as a process whose stderr (its log) is kept in a file, and what tests of
logs and shutdown do to it over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.service.processes import TIDEGATE, free_port, wait_ready


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, signum: signal.Signals = signal.SIGTERM, *, seconds: float = 60) -> int:
        """Send `signum` and wait for the exit status."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=seconds)

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every line of the log as the JSON object it must be."""
        records = []
        for number, line in enumerate(self.lines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AssertionError(f"line {number} is not JSON: {line!r}") from error
            assert isinstance(record, dict), f"line {number} is not an object: {line!r}"
            records.append(record)
        return records


@contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[Served]:
    """`tidegate serve` on a free port with stderr in `log`, once /readyz answers 200; killed
    on the way out if the test did not stop it."""
    port = free_port()
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*TIDEGATE, "serve", "--port", str(port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(served.url, process, lambda: log.read_text(encoding="utf-8"))
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def register_tourist(client: httpx.Client, admin: str, email: str) -> dict[str, str]:
    """Register and verify a tourist (the code read from the outbox, as an SMS or mail gateway
    would); returns the tourist's Authorization header."""
    started = client.post("/v1/accounts", json={"email": email, "password": "correct horse"})
    assert started.status_code == 201, started.text
    headers = {"Authorization": f"Bearer {started.json()['token']}"}
    sent = client.get(
        "/v1/outbox",
        params={"topic": "account.verification"},
        headers={"Authorization": f"Bearer {admin}"},
    ).json()
    codes = [event["payload"]["code"] for event in sent if event["payload"]["to"] == email]
    assert len(codes) == 1, sent
    verified = client.post("/v1/accounts/verify", json={"code": codes[0]}, headers=headers)
    assert verified.status_code == 200, verified.text
    return headers
