"""``GET /api/health`` (api/health.py): the public learns only that the service is up;
admins see provider, version and counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from ..conftest import running_gateway
from ..fakes.openai_server import FakeOpenAI

ADMIN = "admin-token-0123456789abcdef"


async def test_admins_see_provider_version_and_counts_others_do_not(
    database_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(database_url, fake_openai_server[1], admin_token=ADMIN) as gw,
        gw.client() as client,
    ):
        token = (await client.post("/api/session")).json()["token"]
        admin = await client.get("/api/health", headers={"Authorization": f"Bearer {ADMIN}"})
        user = await client.get("/api/health", headers={"Authorization": f"Bearer {token}"})
        forged = await client.get("/api/health", headers={"Authorization": "Bearer nonsense"})
    assert admin.status_code == 200
    body = admin.json()
    assert body["provider"] == "openai" and body["version"] and body["database"] == "ok"
    assert body["sessions"] == {"total": 1, "active": 1}
    assert user.json() == {"status": "ok"}
    assert forged.status_code == 200 and forged.json() == {"status": "ok"}


async def test_only_admins_make_health_count_sessions(
    database_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    """Load balancers and anyone else probe health often: theirs is one trivial query."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async with (
        running_gateway(database_url, fake_openai_server[1], admin_token=ADMIN) as gw,
        gw.client() as client,
    ):
        engine = gw.state.engine.sync_engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            public = await client.get("/api/health")
            public_statements, statements[:] = list(statements), []
            admin = await client.get("/api/health", headers={"Authorization": f"Bearer {ADMIN}"})
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert public.json() == {"status": "ok"}
    # (The recovery sweep may run meanwhile: only the absence of a count is asserted.)
    assert not any("FROM sessions" in s for s in public_statements), public_statements
    assert any("AS anon_1" in s for s in public_statements), public_statements
    assert admin.json()["sessions"] == {"total": 0, "active": 0}
    assert any("FROM sessions" in s for s in statements)
