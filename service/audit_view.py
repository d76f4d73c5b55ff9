"""`tidegate audit`: connect read-only, run the audit (booking/audit.py), show it.

Exit codes: 0 clean, 1 faults found (oversold, missing, leaked, orphaned holds), 2 when the
database or Redis cannot be reached or read. docs/audit.md describes every figure.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from booking.audit import Auditor, AuditReport
from capacity.clock import Clock
from capacity.counters import Counters
from capacity.errors import CapacityUnavailable
from capacity.keys import SiteDay
from capacity.store import connect
from service.embedded_redis import announced_url
from service.runtime import make_read_only_engine, make_sessions

CLEAN, FAULTS, UNREACHABLE = 0, 1, 2

FIGURES = ("active", "oversold", "over_lowered_cap", "missing", "leaked", "orphaned_holds")


class Unreachable(Exception):
    """A store the audit needs cannot be reached or read: one line for stderr."""


@dataclass(frozen=True)
class Target:
    database_url: str
    redis_url: str | None  # None: the embedded Redis of a `tidegate serve` on data_dir
    data_dir: Path
    clock: Clock


async def audit(target: Target, *, site: str | None, visit_date: date | None) -> AuditReport:
    """Run the audit against the target's stores, read-only; raises Unreachable."""
    redis_url = target.redis_url or announced_url(target.data_dir)
    if redis_url is None:
        raise Unreachable(_no_embedded(target.data_dir, "none is running"))
    shown = make_url(target.database_url).render_as_string(hide_password=True)
    sqlite_file = _sqlite_file(target.database_url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise Unreachable(f"cannot reach the database at {shown}: no such file")
    engine = make_read_only_engine(target.database_url)
    redis = connect(redis_url)
    try:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as error:
            # aiosqlite's thread finishes a failed connection after the error is raised: let
            # it, or it meets a closed event loop and prints a traceback.
            await asyncio.sleep(0.1)
            raise Unreachable(f"cannot reach the database at {shown}: {_reason(error)}") from error
        try:
            await redis.ping()
        except (RedisError, OSError) as error:
            if target.redis_url is None:
                raise Unreachable(_no_embedded(target.data_dir, "it has stopped")) from error
            shown = _hide_password(redis_url)
            raise Unreachable(f"cannot reach Redis at {shown}: {_reason(error)}") from error
        auditor = Auditor(make_sessions(engine), Counters(redis), target.clock)
        days = [SiteDay(site, visit_date)] if site and visit_date else None
        try:
            return await auditor.run(days, site=site, visit_date=visit_date)
        except (CapacityUnavailable, RedisError) as error:
            raise Unreachable(f"Redis failed during the audit: {_reason(error)}") from error
        except (SQLAlchemyError, OSError) as error:
            raise Unreachable(f"the database failed during the audit: {_reason(error)}") from error
    finally:
        await redis.aclose()
        await engine.dispose()


def exit_code(report: AuditReport) -> int:
    return CLEAN if report.clean else FAULTS


def show(report: AuditReport, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
        return
    table = Table(title="tidegate audit: SQL against Redis")
    table.add_column("site")
    table.add_column("date")
    for figure in (*FIGURES, "not_built"):
        table.add_column(figure.replace("_", " "), justify="right")
    for day in report.days:
        table.add_row(
            day.site_day.site,
            day.site_day.visit_date.isoformat(),
            *(str(getattr(day, figure)) for figure in FIGURES),
            "yes" if day.not_built else "",
        )
    Console(width=160).print(table)
    sys.stdout.write(verdict(report) + "\n")


def verdict(report: AuditReport) -> str:
    """One line: clean or not, and why."""
    notes = []
    if report.total("over_lowered_cap"):
        notes.append(f"{report.total('over_lowered_cap')} over a lowered cap (allowed)")
    if report.total("not_built"):
        notes.append(f"{report.total('not_built')} site-days without counters (failing closed)")
    tail = f"; {', '.join(notes)}" if notes else ""
    days = f"{len(report.days)} site-days"
    if report.clean:
        return f"CLEAN: {days}, SQL and Redis agree{tail}"
    faults = ", ".join(
        f"{report.total(figure)} {figure.replace('_', ' ')}"
        for figure in ("oversold", "missing", "leaked", "orphaned_holds")
        if report.total(figure)
    )
    return f"NOT CLEAN: {days}: {faults}{tail}"


def _no_embedded(data_dir: Path, why: str) -> str:
    return (
        f"no Redis to audit: the embedded Redis lives only while `tidegate serve` runs, and "
        f"for the data directory {data_dir} {why}; start `tidegate serve`, or pass --redis-url"
    )


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def _reason(error: BaseException) -> str:
    """The first line of what went wrong, down to the driver's own error."""
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return message[0] if message and message[0] else type(cause).__name__


def _hide_password(url: str) -> str:
    return re.sub(r"//([^@/]*:)[^@/]*@", r"//\1***@", url)
