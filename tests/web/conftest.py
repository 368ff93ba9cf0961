"""Shared pieces of the browser tests: Chromium, gateways with UI settings, screenshots.

Screenshots of the main states go to ``build/screenshots/`` (gitignored); the run's
summary prints where they are, so a reviewer can look at them.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from sessiongate.app import create_app

from ..conftest import LiveGateway, make_settings
from ..fakes.openai_server import FakeOpenAI
from ..fakes.servers import ServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
TIMEOUT_MS = 15_000
ADMIN_TOKEN = "admin-secret-browser-0123456789"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
_saved: list[Path] = []

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
async def chromium_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(
    browser: Browser, viewport: dict[str, int] = DESKTOP, locale: str = "zh-CN", **kwargs: Any
) -> BrowserContext:
    context = await browser.new_context(viewport=viewport, locale=locale, **kwargs)
    context.set_default_timeout(TIMEOUT_MS)
    return context


async def open_chat(context: BrowserContext, url: str, errors: list[str] | None = None) -> Page:
    """Opens the chat page and waits until it has loaded its state from the server."""
    page = await context.new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "/")
    await page.wait_for_selector("body[data-ready='true']")
    return page


async def send(page: Page, text: str, expect_text: str | None = None) -> None:
    """Types `text` and presses Enter; waits for the streamed reply to complete."""
    before = await page.locator("#messages .message-assistant").count()
    await page.locator("#message-input").fill(text)
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").nth(before)
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text(expect_text if expect_text is not None else f"Echo: {text}")


async def screenshot(page: Page, name: str) -> None:
    """Saves a screenshot of the page as build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path))
    _saved.append(path)


def png_bytes(size: int = 64, rgb: tuple[int, int, int] = (230, 90, 40)) -> bytes:
    """A small solid-colour PNG (for avatars and allowed images)."""
    row = b"\x00" + bytes(rgb) * size
    raw = zlib.compress(row * size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture
def make_gateway(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> Iterator[Callable[..., LiveGateway]]:
    """Starts gateways on a real uvicorn with extra settings: ``make_gateway(ui_title=...)``."""
    stack = contextlib.ExitStack()
    count = 0

    def start(**overrides: Any) -> LiveGateway:
        nonlocal count
        count += 1
        database_url = f"sqlite+aiosqlite:///{tmp_path / f'web{count}.db'}"
        settings = make_settings(database_url, fake_openai_server[1], **overrides)
        server = stack.enter_context(ServerThread(create_app(settings)))
        return LiveGateway(server.url, settings, fake_openai)

    with stack:
        yield start


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.write_line(
            f"browser screenshots ({len(_saved)}) saved under {SCREENSHOTS}/"
        )


async def expire_sessions(gateway: LiveGateway) -> None:
    """Moves every session's expiry into the past, as an idle night would."""
    from datetime import timedelta

    from sqlalchemy import update

    from sessiongate.store import SessionRow, create_engine, create_sessionmaker
    from sessiongate.store.models import utcnow

    engine = create_engine(gateway.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            await db.execute(update(SessionRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    finally:
        await engine.dispose()
