"""The admin API (/api/admin) in-process, on SQLite and PostgreSQL: access control,
chat-content visibility, keyset pagination, filters, delete, cleanup, stats, audit log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from sessiongate.app import create_app
from sessiongate.store import ConversationRow, MessageRow, SessionRow
from sessiongate.store import queries as q
from sessiongate.store.models import utcnow
from sessiongate.store.tenants import create_tenant

from ..conftest import make_settings
from ..fakes.openai_server import FakeOpenAI

ADMIN_TOKEN = "admin-secret-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class AdminGateway:
    app: FastAPI

    @property
    def state(self) -> Any:
        return self.app.state.gateway

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://g", **kwargs
        )

    async def count(self, model: Any, *where: Any) -> int:
        async with self.state.sessionmaker() as db:
            return int(await db.scalar(select(func.count()).select_from(model).where(*where)))


@contextlib.asynccontextmanager
async def admin_gateway(
    database_url: str, openai_url: str, **overrides: Any
) -> AsyncIterator[AdminGateway]:
    settings = make_settings(database_url, openai_url, admin_token=ADMIN_TOKEN, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield AdminGateway(app)


@pytest.fixture
async def gw(
    database_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> AsyncIterator[AdminGateway]:
    """A gateway with an admin token; chat content hidden from admins (the default)."""
    async with admin_gateway(database_url, fake_openai_server[1]) as gateway:
        yield gateway


async def new_session_token(client: httpx.AsyncClient) -> tuple[str, str]:
    """A fresh anonymous session: (session id, bearer token)."""
    r = await client.post("/api/session")
    assert r.status_code == 201, r.text
    return r.json()["session_id"], r.json()["token"]


async def chat(client: httpx.AsyncClient, token: str, message: str) -> httpx.Response:
    return await client.post(
        "/api/chat",
        json={"message": message},
        headers={"Authorization": f"Bearer {token}"},
    )


# ------------------------------------------------------------------ access control

ROUTES = [
    ("GET", "/api/admin/sessions"),
    ("GET", "/api/admin/sessions/0123456789abcdef0123456789abcdef"),
    ("DELETE", "/api/admin/sessions/0123456789abcdef0123456789abcdef"),
    ("POST", "/api/admin/cleanup"),
    ("GET", "/api/admin/stats"),
]


async def test_admin_routes_refuse_anonymous_401_and_non_admins_403(gw: AdminGateway) -> None:
    async with gw.state.sessionmaker() as db, db.begin():
        _, api_key = await create_tenant(db, "acme")
    async with gw.client() as client:
        _, session_token = await new_session_token(client)
        client.cookies.clear()
        for method, path in ROUTES:
            anonymous = await client.request(method, path)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.json()["error"]["code"] == "unauthorized"
            wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, (method, path)
            for token in (session_token, api_key):
                refused = await client.request(
                    method, path, headers={"Authorization": f"Bearer {token}"}
                )
                assert refused.status_code == 403, (method, path, refused.text)
                assert refused.json()["error"]["code"] == "admin_required"
        assert (await client.get("/api/admin/sessions", headers=ADMIN)).status_code == 200
        assert (await client.get("/api/admin/stats", headers=ADMIN)).status_code == 200
        assert (await client.post("/api/admin/cleanup", headers=ADMIN)).status_code == 200
        missing = await client.get(ROUTES[1][1], headers=ADMIN)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "session_not_found"
        assert (await client.delete(ROUTES[2][1], headers=ADMIN)).status_code == 404


async def test_every_admin_action_is_logged_with_who_and_never_the_token(
    gw: AdminGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessiongate.admin")
    async with gw.client() as client:
        session_id, _ = await new_session_token(client)
        await client.get("/api/admin/sessions", headers=ADMIN)
        await client.get(f"/api/admin/sessions/{session_id}", headers=ADMIN)
        await client.get("/api/admin/stats", headers=ADMIN)
        await client.post("/api/admin/cleanup", headers=ADMIN)
        await client.delete(f"/api/admin/sessions/{session_id}", headers=ADMIN)
    lines = [r.getMessage() for r in caplog.records if r.name == "sessiongate.admin"]
    for action in ("list_sessions", "get_session", "stats", "cleanup", "delete_session"):
        assert any(f"action={action}" in line and "by=admin" in line for line in lines), action
    assert any(session_id in line and "delete_session" in line for line in lines)
    assert ADMIN_TOKEN not in caplog.text


# ------------------------------------------------------------------ chat content


async def test_session_detail_hides_chat_content_unless_enabled(
    database_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    secret = "my password is swordfish-4471"
    for can_read in (False, True):
        async with (
            admin_gateway(
                database_url, fake_openai_server[1], admin_can_read_chats=can_read
            ) as gateway,
            gateway.client() as client,
        ):
            session_id, token = await new_session_token(client)
            client.cookies.clear()
            assert (await chat(client, token, secret)).status_code == 200
            r = await client.get(f"/api/admin/sessions/{session_id}", headers=ADMIN)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["session"]["id"] == session_id
            assert body["session"]["message_count"] == 2
            assert body["session"]["conversation_count"] == 1
            assert body["session"]["state"] == "active"
            assert body["content_visible"] is can_read
            [conversation] = body["conversations"]
            assert conversation["message_count"] == 2
            if can_read:
                assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
                    ("user", secret),
                    ("assistant", f"Echo: {secret}"),
                ]
            else:
                assert conversation["messages"] is None
                assert conversation["title"] is None
                assert "swordfish" not in r.text
            await client.delete(f"/api/admin/sessions/{session_id}", headers=ADMIN)


# ------------------------------------------------------------------ listing


async def make_sessions(gw: AdminGateway, n: int, *, minutes_ago: int = 0, **kw: Any) -> list[str]:
    """Create ``n`` anonymous sessions, last active one second apart ending ``minutes_ago``."""
    base = utcnow() - timedelta(minutes=minutes_ago)
    ids = []
    async with gw.state.sessionmaker() as db, db.begin():
        for i in range(n):
            row = await q.create_session(db, idle_ttl=3600, now=base - timedelta(seconds=i), **kw)
            ids.append(row.id)
    return ids


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/admin/sessions", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["sessions"])


async def test_keyset_pagination_returns_every_session_once_while_new_ones_are_created(
    gw: AdminGateway,
) -> None:
    existing = set(await make_sessions(gw, 23, minutes_ago=10))
    # Ties on last_active_at are broken by id, so same-instant sessions are not lost.
    same_instant = utcnow() - timedelta(minutes=20)
    async with gw.state.sessionmaker() as db, db.begin():
        for _ in range(5):
            existing.add((await q.create_session(db, idle_ttl=3600, now=same_instant)).id)
    seen: list[str] = []
    created_meanwhile: set[str] = set()
    cursor = None
    async with gw.client() as client:
        for _ in range(20):
            params: dict[str, Any] = {"limit": 4}
            if cursor:
                params["after"] = cursor
            r = await client.get("/api/admin/sessions", params=params, headers=ADMIN)
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [s["id"] for s in page["sessions"]]
            stamps = [s["last_active_at"] for s in page["sessions"]]
            assert stamps == sorted(stamps, reverse=True)
            created_meanwhile.update(await make_sessions(gw, 2))
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == len(set(seen))
    assert set(seen) == existing
    assert not created_meanwhile & set(seen)
    async with gw.client() as client:
        bad = await client.get("/api/admin/sessions?after=not-a-cursor", headers=ADMIN)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_cursor"
        assert (await client.get("/api/admin/sessions?limit=201", headers=ADMIN)).status_code == 422
        assert (await client.get("/api/admin/sessions?limit=0", headers=ADMIN)).status_code == 422


async def test_filters_by_state_tenant_last_activity_and_search(gw: AdminGateway) -> None:
    now = utcnow()
    async with gw.state.sessionmaker() as db, db.begin():
        acme, _ = await create_tenant(db, "acme")
        globex, _ = await create_tenant(db, "globex")
        rows = {}
        for tenant, user in ((acme, "alice@example.com"), (acme, "bob"), (globex, "Alice_2")):
            rows[(tenant.name, user)] = await q.session_for_principal(
                db,
                kind="tenant",
                principal=f"tenant:{tenant.id}:{user}",
                idle_ttl=3600,
                tenant_id=tenant.id,
                external_user=user,
                now=now - timedelta(minutes=5),
            )
        old = await q.create_session(db, idle_ttl=60, now=now - timedelta(days=2))
    async with gw.client() as client:
        active = {s["id"] for s in await list_all(client, state="active")}
        expired = await list_all(client, state="expired")
        assert [s["id"] for s in expired] == [old.id]
        assert expired[0]["state"] == "expired"
        assert active == {r.id for r in rows.values()}

        by_tenant = await list_all(client, tenant_id=acme.id)
        assert {s["user"] for s in by_tenant} == {"alice@example.com", "bob"}
        assert {s["tenant_name"] for s in by_tenant} == {"acme"}

        before = await list_all(client, active_before=(now - timedelta(days=1)).isoformat())
        assert [s["id"] for s in before] == [old.id]
        after = await list_all(client, active_after=(now - timedelta(hours=1)).isoformat())
        assert {s["id"] for s in after} == active

        # Search: part of a user name (case-insensitive; '_' is literal), or an id prefix.
        alices = await list_all(client, search="ALICE")
        assert {s["user"] for s in alices} == {"alice@example.com", "Alice_2"}
        assert {s["user"] for s in await list_all(client, search="e_2")} == {"Alice_2"}
        assert [s["id"] for s in await list_all(client, search=old.id[:10])] == [old.id]
        assert await list_all(client, search="%") == []
        combined = await list_all(client, search="alice", tenant_id=globex.id, state="active")
        assert [s["user"] for s in combined] == ["Alice_2"]


# ------------------------------------------------------------------ delete and cleanup


async def test_delete_removes_the_session_and_everything_under_it_only(
    gw: AdminGateway, fake_openai: FakeOpenAI
) -> None:
    async with gw.client() as client:
        victim, victim_token = await new_session_token(client)
        keeper, keeper_token = await new_session_token(client)
        client.cookies.clear()
        for token in (victim_token, victim_token, keeper_token):
            assert (await chat(client, token, "hello")).status_code == 200
        r = await client.delete(f"/api/admin/sessions/{victim}", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() == {"session_id": victim, "conversations": 1, "messages": 4}
        assert (
            await client.delete(f"/api/admin/sessions/{victim}", headers=ADMIN)
        ).status_code == 404
        assert (await client.get(f"/api/admin/sessions/{victim}", headers=ADMIN)).status_code == 404
        # The deleted session's token no longer opens anything.
        gone = await chat(client, victim_token, "still there?")
        assert gone.status_code == 401
    assert await gw.count(SessionRow, SessionRow.id == victim) == 0
    assert await gw.count(ConversationRow, ConversationRow.session_id == victim) == 0
    assert await gw.count(MessageRow, MessageRow.session_id == victim) == 0
    assert await gw.count(SessionRow, SessionRow.id == keeper) == 1
    assert await gw.count(MessageRow, MessageRow.session_id == keeper) == 2


async def test_cleanup_deletes_exactly_the_expired_sessions_and_their_data(
    gw: AdminGateway, fake_openai: FakeOpenAI
) -> None:
    async with gw.client() as client:
        sessions = [await new_session_token(client) for _ in range(5)]
        client.cookies.clear()
        for _, token in sessions:
            assert (await chat(client, token, "hi")).status_code == 200
        expired = {sessions[0][0], sessions[2][0], sessions[3][0]}
        kept = {s for s, _ in sessions} - expired
        async with gw.state.sessionmaker() as db, db.begin():
            await db.execute(
                update(SessionRow)
                .where(SessionRow.id.in_(expired))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        r = await client.post("/api/admin/cleanup", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() == {"sessions": 3, "conversations": 3, "messages": 6, "skipped": False}
        again = await client.post("/api/admin/cleanup", headers=ADMIN)
        assert again.json() == {"sessions": 0, "conversations": 0, "messages": 0, "skipped": False}
    assert await gw.count(SessionRow, SessionRow.id.in_(expired)) == 0
    assert await gw.count(MessageRow, MessageRow.session_id.in_(expired)) == 0
    assert await gw.count(ConversationRow, ConversationRow.session_id.in_(expired)) == 0
    assert await gw.count(SessionRow) == len(kept)
    assert await gw.count(MessageRow, MessageRow.session_id.in_(kept)) == 2 * len(kept)


# ------------------------------------------------------------------ stats


async def test_stats_count_sessions_turns_tokens_and_errors_by_code(
    gw: AdminGateway, fake_openai: FakeOpenAI
) -> None:
    async with gw.state.sessionmaker() as db, db.begin():
        await create_tenant(db, "acme")
        await q.create_session(db, idle_ttl=1, now=utcnow() - timedelta(hours=1))  # expired
    async with gw.client() as client:
        _, token = await new_session_token(client)
        client.cookies.clear()
        for text in ("one", "two", "three"):
            assert (await chat(client, token, text)).status_code == 200
        fake_openai.behaviour.fail_status = 500
        failed = await chat(client, token, "four")
        assert failed.status_code == 502
        failed_code = failed.json()["error"]["code"]

        r = await client.get("/api/admin/stats", headers=ADMIN)
        assert r.status_code == 200, r.text
        stats = r.json()
    assert stats["sessions_total"] == 2
    assert stats["sessions_active"] == 1
    assert stats["tenants"] == 1
    buckets = stats["turns_per_minute"]
    assert len(buckets) == 60
    minutes = [b["minute"] for b in buckets]
    assert minutes == sorted(minutes) and len(set(minutes)) == 60
    assert sum(b["turns"] for b in buckets) == 4 == stats["turns_last_hour"]
    # All turns just happened: they sit in the last bucket (or two, across a minute edge).
    assert sum(b["turns"] for b in buckets[-2:]) == 4
    assert stats["errors_by_code"] == {failed_code: 1}
    async with gw.state.sessionmaker() as db:
        stored = await db.scalar(select(func.coalesce(func.sum(MessageRow.completion_tokens), 0)))
    assert stats["reply_tokens"] == stats["reply_tokens_last_hour"] == stored


async def test_stats_buckets_turns_by_minute_over_the_last_hour(gw: AdminGateway) -> None:
    now = utcnow()
    async with gw.state.sessionmaker() as db, db.begin():
        session = await q.create_session(db, idle_ttl=3600)
        conversation = await q.create_conversation(db, session.id)
        for minutes_ago, count in ((0, 2), (5, 1), (58, 3), (62, 7)):
            for _ in range(count):
                await q.append_message(
                    db,
                    conversation,
                    role="assistant",
                    content="x",
                    completion_tokens=2,
                    now=now - timedelta(minutes=minutes_ago),
                )
        await q.append_message(db, conversation, role="user", content="not a turn", now=now)
    async with gw.client() as client:
        stats = (await client.get("/api/admin/stats", headers=ADMIN)).json()
    turns = {b["minute"]: b["turns"] for b in stats["turns_per_minute"]}

    def minute(minutes_ago: int) -> str:
        start = (now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
        return start.isoformat().replace("+00:00", "Z")

    assert {k: v for k, v in turns.items() if v} == {minute(0): 2, minute(5): 1, minute(58): 3}
    assert stats["reply_tokens"] == 2 * 13
    assert stats["reply_tokens_last_hour"] == 2 * 6
    assert stats["errors_by_code"] == {}


async def test_admin_page_is_served_without_credentials(gw: AdminGateway) -> None:
    async with gw.client() as client:
        r = await client.get("/admin")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert 'id="admin-token"' in r.text
        for asset in ("/static/admin.js", "/static/admin.css"):
            assert (await client.get(asset)).status_code == 200
        assert "/admin" not in (await client.get("/openapi.json")).json()["paths"]


# ------------------------------------------------------------------ tenants


async def test_admin_creates_lists_rotates_and_revokes_tenants_keeping_user_history(
    gw: AdminGateway, fake_openai: FakeOpenAI
) -> None:
    async with gw.client() as client:
        created = await client.post(
            "/api/admin/tenants", json={"name": "acme", "allow_system_prompt": True}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        tenant, key = created.json()["tenant"], created.json()["api_key"]
        assert key.startswith("sgk_") and key.startswith(tenant["key_prefix"])
        assert tenant["allow_system_prompt"] is True and tenant["revoked_at"] is None
        assert tenant["sessions"] == 0 and tenant["state"] == "active"
        dup = await client.post("/api/admin/tenants", json={"name": "acme"}, headers=ADMIN)
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "tenant_exists"

        alice = {"Authorization": f"Bearer {key}", "X-Sessiongate-User": "alice"}
        said = await client.post("/api/chat", json={"message": "remember 4242"}, headers=alice)
        assert said.status_code == 200, said.text
        conversation = said.json()["conversation_id"]

        rotated = await client.post(
            "/api/admin/tenants/acme/rotate", json={"grace_seconds": 0}, headers=ADMIN
        )
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["api_key"]
        assert new_key != key and rotated.json()["previous_key_expires_at"] is None
        assert rotated.json()["tenant"]["id"] == tenant["id"]
        assert rotated.json()["tenant"]["sessions"] == 1
        old = await client.get("/api/conversations", headers=alice)
        assert old.status_code == 401
        alice_new = {**alice, "Authorization": f"Bearer {new_key}"}
        listed = await client.get("/api/conversations", headers=alice_new)
        assert [c["id"] for c in listed.json()["conversations"]] == [conversation]

        graced = await client.post(
            "/api/admin/tenants/acme/rotate", json={"grace_seconds": 60}, headers=ADMIN
        )
        assert graced.json()["previous_key_expires_at"] is not None
        assert (await client.get("/api/conversations", headers=alice_new)).status_code == 200

        await client.post("/api/admin/tenants", json={"name": "globex"}, headers=ADMIN)
        revoked = await client.post("/api/admin/tenants/acme/revoke", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["tenant"]["revoked_at"]
        assert (await client.get("/api/conversations", headers=alice_new)).status_code == 401

        listing = (await client.get("/api/admin/tenants", headers=ADMIN)).json()["tenants"]
        assert [(t["name"], t["state"]) for t in listing] == [
            ("globex", "active"),
            ("acme", "revoked"),
        ]
        assert all("api_key" not in t for t in listing)
        stats = (await client.get("/api/admin/stats", headers=ADMIN)).json()
        assert (stats["tenants"], stats["tenants_revoked"]) == (1, 1)

        patched = await client.patch(
            "/api/admin/tenants/globex", json={"allow_system_prompt": True}, headers=ADMIN
        )
        assert patched.json()["tenant"]["allow_system_prompt"] is True
        missing = await client.post("/api/admin/tenants/nobody/rotate", headers=ADMIN)
        assert missing.status_code == 404
        bad_grace = await client.post(
            "/api/admin/tenants/globex/rotate", json={"grace_seconds": -5}, headers=ADMIN
        )
        assert bad_grace.status_code == 422


async def test_tenant_routes_are_admin_only(gw: AdminGateway) -> None:
    async with gw.client() as client:
        _, token = await new_session_token(client)
        client.cookies.clear()
        user = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/admin/tenants")).status_code == 401
        assert (await client.get("/api/admin/tenants", headers=user)).status_code == 403
        r = await client.post("/api/admin/tenants", json={"name": "x"}, headers=user)
        assert r.status_code == 403
        assert (await client.post("/api/admin/tenants/x/rotate", headers=user)).status_code == 403


async def test_sessions_filter_by_tenant_name_or_id(gw: AdminGateway) -> None:
    async with gw.state.sessionmaker() as db, db.begin():
        acme, _ = await create_tenant(db, "acme")
        globex, _ = await create_tenant(db, "globex")
        for tenant, user in ((acme, "alice"), (globex, "bob")):
            await q.session_for_principal(
                db,
                kind="tenant",
                principal=f"tenant:{tenant.id}:{user}",
                idle_ttl=3600,
                tenant_id=tenant.id,
                external_user=user,
            )
    async with gw.client() as client:
        assert [s["user"] for s in await list_all(client, tenant="acme")] == ["alice"]
        assert [s["user"] for s in await list_all(client, tenant=globex.id)] == ["bob"]
        assert await list_all(client, tenant="nobody") == []


async def test_admin_sign_in_without_a_configured_admin_token_says_so(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str]
) -> None:
    settings = make_settings(sqlite_url, fake_openai_server[1])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        gateway = AdminGateway(app)
        async with gateway.client() as client:
            r = await client.get(
                "/api/admin/stats", headers={"Authorization": "Bearer my-admin-password"}
            )
    assert r.status_code == 401
    assert "SESSIONGATE_ADMIN_TOKEN is not set" in r.json()["error"]["message"]
