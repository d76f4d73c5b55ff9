"""Running the `tidegate` command as a process, on a fresh data directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx

from service.settings import Settings

TIDEGATE = [sys.executable, "-m", "service"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Ask a process to end (`sig`), and kill it if it has not within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [*TIDEGATE, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_ready(url: str, process: subprocess.Popen[bytes], why_not: Callable[[], str]) -> None:
    """Wait until the server at `url` answers /readyz with 200 (its counters are built); fail
    with `why_not()` (its log) if it exits first, or after a minute."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        assert process.poll() is None, why_not()
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.1)


@contextlib.contextmanager
def serving_demo(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tidegate serve` on `env`'s data directory (or database), migrated and with the demo
    sites loaded; yields its URL and process once it is ready, stops it (SIGINT) after."""
    assert cli(env, "migrate") == "database at head"
    assert cli(env, "seed", "--demo").startswith("11 demo sites loaded")
    port = free_port()
    process = subprocess.Popen(
        [*TIDEGATE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    log = process.stderr
    try:
        wait_ready(url, process, lambda: log.read().decode() if log else "")
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        if log:
            log.close()


@contextlib.contextmanager
def serving_shared(settings: Settings, *, workers: int = 2) -> Iterator[str]:
    """`tidegate serve --workers N` on a test's own database and Redis (what its runtime
    built), as a production API tier would share them; yields the base URL once ready."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    environment |= {
        "TIDEGATE_DATA_DIR": str(settings.data_dir / "server"),
        "TIDEGATE_DATABASE_URL": settings.db_url,
        "TIDEGATE_REDIS_URL": str(settings.redis_url),
        "TIDEGATE_ID_HASH_KEY": str(settings.id_hash_key),
        "TIDEGATE_CLOCK_START": "2026-12-01T10:00:00+08:00",
        "TIDEGATE_RATE_LIMITS": "off",
        "TIDEGATE_LOG_LEVEL": "warning",
    }
    port = free_port()
    command = ["serve", "--port", str(port), "--workers", str(workers), "--no-background"]
    process = subprocess.Popen(
        [*TIDEGATE, *command], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, lambda: process.stderr.read().decode() if process.stderr else "")
        yield url
    finally:
        stop_process(process)
        if process.stderr:
            process.stderr.close()
