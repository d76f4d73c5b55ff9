"""The operators' dashboard in a real headless Chromium (Debian's `chromium`, driven by
Playwright): a gate scans visitors in, and the page's numbers change.

Skipped where no Chromium is installed, unless TIDEGATE_REQUIRE_BROWSER=1 (CI sets it and
installs `chromium`), which makes a missing browser a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import visitor
from tests.service.processes import cli

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SOUTH = "yonghe-temple.south-gate"
SLOT = "yonghe-temple.2026-12-01.1000"

if CHROMIUM is None and os.environ.get("TIDEGATE_REQUIRE_BROWSER") != "1":
    pytest.skip("no chromium here (CI installs it)", allow_module_level=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None, "TIDEGATE_REQUIRE_BROWSER=1 but chromium is not installed"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


async def confirmed_ticket(client: httpx.AsyncClient, admin: str, email: str, party: int) -> str:
    """A tourist registers (the code read from the outbox), holds, confirms; the entry code."""
    registered = await client.post(
        "/v1/accounts", json={"email": email, "password": "correct horse"}
    )
    tourist = {"Authorization": f"Bearer {registered.json()['token']}"}
    sent = (
        await client.get(
            "/v1/outbox",
            params={"topic": "account.verification"},
            headers={"Authorization": f"Bearer {admin}"},
        )
    ).json()
    code = next(e["payload"]["code"] for e in sent if e["payload"]["to"] == email)
    verified = await client.post("/v1/accounts/verify", json={"code": code}, headers=tourist)
    assert verified.is_success, verified.text
    held = await client.post(
        "/v1/reservations",
        json={"slot_id": SLOT, "visitors": [visitor() for _ in range(party)]},
        headers=tourist,
    )
    assert held.status_code == 201, held.text
    rid = held.json()["id"]
    assert (await client.post(f"/v1/reservations/{rid}/confirm", headers=tourist)).is_success
    answer = await client.get(f"/v1/reservations/{rid}/ticket", headers=tourist)
    ticket: str = answer.json()["code"]
    return ticket


async def card_text(page: Page, field: str) -> str:
    return await page.locator(f"#site-yonghe-temple .{field}").inner_text()


async def test_the_dashboard_shows_visitors_coming_in(
    server: tuple[str, subprocess.Popen[bytes]], env: dict[str, str], browser: Browser
) -> None:
    url, _ = server
    admin = cli(env, "token", "create", "--role", "admin").splitlines()[-1]
    operator = cli(env, "token", "create", "--role", "operator", "--site", "yonghe-temple")
    operator = operator.splitlines()[-1]
    gate = cli(env, "token", "create", "--role", "gate", "--gate", SOUTH).splitlines()[-1]
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    await page.goto(f"{url}/dashboard#token={operator}")

    card = page.locator("#site-yonghe-temple")
    await expect(card.locator(".inside")).to_have_text("0")
    await expect(card.locator(".instant-cap")).to_have_text("1500")
    await expect(card).to_have_attribute("data-level", "green")
    assert await page.locator("#sites .site").count() == 1  # an operator sees its own site
    assert "token" not in page.url  # the token left the address bar

    async with httpx.AsyncClient(base_url=url) as client:
        for n, party in enumerate((3, 2)):
            code = await confirmed_ticket(client, admin, f"visitor{n}@example.com", party)
            scanned = await client.post(
                f"/v1/gates/{SOUTH}/scans",
                json={"code": code, "direction": "entry"},
                headers={"Authorization": f"Bearer {gate}"},
            )
            assert scanned.status_code == 200, scanned.text

    # Pushed within the feed's 2 s period.
    await expect(card.locator(".inside")).to_have_text("5", timeout=10_000)
    await expect(card.locator(".entered")).to_have_text("5")
    await expect(card.locator(".left")).to_have_text("7495")
    await expect(page.locator("#gates tbody")).to_contain_text(SOUTH, timeout=10_000)
    await expect(page.locator("#detail-name")).to_have_text("yonghe-temple: 5 inside")
    assert await page.locator("#curve polyline.measured").count() == 1
    assert await page.locator("#curve polyline.forecast").count() == 1
    # The forecast's error so far, and where to send arriving visitors.
    await expect(page.locator("#forecast-error")).to_contain_text("quarter hours")
    await expect(page.locator("#suggested-gate")).to_have_text(
        "Send arriving visitors to South Gate"
    )
    assert errors == []
