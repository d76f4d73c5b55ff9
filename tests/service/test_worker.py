"""`tidegate worker`: the background loops in a process of their own, beside API processes
that share its Redis; and the settings that several processes need."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from tests.service.processes import TIDEGATE, cli

# A database index of its own, so that this process's counters meet no other test's.
WORKER_DB = 7
YONGHE_TODAY_EPOCH = "tg:{yonghe-temple:2026-12-01}:epoch"


def refused(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIDEGATE, *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def said(stderr: str) -> str:
    """The words of an error, out of the box that typer draws around it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())


def test_a_worker_needs_the_shared_redis(env: dict[str, str]) -> None:
    result = refused(env, "worker")
    assert result.returncode == 2
    assert "a worker shares the API's Redis: set TIDEGATE_REDIS_URL" in said(result.stderr)


def test_several_api_processes_need_the_shared_redis(env: dict[str, str]) -> None:
    result = refused(env, "serve", "--workers", "2")
    assert result.returncode == 2
    assert "several API processes share one Redis: set TIDEGATE_REDIS_URL" in said(result.stderr)


@pytest.fixture
def shared(env: dict[str, str], redis_url: str) -> Iterator[tuple[dict[str, str], redis.Redis]]:
    separator = "&" if "?" in redis_url else "?"
    url = f"{redis_url}{separator}db={WORKER_DB}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    worker_env = env | {
        "TIDEGATE_REDIS_URL": url,
        "TIDEGATE_SWEEP_SECONDS": "0.2",
        "TIDEGATE_RECONCILE_SECONDS": "0.2",
    }
    cli(worker_env, "migrate")
    cli(worker_env, "seed", "--demo")
    yield worker_env, client
    client.flushdb()
    client.close()


def wait_for(condition: object, *, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


def test_a_worker_counts_every_day_runs_the_loops_and_stops_on_sigterm(
    shared: tuple[dict[str, str], redis.Redis],
) -> None:
    worker_env, client = shared
    process = subprocess.Popen(
        [*TIDEGATE, "worker"],
        env=worker_env | {"TIDEGATE_LOG_LEVEL": "info"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ready: every active site-day was counted from SQL in the shared Redis.
        assert wait_for(lambda: client.exists(YONGHE_TODAY_EPOCH) == 1), "never counted"
        # The reconciler runs in the worker: a day whose counters were lost comes back.
        client.delete(YONGHE_TODAY_EPOCH)
        assert wait_for(lambda: client.exists(YONGHE_TODAY_EPOCH) == 1), "never rebuilt"
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # one JSON object a line
    events = [(line["logger"], line["event"]) for line in lines]
    assert ("service.worker", "worker ready") in events
    assert events[-1] == ("service.worker", "worker stopped")
    # Counted at startup, then again by the reconciler; no request in a worker, no request id.
    rebuilt = [
        line
        for line in lines
        if line["event"] == "counters rebuilt" and line["site_day"] == "yonghe-temple:2026-12-01"
    ]
    assert len(rebuilt) == 2
    assert [line for line in lines if "request_id" in line] == []
