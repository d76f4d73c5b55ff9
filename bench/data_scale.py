"""Does a booking cost more when the database is full? And how long does a rebuild take?

What is measured, for each size of `--reservations` (default: 10,000 and 1,000,000)
    A fresh tidegate database (migrated with alembic, demo sites seeded) gets that many
    reservations straight in SQL (`bench/bulk_load.py`: half finished on the past days of every
    site, half confirmed on the coming days, with as many active visitors as the size, one
    Palace Museum day sold out to its cap of 40,000). Then:

    a. **The booking path, end to end.** `tidegate serve` is started on it exactly as
       `flash_sale.py` starts it, and the same flash sale is run (N holds for the K places of
       one slot at a site with nothing sold yet on that day, C at a time): holds/s, sold-out/s,
       p50/p99. Its start-up time (`ready_s`) includes building the counters of every coming
       site-day from SQL.
    b. **The SQL proof alone.** In-process (after the rebuilds), `--proofs` holds are written
       one after another, each in its own transaction through `repository.add_holds` (what the
       group commit does for a batch of one: the reservation, its visitor, the idempotency
       record and the outbox row, through every index of the real schema): the mean and
       p50/p99 per transaction. This isolates the one part of a hold that touches the stored
       data; (a) says what a tourist sees.
    c. **Counter rebuild.** In-process, against an empty Redis: `Reconciler.rebuild_missing()`
       over every coming site-day (the size's active visitors), as at a start after Redis came
       back empty, then `Reconciler.rebuild()` of the largest site-day, of the Palace Museum
       day and of the smallest coming site-day alone (the median of three each: the smallest
       one shows what a rebuild costs whatever the day holds).

    .venv/bin/python bench/data_scale.py                                   # SQLite + embedded
    .venv/bin/python bench/data_scale.py --redis-url redis://127.0.0.1:6397/0 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5439/postgres

`--reservations 200 2000 --past-days 3 --n 60 --k 20 --proofs 10` runs in seconds (the
smoke test does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import bulk_load  # bench/ is not a package
import flash_sale

from booking import repository as repo
from booking.reconcile import Reconciler
from capacity.clock import SystemClock
from capacity.counters import Counters
from capacity.keys import SiteDay
from capacity.store import connect
from service.embedded_redis import EmbeddedRedis
from service.runtime import make_engine, make_sessions

SALE_SITE = flash_sale.SITES[0]  # where flash_sale.pick_slot looks first


# b. the SQL proof alone -------------------------------------------------------------------


async def time_proofs(url: str, slot_id: str, owner: str, count: int) -> dict[str, Any]:
    """`count` single-hold transactions into `slot_id` (after its sale, in units above it)."""
    engine = make_engine(url)
    site, day, _ = slot_id.split(".")
    visit_date = date.fromisoformat(day)
    seconds: list[float] = []
    try:
        for i in range(count):
            rid = f"p{uuid.uuid4().hex[:31]}"
            now = datetime.now(UTC)
            unit = 1_000_000 + i  # above any cap: the sale's units stay untouched
            reservation = {
                "id": rid, "owner_id": owner, "site_id": site, "slot_id": slot_id,
                "visit_date": visit_date, "status": "held", "party_size": 1,
                "hold_expires_at": now + timedelta(minutes=15), "idempotency_key": rid,
                "channel": "online", "created_at": now, "updated_at": now,
            }  # fmt: skip
            visitor = {
                "reservation_id": rid, "site_id": site, "slot_id": slot_id,
                "visit_date": visit_date, "position": 0, "name": "Proof", "id_type": "passport",
                "id_hash": uuid.uuid4().hex * 2, "id_masked": "E*****12", "slot_unit": unit,
                "day_unit": unit, "active": True,
            }  # fmt: skip
            record = {
                "owner_id": owner, "key": rid, "fingerprint": "-" * 64, "status_code": 201,
                "body": "{}", "created_at": now,
            }  # fmt: skip
            event = {"at": now, "topic": "reservation.held", "site_id": site, "payload": {}}
            started = time.perf_counter()
            async with engine.begin() as connection:
                await repo.add_holds(connection, [reservation], [visitor], [record], [event])
            seconds.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return {
        "proofs": count,
        "proof_mean_ms": round(statistics.fmean(seconds) * 1000, 3),
        "proof_p50_ms": flash_sale.percentile_ms(seconds, 0.50),
        "proof_p99_ms": flash_sale.percentile_ms(seconds, 0.99),
        "proofs_per_s": flash_sale.rate(count, sum(seconds)),
    }


# c. counter rebuild -----------------------------------------------------------------------


@contextlib.contextmanager
def redis_for_rebuild(url: str | None, workdir: Path) -> Iterator[str]:
    """The Redis given (emptied), or an embedded one of this process's own."""
    if url:
        flash_sale.empty_redis(url)
        yield url
        return
    embedded = EmbeddedRedis(workdir).start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


