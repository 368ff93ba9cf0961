"""Browser tests for the admin dashboard at /admin, driven by headless Chromium against a
gateway on a real uvicorn (admin token set; the fake OpenAI upstream answers chats)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from sessiongate.app import create_app
from sessiongate.store import create_engine, create_sessionmaker
from sessiongate.store.tenants import create_tenant

from ..conftest import make_settings
from ..fakes.openai_server import FakeOpenAI
from ..fakes.servers import ServerThread

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 15_000
ADMIN_TOKEN = "admin-secret-browser-0123456789"

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class AdminLive:
    url: str
    database_url: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


@pytest.fixture
def admin_live(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> Iterator[AdminLive]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    settings = make_settings(database_url, fake_openai_server[1], admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield AdminLive(server.url, database_url)


@pytest.fixture
async def chromium_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _tenant_key(database_url: str, name: str) -> str:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            _, api_key = await create_tenant(db, name)
        return api_key
    finally:
        await engine.dispose()


async def _chat_as(live: AdminLive, api_key: str, users: list[str]) -> dict[str, str]:
    """One turn per user through the tenant's API key; returns user -> session id."""
    sessions = {}
    async with live.client() as client:
        for user in users:
            headers = {"Authorization": f"Bearer {api_key}"}
            r = await client.post(
                "/api/chat", json={"message": "hi", "user": user}, headers=headers
            )
            assert r.status_code == 200, r.text
            info = await client.get(
                "/api/session/info", headers={**headers, "X-Sessiongate-User": user}
            )
            sessions[user] = info.json()["session_id"]
    return sessions


async def _open_admin(
    browser: Browser, url: str, viewport: dict[str, int]
) -> tuple[BrowserContext, Page, list[str]]:
    context = await browser.new_context(viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "/admin")
    await page.wait_for_selector("body[data-ready='true']")
    return context, page, errors


async def _sign_in(page: Page, token: str) -> None:
    await page.locator("#admin-token").fill(token)
    await page.locator("#sign-in").click()


async def test_admin_signs_in_sees_sessions_opens_one_and_deletes_one(
    chromium_browser: Browser, admin_live: AdminLive
) -> None:
    api_key = await _tenant_key(admin_live.database_url, "browser-co")
    markup_user = 'carol <img src=x onerror="window.__xss=1"><b>bold</b>'
    sessions = await _chat_as(admin_live, api_key, ["alice-browser", "bob-browser", markup_user])
    context, page, errors = await _open_admin(chromium_browser, admin_live.url, DESKTOP)

    # A wrong token is refused with a clear message, and the dashboard stays hidden.
    await _sign_in(page, "not-the-admin-token")
    await expect(page.locator("#sign-in-error")).to_contain_text("not accepted")
    await expect(page.locator("#dashboard")).to_be_hidden()

    await _sign_in(page, ADMIN_TOKEN)
    rows = page.locator("#sessions-table tr.session-row")
    await expect(rows).to_have_count(3)
    for session_id in sessions.values():
        await expect(page.locator(f'tr.session-row[data-id="{session_id}"]')).to_have_count(1)
    await expect(page.locator("#stats-total")).to_have_text("3")
    await expect(page.locator("#stats-active")).to_have_text("3")
    await expect(page.locator("#stats-turns")).to_have_text("3")
    await expect(page.locator("#turns-chart svg rect.bar")).not_to_have_count(0)

    # User names are text, never markup.
    await expect(page.locator("#sessions-table")).to_contain_text("carol <img")
    assert await page.locator("#sessions-table img, #sessions-table b").count() == 0
    assert await page.evaluate("window.__xss === undefined")

    # Open alice's session: metadata and conversation, chat content hidden by default.
    alice = sessions["alice-browser"]
    await page.locator(f'tr.session-row[data-id="{alice}"]').click()
    detail = page.locator("#session-detail")
    await expect(detail).to_be_visible()
    await expect(detail).to_have_attribute("data-id", alice)
    await expect(page.locator("#detail-meta")).to_contain_text("alice-browser")
    await expect(page.locator("#detail-meta")).to_contain_text("browser-co")
    await expect(page.locator("#detail-hidden-note")).to_be_visible()
    await expect(page.locator("#detail-conversations .conversation")).to_have_count(1)
    await page.locator("#detail-close").click()
    await expect(detail).to_be_hidden()

    # Delete bob's session from its row (after confirming); it disappears.
    bob = sessions["bob-browser"]
    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator(f'tr.session-row[data-id="{bob}"] .delete-session').click()
    await expect(page.locator(f'tr.session-row[data-id="{bob}"]')).to_have_count(0)
    await expect(rows).to_have_count(2)
    await expect(page.locator("#stats-total")).to_have_text("2")
    async with admin_live.client() as client:
        gone = await client.get(
            f"/api/admin/sessions/{bob}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert gone.status_code == 404

    # Delete from the detail panel too.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator(f'tr.session-row[data-id="{alice}"]').click()
    await expect(detail).to_have_attribute("data-id", alice)
    await page.locator("#detail-delete").click()
    await expect(detail).to_be_hidden()
    await expect(rows).to_have_count(1)

    # Search, then cleanup (nothing has expired).
    await page.locator("#search").fill("no-such-user")
    await page.locator("#search").press("Enter")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#sessions-empty")).to_be_visible()
    await page.locator("#clear-filters").click()
    await expect(rows).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator("#run-cleanup").click()
    await expect(page.locator("#cleanup-result")).to_contain_text("Deleted 0 expired sessions")

    # The token survives a reload (same tab); signing out forgets it.
    await page.reload()
    await expect(rows).to_have_count(1)
    await page.locator("#sign-out").click()
    await expect(page.locator("#sign-in-panel")).to_be_visible()
    await page.reload()
    await expect(page.locator("#sign-in-panel")).to_be_visible()
    assert errors == []
    await context.close()


async def test_admin_dashboard_fits_a_phone(
    chromium_browser: Browser, admin_live: AdminLive
) -> None:
    api_key = await _tenant_key(admin_live.database_url, "phone-co")
    await _chat_as(admin_live, api_key, ["someone-with-a-rather-long-user-name@example.com"])
    context, page, errors = await _open_admin(chromium_browser, admin_live.url, PHONE)
    await _sign_in(page, ADMIN_TOKEN)
    row = page.locator("#sessions-table tr.session-row")
    await expect(row).to_have_count(1)
    await expect(row.locator(".delete-session")).to_be_visible()
    delete_box = await row.locator(".delete-session").bounding_box()
    assert delete_box is not None and delete_box["x"] + delete_box["width"] <= PHONE["width"]
    await expect(page.locator("#run-cleanup")).to_be_visible()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await row.click()
    await expect(page.locator("#session-detail")).to_be_in_viewport()
    box = await page.locator("#session-detail").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert errors == []
    await context.close()
