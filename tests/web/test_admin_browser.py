"""Browser tests for the admin dashboard at /admin, driven by headless Chromium against a
gateway on a real uvicorn (admin token set; the fake OpenAI upstream answers chats)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


async def _rated_replies(live: AdminLive, ratings: list[str]) -> str:
    """One anonymous session with one reply per rating, each rated; returns its session id."""
    async with live.client() as client:
        conversation_id = None
        for i, rating in enumerate(ratings):
            body: dict[str, object] = {"message": f"问题 {i}"}
            if conversation_id:
                body["conversation_id"] = conversation_id
            else:
                body["new_conversation"] = True
            turn = (await client.post("/api/chat", json=body)).json()
            conversation_id = turn["conversation_id"]
            r = await client.post(
                f"/api/conversations/{conversation_id}/messages/{turn['message_id']}/feedback",
                json={"rating": rating},
            )
            assert r.status_code == 200, r.text
        info = await client.get("/api/session/info")
        return str(info.json()["session_id"])


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
async def test_admin_dashboard_in_chinese_counts_feedback_and_filters_bad_answers(
    chromium_browser: Browser, admin_live: AdminLive, viewport: str
) -> None:
    from .conftest import screenshot

    session_id = await _rated_replies(admin_live, ["down", "up", "down"])
    context = await chromium_browser.new_context(
        viewport=DESKTOP if viewport == "desktop" else PHONE, locale="zh-CN"
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(admin_live.url + "/admin")
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    await expect(page.locator("#sign-in")).to_have_text("登录")
    await _sign_in(page, ADMIN_TOKEN)
    await expect(page.locator("#dashboard")).to_be_visible()
    await expect(page.locator("#stats-feedback-down")).to_have_text("2")
    await expect(page.locator("#stats-feedback")).to_contain_text("1 有帮助")
    # Admins see the provider and version; the chat page never shows them.
    await expect(page.locator("#service-info")).to_contain_text("openai")

    rows = page.locator("#feedback-body tr.feedback-row")
    await expect(rows).to_have_count(2)  # "not helpful" is the default filter
    await expect(page.locator("#feedback-body")).to_contain_text("没帮助")
    await page.locator("#feedback-rating").select_option("up")
    await expect(rows).to_have_count(1)
    await page.locator("#feedback-rating").select_option("")
    await expect(rows).to_have_count(3)
    await screenshot(page, f"admin-zh-CN-{viewport}")

    await rows.first.click()
    await expect(page.locator("#session-detail")).to_have_attribute("data-id", session_id)
    await expect(page.locator("#detail-meta")).to_contain_text("会话 ID")

    await page.locator("#language-select").select_option("en")
    await expect(page.locator("#sign-out")).to_have_text("Sign out")
    await expect(page.locator("#stats-feedback")).to_contain_text("1 helpful")
    await context.close()


class _TenantsApi:
    """The admin tenants API as CONTRACTS.md (11) specifies it, answered in the browser
    (page.route), so the panel is tested against the contract's shapes."""

    def __init__(self) -> None:
        self.tenants: list[dict[str, object]] = []
        self.calls: list[tuple[str, str, object]] = []

    def _tenant(self, name: str, allow: bool) -> dict[str, object]:
        return {
            "id": f"id-{name}",
            "name": name,
            "key_prefix": "sgk_" + name[:4],
            "created_at": "2026-11-21T10:00:00Z",
            "revoked_at": None,
            "allow_system_prompt": allow,
            "sessions": 2,
        }

    async def handle(self, route: Any) -> None:
        import json as _json

        request = route.request
        path = request.url.split("/api/admin/tenants", 1)[1]
        body = _json.loads(request.post_data) if request.post_data else None
        self.calls.append((request.method, path, body))
        assert request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
        if request.method == "GET" and path == "":
            await route.fulfill(json={"tenants": self.tenants})
            return
        if request.method == "POST" and path == "":
            if any(t["name"] == body["name"] for t in self.tenants):
                error = {"code": "tenant_exists", "message": "exists"}
                await route.fulfill(status=409, json={"error": error})
                return
            tenant = self._tenant(body["name"], body["allow_system_prompt"])
            self.tenants.append(tenant)
            await route.fulfill(status=201, json={"tenant": tenant, "api_key": "sgk_new_secret_1"})
            return
        name, action = path.strip("/").split("/")
        tenant = next(t for t in self.tenants if t["name"] == name)
        if action == "rotate":
            await route.fulfill(
                json={
                    "tenant": tenant,
                    "api_key": "sgk_rotated_secret_2",
                    "previous_key_expires_at": "2026-11-21T11:00:00Z"
                    if body["grace_seconds"]
                    else None,
                }
            )
        else:
            tenant["revoked_at"] = "2026-11-21T12:00:00Z"
            await route.fulfill(json={"tenant": tenant})


