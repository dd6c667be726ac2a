"""The status page in a real browser: headless Chromium (the system's, driven by Playwright)
against fleetlb serving on a socket with its prober running, in front of simulated backends.

Set FLEETLB_ADMIN_SCREENSHOT=docs/admin.png to refresh the README's screenshot from this test.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright

from lb.app import build_app
from lb.config import parse_config
from lb.observe import JsonAccessLog
from tests.conftest import Sim, SimFactory, dead_url, endpoint
from tests.fleetlb_process import free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's; .ci/run installs it; never a downloaded build
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ADMIN = "adm-browser"
WAIT_MS = 20_000  # ceiling for anything the page must show; a hang fails by name
EVIL = "<img src=x onerror=alert(1)>"  # an operator's or backend's name is text, never markup


class Gateway:
    """fleetlb on a fixed port of 127.0.0.1, so it can be stopped and started again there."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = build_app(parse_config(self.config, env={}),
                        access_log=JsonAccessLog(io.BytesIO()))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 900})
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        await gateway.stop()


class Errors:
    """JavaScript errors of a page: uncaught exceptions and console errors other than a failed
    load (a fetch the gateway refused or could not answer is the page working as meant)."""

    def __init__(self, page: Page) -> None:
        self.found: list[str] = []
        page.on("pageerror", lambda exc: self.found.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.found.append(f"console: {message.text}")


def fleet_config(sims: dict[str, Sim], **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "store": {"kind": "memory"},
        "probes": {"interval": 0.25, "timeout": 1.0, "rise": 1, "fall": 1},
        "endpoints": [
            endpoint("gpu-a", sims["gpu-a"], weight=3, kind="vllm", max_in_flight=8),
            endpoint("gpu-b", sims["gpu-b"], weight=1),
            endpoint("spare", sims["spare"], models=("m1", EVIL), kind="ollama", priority=1),
            endpoint(EVIL, dead_url()),
        ],
        "models": [{"name": "m1", "strategy": "priority"}],
    }


async def traffic(url: str) -> None:
    """A little load, so the model table and the sparklines have something to show."""
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                                  timeout=10) as client:
        while True:
            with contextlib.suppress(openai.APIError):
                await client.chat.completions.create(
                    model="m1", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            await asyncio.sleep(0.05)


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url + "/admin/")
    await page.locator("#login").wait_for(state="visible", timeout=WAIT_MS)
    await page.fill("#key", ADMIN)
    await page.click("#login button[type=submit]")


def row(page: Page, name: str, state: str | None = None) -> Any:
    selector = f'#fleet tbody tr[data-endpoint="{name}"]'
    if state is not None:
        selector += f'[data-state="{state}"]'
    return page.locator(selector)


async def start_fleet(start_sim: SimFactory) -> dict[str, Sim]:
    return {
        "gpu-a": await start_sim("m1", kind="vllm", ttft_ms=15),
        "gpu-b": await start_sim("m1", ttft_ms=30),
        "spare": await start_sim("m1", EVIL, kind="ollama"),
    }


async def test_live_page_follows_the_fleet(browser: BrowserContext, start_sim: SimFactory,
                                           gateways: list[Gateway], tmp_path: Path) -> None:
    sims = await start_fleet(start_sim)
    gateway = Gateway(fleet_config(sims, admin_key=ADMIN))
    gateways.append(gateway)
    await gateway.start()
    load = asyncio.create_task(traffic(gateway.url))
    try:
        page = await browser.new_page()
        errors = Errors(page)
        await sign_in(page, gateway.url)
        await row(page, "gpu-a", "healthy").wait_for(timeout=WAIT_MS)
        await row(page, "gpu-b", "healthy").wait_for(timeout=WAIT_MS)
        await row(page, "spare", "healthy").wait_for(timeout=WAIT_MS)
        await row(page, EVIL, "unhealthy").wait_for(timeout=WAIT_MS)
        names = await page.locator("#fleet tbody tr td:first-child").all_text_contents()
        assert names == ["gpu-a", "gpu-b", "spare", EVIL]
        assert await page.locator("main img").count() == 0  # the evil name stayed text
        # the pool of m1, tier by tier, and the backend-named model as plain text
        pool = page.locator('#models tbody tr[data-model="m1"] td:nth-child(2)')
        times = "\N{MULTIPLICATION SIGN}"
        assert await pool.text_content() == (
            f"0: gpu-a {times}3, {EVIL} {times}1, gpu-b {times}1; 1: spare {times}1")
        await page.locator(f'#models tbody tr[data-model="{EVIL}"]').wait_for(timeout=WAIT_MS)
        # an open gateway: everyone is the "default" key entry of /admin/keys (lb.teams)
        await page.locator('#keys tbody tr[data-key="default"]').wait_for(timeout=WAIT_MS)

        await sims["gpu-b"].server.close()  # the backend dies
        await row(page, "gpu-b", "unhealthy").wait_for(timeout=WAIT_MS)
        state = row(page, "gpu-b").locator(".state")
        assert await state.text_content() == "unhealthy"
        await save_screenshot(page, tmp_path)

        await gateway.stop()  # the gateway restarts: the page waits, then carries on
        await page.locator("#status", has_text="reconnecting").wait_for(timeout=WAIT_MS)
        await gateway.start()
        await page.locator("#status", has_text="live").wait_for(timeout=WAIT_MS)
        await row(page, "gpu-a", "healthy").wait_for(timeout=WAIT_MS)
        await row(page, "gpu-b", "unhealthy").wait_for(timeout=WAIT_MS)
        assert errors.found == []
    finally:
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load


