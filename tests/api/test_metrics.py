"""``GET /metrics`` after real requests through an in-process gateway, and its token guard."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Gateway, running_gateway
from ..fakes.openai_server import FakeOpenAI

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    """Every sample of ``/metrics`` as {(name, labels): value}."""
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def chat(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra}


async def test_metrics_count_requests_by_route_template_status_and_error_code(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        before = await scrape(client)
        reply = await client.post("/api/chat", json=chat("hello"))
        assert reply.status_code == 200
        conversation = reply.json()["conversation_id"]
        assert (await client.get(f"/api/conversations/{conversation}/messages")).status_code == 200
        missing = await client.get("/api/conversations/no-such-id/messages")
        assert missing.json()["error"]["code"] == "conversation_not_found"
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.get("/static/app.js")).status_code == 200
        empty = await client.post("/api/chat", json=chat(""))
        assert empty.json()["error"]["code"] == "empty_message"
        after = await scrape(client)

    total = "sessiongate_http_requests_total"
    assert delta(before, after, total, method="POST", route="/api/chat", status="200") == 1
    assert delta(before, after, total, method="POST", route="/api/chat", status="400") == 1
    messages = "/api/conversations/{conversation_id}/messages"
    assert delta(before, after, total, method="GET", route=messages, status="200") == 1
    assert delta(before, after, total, method="GET", route=messages, status="404") == 1
    assert delta(before, after, total, method="GET", route="unmatched", status="404") == 1
    assert delta(before, after, total, method="GET", route="/static/{path}", status="200") == 1
    # Raw paths never become label values.
    assert not any("no-such-id" in dict(labels).get("route", "") for _, labels in after)
    count = "sessiongate_http_request_duration_seconds_count"
    assert delta(before, after, count, method="POST", route="/api/chat") == 2

    refused = "sessiongate_refused_requests_total"
    assert delta(before, after, refused, code="conversation_not_found") == 1
    assert delta(before, after, refused, code="empty_message") == 1
    assert delta(before, after, refused, code="not_found") == 1


async def test_sessions_active_is_counted_by_the_database_at_scrape_time(
    gateway: Gateway,
) -> None:
    async with gateway.client() as first, gateway.client() as second:
        assert value(await scrape(first), "sessiongate_sessions_active") == 0
        assert (await first.post("/api/chat", json=chat("one"))).status_code == 200
        assert (await second.post("/api/chat", json=chat("two"))).status_code == 200
        assert (await first.post("/api/chat", json=chat("three"))).status_code == 200
        assert value(await scrape(first), "sessiongate_sessions_active") == 2
        assert (await second.delete("/api/session")).status_code in (200, 204)
        assert value(await scrape(first), "sessiongate_sessions_active") == 1


async def test_rate_limited_turns_are_counted_by_code(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], rate_limit="2/minute") as gw,
        gw.client() as client,
    ):
        before = await scrape(client)
        statuses = [
            (await client.post("/api/chat", json=chat(f"m{i}"))).status_code for i in range(3)
        ]
        after = await scrape(client)
    assert statuses == [200, 200, 429]
    assert delta(before, after, "sessiongate_rate_limited_requests_total", code="rate_limited") == 1
    assert delta(before, after, "sessiongate_refused_requests_total", code="rate_limited") == 1


async def test_metrics_token_is_required_when_set(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    token = "metrics-token-0123456789"
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], metrics_token=token) as gw,
        gw.client() as client,
    ):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "sessiongate_" not in refused.text
        samples = await scrape(client, authorization=f"Bearer {token}")
    assert value(samples, "sessiongate_refused_requests_total", code="unauthorized") >= 3


async def test_metrics_are_open_without_a_token(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        samples = await scrape(client)
    names = {name for name, _ in samples}
    assert "sessiongate_sessions_active" in names
    assert "sessiongate_http_requests_total" in names
