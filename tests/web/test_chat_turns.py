"""Browser tests of the chat page's turns: new conversations, regenerate, edit-and-resend,
Retry on failed or interrupted replies, Stop, reattaching after a reload, rename and the
newest-first message paging — on a real gateway whose turns run on the server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select, update

from sessiongate.store import ConversationRow, MessageRow, create_engine, create_sessionmaker
from sessiongate.store.models import new_id, utcnow

from ..conftest import LiveGateway
from .conftest import PHONE, new_context, open_chat, screenshot, send

pytestmark = pytest.mark.browser


async def _session_id(page: Page) -> str:
    """Starts a session for the page (a first visit has none) and returns its id."""
    created = await page.evaluate("fetch('/api/session', {method: 'POST'}).then(r => r.json())")
    return str(created["session_id"])


async def _seed_conversation(gateway: LiveGateway, session_id: str, count: int) -> str:
    """A conversation of `count` messages ("message 0", "reply 1", ...), straight into the DB."""
    engine = create_engine(gateway.settings.database_url)
    now = utcnow()
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            conversation = ConversationRow(
                id=new_id(),
                session_id=session_id,
                title="长对话 long",
                next_position=count,
                created_at=now,
                updated_at=now,
            )
            db.add(conversation)
            await db.flush()
            for i in range(count):
                db.add(
                    MessageRow(
                        id=new_id(),
                        session_id=session_id,
                        conversation_id=conversation.id,
                        position=i,
                        role="user" if i % 2 == 0 else "assistant",
                        content=f"message {i}" if i % 2 == 0 else f"reply {i}",
                        status="complete",
                        created_at=now - timedelta(seconds=count - i),
                    )
                )
            return conversation.id
    finally:
        await engine.dispose()


async def _set_last_reply_status(gateway: LiveGateway, status: str) -> None:
    engine = create_engine(gateway.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            last = await db.scalar(
                select(MessageRow)
                .where(MessageRow.role == "assistant")
                .order_by(MessageRow.created_at.desc())
                .limit(1)
            )
            assert last is not None
            await db.execute(
                update(MessageRow).where(MessageRow.id == last.id).values(status=status)
            )
    finally:
        await engine.dispose()


async def test_new_conversation_exists_only_once_it_has_a_message(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    items = page.locator("#conversation-list .conversation-item")

    await send(page, "first conversation")
    for _ in range(3):
        await page.locator("#new-conversation").click()
    await expect(page.locator("#messages .message")).to_have_count(0)
    await expect(items).to_have_count(1)  # clicking leaves nothing empty behind
    await send(page, "second conversation")
    await expect(items).to_have_count(2)
    await expect(page.locator("#messages .message")).to_have_count(2)
    await expect(items.first).to_contain_text("second conversation")

    # Clicking the other conversation loads its messages.
    other = page.locator("#conversation-list .conversation-item:not(.active) .conversation-open")
    await other.click()
    await expect(page.locator("#messages")).to_contain_text("Echo: first conversation")
    await expect(page.locator("#messages")).not_to_contain_text("second conversation")

    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator("#reset-session").click()
    await expect(page.locator("#messages .message")).to_have_count(0)
    await expect(page.locator("#conversation-list")).not_to_contain_text("first conversation")
    await expect(page.locator("#conversation-list")).not_to_contain_text("second conversation")
    await context.close()


async def test_sidebar_lists_the_conversation_while_the_reply_streams(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    live_gateway.fake.behaviour.chunk_delay = 0.3
    live_gateway.fake.behaviour.chunk_size = 2
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    await page.locator("#message-input").fill("侧栏 sidebar now")
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").last
    await expect(page.locator("#conversation-list .conversation-item")).to_have_count(1)
    # Still streaming when the sidebar already shows it; only the reply is a live region.
    assert await reply.get_attribute("data-status") == "streaming"
    assert await page.locator("#messages [aria-live]").count() == 1
    await expect(reply.locator(".message-content")).to_have_attribute("aria-live", "polite")
    await screenshot(page, "streaming-zh-CN")
    await expect(reply).to_have_attribute("data-status", "complete")
    await context.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
async def test_regenerate_and_edit_the_last_message(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str
) -> None:
    context = await new_context(chromium_browser, locale=locale)
    page = await open_chat(context, live_gateway.url)
    await send(page, "first")
    await send(page, "secnod typo")
    replies = page.locator("#messages .message-assistant")

    # Regenerate: the last reply is replaced, not added.
    live_gateway.fake.behaviour.reply = lambda messages: "Another answer"
    await replies.last.locator("button[data-action=regenerate]").click()
    await expect(replies.last).to_contain_text("Another answer")
    await expect(replies.last).to_have_attribute("data-status", "complete")
    await expect(page.locator("#messages .message")).to_have_count(4)

    # Edit: only the last user message offers it; the edited text replaces it.
    live_gateway.fake.reset()
    users = page.locator("#messages .message-user")
    assert await users.first.locator("button[data-action=edit]").count() == 0
    await users.last.locator("button[data-action=edit]").click()
    await expect(page.locator("#composer-edit")).to_be_visible()
    box = page.locator("#message-input")
    await expect(box).to_have_value("secnod typo")
    await box.fill("second, fixed")
    await box.press("Enter")
    await expect(replies.last).to_contain_text("Echo: second, fixed")
    await expect(replies.last).to_have_attribute("data-status", "complete")
    await expect(page.locator("#messages .message")).to_have_count(4)
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#messages .message")).to_have_count(4)
    await expect(page.locator("#messages")).not_to_contain_text("typo")
    await context.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
async def test_failed_reply_shows_a_marker_and_retry_answers_again(
    chromium_browser: Browser, live_gateway: LiveGateway, locale: str
) -> None:
    context = await new_context(chromium_browser, PHONE, locale)
    page = await open_chat(context, live_gateway.url)
    live_gateway.fake.behaviour.fail_status = 500
    await page.locator("#message-input").fill("会失败 will fail")
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "error")
    await expect(reply.locator(".message-note")).to_contain_text(
        "助手" if locale == "zh-CN" else "assistant"
    )
    retry = reply.locator("button.action-retry")
    await expect(retry).to_be_visible()
    # The user's message was stored and stays.
    await expect(page.locator("#messages .message-user")).to_contain_text("会失败 will fail")
    await screenshot(page, f"failed-{locale}-phone")

    live_gateway.fake.reset()
    await retry.click()
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text("Echo: 会失败 will fail")
    await expect(page.locator("#messages .message")).to_have_count(2)
    await context.close()


async def test_interrupted_reply_found_after_reload_offers_retry(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    context = await new_context(chromium_browser, locale="en")
    page = await open_chat(context, live_gateway.url)
    await send(page, "will be interrupted")
    await _set_last_reply_status(live_gateway, "interrupted")
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "interrupted")
    await expect(reply.locator(".message-note")).to_contain_text("interrupted")
    await reply.locator("button.action-retry").click()
    await expect(reply).to_have_attribute("data-status", "complete")
    await context.close()


async def test_stop_keeps_the_partial_reply_marked_incomplete(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    live_gateway.fake.behaviour.chunk_delay = 0.2
    live_gateway.fake.behaviour.chunk_size = 1
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    await page.locator("#message-input").fill("a long story please")
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply.locator(".message-content")).to_contain_text("Ech")
    await page.locator("#stop-button").click()
    await expect(reply).to_have_attribute("data-status", "incomplete")
    await expect(page.locator("#stop-button")).to_be_hidden()
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    stored = page.locator("#messages .message-assistant").last
    await expect(stored).to_have_attribute("data-status", "incomplete")
    await expect(stored.locator("button.action-retry")).to_be_visible()
    await context.close()


async def test_reload_mid_reply_reattaches_and_shows_the_whole_reply(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    live_gateway.fake.behaviour.chunk_delay = 0.15
    live_gateway.fake.behaviour.chunk_size = 2
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    text = "不要丢掉我的回复 keep my reply"
    await page.locator("#message-input").fill(text)
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply.locator(".message-content")).to_contain_text("Echo")
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text(f"Echo: {text}")
    await context.close()


async def test_rename_conversation(chromium_browser: Browser, live_gateway: LiveGateway) -> None:
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)
    await send(page, "rename me")
    page.once("dialog", lambda dialog: dialog.accept("售后问题"))
    await page.locator("#conversation-list .conversation-rename").first.click()
    await expect(page.locator("#conversation-list .conversation-title")).to_have_text("售后问题")
    await expect(page.locator("#conversation-title")).to_have_text("售后问题")
    await context.close()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
async def test_long_conversation_shows_latest_first_and_loads_older_on_scroll_up(
    chromium_browser: Browser, live_gateway: LiveGateway, viewport: str
) -> None:
    context = await new_context(
        chromium_browser, PHONE if viewport == "phone" else {"width": 1280, "height": 800}
    )
    page = await open_chat(context, live_gateway.url)
    await _seed_conversation(live_gateway, await _session_id(page), 130)
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    messages = page.locator("#messages .message")
    await expect(messages).to_have_count(50)
    await expect(messages.last).to_contain_text("reply 129")
    await expect(messages.first).to_contain_text("message 80")
    assert (
        await page.evaluate(
            "(() => { const s = document.getElementById('scroll');"
            " return s.scrollHeight - s.scrollTop - s.clientHeight; })()"
        )
        < 80
    )

    await page.evaluate("document.getElementById('scroll').scrollTop = 0")
    await expect(messages).to_have_count(100)
    await expect(messages.first).to_contain_text("message 30")
    await expect(page.locator("#jump-latest")).to_be_visible()
    await screenshot(page, f"older-{viewport}")
    await page.evaluate("document.getElementById('scroll').scrollTop = 0")
    await expect(messages).to_have_count(130)
    await expect(messages.first).to_contain_text("message 0")

    await page.locator("#jump-latest").click()
    await expect(page.locator("#jump-latest")).to_be_hidden()
    await expect(messages.last).to_be_in_viewport()
    await context.close()


async def test_dropped_connection_mid_reply_still_shows_the_whole_reply(
    chromium_browser: Browser, live_gateway: LiveGateway
) -> None:
    context = await new_context(chromium_browser)
    page = await open_chat(context, live_gateway.url)

    async def cut_after_first_delta(route: Any) -> None:
        # The gateway answers in full; the page only gets the start and one delta, as
        # when a mobile connection drops mid-reply.
        response = await route.fetch()
        frames = (await response.text()).split("\n\n")
        kept = [f for f in frames if f.startswith("data:")][:2]
        await route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream"},
            body="\n\n".join(kept) + "\n\n",
        )

    await page.route("**/api/chat/stream", cut_after_first_delta)
    text = "网络断了也不要丢 do not lose it"
    await page.locator("#message-input").fill(text)
    await page.locator("#message-input").press("Enter")
    reply = page.locator("#messages .message-assistant").last
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text(f"Echo: {text}")
    await context.close()
