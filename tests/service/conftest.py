"""Fixtures for running tidegate as processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    # Tuesday 1 December 2026, 10:00 in Beijing: the service's own clock, as in a demo.
    environment |= {
        "TIDEGATE_DATA_DIR": str(data_dir),
        "TIDEGATE_CLOCK_START": "2026-12-01T10:00:00+08:00",
        "TIDEGATE_LOG_LEVEL": "warning",
    }
    return environment
