"""Request ids: honoured when safe, generated otherwise, returned on every response."""

from __future__ import annotations

import re

import pytest

from ..conftest import Gateway

GENERATED = re.compile(r"[0-9a-f]{32}")


async def test_a_safe_incoming_request_id_is_returned_unchanged(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        response = await client.post(
            "/api/chat", json={"message": "hi"}, headers={"x-request-id": "lb-7f3a.01:ab_C"}
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "lb-7f3a.01:ab_C"


async def test_each_request_without_an_id_gets_a_new_one(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        first = await client.get("/api/health")
        second = await client.get("/api/health")
    assert GENERATED.fullmatch(first.headers["x-request-id"])
    assert GENERATED.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "unsafe",
    ["x" * 65, "has space", 'quote"and<tag>', "semi;colon", "ünïcode"],
)
async def test_an_unsafe_incoming_request_id_is_replaced(
    sqlite_gateway: Gateway, unsafe: str
) -> None:
    async with sqlite_gateway.client() as client:
        response = await client.get(
            "/api/health", headers=[("x-request-id", unsafe.encode("utf-8"))]
        )
    assert GENERATED.fullmatch(response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


async def test_streamed_replies_carry_the_request_id(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        async with client.stream(
            "POST", "/api/chat/stream", json={"message": "hi"}, headers={"x-request-id": "sse-1"}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-request-id"] == "sse-1"
            body = "".join([chunk async for chunk in response.aiter_text()])
    assert '"type":"done"' in body


async def test_error_responses_carry_the_request_id(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        unknown = await client.get("/nowhere", headers={"x-request-id": "err-1"})
        refused = await client.post(
            "/api/chat", json={"message": ""}, headers={"x-request-id": "err-2"}
        )
    async with sqlite_gateway.client() as client:
        unauthorized = await client.get("/api/admin/stats", headers={"x-request-id": "err-3"})
    assert (unknown.status_code, unknown.headers["x-request-id"]) == (404, "err-1")
    assert (refused.status_code, refused.headers["x-request-id"]) == (400, "err-2")
    assert (unauthorized.status_code, unauthorized.headers["x-request-id"]) == (401, "err-3")
