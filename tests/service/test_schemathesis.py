"""Every operation of the OpenAPI schema under schemathesis, against a real server over real
HTTP, authenticated, with all of schemathesis's checks: 0 server errors, 0 answers outside the
schema, bad data always refused with a 4xx (issue 8, §3).

The server is `tidegate serve` on its own database and Redis with the demo sites loaded; each
operation gets a bounded number of generated cases (TIDEGATE_SCHEMATHESIS_EXAMPLES, 25 unless
told), positive and negative.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from service.app import create_app
from tests.conftest import visitor
from tests.service.conftest import process_env
from tests.service.processes import cli, serving_demo

EXAMPLES = int(os.environ.get("TIDEGATE_SCHEMATHESIS_EXAMPLES", "25"))

# A request the schema allows may still be refused by a rule no JSON schema can state: an ID
# number's check digit, a slot that is sold out or not yet on sale, a hold that expired, a
# reservation of another account. Those answers are documented problems, never 5xx.
REFUSALS_OF_VALID_SHAPES = ["2xx", "400", "401", "403", "404", "409", "410", "415", "422"]

# Bad data may also be too big to read (413) before it is found bad.
REFUSALS_OF_BAD_DATA = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]

CONFIG = SchemathesisConfig.from_dict(
    {
        # The live feed (GET /v1/live) streams until told otherwise, an event every 2 s:
        # schemathesis's default 20 events would cost 40 s for each case without `events`.
        "max-stream-events": 2,
        "checks": {
            "positive_data_acceptance": {"expected-statuses": REFUSALS_OF_VALID_SHAPES},
            "negative_data_rejection": {"expected-statuses": REFUSALS_OF_BAD_DATA},
        },
    }
)


class Api:
    """The running server and a token for each kind of caller."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        admin = cli(env, "token", "create", "--role", "admin").splitlines()[-1]
        gate = cli(env, "token", "create", "--role", "gate", "--gate", "yonghe-temple.south-gate")
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.gate = {"Authorization": f"Bearer {gate.splitlines()[-1]}"}
        self.tourist = self._tourist()

    def _tourist(self) -> dict[str, str]:
        with httpx.Client(base_url=self.url) as client:
            started = client.post(
                "/v1/accounts", json={"email": "fuzz@example.com", "password": "correct horse"}
            )
            assert started.status_code == 201, started.text
            headers = {"Authorization": f"Bearer {started.json()['token']}"}
            sent = client.get(
                "/v1/outbox", params={"topic": "account.verification"}, headers=self.admin
            ).json()
            verified = client.post(
                "/v1/accounts/verify", json={"code": sent[0]["payload"]["code"]}, headers=headers
            )
            assert verified.status_code == 200, verified.text
            # Something of its own to read, move and cancel.
            slots = client.get(
                "/v1/sites/yonghe-temple/slots", params={"date": "2026-12-01"}
            ).json()
            on_sale = next(slot["id"] for slot in slots if slot["on_sale"])
            held = client.post(
                "/v1/reservations",
                json={"slot_id": on_sale, "visitors": [visitor()]},
                headers=headers,
            )
            assert held.status_code == 201, held.text
        return headers

    def headers_for(self, path: str) -> dict[str, str]:
        """The caller each operation is for: tourists book, gates scan, staff manage."""
        if path.startswith("/v1/gates/"):
            return self.gate
        tourist_paths = (
            "/v1/reservations",
            "/v1/waitlist",
            "/v1/draws/entries",
            "/v1/group-reservations",
            "/v1/webhooks",
            "/v1/accounts",
        )
        return self.tourist if path.startswith(tourist_paths) else self.admin


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    with process_env(data_dir) as environment:
        env = environment | {"TIDEGATE_RATE_LIMITS": "off"}
        with serving_demo(env) as (url, _):
            yield Api(url, env)


# The schema the server publishes at /openapi.json, built from the same routes without serving.
schema = schemathesis.openapi.from_dict(create_app().openapi(), config=CONFIG)
# Schemathesis makes some of its cases while collecting, before any server runs: they carry
# this stand-in, which the test swaps for the token of the operation's caller.
STAND_IN = "token-of-the-caller"


@schema.auth(refresh_interval=None)
class Tokens:
    """Authenticated cases; schemathesis also sends them without a token, or with a wrong one,
    and then expects 401 (its `ignored_auth` check)."""

    def get(self, case: schemathesis.Case[Any], context: schemathesis.AuthContext) -> str:
        return STAND_IN

    def set(
        self, case: schemathesis.Case[Any], data: str, context: schemathesis.AuthContext
    ) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_within_its_schema_and_never_5xx(
    case: schemathesis.Case[Any], api: Api
) -> None:
    if case.headers and case.headers.get("Authorization") == f"Bearer {STAND_IN}":
        case.headers["Authorization"] = api.headers_for(case.path)["Authorization"]
    case.call_and_validate(base_url=api.url)
