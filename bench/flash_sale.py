"""Flash-sale benchmark: N tourists race for the K places of one slot, C at a time.

What is measured
    A real `tidegate serve` (SQLite file + embedded Redis, as shipped) gets one slot with
    capacity K and N hold requests (`POST /v1/reservations`, one real-name visitor each, a
    distinct valid resident ID and `Idempotency-Key` per request) over C keep-alive
    connections. Two phases are timed from the generator's clock:

    * holds: from the first request sent until the K-th `201` arrived, the path that proves
      every place in SQL (`holds_per_s`);
    * sold out: from then until the last answer, the `409 sold-out` path that ARCHITECTURE §2
      promises is cheap (`sold_out_per_s`).

    The same requests are then sent to a bare FastAPI app served the same way
    (`bench/ceiling_app.py`: uvicorn, one worker, uvloop + httptools, no access log): its rate
    is the ceiling of the framework on this machine, and the two ratios say how much of it
    tidegate keeps. Correctness is checked in SQL afterwards: exactly min(N, K) active
    visitors in the slot, as many as `201` answers, and nothing oversold; then `tidegate
    audit` compares the whole database with Redis (oversold, drift, orphaned holds) and the
    run fails on any finding. `data_scale.py` ends each of its sizes the same way.

Why a raw-socket generator
    On a 2-core machine the client competes with the server for CPU. A general-purpose client
    (httpx) spends more CPU per request than the server's endpoint does, so it would measure
    itself. `bench/loadgen.py` writes pre-built request bytes and parses only the status line
    and `Content-Length` on uvloop streams, in its own process pinned to the other core; its
    CPU use is reported (`generator_cpu`) so a saturated generator shows.

    .venv/bin/python bench/flash_sale.py --n 5000 --c 64 --k 2000 [--json-only]

The production shape
    `--database-url` (a PostgreSQL server: the bench makes a database of its own there and
    drops it afterwards), `--redis-url` (a Redis 7 database the bench empties first) and
    `--workers 2` (API processes behind one port) run the same sale on PostgreSQL + Redis 7
    with two API processes; every process of the server side stays on the server's core.

The naive way, side by side
    With `--database-url`, the same requests then go to `bench/row_lock_app.py`, served the
    same way: one PostgreSQL transaction per hold that locks the slot's row (`SELECT … FOR
    UPDATE`), counts the places and inserts the reservation and its visitors, in a database of
    its own on the same server. The report then has a `row_lock` part (its rates, latencies and
    the places it sold, which must be K too) and the ratios `hold_vs_row_lock` and
    `sold_out_vs_row_lock`; a table of the three servers goes to stderr.

    .venv/bin/python bench/flash_sale.py --workers 2 --redis-url redis://127.0.0.1:6391/0 \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5439/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import row_lock_app  # bench/ is not a package
from loadgen import LoadResult, build_request, run_in_process
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from booking.ids import make_resident_id

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
SITES = ("yonghe-temple", "temple-of-heaven", "beihai-park", "jingshan-park")
SITE_TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = "bench-password"
REGION = "110101"  # Dongcheng District, Beijing


def log(message: str, *, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tidegate_command() -> list[str]:
    script = Path(sys.executable).with_name("tidegate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def run_cli(args: Sequence[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [*tidegate_command(), *args], env=env, cwd=REPO_DIR, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"tidegate {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A server process started by the bench (and, on stop, whatever it started)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(repr=False, default=None)

    @classmethod
    def start(
        cls, name: str, command: list[str], env: dict[str, str], log_path: Path, cpus: set[int]
    ) -> Server:
        port = free_port()
        out = log_path.open("wb")
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            cwd=REPO_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Pinned before exec, so the embedded redis-server it starts shares its core.
            preexec_fn=partial(os.sched_setaffinity, 0, cpus) if cpus else None,
        )
        return cls(name, port, process, log_path, out)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU used so far by the server and its children (the embedded Redis)."""
        pids = [self.process.pid, *_children(self.process.pid)]
        return sum(_cpu_seconds(pid) for pid in pids)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        descendants = _children(self.process.pid) if self.process.poll() is None else []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in descendants:  # only what this server started, if it left any behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._log is not None:
            self._log.close()


# setup through the API -----------------------------------------------------------------------


