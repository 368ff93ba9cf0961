"""Browser tests of what a customer sees on the chat page: language, brand, markdown,
safety of replies, the composer's limit, message facts and feedback, their data, the
theme and accessibility, and the offline API docs. Each runs in zh-CN and en, at desktop
and phone width where layout matters, and saves screenshots of the main states."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from sessiongate.store import MessageRow, create_engine, create_sessionmaker

from ..conftest import LiveGateway
from ..fakes.openai_server import hostile_reply, markdown_reply
from .conftest import (
    ADMIN_TOKEN,
    PHONE,
    VIEWPORTS,
    new_context,
    open_chat,
    png_bytes,
    screenshot,
    send,
)

pytestmark = pytest.mark.browser

LOCALES = ["zh-CN", "en"]
EXPECTED = {
    "zh-CN": {"title": "在线咨询", "send": "发送", "empty": "有什么可以帮您？", "bot": "智能助手"},
    "en": {"title": "Chat", "send": "Send", "empty": "How can I help?", "bot": "Assistant"},
}


async def _feedback_rows(gateway: LiveGateway) -> list[tuple[str, str | None]]:
    engine = create_engine(gateway.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            rows = await db.scalars(select(MessageRow).where(MessageRow.role == "assistant"))
            return [(r.id, r.feedback) for r in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("locale", LOCALES)
async def test_page_speaks_the_browsers_language(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str, viewport: str
) -> None:
    context = await new_context(chromium_browser, VIEWPORTS[viewport], locale)
    errors: list[str] = []
    page = await open_chat(context, live_gateway.url, errors)
    words = EXPECTED[locale]
    assert await page.evaluate("document.documentElement.lang") == locale
    await expect(page).to_have_title(words["title"])
    await expect(page.locator("#send-button")).to_have_text(words["send"])
    await expect(page.locator("#empty-title")).to_have_text(words["empty"])
    await screenshot(page, f"empty-{locale}-{viewport}")

    await send(page, "你好 hello")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply.locator(".message-speaker")).to_have_text(words["bot"])
    # Times are shown per locale, as a <time> with the machine-readable instant.
    assert await reply.locator("time").get_attribute("datetime")
    await screenshot(page, f"chat-{locale}-{viewport}")
    assert errors == []
    await context.close()


async def test_language_setting_wins_over_the_browser_and_the_switch_wins_over_both(
    chromium_browser: Browser, make_gateway: Callable[..., LiveGateway]
) -> None:
    gateway = make_gateway(ui_language="en")
    context = await new_context(chromium_browser, locale="zh-CN")
    page = await open_chat(context, gateway.url)
    await expect(page.locator("#send-button")).to_have_text("Send")

    await page.locator("#language-select").select_option("zh-CN")
    await expect(page.locator("#send-button")).to_have_text("发送")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#send-button")).to_have_text("发送")
    await context.close()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
async def test_operators_brand_is_shown_and_provider_is_hidden(
    chromium_browser: Browser,
    make_gateway: Callable[..., LiveGateway],
    tmp_path: Path,
    viewport: str,
) -> None:
    avatar = tmp_path / "avatar.png"
    avatar.write_bytes(png_bytes())
    gateway = make_gateway(
        ui_title="好物商城客服",
        ui_bot_name="小美",
        ui_avatar=str(avatar),
        ui_welcome="**欢迎光临！** 我是小美，有问题随时问我。",
        ui_suggestions=["如何退货？", "运费怎么算？"],
        ui_accent_color="#d9480f",
        admin_token=ADMIN_TOKEN,
    )
    context = await new_context(chromium_browser, VIEWPORTS[viewport], "zh-CN")
    page = await open_chat(context, gateway.url)
    await expect(page).to_have_title("好物商城客服")
    await expect(page.locator("#welcome strong")).to_have_text("欢迎光临！")
    suggestions = page.locator("#suggestions .suggestion")
    await expect(suggestions).to_have_count(2)
    await expect(page.locator("#empty-avatar img")).to_have_attribute("src", "/api/ui/avatar")
    send_color = await page.locator("#send-button").evaluate(
        "b => getComputedStyle(b).backgroundColor"
    )
    assert send_color == "rgb(217, 72, 15)"
    await screenshot(page, f"brand-empty-{viewport}")

    # A suggested question is sent with one click.
    await suggestions.nth(0).click()
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text("Echo: 如何退货？")
    await expect(reply.locator(".message-speaker")).to_have_text("小美")
    await expect(reply.locator(".message-avatar img")).to_have_attribute("src", "/api/ui/avatar")
    # End users never see the provider or the version.
    body = await page.locator("body").inner_text()
    assert "openai" not in body.lower() and "0.1" not in body
    await screenshot(page, f"brand-chat-{viewport}")
    await context.close()

    async with httpx.AsyncClient(base_url=gateway.url) as client:
        public = (await client.get("/api/ui")).json()
        admin = (
            await client.get("/api/ui", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        ).json()
    assert public["provider"] is None and public["version"] is None
    assert admin["provider"] == "openai" and admin["version"]


@pytest.mark.parametrize(("locale", "viewport"), [("zh-CN", "desktop"), ("en", "phone")])
async def test_markdown_reply_is_rendered_with_code_tables_lists_links_and_allowed_images(
    chromium_browser: Browser,
    make_gateway: Callable[..., LiveGateway],
    tmp_path: Path,
    locale: str,
    viewport: str,
) -> None:
    avatar = tmp_path / "avatar.png"
    avatar.write_bytes(png_bytes())
    gateway = make_gateway(ui_avatar=str(avatar), ui_image_hosts=["127.0.0.1"])
    gateway.fake.behaviour.reply = markdown_reply
    context = await new_context(chromium_browser, VIEWPORTS[viewport], locale)
    page = await open_chat(context, gateway.url)
    await send(page, "怎么退货", expect_text="You said: 怎么退货")
    reply = page.locator("#messages .message-assistant").last.locator(".message-content")

    await expect(reply.locator("h2")).to_contain_text("退货说明")
    await expect(reply.locator("strong")).to_have_text("Bold")
    await expect(reply.locator("li")).to_have_count(2)
    await expect(reply.locator("table td").first).to_have_text("运费 shipping")
    code = reply.locator(".code-block pre code")
    await expect(code).to_have_text('print("你好")')
    font = await code.evaluate("c => getComputedStyle(c).fontFamily")
    assert "mono" in font.lower()
    await expect(reply.locator(".code-copy")).to_have_text(
        "复制代码" if locale == "zh-CN" else "Copy code"
    )
    link = reply.locator("a", has_text="the help page")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    image = reply.locator("img")
    await expect(image).to_have_count(1)
    await expect(image).to_have_attribute("src", "/api/ui/avatar")
    # Markdown is not shown raw.
    text = await reply.inner_text()
    assert "**" not in text and "```" not in text and "|" not in text
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await screenshot(page, f"markdown-{locale}-{viewport}")

    # The code block's Copy button copies the code.
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    await reply.locator(".code-copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == 'print("你好")\n'
    await context.close()


async def test_reply_cannot_run_script_or_load_foreign_images(
    chromium_browser: Browser, make_gateway: Callable[..., LiveGateway]
) -> None:
    gateway = make_gateway(ui_image_hosts=["images.example.com"])
    gateway.fake.behaviour.reply = hostile_reply
    context = await new_context(chromium_browser)
    requested: list[str] = []
    page = await open_chat(context, gateway.url)
    page.on("request", lambda request: requested.append(request.url))
    await send(page, "hi", expect_text="End.")
    messages = page.locator("#messages")
    assert await page.evaluate("window.__xss === undefined")
    assert await messages.locator("script, iframe, [onerror], [onclick], [style]").count() == 0
    for href in await messages.locator("a").evaluate_all("as => as.map(a => a.href)"):
        assert href.startswith(("http://", "https://", "mailto:")), href
    assert await messages.locator("img").count() == 0
    # The foreign image is offered as a link, never fetched.
    await expect(messages.locator("a.image-link")).to_have_attribute(
        "href", "https://evil.example/pixel.png"
    )
    assert not [url for url in requested if "evil.example" in url]
    # Clicking the javascript: link text does nothing.
    await messages.get_by_text("click me").click()
    assert await page.evaluate("window.__xss === undefined")
    await context.close()


@pytest.mark.parametrize("locale", LOCALES)
async def test_composer_limit_matches_the_server_with_a_counter_near_it(
    chromium_browser: Browser, make_gateway: Callable[..., LiveGateway], locale: str
) -> None:
    gateway = make_gateway(max_message_chars=50)
    context = await new_context(chromium_browser, PHONE, locale)
    page = await open_chat(context, gateway.url)
    box = page.locator("#message-input")
    counter = page.locator("#char-counter")
    await box.fill("好" * 10)
    await expect(counter).to_be_hidden()
    await box.fill("好" * 45)
    await expect(counter).to_have_text("45 / 50")
    await box.fill("好" * 57)
    await expect(counter).to_contain_text("7")
    await expect(counter).to_contain_text("超出" if locale == "zh-CN" else "too many")
    await expect(page.locator("#send-button")).to_be_disabled()
    await box.press("Enter")
    await expect(page.locator("#messages .message")).to_have_count(0)
    # Nothing typed is cut off: the text stays whole for the user to shorten.
    assert len(await box.input_value()) == 57
    await screenshot(page, f"limit-{locale}-phone")
    await context.close()


@pytest.mark.parametrize("locale", LOCALES)
async def test_feedback_is_stored_per_reply_and_shown_after_reload(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str
) -> None:
    context = await new_context(chromium_browser, locale=locale)
    page = await open_chat(context, live_gateway.url)
    await send(page, "first")
    await send(page, "second")
    replies = page.locator("#messages .message-assistant")
    down = replies.nth(0).locator("button.action-down")
    await expect(down).to_have_attribute(
        "aria-label", "没帮助" if locale == "zh-CN" else "Not helpful"
    )
    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    up = replies.nth(1).locator("button.action-up")
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "true")
    assert sorted(f for _, f in await _feedback_rows(live_gateway)) == ["down", "up"]

    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await expect(replies.nth(0).locator("button.action-down")).to_have_attribute(
        "aria-pressed", "true"
    )
    # Clicking again takes the rating back.
    await replies.nth(1).locator("button.action-up").click()
    await expect(replies.nth(1).locator("button.action-up")).to_have_attribute(
        "aria-pressed", "false"
    )
    assert sorted(str(f) for _, f in await _feedback_rows(live_gateway)) == ["None", "down"]
    await context.close()


async def test_copy_button_copies_a_message(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    context = await new_context(chromium_browser)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await open_chat(context, live_gateway.url)
    await send(page, "复制我")
    await (
        page.locator("#messages .message-assistant")
        .last.locator("button[data-action=copy]")
        .click()
    )
    assert await page.evaluate("navigator.clipboard.readText()") == "Echo: 复制我"
    await context.close()


@pytest.mark.parametrize("locale", LOCALES)
async def test_export_and_delete_my_data(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str, tmp_path: Path
) -> None:
    context = await new_context(chromium_browser, locale=locale)
    page = await open_chat(context, live_gateway.url)
    await send(page, "remember order 4471")
    async with page.expect_download() as download_info:
        await page.locator("#export-data").click()
    download = await download_info.value
    target = tmp_path / "export.json"
    await download.save_as(target)
    assert "remember order 4471" in json.dumps(json.loads(target.read_text("utf-8")))

    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator("#delete-data").click()
    await expect(page.locator("#error-banner")).to_have_attribute("data-kind", "info")
    await expect(page.locator("#conversation-list .conversation-item")).to_have_count(0)
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#messages .message")).to_have_count(0)
    assert "4471" not in await page.content()
    await context.close()


# WCAG contrast of an element's text colour against another element's background.
_CONTRAST = """
([selector, bgSelector]) => {
  const rgb = (s) => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const fg = lum(rgb(getComputedStyle(document.querySelector(selector)).color));
  const bg = lum(rgb(getComputedStyle(document.querySelector(bgSelector)).backgroundColor));
  return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
}
"""


async def _contrasts(page: Page) -> dict[str, float]:
    pairs = {
        "meta": (".conversation-meta", "#sidebar"),
        "heading": (".sidebar-heading", "#sidebar"),
        "time": ("#messages .message-time", "body"),
        "send": ("#send-button", "#send-button"),
        "hint": (".composer-hint", "body"),
    }
    return {name: await page.evaluate(_CONTRAST, list(pair)) for name, pair in pairs.items()}


@pytest.mark.parametrize("locale", LOCALES)
async def test_theme_toggle_live_region_labels_and_contrast(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str
) -> None:
    context = await new_context(chromium_browser, locale=locale, color_scheme="light")
    page = await open_chat(context, live_gateway.url)
    await send(page, "标题测试")
    # The message list itself is not a live region; no finished reply is one either.
    assert await page.locator("#messages").get_attribute("aria-live") is None
    assert await page.locator("#messages [aria-live]").count() <= 1
    item = page.locator("#conversation-list .conversation-item").first
    label = await item.locator(".conversation-delete").get_attribute("aria-label")
    assert label is not None and "标题测试" in label
    assert "删除" in label if locale == "zh-CN" else label.startswith("Delete conversation")

    themes = {}
    for mode in ("light", "dark"):
        # The toggle cycles system -> light -> dark.
        await page.locator("#theme-toggle").click()
        theme = await page.evaluate("document.documentElement.dataset.theme")
        assert theme == mode
        themes[mode] = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        for name, ratio in (await _contrasts(page)).items():
            # send is a large-ish bold control: 4.5 still required of its text
            assert ratio >= 4.5, (mode, name, ratio)
        await screenshot(page, f"theme-{mode}-{locale}")
    assert themes["light"] != themes["dark"]
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await context.close()


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_api_docs_render_without_internet(
    chromium_browser: Browser, live_gateway: LiveGateway, path: str
) -> None:
    context = await new_context(chromium_browser, locale="en")
    foreign: list[str] = []

    async def only_loopback(route: Any) -> None:
        if route.request.url.startswith(live_gateway.url) or route.request.url.startswith(
            ("blob:", "data:")
        ):
            await route.continue_()
        else:
            foreign.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_loopback)
    page = await context.new_page()
    await page.goto(live_gateway.url + path)
    if path == "/docs":
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("sessiongate")
        await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    else:
        await expect(page.locator("h1").first).to_contain_text("sessiongate")
    await screenshot(page, "docs" if path == "/docs" else "redoc")
    assert foreign == []
    await context.close()


async def test_first_visit_creates_no_session_until_the_first_message(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    context = await new_context(chromium_browser)
    errors: list[str] = []
    page = await open_chat(context, live_gateway.url, errors)
    await expect(page.locator("#error-banner")).to_be_hidden()
    assert await context.cookies() == []
    await send(page, "第一条消息")
    assert len(await context.cookies()) == 1
    await expect(page.locator("#conversation-list .conversation-item")).to_have_count(1)
    assert errors == []
    await context.close()


async def test_page_csp_allows_images_from_the_operators_image_hosts_only(
    make_gateway: Callable[..., LiveGateway],
) -> None:
    gateway = make_gateway(
        ui_image_hosts=["img.example.com"], ui_avatar="https://brand.example.org/a.png"
    )
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        policy = (await client.get("/")).headers["content-security-policy"]
    img_src = next(d for d in policy.split(";") if d.strip().startswith("img-src")).split()
    assert "https://img.example.com" in img_src
    assert "https://brand.example.org" in img_src
    assert "script-src 'self'" in policy
