"""Running the `tidegate` command as a process, on a fresh data directory."""

from __future__ import annotations

import socket
import subprocess
import sys

TIDEGATE = [sys.executable, "-m", "service"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [*TIDEGATE, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