def pick_slot(client: httpx.Client, k: int) -> dict[str, Any]:
    """The first slot on sale today (or tomorrow) at the first site whose daily cap allows K."""
    today = datetime.now(SITE_TZ).date()
    for site in SITES:
        info = client.get(f"/v1/sites/{site}")
        if info.status_code != 200 or info.json()["daily_cap"] < k:
            continue
        for day in (today, today + timedelta(days=1)):
            slots = client.get(f"/v1/sites/{site}/slots", params={"date": day.isoformat()})
            slots.raise_for_status()
            for slot in slots.json():
                if slot["on_sale"]:
                    return dict(slot)
    raise RuntimeError(f"no slot on sale today or tomorrow at {', '.join(SITES)} with cap ≥ {k}")


def set_capacity(client: httpx.Client, slot_id: str, k: int, admin_token: str) -> None:
    answer = client.patch(
        f"/v1/slots/{slot_id}",
        json={"capacity": k},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if answer.status_code != 200 or answer.json()["remaining"] != k:
        raise RuntimeError(f"PATCH /v1/slots/{slot_id}: {answer.status_code} {answer.text}")


def lift_account_limits(client: httpx.Client, site: str, admin_token: str) -> None:
    """Each benchmark connection stands for many tourists: let one account hold many places
    (the per-account limits have their own tests)."""
    answer = client.patch(
        f"/v1/sites/{site}",
        json={"account_day_limit": 100, "account_hold_limit": 100},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if answer.status_code != 200:
        raise RuntimeError(f"PATCH /v1/sites/{site}: {answer.status_code} {answer.text}")


def register_accounts(client: httpx.Client, count: int, run: str, admin_token: str) -> list[str]:
    """Register and verify accounts, reading the codes from the outbox as a gateway would."""
    emails = [f"bench{i}.{run}@example.com" for i in range(count)]

    def start(email: str) -> str:
        answer = client.post("/v1/accounts", json={"email": email, "password": PASSWORD})
        if answer.status_code != 201:
            raise RuntimeError(f"POST /v1/accounts: {answer.status_code} {answer.text}")
        token: str = answer.json()["token"]
        return token

    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = dict(zip(emails, pool.map(start, emails), strict=True))
    codes: dict[str, str] = {}
    after = 0
    while len(codes) < count:
        page = client.get(
            "/v1/outbox",
            params={"topic": "account.verification", "after": after, "limit": 500},
            headers={"Authorization": f"Bearer {admin_token}"},
        ).json()
        if not page:
            raise RuntimeError(f"only {len(codes)} of {count} verification codes were sent")
        for event in page:
            codes[event["payload"]["to"]] = event["payload"]["code"]
        after = page[-1]["id"]

    def verify(email: str) -> str:
        answer = client.post(
            "/v1/accounts/verify",
            json={"code": codes[email]},
            headers={"Authorization": f"Bearer {tokens[email]}"},
        )
        if answer.status_code != 200:
            raise RuntimeError(f"POST /v1/accounts/verify: {answer.status_code} {answer.text}")
        return tokens[email]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(verify, emails))


def resident_ids(n: int) -> list[str]:
    """N distinct valid resident IDs: 1000 sequence numbers per birth date from 1970-01-01."""
    first = date(1970, 1, 1)
    return [make_resident_id(REGION, first + timedelta(days=i // 1000), i % 1000) for i in range(n)]


def hold_bodies(slot_id: str, n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "slot_id": slot_id,
                "visitors": [
                    {"name": f"Visitor {i}", "id_type": "resident_id", "id_number": id_number}
                ],
            },
            separators=(",", ":"),
        ).encode()
        for i, id_number in enumerate(resident_ids(n))
    ]


def hold_requests(port: int, bodies: list[bytes], tokens: list[str], run: str) -> list[bytes]:
    return [
        build_request(
            f"{HOST}:{port}",
            "POST",
            "/v1/reservations",
            {
                "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"bench-{run}-{i}",
            },
            body,
        )
        for i, body in enumerate(bodies)
    ]


def sold_in_postgresql(url: str, slot_id: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(plain_url(url))
        try:
            query = "SELECT count(*) FROM visitor WHERE slot_id = $1 AND active"
            return int(await connection.fetchval(query, slot_id))
        finally:
            await connection.close()

    return asyncio.run(count())


def plain_url(url: str) -> str:
    """An SQLAlchemy URL (postgresql+asyncpg://…) as asyncpg's own (postgresql://…)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def postgresql_database(server_url: str, name: str) -> Iterator[str]:
    """A database of the bench's own on the server, dropped afterwards."""

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(plain_url(server_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def sold_in_sql(database: Path, slot_id: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM visitor WHERE slot_id = ? AND active", (slot_id,)
        ).fetchone()
    connection.close()
    return int(count)


# analysis ------------------------------------------------------------------------------------


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)


def rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 and count else None


def ratio(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 3) if part is not None and whole else None


def analyse(result: LoadResult, k: int) -> dict[str, Any]:
    n = len(result.status)
    done = [result.sent[i] + result.latency[i] for i in range(n)]
    end = max(done, default=0.0)
    created = sorted(done[i] for i in range(n) if result.status[i] == 201)
    target = min(n, k)
    # The hold phase ends with the K-th 201 (or the last one, if fewer came back).
    kth = created[target - 1] if len(created) >= target > 0 else (created or [end])[-1]
    held = sum(1 for t in created if t <= kth)
    sold_out_after = sum(1 for i in range(n) if result.sold_out[i] and done[i] > kth)
    statuses = Counter(result.status)
    latencies = list(result.latency)
    hold_lat = [result.latency[i] for i in range(n) if done[i] <= kth]
    sold_out_lat = [result.latency[i] for i in range(n) if result.sold_out[i]]
    return {
        "created": len(created),
        "holds_per_s": rate(held, kth),
        "sold_out_per_s": rate(sold_out_after, end - kth),
        "hold_phase_s": round(kth, 3),
        "sold_out_phase_s": round(end - kth, 3),
        "p50_ms": percentile_ms(latencies, 0.50),
        "p99_ms": percentile_ms(latencies, 0.99),
        "hold_p50_ms": percentile_ms(hold_lat, 0.50),
        "hold_p99_ms": percentile_ms(hold_lat, 0.99),
        "sold_out_p50_ms": percentile_ms(sold_out_lat, 0.50),
        "sold_out_p99_ms": percentile_ms(sold_out_lat, 0.99),
        "statuses": {str(code): statuses[code] for code in sorted(statuses)},
        "sold_out_answers": sum(result.sold_out),
        "errors_5xx": sum(count for code, count in statuses.items() if code >= 500),
        "transport_errors": statuses.get(0, 0),
    }


# the run -------------------------------------------------------------------------------------


def split_cpus() -> tuple[set[int], set[int]]:
    """One core for the server, the others for the generator (none pinned on one core)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(), set()
    return {cpus[0]}, set(cpus[1:])


def measure(
    server: Server, requests: list[bytes], c: int, cpus: set[int]
) -> tuple[LoadResult, float]:
    """Run the load; return the result and the server's CPU use (cores) during it."""
    cpu = server.cpu_seconds()
    result = run_in_process(HOST, server.port, requests, c, cpus=cpus or None)
    return result, round((server.cpu_seconds() - cpu) / result.wall_s, 2)


def bench(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        database_url = row_lock_url = None
        if args.database_url:
            name = uuid.uuid4().hex[:8]
            database_url = stack.enter_context(
                postgresql_database(args.database_url, f"tg_bench_{name}")
            )
            row_lock_url = stack.enter_context(
                postgresql_database(args.database_url, f"tg_rowlock_{name}")
            )
        if args.redis_url:
            empty_redis(args.redis_url)
        return bench_on(args, workdir, servers, database_url, row_lock_url)


def empty_redis(url: str) -> None:
    async def flush() -> None:
        client = Redis.from_url(url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())


@dataclass
class Prepared:
    """A migrated and seeded tidegate data set, and how to start a server on it."""

    env: dict[str, str]
    data_dir: Path
    database_url: str | None
    admin_token: str

    def sold(self, slot_id: str) -> int:
        """Active visitors of a slot, counted in SQL."""
        if self.database_url:
            return sold_in_postgresql(self.database_url, slot_id)
        return sold_in_sql(self.data_dir / "tidegate.sqlite3", slot_id)


def prepare_tidegate(
    workdir: Path, database_url: str | None, redis_url: str | None, *, quiet: bool
) -> Prepared:
    """Migrate and seed the demo sites (SQLite in `workdir` unless `database_url`)."""
    data_dir = workdir / "data"
    env = {
        **os.environ,
        "TIDEGATE_DATA_DIR": str(data_dir),
        "TIDEGATE_LOG_LEVEL": "warning",
        # A flash sale from one load generator is exactly what the rate limits exist to stop.
        "TIDEGATE_RATE_LIMITS": "off",
    }
    for name in ("TIDEGATE_DATABASE_URL", "TIDEGATE_REDIS_URL", "TIDEGATE_CLOCK_START"):
        env.pop(name, None)
    if database_url:
        env["TIDEGATE_DATABASE_URL"] = database_url
        env["TIDEGATE_ID_HASH_KEY"] = uuid.uuid4().hex
    if redis_url:
        env["TIDEGATE_REDIS_URL"] = redis_url
    log(f"data dir {data_dir}: migrate, seed, admin token", quiet=quiet)
    run_cli(["migrate"], env)
    run_cli(["seed", "--demo"], env)
    admin_token = run_cli(["token", "create", "--role", "admin"], env).splitlines()[-1]
    return Prepared(env, data_dir, database_url, admin_token)


# What `tidegate audit --json` counts; any of them above 0 is a finding.
AUDIT_FINDINGS = ("oversold", "over_lowered_cap", "missing", "leaked", "orphaned_holds")


def audit(prepared: Prepared) -> dict[str, Any]:
    """Every run ends with `tidegate audit` of its database against its Redis (so, with the
    embedded Redis, while the server still runs it): its findings and how long it took."""
    started = time.perf_counter()
    done = subprocess.run(
        [*tidegate_command(), "audit", "--json"],
        env=prepared.env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):  # 0 clean, 1 findings; 2 could not reach a store
        raise RuntimeError(f"tidegate audit failed:\n{done.stderr}")
    found = json.loads(done.stdout)
    return {
        "audit_clean": found["clean"],
        "audit_site_days": found["site_days"],
        **{f"audit_{name}": found[name] for name in AUDIT_FINDINGS},
        "audit_s": round(time.perf_counter() - started, 1),
    }


def audit_problems(name: str, audited: dict[str, Any]) -> list[str]:
    if audited["audit_clean"]:
        return []
    findings = {key: audited[f"audit_{key}"] for key in AUDIT_FINDINGS}
    return [f"{name}: tidegate audit found {findings}"]


def start_tidegate(
    prepared: Prepared,
    workers: int,
    workdir: Path,
    cpus: set[int],
    servers: list[Server],
    *,
    ready_timeout: float = 60.0,
) -> Server:
    tidegate = Server.start(
        "tidegate serve",
        [*tidegate_command(), "serve", "--no-background", "--workers", str(workers)],
        prepared.env,
        workdir / "tidegate.log",
        cpus,
    )
    servers.append(tidegate)
    tidegate.wait_ready("/readyz", timeout=ready_timeout)
    return tidegate


def start_bare_app(
    name: str, app: str, env: dict[str, str], workdir: Path, cpus: set[int], servers: list[Server]
) -> Server:
    """A bench app of `bench/` served as `tidegate serve` serves (one uvicorn worker)."""
    server = Server.start(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            HOST,
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        workdir / f"{app.split(':')[0]}.log",
        cpus,
    )
    servers.append(server)
    server.wait_ready("/openapi.json")
    return server


@dataclass
class Sale:
    """One slot of K places on sale, and the accounts and requests that race for it."""

    slot: dict[str, Any]
    tokens: list[str]
    run: str
    bodies: list[bytes]

    def requests(self, port: int) -> list[bytes]:
        return hold_requests(port, self.bodies, self.tokens, self.run)


def open_sale(server: Server, prepared: Prepared, n: int, c: int, k: int, *, quiet: bool) -> Sale:
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        slot = pick_slot(client, k)
        set_capacity(client, slot["id"], k, prepared.admin_token)
        lift_account_limits(client, slot["site"], prepared.admin_token)
        accounts = max(1, min(c, n))
        log(f"slot {slot['id']} capacity {k}; registering {accounts} accounts", quiet=quiet)
        tokens = register_accounts(client, accounts, run, prepared.admin_token)
    return Sale(slot, tokens, run, hold_bodies(slot["id"], n))


def sale_figures(result: LoadResult, k: int, server_cpu: float) -> dict[str, Any]:
    """What the report says of one server's run."""
    stats = analyse(result, k)
    return {
        "holds_per_s": stats["holds_per_s"],
        "sold_out_per_s": stats["sold_out_per_s"],
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "created_201": stats["created"],
        "statuses": stats["statuses"],
        "errors_5xx": stats["errors_5xx"],
        "transport_errors": stats["transport_errors"],
        "sold_out_answers": stats["sold_out_answers"],
        "hold_phase_s": stats["hold_phase_s"],
        "sold_out_phase_s": stats["sold_out_phase_s"],
        "hold_p50_ms": stats["hold_p50_ms"],
        "hold_p99_ms": stats["hold_p99_ms"],
        "sold_out_p50_ms": stats["sold_out_p50_ms"],
        "sold_out_p99_ms": stats["sold_out_p99_ms"],
        "server_cpu": server_cpu,
        "generator_cpu": round(result.cpu_s / result.wall_s, 2),
    }


def sale_problems(name: str, figures: dict[str, Any], sold: int, expected: int) -> list[str]:
    """Why a run that sold places does not count: 5xx, a wrong count, lost requests."""
    problems = []
    if figures["errors_5xx"]:
        problems.append(f"{name}: {figures['errors_5xx']} answers were 5xx")
    if sold != expected:
        problems.append(f"{name}: sold {sold} in SQL, expected min(N, K) = {expected}")
    if figures["created_201"] != sold:
        problems.append(f"{name}: {figures['created_201']} answers were 201 but {sold} sold")
    if figures["transport_errors"]:
        problems.append(f"{name}: {figures['transport_errors']} requests got no HTTP answer")
    return problems


def run_row_lock(
    args: argparse.Namespace,
    url: str,
    sale: Sale,
    env: dict[str, str],
    workdir: Path,
    cpus: tuple[set[int], set[int]],
    servers: list[Server],
) -> tuple[dict[str, Any], list[str]]:
    """The same sale against `bench/row_lock_app.py` on a PostgreSQL database of its own."""
    dsn = plain_url(url)
    asyncio.run(row_lock_app.prepare(dsn, sale.slot["id"], args.k))
    server = start_bare_app(
        "row-lock app",
        "row_lock_app:app",
        {**env, "BENCH_ROW_LOCK_DSN": dsn},
        workdir,
        cpus[0],
        servers,
    )
    log(f"row lock: {args.n} holds over {args.c} connections", quiet=args.json_only)
    result, server_cpu = measure(server, sale.requests(server.port), args.c, cpus[1])
    counter, rows = asyncio.run(row_lock_app.sold(dsn, sale.slot["id"]))
    server.stop()
    figures = {**sale_figures(result, args.k, server_cpu), "sold": rows, "sold_counter": counter}
    problems = sale_problems("row lock", figures, rows, min(args.n, args.k))
    if counter != rows:
        problems.append(f"row lock: the slot counts {counter} sold but {rows} visitors exist")
    return figures, problems


def bench_on(
    args: argparse.Namespace,
    workdir: Path,
    servers: list[Server],
    database_url: str | None,
    row_lock_url: str | None = None,
) -> dict[str, Any]:
    quiet = args.json_only
    load_before = round(os.getloadavg()[0], 2)
    server_cpus, generator_cpus = split_cpus()
    if generator_cpus:
        os.sched_setaffinity(0, generator_cpus)  # this process stays off the server's core

    prepared = prepare_tidegate(workdir, database_url, args.redis_url, quiet=quiet)
    tidegate = start_tidegate(prepared, args.workers, workdir, server_cpus, servers)
    sale = open_sale(tidegate, prepared, args.n, args.c, args.k, quiet=quiet)

    log(f"tidegate: {args.n} holds over {args.c} connections", quiet=quiet)
    result, server_cpu = measure(tidegate, sale.requests(tidegate.port), args.c, generator_cpus)
    sold = prepared.sold(sale.slot["id"])
    audited = audit(prepared)
    tidegate.stop()

    ceiling = start_bare_app(
        "ceiling app", "ceiling_app:app", prepared.env, workdir, server_cpus, servers
    )
    log(f"ceiling: {args.n} requests over {args.c} connections", quiet=quiet)
    bare, ceiling_cpu = measure(ceiling, sale.requests(ceiling.port), args.c, generator_cpus)
    ceiling.stop()

    row_lock: dict[str, Any] | None = None
    problems: list[str] = []
    if row_lock_url:
        row_lock, problems = run_row_lock(
            args, row_lock_url, sale, prepared.env, workdir, (server_cpus, generator_cpus), servers
        )

    figures = sale_figures(result, args.k, server_cpu)
    bare_stats = analyse(bare, args.k)
    ceiling_per_s = rate(len(bare.status), bare.wall_s)
    report: dict[str, Any] = {
        "n": args.n,
        "c": args.c,
        "k": args.k,
        "database": "postgresql" if database_url else "sqlite",
        "redis": "external" if args.redis_url else "embedded",
        "api_processes": args.workers,
        "holds_per_s": figures["holds_per_s"],
        "sold_out_per_s": figures["sold_out_per_s"],
        "ceiling_per_s": ceiling_per_s,
        "hold_ratio": ratio(figures["holds_per_s"], ceiling_per_s),
        "sold_out_ratio": ratio(figures["sold_out_per_s"], ceiling_per_s),
        "sold": sold,
        "oversold": max(0, sold - args.k),
        **{name: value for name, value in figures.items() if name not in ("holds_per_s",)},
        "ceiling_p50_ms": bare_stats["p50_ms"],
        "ceiling_p99_ms": bare_stats["p99_ms"],
        "ceiling_server_cpu": ceiling_cpu,
        "ceiling_generator_cpu": round(bare.cpu_s / bare.wall_s, 2),
        "cpus": {"server": sorted(server_cpus), "generator": sorted(generator_cpus)},
        "loadavg_1m": load_before,
        "slot": sale.slot["id"],
        "accounts": len(sale.tokens),
        **audited,
    }
    if row_lock is not None:
        report["row_lock"] = row_lock
        report["hold_vs_row_lock"] = ratio(figures["holds_per_s"], row_lock["holds_per_s"])
        report["sold_out_vs_row_lock"] = ratio(
            figures["sold_out_per_s"], row_lock["sold_out_per_s"]
        )
    problems = sale_problems("tidegate", figures, sold, min(args.n, args.k)) + problems
    problems += audit_problems("tidegate", audited)
    if bare_stats["created"] != args.n:
        problems.append(f"the ceiling app answered {bare_stats['statuses']}, not {args.n} × 201")
    report["ok"] = not problems
    report["problems"] = problems
    if problems and not quiet:
        log(f"tidegate log tail:\n{tidegate.log_tail()}", quiet=quiet)
    if not quiet:
        log(summary(report), quiet=quiet)
    return report


def summary(report: dict[str, Any]) -> str:
    """The side-by-side table, for people (the JSON line is for tools)."""

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = [
        (
            "tidegate",
            report["holds_per_s"],
            report["sold_out_per_s"],
            report["p50_ms"],
            report["p99_ms"],
            report["sold"],
        ),
        (
            "ceiling",
            report["ceiling_per_s"],
            None,
            report["ceiling_p50_ms"],
            report["ceiling_p99_ms"],
            None,
        ),
    ]
    if "row_lock" in report:
        lock = report["row_lock"]
        rows.append(
            (
                "row lock",
                lock["holds_per_s"],
                lock["sold_out_per_s"],
                lock["p50_ms"],
                lock["p99_ms"],
                lock["sold"],
            )
        )
    lines = [
        f"{'server':<10} {'holds/s':>9} {'sold-out/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'sold':>6}"
    ]
    lines += [
        f"{name:<10} {cell(a):>9} {cell(b):>10} {cell(c):>8} {cell(d):>8} {cell(e):>6}"
        for name, a, b, c, d, e in rows
    ]
    lines.append(f"tidegate audit: {'clean' if report['audit_clean'] else 'FINDINGS'}")
    lines.append(
        f"tidegate/ceiling: holds {cell(report['hold_ratio'])},"
        f" sold-out {cell(report['sold_out_ratio'])}"
    )
    if "row_lock" in report:
        lines.append(
            f"tidegate/row lock: holds {cell(report['hold_vs_row_lock'])},"
            f" sold-out {cell(report['sold_out_vs_row_lock'])}"
        )
    return "\n".join(lines)


def add_sale_arguments(parser: argparse.ArgumentParser, k_help: str = "places in the slot") -> None:
    """The sale's size and the engines, as every bench of a sale takes them."""
    parser.add_argument("--n", type=int, default=5000, help="hold requests to send (tourists)")
    parser.add_argument("--c", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--k", type=int, default=2000, help=k_help)
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--database-url", help="a PostgreSQL server (postgresql+asyncpg://…); default: SQLite"
    )
    parser.add_argument(
        "--redis-url", help="a Redis database the bench empties first; default: embedded"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    add_sale_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="API processes")
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.redis_url:
        parser.error("--workers above 1 needs --redis-url: the processes share one Redis")
    for name in ("n", "c", "k", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    servers: list[Server] = []
    try:
        report = bench(args, workdir, servers)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
