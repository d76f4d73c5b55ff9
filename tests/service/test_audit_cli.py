"""`tidegate audit` as a process: its JSON, its table, its exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from capacity.keys import SiteDay
from service.runtime import Runtime
from tests.conftest import TODAY, hold, visitor
from tests.service.processes import TIDEGATE, cli

YONGHE = SiteDay("yonghe-temple", TODAY)
ZEROS = {
    "oversold": 0,
    "over_lowered_cap": 0,
    "missing": 0,
    "leaked": 0,
    "orphaned_holds": 0,
    "not_built": 0,
}


def audit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIDEGATE, "audit", *args], env=env, capture_output=True, text=True, timeout=120
    )


def stores(runtime: Runtime) -> list[str]:
    return [
        "--database-url",
        runtime.settings.db_url,
        "--redis-url",
        str(runtime.settings.redis_url),
    ]


async def book_two(client: httpx.AsyncClient, tourist: dict[str, str]) -> list[str]:
    """Hold two places at Yonghe Temple at 10:00; returns the visitors' ID numbers."""
    visitors = [visitor(), visitor()]
    response = await hold(client, tourist, visitors=visitors)
    assert response.status_code == 201, response.text
    return [person["id_number"] for person in visitors]


async def test_a_clean_database_exits_0_with_the_json(
    env: dict[str, str], runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await book_two(client, tourist)

    result = audit(
        env, *stores(runtime), "--site", "yonghe-temple", "--date", "2026-12-01", "--json"
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "clean": True,
        "site_days": 1,
        **ZEROS,
        "days": [{"site": "yonghe-temple", "date": "2026-12-01", "active": 2, **ZEROS}],
    }


async def test_a_fresh_database_has_nothing_to_audit(env: dict[str, str], runtime: Runtime) -> None:
    """A seeded database whose counters were never built: no site-day sold or counted."""
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    await runtime.redis.flushdb()

    result = audit(env, "--redis-url", str(runtime.settings.redis_url), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"clean": True, "site_days": 0, **ZEROS, "days": []}


async def test_drift_exits_1(
    env: dict[str, str], runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    await book_two(client, tourist)
    assert await runtime.redis.zadd(YONGHE.slot_free("1000"), {"1": 1}) == 1

    result = audit(env, *stores(runtime), "--json")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["clean"], report["missing"], report["leaked"], report["oversold"]) == (
        False,
        1,
        0,
        0,
    )
    assert [day for day in report["days"] if day["missing"]] == [
        {"site": "yonghe-temple", "date": "2026-12-01", "active": 2, **ZEROS, "missing": 1}
    ]


async def test_the_table_ends_with_the_verdict(
    env: dict[str, str], runtime: Runtime, client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    numbers = await book_two(client, tourist)

    clean = audit(env, *stores(runtime), "--site", "yonghe-temple", "--date", "2026-12-01")
    await runtime.counters.allocate(YONGHE, "1000", ["leaked"], now=runtime.clock.now())
    leaked = audit(env, *stores(runtime), "--site", "yonghe-temple")

    assert clean.returncode == 0, clean.stderr
    assert "yonghe-temple" in clean.stdout
    assert clean.stdout.strip().splitlines()[-1] == "CLEAN: 1 site-days, SQL and Redis agree"
    assert leaked.returncode == 1, leaked.stderr
    assert leaked.stdout.strip().splitlines()[-1].startswith("NOT CLEAN: ")
    assert leaked.stdout.strip().splitlines()[-1].endswith(": 3 leaked")
    assert not [number for number in numbers if number in clean.stdout + leaked.stdout]


async def test_an_unreachable_redis_exits_2_with_one_line(
    env: dict[str, str], runtime: Runtime
) -> None:
    result = audit(
        env, "--database-url", runtime.settings.db_url, "--redis-url", "redis://127.0.0.1:1/0"
    )

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidegate audit: cannot reach Redis at redis://127.0.0.1:1/0: ")


def test_an_unreachable_database_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tidegate.sqlite3"
    result = audit(
        env, "--database-url", f"sqlite+aiosqlite:///{missing}", "--redis-url", "redis://x:1/0"
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidegate audit: cannot reach the database at ")
    assert not missing.parent.exists()  # opened read-only: nothing created


def test_without_a_running_server_the_embedded_redis_is_not_there(
    env: dict[str, str], data_dir: Path
) -> None:
    cli(env, "migrate")

    result = audit(env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tidegate audit: no Redis to audit: the embedded Redis lives only while `tidegate "
        f"serve` runs, and for the data directory {data_dir} none is running; start "
        "`tidegate serve`, or pass --redis-url"
    )


def test_the_embedded_redis_of_a_running_server_is_audited(
    env: dict[str, str], server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    result = audit(env, "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] is True
    assert report["site_days"] > 20  # the server built every day on sale
    assert {day["active"] for day in report["days"]} == {0}