async def time_rebuilds(
    database_url: str, redis_url: str, days: dict[str, tuple[str, date] | None]
) -> dict[str, Any]:
    engine = make_engine(database_url)
    redis = connect(redis_url)
    try:
        reconciler = Reconciler(
            sessions=make_sessions(engine), counters=Counters(redis), clock=SystemClock()
        )
        await redis.flushdb()
        started = time.perf_counter()
        built = await reconciler.rebuild_missing()
        figures: dict[str, Any] = {
            "rebuild_all_s": round(time.perf_counter() - started, 3),
            "rebuild_all_site_days": built,
        }
        for name, day in days.items():
            if day is None:
                continue
            times = []
            for _ in range(3):
                started = time.perf_counter()
                if not await reconciler.rebuild(SiteDay(*day)):
                    raise RuntimeError(f"rebuild of {day} did not run")
                times.append(time.perf_counter() - started)
            figures[f"rebuild_{name}_s"] = round(statistics.median(times), 3)
            figures[f"rebuild_{name}_day"] = f"{day[0]} {day[1].isoformat()}"
    finally:
        await redis.aclose()
        await engine.dispose()
    return figures


# the run ------------------------------------------------------------------------------------


def measure_size(
    args: argparse.Namespace, size: int, workdir: Path, servers: list[Any]
) -> dict[str, Any]:
    quiet = args.json_only
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.database_url:
            name = f"tg_scale_{uuid.uuid4().hex[:8]}"
            database_url = stack.enter_context(
                flash_sale.postgresql_database(args.database_url, name)
            )
        if args.redis_url:
            flash_sale.empty_redis(args.redis_url)
        prepared = flash_sale.prepare_tidegate(workdir, database_url, args.redis_url, quiet=quiet)
        url = database_url or f"sqlite+aiosqlite:///{prepared.data_dir / 'tidegate.sqlite3'}"

        flash_sale.log(f"{size}: loading reservations", quiet=quiet)
        loaded = asyncio.run(
            bulk_load.load(
                url, size, past_days=args.past_days, spare=SALE_SITE, now=datetime.now(UTC)
            )
        )
        flash_sale.log(f"{size}: loaded in {loaded.seconds} s; serving", quiet=quiet)

        server_cpus, generator_cpus = flash_sale.split_cpus()
        started = time.perf_counter()
        tidegate = flash_sale.start_tidegate(
            prepared, 1, workdir, server_cpus, servers, ready_timeout=3600
        )
        ready_s = round(time.perf_counter() - started, 1)
        sale = flash_sale.open_sale(tidegate, prepared, args.n, args.c, args.k, quiet=quiet)
        flash_sale.log(f"{size}: {args.n} holds over {args.c} connections", quiet=quiet)
        result, cpu = flash_sale.measure(
            tidegate, sale.requests(tidegate.port), args.c, generator_cpus
        )
        sold = prepared.sold(sale.slot["id"])
        flash_sale.log(f"{size}: tidegate audit", quiet=quiet)
        audited = flash_sale.audit(prepared)
        tidegate.stop()
        figures = flash_sale.sale_figures(result, args.k, cpu)
        problems = flash_sale.sale_problems(f"{size}", figures, sold, min(args.n, args.k))
        problems += flash_sale.audit_problems(f"{size}", audited)

        flash_sale.log(f"{size}: counter rebuilds", quiet=quiet)
        with redis_for_rebuild(args.redis_url, workdir) as redis_url:
            days = {
                "largest": loaded.largest_day(),
                "palace": loaded.palace_day(),
                "smallest": loaded.smallest_day(),
            }
            rebuilds = asyncio.run(time_rebuilds(url, redis_url, days))
        # After the rebuilds: the proofs' units are above the slot's cap.
        flash_sale.log(f"{size}: {args.proofs} SQL proofs", quiet=quiet)
        proofs = asyncio.run(time_proofs(url, sale.slot["id"], loaded.owner, args.proofs))
    visitors_of = {
        f"{name}_day_visitors": loaded.active_by_day[day] if day else 0
        for name, day in days.items()
    }
    return {
        "reservations": loaded.reservations,
        "visitors": loaded.visitors,
        "active_visitors": loaded.active_visitors,
        "coming_site_days": len(loaded.active_by_day),
        **visitors_of,
        "load_s": loaded.seconds,
        "ready_s": ready_s,
        "holds_per_s": figures["holds_per_s"],
        "sold_out_per_s": figures["sold_out_per_s"],
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "hold_p50_ms": figures["hold_p50_ms"],
        "hold_p99_ms": figures["hold_p99_ms"],
        "sold": sold,
        "statuses": figures["statuses"],
        "server_cpu": figures["server_cpu"],
        "slot": sale.slot["id"],
        **proofs,
        **rebuilds,
        **audited,
        "problems": problems,
    }


