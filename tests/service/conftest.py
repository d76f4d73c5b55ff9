"""Fixtures for running tidegate as processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import databases
from tests.service.processes import serving_demo


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@contextlib.contextmanager
def process_env(data_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a tidegate process: its own data directory and, when the suite runs
    on PostgreSQL, its own empty database there (the process migrates it)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    # Tuesday 1 December 2026, 10:00 in Beijing: the service's own clock, as in a demo.
    environment |= {
        "TIDEGATE_DATA_DIR": str(data_dir),
        "TIDEGATE_CLOCK_START": "2026-12-01T10:00:00+08:00",
        "TIDEGATE_LOG_LEVEL": "warning",
    }
    server = databases.server_url()
    if not server:
        yield environment
        return
    name = databases.fresh_name("process")
    databases.create(name)
    try:
        yield environment | {
            "TIDEGATE_DATABASE_URL": databases.with_database(server, name),
            # A shared database needs the key every replica hashes visitor IDs with.
            "TIDEGATE_ID_HASH_KEY": "process-test-id-hash-key",
        }
    finally:
        databases.drop(name)


@pytest.fixture
def env(data_dir: Path) -> Iterator[dict[str, str]]:
    with process_env(data_dir) as environment:
        yield environment


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with serving_demo(env) as served:
        yield served
