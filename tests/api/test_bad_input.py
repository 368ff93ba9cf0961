"""Bad input of every kind gets a clear error in the envelope and stores nothing."""

from __future__ import annotations

import pytest

from sessiongate.store.queries import count_sessions

from ..conftest import Gateway
from ..fakes.openai_server import FakeOpenAI


async def assert_nothing_stored(gateway: Gateway, headers: dict[str, str]) -> None:
    async with gateway.client() as client:
        info = (await client.get("/api/session/info", headers=headers)).json()
    assert info["message_count"] == 0
    assert info["conversation_count"] == 0


@pytest.fixture
async def auth(gateway: Gateway) -> dict[str, str]:
    async with gateway.client() as client:
        token = (await client.post("/api/session")).json()["token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"message": ""}, 400, "empty_message"),
        ({"message": "   \n\t "}, 400, "empty_message"),
        ({"message": "x" * 8001}, 413, "message_too_long"),
        ({"message": "字" * 8001}, 413, "message_too_long"),
        ({}, 422, "invalid_request"),
        ({"message": 42}, 422, "invalid_request"),
        ({"message": ["a"]}, 422, "invalid_request"),
        ({"message": "hi", "conversation_id": "0" * 32}, 404, "conversation_not_found"),
        (
            {"message": "", "regenerate": True, "edit_last": True, "conversation_id": "0" * 32},
            400,
            "invalid_request",
        ),
        ({"message": "hi", "conversation_id": "x" * 65}, 422, "invalid_request"),
    ],
)
async def test_bad_chat_body_is_refused_and_nothing_stored(
    gateway: Gateway,
    fake_openai: FakeOpenAI,
    auth: dict[str, str],
    path: str,
    body: dict,
    status: int,
    code: str,
) -> None:
    async with gateway.client() as client:
        r = await client.post(path, json=body, headers=auth)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    await assert_nothing_stored(gateway, auth)
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"message": ""},
        {"message": "x" * 8001},
        {"message": "hi", "new_conversation": True, "conversation_id": "c" * 32},
        {"message": "hi", "regenerate": True},
    ],
)
async def test_a_bad_body_without_credentials_mints_no_session(
    gateway: Gateway, fake_openai: FakeOpenAI, body: dict
) -> None:
    async with gateway.client() as client:  # no cookie, no token
        r = await client.post("/api/chat", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert "set-cookie" not in r.headers
    async with gateway.state.sessionmaker() as db:
        assert await count_sessions(db) == (0, 0)
    assert fake_openai.requests == []


async def test_malformed_json_is_400(gateway: Gateway, auth: dict[str, str]) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/api/chat",
            content=b'{"message": "hi"',
            headers={**auth, "Content-Type": "application/json"},
        )
    assert r.status_code == 400
    assert r.json() == {
        "error": {"code": "malformed_json", "message": "The request body is not valid JSON."}
    }
    await assert_nothing_stored(gateway, auth)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(
    gateway: Gateway, auth: dict[str, str], content_type: str | None
) -> None:
    headers = dict(auth)
    if content_type:
        headers["Content-Type"] = content_type
    async with gateway.client() as client:
        r = await client.post("/api/chat", content=b'{"message": "hi"}', headers=headers)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    await assert_nothing_stored(gateway, auth)


async def test_huge_body_is_413_before_parsing(gateway: Gateway, auth: dict[str, str]) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/api/chat",
            content=b'{"message": "' + b"a" * 2_000_000 + b'"}',
            headers={**auth, "Content-Type": "application/json"},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    await assert_nothing_stored(gateway, auth)


async def test_malformed_authorization_header_is_401(gateway: Gateway) -> None:
    async with gateway.client() as client:
        r = await client.get("/api/session/info", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"


async def test_unknown_route_and_method_use_the_envelope(gateway: Gateway) -> None:
    async with gateway.client() as client:
        missing = await client.get("/api/nope")
        wrong_method = await client.get("/api/chat")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (
        wrong_method.status_code == 405
        and wrong_method.json()["error"]["code"] == "method_not_allowed"
    )


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=abc"])
async def test_bad_pagination_is_422(gateway: Gateway, auth: dict[str, str], query: str) -> None:
    async with gateway.client() as client:
        r = await client.get(f"/api/conversations?{query}", headers=auth)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "query", ["offset=9223372036854775808", "offset=99999999999999999999999999"]
)
async def test_an_offset_past_the_databases_integers_is_400(
    gateway: Gateway, auth: dict[str, str], query: str
) -> None:
    async with gateway.client() as client:
        r = await client.get(f"/api/conversations?{query}", headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "query",
    [
        "active_after=0001-01-01T00:00:00%2B05:00",
        "active_before=0001-01-01T00:00:00%2B14:00",
        "active_before=9999-12-31T23:59:59-05:00",
    ],
)
async def test_admin_date_filters_at_the_ends_of_the_calendar_are_4xx(
    database_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI, query: str
) -> None:
    from ..conftest import running_gateway

    admin = "admin-token-0123456789abcdef"
    async with (
        running_gateway(database_url, fake_openai_server[1], admin_token=admin) as gw,
        gw.client() as client,
    ):
        r = await client.get(
            f"/api/admin/sessions?{query}", headers={"Authorization": f"Bearer {admin}"}
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
