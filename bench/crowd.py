"""Crowd-flow benchmark: suggestions for a city and forecasts for a busy day.

What is measured
    1. The pure functions (`capacity.suggest`, `capacity.forecast`), per call:
       * the ranking of a suggestion call in a city of `--sites` sites of one kind within a
         few kilometres of each other, `--slots` slots a day: the wanted site's next 8 days
         and every other site's same day are candidates (the worst case: every site is
         nearby and of the same kind);
       * the forecast of one site-day, with the configured stay and with a learned stay
         distribution;
       * the forecast of a day of `--reservations` reservations, one arrival group each.
    2. The service (real SQLite file + embedded Redis, as shipped), per call:
       * `Crowd.suggestions` in that city, cold (every cache empty: forecasts built from the
         counters of every candidate site-day) and warm (within the caches' lifetimes, as
         during a rush);
       * `Crowd.forecast` of a site-day holding `--reservations` reservations in SQL.

    .venv/bin/python bench/crowd.py [--sites 100] [--slots 20] [--reservations 40000]

The flash-sale benchmark (`bench/flash_sale.py`) measures what the ranking costs a sold-out
rush, where every refusal carries its alternatives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from booking.crowd import Crowd
from booking.models import Account, Reservation, Site, SlotTemplate
from capacity import forecast as fc
from capacity import suggest
from capacity.clock import ManualClock
from service.app import start as start_runtime
from service.cli import alembic_config
from service.runtime import Runtime
from service.settings import Settings

# Tuesday 1 December 2026, 10:00 in Beijing.
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TODAY = date(2026, 12, 1)
CENTRE = (39.9163, 116.3972)  # the Palace Museum
OPENS, CLOSES = 8 * 60, 20 * 60


def timed(function: Callable[[], Any], *, at_least: float = 0.5) -> float:
    """Median seconds per call over enough calls to last `at_least` seconds."""
    function()
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < at_least or len(samples) < 5:
        t0 = time.perf_counter()
        function()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def timed_async(
    function: Callable[[], Awaitable[Any]],
    *,
    at_least: float = 0.5,
    before: Callable[[], None] | None = None,
) -> float:
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < at_least or len(samples) < 5:
        if before is not None:
            before()
        t0 = time.perf_counter()
        await function()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


# the pure functions -----------------------------------------------------------------------


def windows(slots: int) -> list[tuple[int, int]]:
    length = (CLOSES - 60 - OPENS) // slots
    return [(OPENS + i * length, OPENS + (i + 1) * length) for i in range(slots)]


def learned_stay(rng: random.Random) -> fc.StayTimes:
    return fc.stay_times([int(rng.gauss(150, 45)) for _ in range(5000)], 120)


def city_candidates(rng: random.Random, sites: int, slots: int) -> list[suggest.Candidate]:
    stay = fc.StayTimes.fixed(120)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    candidates = []
    places = [(0, days) for days in range(8)] + [(n, 0) for n in range(1, sites)]
    for site, days in places:
        booked = [rng.randint(0, 1000) for _ in range(slots)]
        quarters = fc.forecast(
            [fc.Arrivals(s, e, b) for (s, e), b in zip(windows(slots), booked, strict=True)],
            stay,
            opens=OPENS,
            closes=CLOSES,
        )
        for (start, end), taken in zip(windows(slots), booked, strict=True):
            candidates.append(
                suggest.Candidate(
                    site=f"site-{site}",
                    site_name=f"Site {site}",
                    slot_id=f"site-{site}.{days}.{start}",
                    start=base + timedelta(days=days, minutes=start),
                    end=base + timedelta(days=days, minutes=end),
                    remaining=1000 - taken,
                    on_sale=True,
                    open=True,
                    load=fc.peak_inside(quarters, start, end) / 2000,
                    distance_km=rng.uniform(0, 8),
                    days_later=days,
                    minutes_apart=abs(start - 600),
                    same_site=site == 0,
                )
            )
    return candidates


def pure(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    candidates = city_candidates(rng, args.sites, args.slots)
    wanted = suggest.Wanted(party=2, load=0.7)
    day = [fc.Arrivals(s, e, rng.randint(0, 1000)) for s, e in windows(args.slots)]
    learned = learned_stay(rng)
    busy_day = []
    for _ in range(args.reservations):
        start, end = rng.choice(windows(args.slots))
        busy_day.append(fc.Arrivals(start, end, rng.randint(1, 5)))
    return {
        "candidates": len(candidates),
        "rank_ms": timed(lambda: suggest.rank(wanted, candidates, limit=5)) * 1000,
        "forecast_site_day_ms": timed(
            lambda: fc.forecast(day, fc.StayTimes.fixed(120), opens=OPENS, closes=CLOSES)
        )
        * 1000,
        "forecast_site_day_learned_stay_ms": timed(
            lambda: fc.forecast(day, learned, opens=OPENS, closes=CLOSES)
        )
        * 1000,
        "learned_stay_buckets": len(learned.pmf),
        "forecast_busy_day_ms": timed(
            lambda: fc.forecast(busy_day, learned, opens=OPENS, closes=CLOSES)
        )
        * 1000,
    }


# the service ------------------------------------------------------------------------------


async def build_city(runtime: Runtime, sites: int, slots: int) -> None:
    rng = random.Random(11)
    length = (CLOSES - 60 - OPENS) // slots
    async with runtime.sessions() as session, session.begin():
        for n in range(sites):
            session.add(
                Site(
                    id=f"site-{n:03d}",
                    name_zh=f"景点{n}",
                    name_en=f"Site {n}",
                    kind="museum",
                    lat=CENTRE[0] + rng.uniform(-0.03, 0.03),
                    lon=CENTRE[1] + rng.uniform(-0.03, 0.03),
                    opens=clock_time(OPENS // 60),
                    closes=clock_time(CLOSES // 60),
                    last_entry=clock_time(CLOSES // 60 - 1),
                    daily_cap=20 * 1000,
                    instant_cap=4000,
                    average_stay_minutes=120,
                    horizon_days=7,
                    release_time=clock_time(20),
                )
            )
        await session.flush()
        for n in range(sites):
            session.add(
                SlotTemplate(
                    site_id=f"site-{n:03d}",
                    label="entry",
                    start=clock_time(OPENS // 60),
                    end=clock_time((OPENS + slots * length) // 60, (OPENS + slots * length) % 60),
                    capacity=1000,
                    repeat_minutes=length,
                )
            )
        session.add(
            Account(id="bench", email="bench@example.com", password_hash="-", created_at=NOW)
        )
    await start_runtime(runtime)


async def add_reservations(runtime: Runtime, site: str, count: int) -> None:
    rng = random.Random(13)
    slots = [s.id for s in await runtime.catalog.slots(site, TODAY)]
    rows = [
        {
            "id": f"r{n:08d}",
            "owner_id": "bench",
            "site_id": site,
            "slot_id": rng.choice(slots),
            "visit_date": TODAY,
            "status": "confirmed",
            "party_size": rng.randint(1, 5),
            "hold_expires_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(count)
    ]
    async with runtime.engine.begin() as connection:
        await connection.execute(sa.insert(Reservation), rows)


def fresh(runtime: Runtime) -> Crowd:
    return Crowd(
        sessions=runtime.sessions,
        catalog=runtime.catalog,
        occupancy=runtime.crowd._occupancy,
        clock=runtime.clock,
    )


def migrated(workdir: Path) -> Settings:
    from alembic import command

    settings = Settings(
        data_dir=workdir,
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}",
        id_hash_key="bench-id-key",
        background=False,
        rate_limits=False,
    )
    command.upgrade(alembic_config(settings), "head")  # type: ignore[arg-type]
    return settings


async def service(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    runtime = Runtime.build(settings, clock=ManualClock(NOW))
    try:
        t0 = time.perf_counter()
        await build_city(runtime, args.sites, args.slots)
        built = time.perf_counter() - t0
        await add_reservations(runtime, "site-000", args.reservations)

        def ask(crowd: Crowd) -> Callable[[], Awaitable[Any]]:
            return lambda: crowd.suggestions(
                "site-000",
                visit_date=TODAY,
                at=clock_time(11),
                party=2,
                origin=None,
                limit=5,
            )

        # Cold: a new Crowd and Catalog caches emptied before every call.
        state: dict[str, Crowd] = {}

        def reset() -> None:
            state["crowd"] = fresh(runtime)
            runtime.catalog._loads.clear()

        async def cold_call() -> None:
            await ask(state["crowd"])()

        cold = await timed_async(cold_call, at_least=3.0, before=reset)
        warm_crowd = fresh(runtime)
        await ask(warm_crowd)()
        warm = await timed_async(ask(warm_crowd), at_least=1.0)
        answer = await ask(warm_crowd)()

        async def forecast_cold() -> None:
            await fresh(runtime).forecast("site-000", TODAY)

        forecast_ms = await timed_async(forecast_cold, at_least=2.0) * 1000
        day = await runtime.crowd.forecast("site-000", TODAY)
        return {
            "city_build_s": round(built, 1),
            "suggestions_cold_ms": round(cold * 1000, 1),
            "suggestions_warm_ms": round(warm * 1000, 2),
            "suggestions_returned": len(answer.suggestions),
            "forecast_sql_ms": round(forecast_ms, 1),
            "forecast_expected_visitors": day.expected_visitors,
        }
    finally:
        await runtime.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--reservations", type=int, default=40_000)
    parser.add_argument("--json-only", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict[str, Any] = {
        "sites": args.sites,
        "slots_per_day": args.slots,
        "reservations": args.reservations,
    }
    figures.update({k: round(v, 3) if isinstance(v, float) else v for k, v in pure(args).items()})
    with tempfile.TemporaryDirectory(prefix="tidegate-crowd-") as workdir:
        figures.update(asyncio.run(service(args, migrated(Path(workdir)))))
    if not args.json_only:
        width = max(len(name) for name in figures)
        for name, value in figures.items():
            print(f"{name:<{width}}  {value}", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
