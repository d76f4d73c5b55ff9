"""The `tidegate` command: serve, migrate, seed, token."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from service.settings import Settings

app = typer.Typer(help="tidegate: timed-entry booking and crowd capacity", no_args_is_help=True)
token_app = typer.Typer(help="Staff tokens", no_args_is_help=True)
app.add_typer(token_app, name="token")

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    background: Annotated[
        bool, typer.Option(help="Run the hold sweeper and the reconciler in this process")
    ] = True,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Serve the API (and, by default, the sweeper and reconciler) with uvicorn."""
    import os

    import uvicorn

    if not background:
        os.environ["TIDEGATE_BACKGROUND"] = "false"
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        access_log=access_log,
        log_level=Settings().log_level,
    )


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
