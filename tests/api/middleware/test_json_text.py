"""Text the store cannot hold (api/middleware/json_text.py) is a 400 in the envelope on
every route and both databases, and nothing is stored."""

from __future__ import annotations

import pytest

from ...conftest import Gateway
from ...fakes.openai_server import FakeOpenAI


@pytest.fixture
async def auth(gateway: Gateway) -> dict[str, str]:
    async with gateway.client() as client:
        token = (await client.post("/api/session")).json()["token"]
    return {"Authorization": f"Bearer {token}"}


async def message_count(gateway: Gateway, auth: dict[str, str]) -> int:
    async with gateway.client() as client:
        return int((await client.get("/api/session/info", headers=auth)).json()["message_count"])


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/chat", rb'{"message": "hi \ud800 there"}'),
        ("/api/chat/stream", rb'{"message": "\udfff"}'),
        ("/api/chat", rb'{"message": "nul \u0000 byte"}'),
        ("/api/chat", rb'{"message": "hi", "conversation_id": "a\u0000b"}'),
        ("/api/chat", rb'{"message": "hi", "user": "\ud800"}'),
        ("/api/conversations", rb'{"title": "t\u0000"}'),
        ("/api/conversations", rb'{"title": "\ud83d"}'),
    ],
)
async def test_lone_surrogates_and_nul_are_400_and_nothing_is_stored(
    gateway: Gateway, fake_openai: FakeOpenAI, auth: dict[str, str], path: str, raw: bytes
) -> None:
    async with gateway.client() as client:
        r = await client.post(
            path, content=raw, headers={**auth, "Content-Type": "application/json"}
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_text"
    assert await message_count(gateway, auth) == 0
    assert fake_openai.requests == []


async def test_a_paired_surrogate_escape_is_ordinary_text(
    gateway: Gateway, fake_openai: FakeOpenAI, auth: dict[str, str]
) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/api/chat",
            content=rb'{"message": "smile \ud83d\ude00"}',
            headers={**auth, "Content-Type": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert await message_count(gateway, auth) == 2


@pytest.mark.parametrize(
    "url", ["/api/conversations/a%00b/messages", "/api/conversations?limit=5%00"]
)
async def test_nul_in_the_path_or_query_is_400(
    gateway: Gateway, auth: dict[str, str], url: str
) -> None:
    async with gateway.client() as client:
        r = await client.get(url, headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_text"


@pytest.mark.parametrize(
    ("path", "depth"), [("/v1/chat/completions", 200_000), ("/api/chat", 20_000)]
)
async def test_deeply_nested_json_is_400(gateway: Gateway, path: str, depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    async with gateway.client() as client:
        r = await client.post(path, content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "too_deep"
