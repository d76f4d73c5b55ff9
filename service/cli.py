"""The `tidegate` command: serve, worker, migrate, seed, token, simulate, audit."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer

from service.logs import LogFormat
from service.settings import Settings

app = typer.Typer(help="tidegate: timed-entry booking and crowd capacity", no_args_is_help=True)
token_app = typer.Typer(help="Staff tokens", no_args_is_help=True)
app.add_typer(token_app, name="token")

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes (more than one needs TIDEGATE_REDIS_URL)")
    ] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    background: Annotated[
        bool,
        typer.Option(
            help="Run the sweeper, reconciler and webhook delivery in this process (off when "
            "`tidegate worker` runs them)"
        ),
    ] = True,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
    graceful_seconds: Annotated[
        int,
        typer.Option(
            min=0,
            help="On SIGTERM or Ctrl-C, how long the requests being answered (bookings in "
            "flight) may take to finish before they are cancelled",
        ),
    ] = 30,
    keep_alive_seconds: Annotated[
        int,
        typer.Option(
            min=1,
            help="How long an idle connection stays open. Longer than the clients' and the "
            "proxy's own idle timeouts, so that the server never closes a connection that a "
            "client is about to send a booking on",
        ),
    ] = 65,
    healthcheck_seconds: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --workers above 1: how long an API process may take to answer the "
            "supervisor's health check before it is killed and replaced",
        ),
    ] = 30,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines on stderr: JSON, or text for a terminal")
    ] = LogFormat.json,
) -> None:
    """Serve the API (and, by default, the background loops) with uvicorn."""
    import os
    import signal

    import uvicorn

    from service import logs

    settings = Settings()
    logs.configure(settings.log_level, log_format)
    if workers > 1 and settings.redis_url is None:
        # Each process would start an embedded Redis of its own: counters must be shared.
        raise typer.BadParameter(
            "several API processes share one Redis: set TIDEGATE_REDIS_URL", param_hint="--workers"
        )
    if not background:
        os.environ["TIDEGATE_BACKGROUND"] = "false"
    # uvicorn stops gracefully on SIGTERM, then raises it again with the handler it found:
    # the default one would end a clean stop with "killed by SIGTERM" instead of status 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        access_log=access_log,
        log_level=settings.log_level,
        # Applied again in every process uvicorn starts; none of uvicorn's own text handlers.
        log_config=logs.config(settings.log_level, log_format),
        timeout_graceful_shutdown=graceful_seconds,
        # uvicorn's 5 s equals httpx's and many proxies' idle timeout: the server would close
        # a connection at the moment a client reuses it, and that request fails unanswered.
        timeout_keep_alive=keep_alive_seconds,
        # uvicorn's 5 s kills a process that is busy, not hung, in the middle of a sell-out
        # rush on a loaded machine, and with it every booking it was answering.
        timeout_worker_healthcheck=healthcheck_seconds,
    )


@app.command()
def worker(
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines on stderr: JSON, or text for a terminal")
    ] = LogFormat.json,
) -> None:
    """Run the background loops without the API: the hold sweeper (and waitlists and draws),
    the reconciler, webhook delivery, slot generation and the end of day. Run it beside
    `tidegate serve --no-background`; two workers at once are safe (every step is guarded),
    one is enough. Stops cleanly on SIGTERM or Ctrl-C."""
    import logging
    import signal

    from service import logs

    settings = Settings()
    logs.configure(settings.log_level, log_format)
    log = logging.getLogger("service.worker")
    if settings.redis_url is None:
        raise typer.BadParameter(
            "a worker shares the API's Redis: set TIDEGATE_REDIS_URL (the embedded Redis "
            "belongs to one process)"
        )

    async def run() -> None:
        from service import background
        from service.app import start
        from service.runtime import Runtime

        runtime = Runtime.build(settings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await start(runtime)
            loops = background.Loops(runtime)
            log.info("worker ready")
            await stopping.wait()
            await loops.stop()
        finally:
            await runtime.close()

    asyncio.run(run())
    log.info("worker stopped")


def alembic_config(settings: Settings) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", settings.db_url.replace("%", "%%"))
    return config


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Bring the database schema up to date (alembic upgrade)."""
    from alembic import command

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)  # type: ignore[arg-type]
    typer.echo(f"database at {revision}")


