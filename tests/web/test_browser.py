"""Browser tests for the chat page, driven by headless Chromium against a live gateway.

The `live_gateway` fixture (tests/conftest.py) runs a real uvicorn gateway whose provider
is a fake OpenAI-compatible upstream that streams back `Echo: <last user message>`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from .conftest import PHONE, expire_sessions, new_context, open_chat, screenshot, send

pytestmark = pytest.mark.browser


async def test_streamed_reply_in_chinese_and_english_appears_and_lists_conversation(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    context = await new_context(chromium_browser)
    errors: list[str] = []
    page = await open_chat(context, live_gateway.url, errors)

    await send(page, "你好，我叫张三")
    await send(page, "Hello, my name is Zhang San")

    users = page.locator("#messages .message-user")
    await expect(users).to_have_count(2)
    await expect(users.nth(0).locator(".message-content")).to_have_text("你好，我叫张三")
    await expect(users.nth(1).locator(".message-content")).to_have_text(
        "Hello, my name is Zhang San"
    )
    assistants = page.locator("#messages .message-assistant")
    await expect(assistants).to_have_count(2)
    for i in range(2):
        await expect(assistants.nth(i)).to_have_attribute("data-status", "complete")
    await expect(page.locator("#send-button")).to_be_visible()

    # Both turns went to one conversation, which is now in the sidebar.
    await expect(page.locator("#conversation-list .conversation-item")).to_have_count(1)

    # Reloading the page restores the conversation from the server.
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#messages .message")).to_have_count(4)
    await expect(page.locator("#messages")).to_contain_text("Echo: 你好，我叫张三")
    assert errors == []
    await context.close()


async def test_second_browser_sees_none_of_the_first_browsers_conversations(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    secret = "我的密码是 swordfish-4471"
    context_a = await new_context(chromium_browser)
    page_a = await open_chat(context_a, live_gateway.url)
    await send(page_a, secret)
    await expect(page_a.locator("#conversation-list .conversation-item")).to_have_count(1)

    context_b = await new_context(chromium_browser)
    page_b = await open_chat(context_b, live_gateway.url)
    await expect(page_b.locator("#conversation-list .conversation-item")).to_have_count(0)
    await expect(page_b.locator("#messages .message")).to_have_count(0)
    assert "swordfish-4471" not in await page_b.content()
    assert "swordfish-4471" not in await page_b.locator("body").inner_text()

    # B chats too; neither browser then sees the other's text.
    await send(page_b, "I am the second user")
    await page_a.reload()
    await page_a.wait_for_selector("body[data-ready='true']")
    await expect(page_a.locator("#messages")).to_contain_text("swordfish-4471")
    assert "second user" not in await page_a.content()
    assert "swordfish-4471" not in await page_b.content()
    await expect(page_b.locator("#conversation-list .conversation-item")).to_have_count(1)

    await context_a.close()
    await context_b.close()


async def test_phone_width_page_is_usable(chromium_browser: Browser, live_gateway: Any) -> None:
    context = await new_context(chromium_browser, PHONE)
    page = await open_chat(context, live_gateway.url)

    await expect(page.locator("#message-input")).to_be_visible()
    await expect(page.locator("#send-button")).to_be_visible()
    await expect(page.locator("#sidebar-toggle")).to_be_visible()
    # The sidebar is collapsed behind the toggle, and nothing overflows sideways.
    await expect(page.locator("#new-conversation")).to_be_hidden()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0

    await page.locator("#message-input").fill("手机上你好")
    await page.locator("#send-button").click()
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text("Echo: 手机上你好")
    input_box = await page.locator("#message-input").bounding_box()
    assert input_box is not None and input_box["x"] + input_box["width"] <= PHONE["width"]

    # The toggle opens the conversation list, which now holds the conversation.
    await page.locator("#sidebar-toggle").click()
    await expect(page.locator("#new-conversation")).to_be_visible()
    await expect(page.locator("#new-conversation")).to_be_in_viewport()
    await expect(page.locator("#conversation-list .conversation-item")).to_have_count(1)
    await page.locator("#conversation-list .conversation-item .conversation-open").click()
    await expect(page.locator("#new-conversation")).to_be_hidden()
    await context.close()


async def test_model_text_is_rendered_as_text_not_markup(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    payload = '<img src=x onerror="window.__xss=1"><b>bold</b>'
    await send(page, payload)
    await expect(page.locator("#messages .message-user .message-content")).to_have_text(payload)
    assert await page.locator("#messages img, #messages b").count() == 0
    assert await page.evaluate("window.__xss === undefined")
    await context.close()


async def test_enter_during_ime_composition_does_not_send_and_shift_enter_adds_newline(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    box = page.locator("#message-input")
    await box.fill("ni hao")
    # The Enter that confirms an IME candidate arrives with isComposing=true.
    await box.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "isComposing": True})
    await box.press("Shift+Enter")
    await box.press_sequentially("第二行")
    await expect(page.locator("#messages .message")).to_have_count(0)
    assert await box.input_value() == "ni hao\n第二行"

    await box.press("Enter")
    reply = page.locator("#messages .message-assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(page.locator("#messages .message-user .message-content")).to_have_text(
        "ni hao\n第二行"
    )
    await context.close()


async def test_refused_send_keeps_the_text_and_says_why_in_the_page_language(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    body = {"error": {"code": "rate_limited", "message": "Too many requests."}}
    cases = (("zh-CN", "您发送消息太频繁了", "30 秒"), ("en", "too quickly", "30 seconds"))
    for locale, said, wait in cases:
        context = await new_context(chromium_browser, locale=locale)
        page = await open_chat(context, live_gateway.url)
        await page.route(
            "**/api/chat/stream",
            lambda route: route.fulfill(
                status=429,
                headers={"Retry-After": "30", "Content-Type": "application/json"},
                body=json.dumps(body),
            ),
        )
        await page.locator("#message-input").fill("请保留这段文字")
        await page.locator("#send-button").click()

        banner = page.locator("#error-banner")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text(said)
        await expect(banner).to_contain_text(wait)
        # Nothing was stored: no bubbles, and the text is back in the composer.
        await expect(page.locator("#messages .message")).to_have_count(0)
        await expect(page.locator("#message-input")).to_have_value("请保留这段文字")
        await expect(page.locator("#send-button")).to_be_enabled()
        await screenshot(page, f"refused-{locale}")

        # Retry sends it once the gateway accepts again.
        await page.unroute("**/api/chat/stream")
        await page.locator("#error-action").click()
        reply = page.locator("#messages .message-assistant").last
        await expect(reply).to_have_attribute("data-status", "complete")
        await expect(reply).to_contain_text("Echo: 请保留这段文字")
        await expect(banner).to_be_hidden()
        await expect(page.locator("#message-input")).to_have_value("")
        await context.close()


async def test_expired_session_says_so_keeps_the_text_and_sends_it_in_a_new_session(
    chromium_browser: Browser, live_gateway: Any
) -> None:
    for locale, said in (("zh-CN", "您的会话已过期"), ("en", "Your session expired")):
        context = await new_context(chromium_browser, locale=locale)
        page = await open_chat(context, live_gateway.url)
        await send(page, "before expiry")
        # The session expires on the server; the browser still holds its cookie.
        await expire_sessions(live_gateway)

        await page.locator("#message-input").fill("after expiry")
        await page.locator("#message-input").press("Enter")
        banner = page.locator("#error-banner")
        await expect(banner).to_contain_text(said)
        await expect(page.locator("#message-input")).to_have_value("after expiry")
        await screenshot(page, f"expired-{locale}")

        async with page.expect_response("**/api/session") as created:
            await page.locator("#error-action").click()
        assert (await created.value).status == 201
        reply = page.locator("#messages .message-assistant").last
        await expect(reply).to_contain_text("Echo: after expiry")
        await expect(reply).to_have_attribute("data-status", "complete")
        await expect(banner).to_be_hidden()
        # The new session holds only the new message.
        await expect(page.locator("#messages")).not_to_contain_text("before expiry")
        await context.close()
