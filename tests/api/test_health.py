"""``GET /api/health`` (api/health.py): the public learns only that the service is up;
admins see provider, version and counts."""

from __future__ import annotations

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
