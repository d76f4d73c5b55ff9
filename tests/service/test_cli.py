"""The `tidegate` command on a fresh data directory."""

from __future__ import annotations

import json
import subprocess

from tests.service.processes import TIDEGATE, cli


def test_token_create_for_a_manager_of_a_site(env: dict[str, str]) -> None:
    cli(env, "migrate")
    cli(env, "seed", "--demo")

    token = json.loads(
        cli(env, "token", "create", "--role", "manager", "--site", "palace-museum", "--json")
    )

    assert (token["role"], token["sites"], token["gate"]) == ("manager", ["palace-museum"], None)
    assert len(token["token"]) == 43
    # 30 days on the service's clock, which started at 10:00 Beijing time a moment ago.
    assert token["expires_at"].startswith("2026-12-31T02:00:0")


def test_token_create_refuses_an_unknown_site(env: dict[str, str]) -> None:
    cli(env, "migrate")
    cli(env, "seed", "--demo")

    result = subprocess.run(
        [*TIDEGATE, "token", "create", "--role", "manager", "--site", "atlantis"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "no site atlantis" in result.stderr


def test_seed_is_idempotent(env: dict[str, str]) -> None:
    cli(env, "migrate")

    first = cli(env, "seed", "--demo")
    second = cli(env, "seed", "--demo")

    assert first.startswith("11 demo sites loaded, ")
    assert second == "11 demo sites loaded, 0 new slots"
