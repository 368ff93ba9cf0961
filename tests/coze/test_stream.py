"""The Coze SSE parser (coze/stream.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sessiongate.coze.stream import SseEvent, iter_sse


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_an_event_line_without_a_blank_line_before_it_starts_a_new_event() -> None:
    # Coze may omit the blank line between events (cozepy accepts it). A standard SSE
    # decoder (httpx-sse's included) would merge the two into one event named "b" with
    # both data lines, which is why this parser is kept instead of httpx-sse.
    events = [
        e
        async for e in iter_sse(
            _lines("event: a", 'data: {"x":1}', "event: b", 'data: {"y":2}', "")
        )
    ]
    assert events == [SseEvent("a", '{"x":1}'), SseEvent("b", '{"y":2}')]