async def save_screenshot(page: Page, tmp_path: Path) -> None:
    """A test artifact (and, when asked, the README's picture)."""
    shot = tmp_path / "admin.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    target = os.environ.get("FLEETLB_ADMIN_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


async def test_without_the_key_the_page_shows_only_the_login_form(
        browser: BrowserContext, start_sim: SimFactory, gateways: list[Gateway]) -> None:
    sims = await start_fleet(start_sim)
    gateway = Gateway(fleet_config(sims, admin_key=ADMIN))
    gateways.append(gateway)
    await gateway.start()
    page = await browser.new_page()
    errors = Errors(page)
    await page.goto(gateway.url + "/admin/")
    await page.locator("#login").wait_for(state="visible", timeout=WAIT_MS)
    assert await page.locator("#dashboard").is_hidden()
    assert await page.locator("#fleet tbody tr").count() == 0
    assert "gpu-a" not in await page.content()

    await page.fill("#key", "wrong")
    await page.click("#login button[type=submit]")
    await page.locator("#login-error", has_text="refused").wait_for(timeout=WAIT_MS)
    assert await page.locator("#dashboard").is_hidden()
    assert await page.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    assert errors.found == []


async def test_a_gateway_without_admin_key_shows_the_data_at_once(
        browser: BrowserContext, start_sim: SimFactory, gateways: list[Gateway]) -> None:
    sims = await start_fleet(start_sim)
    gateway = Gateway(fleet_config(sims))
    gateways.append(gateway)
    await gateway.start()
    page = await browser.new_page()
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    errors = Errors(page)
    await page.goto(gateway.url + "/admin")  # redirected to /admin/
    await row(page, "gpu-a", "healthy").wait_for(timeout=WAIT_MS)
    assert page.url == gateway.url + "/admin/"
    assert await page.locator("#login").is_hidden()
    assert await page.locator("#signout").is_hidden()
    # readable on a phone: the page fits the screen; wide tables scroll inside their box
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert errors.found == []


async def test_keys_section_shows_each_named_key(browser: BrowserContext, start_sim: SimFactory,
                                                 gateways: list[Gateway]) -> None:
    sims = await start_fleet(start_sim)
    config = fleet_config(sims, admin_key=ADMIN)
    config["keys"] = [
        {"name": "team-a", "key": "sk-team-a", "models": ["m1"], "rpm": 600, "tpm": 100000,
         "max_in_flight": 4, "priority": "interactive"},
        {"name": EVIL, "key": "sk-evil", "priority": "batch"},
    ]
    gateway = Gateway(config)
    gateways.append(gateway)
    await gateway.start()
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-team-a",
                                  max_retries=0, timeout=10) as client:
        for _ in range(3):
            await client.chat.completions.create(
                model="m1", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    page = await browser.new_page()
    errors = Errors(page)
    await sign_in(page, gateway.url)
    team_a = page.locator('#keys tbody tr[data-key="team-a"]')
    await team_a.wait_for(timeout=WAIT_MS)
    cells = await team_a.locator("td").all_text_contents()
    assert cells[:4] == ["team-a", "m1", "interactive", "3 / 600"]
    assert cells[5] == "0 / 4" and cells[6] == "0" and cells[7] == "3"
    evil = await page.locator(f'#keys tbody tr[data-key="{EVIL}"] td').all_text_contents()
    assert evil[:4] == [EVIL, "all", "batch", "0 / ∞"]
    assert await page.locator("main img").count() == 0
    assert errors.found == []
