"""CSRF (api/middleware/cross_site.py): a cross-site or non-JSON state-changing request
runs no handler, so it never deletes, mints a session or replaces a cookie."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from sessiongate.store import ConversationRow, SessionRow

from ...conftest import Gateway


async def counts(gateway: Gateway) -> tuple[int, int]:
    async with gateway.state.sessionmaker() as db:
        sessions = await db.scalar(select(func.count()).select_from(SessionRow))
        conversations = await db.scalar(select(func.count()).select_from(ConversationRow))
    return int(sessions or 0), int(conversations or 0)


@pytest.fixture
async def victim(gateway: Gateway) -> str:
    """A session with one conversation; returns its cookie header value."""
    async with gateway.client() as client:
        token = (await client.post("/api/session")).json()["token"]
        created = await client.post("/api/conversations", json={"title": "mine"})
        assert created.status_code == 201
    return f"sessiongate_session={token}"


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain or another port
        {"Origin": "https://evil.example"},
        {"Origin": "http://gateway:8080"},
        {"Origin": "null"},
    ],
)
@pytest.mark.parametrize("path", ["/api/session/reset", "/api/session", "/api/chat"])
async def test_a_cross_site_post_is_403_and_changes_nothing(
    gateway: Gateway, victim: str, headers: dict[str, str], path: str
) -> None:
    before = await counts(gateway)
    async with gateway.client() as client:
        r = await client.post(
            path,
            content=b"",
            headers={
                "Cookie": victim,
                "Content-Type": "application/x-www-form-urlencoded",
                **headers,
            },
        )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "cross_site_request"
    assert "set-cookie" not in r.headers
    assert await counts(gateway) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_same_site_form_body_cannot_reset_the_session(
    gateway: Gateway, victim: str, content_type: str
) -> None:
    before = await counts(gateway)
    async with gateway.client() as client:
        r = await client.post(
            "/api/session/reset",
            content=b"a=b",
            headers={"Cookie": victim, "Content-Type": content_type},
        )
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert await counts(gateway) == before


async def test_a_same_origin_browser_request_passes(gateway: Gateway, victim: str) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/api/session/reset",
            headers={
                "Cookie": victim,
                "Sec-Fetch-Site": "same-origin",
                "Origin": "http://gateway",
            },
        )
    assert r.status_code == 200, r.text


async def test_origin_matching_the_host_passes_without_sec_fetch_site(
    gateway: Gateway, victim: str
) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/api/conversations",
            json={},
            headers={"Cookie": victim, "Origin": "http://gateway"},
        )
    assert r.status_code == 201, r.text


async def test_a_cross_site_get_does_not_replace_the_cookie(gateway: Gateway) -> None:
    tokens = gateway.state.tokens
    async with gateway.client() as client:
        session_id = (await client.post("/api/session")).json()["session_id"]
    # A token old enough to slide forward; another site's request must not renew it.
    old = tokens.issue(session_id, now=time.time() - tokens.ttl / 5)
    async with gateway.client() as client:
        r = await client.get(
            "/api/session/info",
            headers={"Cookie": f"sessiongate_session={old}", "Sec-Fetch-Site": "cross-site"},
        )
    assert r.status_code == 200
    assert "set-cookie" not in r.headers
