"""The OpenAI provider against the fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import pytest

from sessiongate.errors import RateLimited, UpstreamError
from sessiongate.providers.base import ChatMessage, Finish, TextDelta, TurnRequest, Usage
from sessiongate.providers.openai import OpenAIProvider

from ..fakes.openai_server import FakeOpenAI


def provider(url: str, context_tokens: int = 8192) -> OpenAIProvider:
    return OpenAIProvider(
        base_url=f"{url}/v1",
        api_key="sk-test",
        model="fake-model",
        context_tokens=context_tokens,
        max_tokens=64,
        connect_timeout=5,
        idle_timeout=5,
    )


async def test_streams_deltas_and_usage_with_session_name_as_user(
    fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    p = provider(fake_openai_server[1])
    events = [e async for e in p.stream_reply(TurnRequest("sg_abc", [ChatMessage("user", "你好")]))]
    await p.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: 你好"
    assert events[-2:] == [Usage(10, 5), Finish("stop")]
    assert fake_openai.requests[-1].user == "sg_abc"
    assert fake_openai.requests[-1].stream is True


async def test_long_history_is_trimmed_to_the_context_window(
    fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    p = provider(fake_openai_server[1], context_tokens=400)
    history = [ChatMessage("system", "sys")] + [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * 200)
        for i in range(40)
    ]
    history.append(ChatMessage("user", "latest"))
    _ = [e async for e in p.stream_reply(TurnRequest("sg_abc", history))]
    await p.aclose()
    sent = fake_openai.requests[-1].messages
    assert sent[0]["content"] == "sys" and sent[-1]["content"] == "latest"
    assert 2 < len(sent) < len(history)


@pytest.mark.parametrize(
    ("status", "error"), [(429, RateLimited), (500, UpstreamError), (401, UpstreamError)]
)
async def test_http_errors_become_sessiongate_errors(
    fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI, status: int, error: type
) -> None:
    fake_openai.behaviour.fail_status = status
    p = provider(fake_openai_server[1])
    with pytest.raises(error) as exc:
        _ = [e async for e in p.stream_reply(TurnRequest("sg_abc", [ChatMessage("user", "hi")]))]
    await p.aclose()
    assert "fake failure" not in exc.value.message
    if status == 429:
        assert exc.value.status == 429 and exc.value.retry_after is not None
    else:
        assert exc.value.logid == "req_fake_123"


@pytest.mark.parametrize(
    "frame",
    [
        "data: {not json\n\n",
        'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, '
        '"model": "fake-model", "choices": null}\n\n',
    ],
)
async def test_a_malformed_chunk_mid_reply_is_an_upstream_error(
    fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI, frame: str
) -> None:
    fake_openai.behaviour.inject = frame
    p = provider(fake_openai_server[1])
    received: list[str] = []
    try:
        with pytest.raises(UpstreamError) as caught:
            async for event in p.stream_reply(TurnRequest("sg_abc", [ChatMessage("user", "hi")])):
                if isinstance(event, TextDelta):
                    received.append(event.text)
    finally:
        await p.aclose()
    assert received  # the reply had started
    assert caught.value.code == "upstream_error"
    assert "could not read" in caught.value.message


async def test_reply_cut_by_max_tokens_finishes_with_length(
    fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.reply = lambda _: "x" * 400  # 100 chunks, more than max_tokens=64
    p = provider(fake_openai_server[1])
    events = [e async for e in p.stream_reply(TurnRequest("sg_a", [ChatMessage("user", "go")]))]
    await p.aclose()
    assert events[-1] == Finish("length")
    assert len("".join(e.text for e in events if isinstance(e, TextDelta))) == 64 * 4