async def test_tenants_panel_creates_shows_the_key_once_rotates_and_revokes(
    chromium_browser: Browser, admin_live: AdminLive
) -> None:
    from .conftest import screenshot

    fake = _TenantsApi()
    context = await chromium_browser.new_context(viewport=DESKTOP, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.route("**/api/admin/tenants**", fake.handle)
    await page.goto(admin_live.url + "/admin")
    await page.wait_for_selector("body[data-ready='true']")
    await _sign_in(page, ADMIN_TOKEN)
    card = page.locator("#tenants-card")
    await expect(card).to_be_visible()
    await expect(page.locator("#tenants-empty")).to_be_visible()

    await page.locator("#tenant-name").fill("shop-cn")
    await page.locator("#tenant-system-prompt").check()
    await page.locator("#tenant-create").click()
    await expect(page.locator("#tenant-key")).to_have_text("sgk_new_secret_1")
    assert ("POST", "", {"name": "shop-cn", "allow_system_prompt": True}) in fake.calls
    row = page.locator('#tenants-body tr[data-name="shop-cn"]')
    await expect(row).to_contain_text("有效")
    await expect(row).to_contain_text("是")
    await card.scroll_into_view_if_needed()
    await screenshot(page, "admin-tenants-zh-CN")

    # The same name again: the contract's 409, shown in the page's language.
    await page.locator("#tenant-name").fill("shop-cn")
    await page.locator("#tenant-create").click()
    await expect(page.locator("#error-banner")).to_contain_text("同名租户已存在")

    page.once("dialog", lambda dialog: dialog.accept("3600"))
    await row.locator(".rotate-tenant").click()
    await expect(page.locator("#tenant-key")).to_have_text("sgk_rotated_secret_2")
    await expect(page.locator("#tenant-key-grace")).to_be_visible()
    assert ("POST", "/shop-cn/rotate", {"grace_seconds": 3600}) in fake.calls

    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator(".revoke-tenant").click()
    await expect(row).to_contain_text("已吊销")
    await expect(page.locator("#tenant-key-box")).to_be_hidden()
    await expect(row.locator(".revoke-tenant")).to_have_count(0)

    # The session count filters the sessions table by the tenant.
    await row.locator(".session-open").click()
    await expect(page.locator("#filter-tenant")).to_have_value("id-shop-cn")
    await page.locator("#sign-out").click()
    assert await page.locator("#tenant-key").text_content() == ""
    await context.close()


async def test_tenants_panel_is_hidden_without_the_tenants_api(
    chromium_browser: Browser, admin_live: AdminLive
) -> None:
    context = await chromium_browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    not_found = {"error": {"code": "not_found", "message": "Not Found"}}
    await page.route(
        "**/api/admin/tenants**", lambda route: route.fulfill(status=404, json=not_found)
    )
    await page.goto(admin_live.url + "/admin")
    await page.wait_for_selector("body[data-ready='true']")
    await _sign_in(page, ADMIN_TOKEN)
    await expect(page.locator("#dashboard")).to_be_visible()
    await expect(page.locator("#sessions-table tbody")).to_be_attached()
    await expect(page.locator("#tenants-card")).to_be_hidden()
    await expect(page.locator("#error-banner")).to_be_hidden()
    await context.close()


async def test_tenants_panel_on_the_real_tenants_api(
    chromium_browser: Browser, admin_live: AdminLive
) -> None:
    context, page, errors = await _open_admin(chromium_browser, admin_live.url, DESKTOP)
    await _sign_in(page, ADMIN_TOKEN)
    await expect(page.locator("#tenants-card")).to_be_visible()
    await page.locator("#tenant-name").fill("real-shop")
    await page.locator("#tenant-create").click()
    await expect(page.locator("#tenant-key")).to_contain_text("sgk_")
    api_key = await page.locator("#tenant-key").text_content()
    row = page.locator('#tenants-body tr[data-name="real-shop"]')
    await expect(row).to_contain_text("Active")

    # The key shown works, until the tenant is revoked in the panel.
    async with admin_live.client() as client:
        headers = {"Authorization": f"Bearer {api_key}"}
        r = await client.post("/api/chat", json={"message": "hi", "user": "u1"}, headers=headers)
        assert r.status_code == 200, r.text
        page.once("dialog", lambda dialog: dialog.accept())
        await row.locator(".revoke-tenant").click()
        await expect(row).to_contain_text("Revoked")
        r = await client.post("/api/chat", json={"message": "hi", "user": "u1"}, headers=headers)
        assert r.status_code == 401
    assert errors == []
    await context.close()
