"""The benchmarks run, at sizes of seconds, and print every figure they promise.

Nothing here is timed: performance is read from the benchmarks' own runs (docs/performance.md).
These tests only keep the scripts working as the service changes under them. The row-lock
comparison needs PostgreSQL, so it runs when TIDEGATE_TEST_DATABASE_URL names a server (CI's
second run); the benches then make and drop databases of their own there. They always use an
embedded Redis of their own: they empty the Redis they are given, which must not be the
suite's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import databases

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

needs_postgresql = pytest.mark.skipif(
    databases.server_url() is None,
    reason="the row-lock way runs on PostgreSQL: set TIDEGATE_TEST_DATABASE_URL (CI does)",
)


def run_bench(script: str, *args: str) -> dict[str, Any]:
    """Run `bench/<script>`; it must exit 0 and end with its JSON report."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is True, report["problems"]
    return report


def assert_audited(run: dict[str, Any]) -> None:
    """The run ended with `tidegate audit`, which found its database and Redis in agreement."""
    findings = ("oversold", "over_lowered_cap", "missing", "leaked", "orphaned_holds")
    assert run["audit_clean"] is True
    assert {name: run[f"audit_{name}"] for name in findings} == dict.fromkeys(findings, 0)
    assert run["audit_site_days"] > 0


def positive(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v > 0 for v in values)


def test_flash_sale_reports_tidegate_against_the_ceiling() -> None:
    report = run_bench("flash_sale.py", "--n", "60", "--c", "4", "--k", "20", "--json-only")

    assert report["sold"] == 20
    assert report["statuses"] == {"201": 20, "409": 40}
    assert positive(report["holds_per_s"], report["sold_out_per_s"], report["ceiling_per_s"])
    assert positive(report["hold_ratio"], report["p50_ms"], report["p99_ms"])
    assert "row_lock" not in report  # SQLite: no row-lock server
    assert_audited(report)


@needs_postgresql
def test_flash_sale_runs_tidegate_ceiling_and_row_lock_side_by_side() -> None:
    server = databases.server_url() or ""
    report = run_bench(
        "flash_sale.py", "--n", "60", "--c", "4", "--k", "20", "--database-url", server
    )

    lock = report["row_lock"]
    assert (report["sold"], lock["sold"], lock["sold_counter"]) == (20, 20, 20)
    assert lock["statuses"] == {"201": 20, "409": 40}
    assert lock["sold_out_answers"] == 40
    assert positive(lock["holds_per_s"], lock["sold_out_per_s"], lock["p50_ms"], lock["p99_ms"])
    assert positive(report["hold_vs_row_lock"], report["sold_out_vs_row_lock"])
    assert positive(report["hold_ratio"], report["sold_out_ratio"])
    assert_audited(report)


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=needs_postgresql)])
def test_data_scale_reports_booking_cost_and_rebuild_times_per_size(database: str) -> None:
    server = ["--database-url", databases.server_url() or ""] if database == "postgresql" else []
    report = run_bench(
        "data_scale.py",
        *("--reservations", "200", "2000", "--past-days", "3"),
        *("--n", "60", "--c", "4", "--k", "20", "--proofs", "10", "--json-only"),
        *server,
    )

    assert report["database"] == database
    small, large = report["runs"]
    assert (small["reservations"], small["active_visitors"]) == (200, 200)
    assert (large["reservations"], large["active_visitors"]) == (2000, 2000)
    for run in (small, large):
        assert run["sold"] == 20
        assert run["proofs"] == 10
        assert positive(run["holds_per_s"], run["p50_ms"], run["p99_ms"], run["proof_mean_ms"])
        assert positive(run["rebuild_all_s"], run["rebuild_largest_s"], run["rebuild_palace_s"])
        assert run["rebuild_all_site_days"] >= run["coming_site_days"] > 0
        # A quarter of the visitors sell out a Palace Museum day (its cap at full size).
        assert run["palace_day_visitors"] == run["active_visitors"] // 4
        assert_audited(run)
