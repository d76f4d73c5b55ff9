"""A real `redis-server` of a test's own, on a loopback port, that the test can kill with
SIGKILL and start again empty on the same port (a crash and a restart without persistence),
or pause, as an overloaded or stalled Redis would be."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from redis import Redis
from redis.exceptions import BusyLoadingError, ConnectionError
from redis.exceptions import TimeoutError as NoAnswer

from tests.redis_cluster import server_binary
from tests.service.processes import free_port, stop_process


class RedisProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tidegate-fault-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_connect_timeout=1,
            socket_timeout=10,
        )

    def start(self) -> RedisProcess:
        """Start it (again) on its port, empty: nothing is saved, nothing is loaded."""
        assert self._process is None or self._process.poll() is not None, "already running"
        self._process = subprocess.Popen(
            [
                server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
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
        )
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return self
                except (ConnectionError, NoAnswer, BusyLoadingError):
                    pass  # not listening yet
                assert self._process.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: every key is lost."""
        assert self._process is not None
        assert self._process.poll() is None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def keys(self) -> int:
        with self.client() as client:
            return int(client.dbsize())

    def pause_writes(self, seconds: float) -> None:
        """Every client sending a write (a script included) waits until `unpause` or the end
        of `seconds`; reads are answered."""
        with self.client() as client:
            client.execute_command("CLIENT PAUSE", int(seconds * 1000), "WRITE")

    def unpause(self) -> None:
        with self.client() as client:
            client.execute_command("CLIENT UNPAUSE")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