def summary(report: dict[str, Any]) -> str:
    names = [
        ("reservations", "stored reservations"),
        ("active_visitors", "active visitors"),
        ("load_s", "bulk load s"),
        ("ready_s", "serve ready s"),
        ("holds_per_s", "holds/s"),
        ("sold_out_per_s", "sold-out/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("sold", "sold"),
        ("proof_mean_ms", "SQL proof mean ms"),
        ("proof_p50_ms", "SQL proof p50 ms"),
        ("proof_p99_ms", "SQL proof p99 ms"),
        ("rebuild_all_s", "rebuild all s"),
        ("rebuild_all_site_days", "site-days rebuilt"),
        ("largest_day_visitors", "largest day visitors"),
        ("rebuild_largest_s", "rebuild largest s"),
        ("palace_day_visitors", "Palace day visitors"),
        ("rebuild_palace_s", "rebuild Palace s"),
        ("smallest_day_visitors", "smallest day visitors"),
        ("rebuild_smallest_s", "rebuild smallest s"),
        ("audit_clean", "audit clean"),
        ("audit_s", "audit s"),
    ]
    runs = report["runs"]
    lines = [f"{'':<22}" + "".join(f"{run['reservations']:>14}" for run in runs)]
    for key, label in names:
        lines.append(f"{label:<22}" + "".join(f"{run.get(key, '-')!s:>14}" for run in runs))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--reservations",
        "--sizes",
        dest="sizes",
        type=int,
        nargs="+",
        default=[10_000, 1_000_000],
        help="stored reservations (and active visitors) of each run",
    )
    parser.add_argument("--past-days", type=int, default=60, help="days of finished bookings")
    flash_sale.add_sale_arguments(parser, f"places in the slot (at most {SALE_SITE}'s cap)")
    parser.add_argument("--proofs", type=int, default=2000, help="SQL proofs to time, in turn")
    args = parser.parse_args(argv)
    for name in ("n", "c", "k", "proofs", "past_days"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.sizes) < 4:
        parser.error("--reservations must be at least 4")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, flash_sale._terminated)
    report: dict[str, Any] = {
        "database": "postgresql" if args.database_url else "sqlite",
        "redis": "external" if args.redis_url else "embedded",
        "n": args.n,
        "c": args.c,
        "k": args.k,
        "past_days": args.past_days,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "runs": [],
    }
    servers: list[Any] = []
    for size in args.sizes:
        workdir = Path(tempfile.mkdtemp(prefix="tidegate-scale-"))
        try:
            report["runs"].append(measure_size(args, size, workdir, servers))
        finally:
            for server in servers:
                server.stop()
            servers.clear()
            shutil.rmtree(workdir, ignore_errors=True)
    problems = [problem for run in report["runs"] for problem in run.pop("problems")]
    report["ok"] = not problems
    report["problems"] = problems
    flash_sale.log(summary(report), quiet=args.json_only)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