@app.command()
def seed(
    demo: Annotated[
        bool, typer.Option("--demo", help="Load Beijing's core-area demo sites")
    ] = False,
) -> None:
    """Load data: `--demo` loads the demo sites and makes their slots for the horizon."""
    if not demo:
        raise typer.BadParameter("nothing to seed: pass --demo")

    async def run() -> tuple[int, int]:
        from booking.demo import load_demo
        from booking.sites import ensure_slots
        from service.runtime import make_engine, make_sessions

        settings = Settings()
        engine = make_engine(settings.db_url)
        sessions = make_sessions(engine)
        try:
            sites = await load_demo(sessions)
            slots = await ensure_slots(sessions, settings.clock())
        finally:
            await engine.dispose()
        return sites, slots

    sites, slots = asyncio.run(run())
    typer.echo(f"{sites} demo sites loaded, {slots} new slots")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, manager, operator or gate")],
    site: Annotated[list[str] | None, typer.Option(help="A site the token may act on")] = None,
    gate: Annotated[str | None, typer.Option(help="The gate of a gate token")] = None,
    days: Annotated[int, typer.Option(help="Days until it expires")] = 30,
    label: Annotated[str, typer.Option(help="Who or what holds it")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a staff token; it is shown once and only its hash is kept."""

    from booking.errors import InvalidRequest

    async def run() -> dict[str, object]:
        from booking.accounts import Accounts
        from service.runtime import make_engine, make_sessions

        settings = Settings()
        engine = make_engine(settings.db_url)
        try:
            accounts = Accounts(
                sessions=make_sessions(engine), clock=settings.clock(), token_ttl=settings.token_ttl
            )
            token = await accounts.create_staff_token(
                role=role, sites=site or [], gate=gate, label=label, ttl=timedelta(days=days)
            )
        finally:
            await engine.dispose()
        return token.model_dump(mode="json")

    try:
        token = asyncio.run(run())
    except InvalidRequest as error:
        raise typer.BadParameter(error.detail, param_hint=f"--{error.field}") from error
    typer.echo(json.dumps(token) if as_json else token["token"])


# The audit compares the stored hashes of visitor IDs: it never hashes one, so it needs no key.
AUDIT_NEEDS_NO_ID_KEY = "unused by the audit"


@app.command()
def audit(
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy async URL (default: the service's database)")
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="redis:// or redis+cluster:// URL (default: the service's Redis; the embedded "
            "one only while `tidegate serve` runs)"
        ),
    ] = None,
    site: Annotated[str | None, typer.Option(help="Only this site")] = None,
    day: Annotated[
        datetime | None, typer.Option("--date", formats=["%Y-%m-%d"], help="Only this visit date")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Check SQL and Redis against each other, read-only: oversold places, units Redis counts
    free or leaked, holds the sweeper missed. Exit 0 clean, 1 faults, 2 a store unreachable."""
    from service import audit_view

    settings = Settings(id_hash_key=AUDIT_NEEDS_NO_ID_KEY)
    target = audit_view.Target(
        database_url=database_url or settings.db_url,
        redis_url=redis_url or settings.redis_url,
        data_dir=settings.data_dir,
        clock=settings.clock(),
    )
    visit_date = day.date() if day is not None else None
    try:
        report = asyncio.run(audit_view.audit(target, site=site, visit_date=visit_date))
    except audit_view.Unreachable as error:
        typer.echo(f"tidegate audit: {error}", err=True)
        raise typer.Exit(audit_view.UNREACHABLE) from None
    audit_view.show(report, as_json=as_json)
    raise typer.Exit(audit_view.exit_code(report))


DEMO_SITES = ["yonghe-temple", "temple-of-heaven", "jingshan-park", "beihai-park"]


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="The running tidegate")] = "http://127.0.0.1:8000",
    site: Annotated[
        list[str] | None, typer.Option(help="A site to visit (repeat; default: four demo sites)")
    ] = None,
    tourists: Annotated[int, typer.Option(help="Tourists who book and come")] = 60,
    at_release: Annotated[
        int, typer.Option(help="Tourists who wait for the next release and book in its rush")
    ] = 20,
    seconds: Annotated[float, typer.Option(help="Wall-clock seconds to run")] = 300.0,
    seed: Annotated[int, typer.Option(help="Random seed (the same day again)")] = 2026,
) -> None:
    """Bring a day to life against a running tidegate: tourists book today's slots and come,
    gates scan them in and out. Run it beside `tidegate serve` on the same data directory
    (it makes its own staff tokens there) and watch /dashboard; give the server a fast clock
    (TIDEGATE_CLOCK_SPEED=60) to see a day pass in minutes."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from service.simulate import Simulation, Totals

    sites = site or DEMO_SITES
    console = Console()

    def table(now: datetime, totals: Totals) -> Table:
        view = Table(title=f"tidegate simulation · service time {now:%H:%M}")
        columns = ("booked", "at release", "entered", "left", "held at the gate", "refused")
        for column in columns:
            view.add_column(column, justify="right")
        refused = ", ".join(f"{k} {v}" for k, v in sorted(totals.refused.items())) or "0"
        view.add_row(
            str(totals.booked),
            str(totals.booked_at_release),
            str(totals.entered),
            str(totals.left),
            str(totals.held_at_gate),
            refused,
        )
        return view

    async def run() -> Totals:
        admin, gates = await _simulation_tokens(sites)
        console.print(f"Watch it: {url}/dashboard#token={admin}")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            simulation = Simulation(client, admin_token=admin, gate_tokens=gates, seed=seed)
            with console.status(f"{tourists + at_release} tourists register and book…"):
                await simulation.prepare(sites, tourists, at_release)
            if simulation.release is not None:
                console.print(f"next release: {simulation.release[1]} at {simulation.release[0]}")
            with Live(console=console, refresh_per_second=4) as live:
                return await simulation.run(
                    seconds=seconds, report=lambda now, t: live.update(table(now, t))
                )

    totals = asyncio.run(run())
    console.print(f"{totals.booked} visitors booked, {totals.entered} came in, {totals.left} left")


async def _simulation_tokens(sites: list[str]) -> tuple[str, dict[str, str]]:
    """An admin token and one token per gate of the sites, made in this data directory."""
    from booking import repository
    from booking.accounts import Accounts
    from service.runtime import make_engine, make_sessions

    settings = Settings()
    engine = make_engine(settings.db_url)
    sessions = make_sessions(engine)
    accounts = Accounts(sessions=sessions, clock=settings.clock(), token_ttl=settings.token_ttl)
    try:
        label = "simulation"
        admin = await accounts.create_staff_token(role="admin", sites=[], label=label)
        async with sessions() as session:
            gates = await repository.gates_of(session, sites)
        tokens = {
            gate.id: (
                await accounts.create_staff_token(role="gate", sites=[], gate=gate.id, label=label)
            ).token
            for gate in gates
        }
    finally:
        await engine.dispose()
    return admin.token, tokens
