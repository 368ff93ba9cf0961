"""Who may start a session and how (api/deps.py): sessions only when someone chats,
per-client limits, anonymous sessions switched off, the cookie's name and duplicates."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sessiongate.store import SessionRow

from ..conftest import Gateway, running_gateway
from ..fakes.openai_server import FakeOpenAI


async def session_rows(gateway: Gateway) -> int:
    async with gateway.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(SessionRow)) or 0)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/session/info", None),
        ("GET", "/api/session/export", None),
        ("POST", "/api/session/reset", None),
        ("DELETE", "/api/session", None),
        ("GET", "/api/conversations", None),
        ("POST", "/api/conversations", {"title": "x"}),
        ("GET", "/api/conversations/abc/messages", None),
        ("DELETE", "/api/conversations/abc", None),
        ("POST", "/api/coze/token", None),
    ],
)
async def test_a_credentialless_call_that_is_not_a_turn_is_401_and_writes_nothing(
    gateway: Gateway, method: str, path: str, body: Any
) -> None:
    async with gateway.client() as client:
        r = await client.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "credentials_required"
    assert "set-cookie" not in r.headers
    assert await session_rows(gateway) == 0


async def test_a_chat_turn_without_credentials_starts_a_session(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        r = await client.post("/api/chat", json={"message": "hello"})
        assert r.status_code == 200, r.text
        assert "sessiongate_session" in client.cookies
        info = await client.get("/api/session/info")
    assert info.status_code == 200 and info.json()["message_count"] == 2
    assert await session_rows(gateway) == 1


async def test_session_creation_is_limited_per_client_address(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(
        sqlite_url, fake_openai_server[1], session_create_rate_limit="3/minute"
    ) as gw:
        async with gw.client() as client:
            statuses = [(await client.post("/api/session")).status_code for _ in range(3)]
            refused = await client.post("/api/session")
            turn = await client.post("/api/chat", json={"message": "hi"}, headers={"Cookie": ""})
        assert statuses == [201, 201, 201]
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # A cookie-less turn would mint a session too: the same budget refuses it.
        assert turn.status_code == 429
        assert await session_rows(gw) == 3


async def test_anonymous_turns_are_limited_per_client_across_sessions(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(
        sqlite_url,
        fake_openai_server[1],
        anonymous_rate_limit="3/minute",
        rate_limit="100/minute",
    ) as gw:
        statuses = []
        for _ in range(4):
            # A fresh client each time: no cookie, a new session per turn.
            async with gw.client() as client:
                statuses.append(
                    (await client.post("/api/chat", json={"message": "hi"})).status_code
                )
    assert statuses == [200, 200, 200, 429]


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    # httpx's ASGI transport connects from 127.0.0.1.
    async def created(trusted: list[str]) -> list[int]:
        async with (
            running_gateway(
                sqlite_url,
                fake_openai_server[1],
                session_create_rate_limit="1/minute",
                trusted_proxies=trusted,
            ) as gw,
            gw.client() as client,
        ):
            return [
                (
                    await client.post("/api/session", headers={"X-Forwarded-For": f"203.0.113.{i}"})
                ).status_code
                for i in range(2)
            ]

    # Untrusted peer: the header is ignored, both requests are one client.
    assert await created([]) == [201, 429]
    # Trusted proxy: each forwarded address is its own client.
    assert await created(["127.0.0.0/8"]) == [201, 201]


async def test_anonymous_false_refuses_anonymous_sessions_and_their_tokens(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1]) as gw, gw.client() as client:
        token = (await client.post("/api/session")).json()["token"]
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], anonymous=False) as gw,
        gw.client() as client,
    ):
        created = await client.post("/api/session")
        turn = await client.post("/api/chat", json={"message": "hi"})
        old = await client.get("/api/session/info", headers={"Authorization": f"Bearer {token}"})
        rows = await session_rows(gw)
    assert created.status_code == 403 and created.json()["error"]["code"] == "anonymous_disabled"
    assert turn.status_code == 401 and turn.json()["error"]["code"] == "anonymous_disabled"
    assert old.status_code == 401 and old.json()["error"]["code"] == "anonymous_disabled"
    assert rows == 1  # only the session made before the switch
    assert fake_openai.requests == []


async def test_a_secure_cookie_uses_the_host_prefix(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], cookie_secure=True) as gw,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gw.app), base_url="https://gateway"
        ) as client,
    ):
        r = await client.post("/api/session")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-sessiongate_session=")
        assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
        info = await client.get("/api/session/info")
        assert info.status_code == 200
        erased = await client.delete("/api/session")
        assert erased.headers["set-cookie"].startswith("__Host-sessiongate_session=")


async def test_two_session_cookies_are_refused_not_guessed(gateway: Gateway) -> None:
    async with gateway.client() as client:
        mine = (await client.post("/api/session")).json()["token"]
        other = (await client.post("/api/session")).json()["token"]
    async with gateway.client() as client:
        r = await client.get(
            "/api/session/info",
            headers={"Cookie": f"sessiongate_session={other}; sessiongate_session={mine}"},
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "duplicate_session_cookie"


async def test_the_cookie_slides_forward_once_a_tenth_of_the_ttl_has_passed(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1], session_idle_ttl=600) as gw:
        async with gw.client() as client:
            session_id = (await client.post("/api/session")).json()["session_id"]
        tokens = gw.state.tokens
        fresh = tokens.issue(session_id)
        # A token issued more than ttl/10 (60 s) ago, still valid.
        aged = tokens.issue(session_id, now=time.time() - 120)
        async with gw.client() as client:
            unchanged = await client.get(
                "/api/session/info", headers={"Cookie": f"sessiongate_session={fresh}"}
            )
            renewed = await client.get(
                "/api/session/info", headers={"Cookie": f"sessiongate_session={aged}"}
            )
    assert unchanged.status_code == 200 and "set-cookie" not in unchanged.headers
    assert renewed.status_code == 200
    new_token = renewed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    claims = tokens.verify(new_token)
    assert claims.session_id == session_id
    assert claims.issued_at > time.time() - 60


@pytest.mark.parametrize(
    ("user", "code"),
    [("a\x07b", "invalid_user"), ("line\nbreak", "invalid_user"), ("   ", "user_required")],
)
async def test_a_tenant_user_name_with_control_characters_is_refused(
    gateway: Gateway, fake_openai: FakeOpenAI, user: str, code: str
) -> None:
    from sessiongate.store.tenants import create_tenant

    async with gateway.state.sessionmaker() as db, db.begin():
        _, key = await create_tenant(db, "acme")
    async with gateway.client() as client:
        r = await client.post(
            "/api/chat",
            json={"message": "hi", "user": user},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert await session_rows(gateway) == 0


async def test_tenant_user_names_are_one_user_in_any_unicode_normal_form(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    from sessiongate.store.tenants import create_tenant

    async with gateway.state.sessionmaker() as db, db.begin():
        _, key = await create_tenant(db, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    async with gateway.client() as client:
        composed = await client.post(
            "/api/chat", json={"message": "hi", "user": "Jos\u00e9"}, headers=auth
        )
        decomposed = await client.post(
            "/api/chat", json={"message": "again", "user": "Jose\u0301"}, headers=auth
        )
    assert composed.status_code == decomposed.status_code == 200
    assert composed.json()["conversation_id"] == decomposed.json()["conversation_id"]
    assert await session_rows(gateway) == 1
