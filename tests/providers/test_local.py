"""The embedded llama.cpp model, for real: framing, recall within a session only,
token-by-token streaming, stopping on disconnect, and the bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from sessiongate.app import create_app
from sessiongate.providers.base import ChatMessage, Finish, TurnRequest, Usage
from sessiongate.providers.local import LocalProvider, format_prompt

from ..conftest import make_settings, wait_until
from ..fakes.servers import ServerThread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_provider() -> Iterator[LocalProvider]:
    pytest.importorskip("llama_cpp")
    provider = asyncio.run(
        LocalProvider.load(None, context_tokens=2048, max_tokens=48, temperature=0.0, max_queue=0)
    )
    yield provider
    asyncio.run(provider.aclose())


def test_prompt_frames_the_dialogue_for_a_base_model() -> None:
    prompt = format_prompt(
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "我叫张三\nhello"),
            ChatMessage("assistant", "你好"),
            ChatMessage("user", "我叫什么？"),
        ]
    )
    assert (
        prompt == "Be brief.\n\nUser: 我叫张三 hello\nAssistant: 你好\nUser: 我叫什么？\nAssistant:"
    )


async def test_reply_streams_token_by_token(local_provider: LocalProvider) -> None:
    request = TurnRequest("sg_x", [ChatMessage("user", "Count from 1 to 100: 1, 2, 3,")])
    deltas = [event async for event in local_provider.stream_reply(request)]
    texts = [d.text for d in deltas if hasattr(d, "text")]
    assert len(texts) > 3
    usage = next(d for d in deltas if isinstance(d, Usage))
    assert usage.completion_tokens is not None and usage.completion_tokens >= len(texts)
    # Counting to 100 does not fit in 48 tokens: the limit cut the reply.
    assert deltas[-1] == Finish("length")


async def test_reply_that_stops_at_the_next_speaker_finishes_with_stop(
    local_provider: LocalProvider,
) -> None:
    request = TurnRequest("sg_x", [ChatMessage("user", "Say only the word yes.")])
    events = [event async for event in local_provider.stream_reply(request)]
    usage = next(e for e in events if isinstance(e, Usage))
    finish = events[-1]
    assert isinstance(finish, Finish)
    # Whatever the small model says, the reason matches whether it ran out of tokens.
    assert finish.reason == ("length" if usage.completion_tokens == 48 else "stop")


@pytest.fixture
async def local_gateway(
    sqlite_url: str, local_provider: LocalProvider
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(sqlite_url, provider="local"), provider=local_provider)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://g", timeout=120
        ) as client:
            yield client


@pytest.mark.parametrize(
    ("a_says", "b_says", "question", "a_name", "b_name"),
    [
        ("我叫张三", "我叫李四", "我叫什么名字？", "张三", "李四"),
        ("My name is Alice.", "My name is Bob.", "What is my name?", "Alice", "Bob"),
    ],
)
async def test_real_model_recalls_own_name_never_the_other_sessions(
    local_gateway: httpx.AsyncClient,
    a_says: str,
    b_says: str,
    question: str,
    a_name: str,
    b_name: str,
) -> None:
    client = local_gateway
    a = {"Authorization": "Bearer " + (await client.post("/api/session")).json()["token"]}
    b = {"Authorization": "Bearer " + (await client.post("/api/session")).json()["token"]}
    assert (await client.post("/api/chat", json={"message": a_says}, headers=a)).status_code == 200
    assert (await client.post("/api/chat", json={"message": b_says}, headers=b)).status_code == 200
    answer_a = (await client.post("/api/chat", json={"message": question}, headers=a)).json()[
        "message"
    ]
    answer_b = (await client.post("/api/chat", json={"message": question}, headers=b)).json()[
        "message"
    ]
    assert a_name in answer_a and b_name not in answer_a, answer_a
    assert b_name in answer_b and a_name not in answer_b, answer_b


def test_disconnect_under_cancel_stops_local_generation_and_queue_overflow_is_503(
    sqlite_url: str, local_provider: LocalProvider
) -> None:
    # No system prompt and a bare number sequence: a base model continues it for all of
    # max_tokens, so the reply is still being generated when the client leaves. The KV
    # cache is cleared so earlier tests' prompts cannot change the greedy continuation.
    settings = make_settings(
        sqlite_url,
        provider="local",
        local_max_queue=0,
        system_prompt="",
        on_disconnect="cancel",
    )
    local_provider._llama.reset()
    with ServerThread(create_app(settings, provider=local_provider)) as server:
        asyncio.run(_disconnect_and_overflow(server.url, local_provider))


async def _disconnect_and_overflow(url: str, provider: LocalProvider) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        httpx.AsyncClient(base_url=url, timeout=60) as other,
    ):
        await client.post("/api/session")
        conv = (await client.post("/api/conversations", json={})).json()["id"]
        body = {"message": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "conversation_id": conv}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            lines = r.aiter_lines()  # held: dropping it would close the connection now
            async for line in lines:
                if line.startswith("data: ") and json.loads(line[6:])["type"] == "message":
                    break
            assert provider.generating
            # The one slot is taken (max_queue=0): another session is told to come back.
            busy = await other.post("/api/chat", json={"message": "me too"})
            assert busy.status_code == 503
            assert busy.json()["error"]["code"] == "provider_busy"
            assert int(busy.headers["retry-after"]) >= 1
        await wait_until(lambda: not provider.generating, timeout=5)

        async def stored() -> bool:
            msgs = (await client.get(f"/api/conversations/{conv}/messages")).json()["messages"]
            return len(msgs) == 2 and msgs[1]["status"] == "incomplete"

        await wait_until(stored, timeout=10)
        # The slot is free again.
        assert (await other.post("/api/chat", json={"message": "hi"})).status_code == 200


def _queue_depth() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("sessiongate_provider_queue_depth") or 0.0


async def test_queue_depth_counts_a_turn_waiting_behind_the_generating_one(
    local_provider: LocalProvider,
) -> None:
    local_provider._llama.reset()
    baseline = _queue_depth()
    first = local_provider.stream_reply(
        TurnRequest("sg_a", [ChatMessage("user", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")])
    )
    second = local_provider.stream_reply(TurnRequest("sg_b", [ChatMessage("user", "Hello")]))
    try:
        await first.__anext__()  # generating now
        assert _queue_depth() == baseline
        waiting = asyncio.ensure_future(second.__anext__())
        await wait_until(lambda: _queue_depth() == baseline + 1)
        await first.aclose()  # the worker moves on to the waiting turn
        await wait_until(lambda: _queue_depth() == baseline)
        await waiting
    finally:
        await first.aclose()
        await second.aclose()
