"""The Coze SSE parser (coze/stream.py): events come out whole however the bytes are cut."""

from __future__ import annotations

import pytest

from sessiongate.coze.stream import SseEvent, SseParser
from sessiongate.errors import UpstreamError

STREAM = (
    'event:conversation.chat.created\ndata:{"id":"1"}\n\n'
    'event: conversation.message.delta\r\ndata: {"content":"你好"}\r\n\r\n'
    ": a comment\nid: 7\n"
    "data: line one\ndata: line two\n\n"
    'event:done\ndata:"[DONE]"\n'
).encode()

EXPECTED = [
    SseEvent("conversation.chat.created", '{"id":"1"}'),
    SseEvent("conversation.message.delta", '{"content":"你好"}'),
    SseEvent("message", "line one\nline two"),
    SseEvent("done", '"[DONE]"'),
]


def parse(chunks: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.close()


def test_a_stream_in_one_chunk() -> None:
    assert parse([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_a_stream_cut_anywhere_even_inside_a_character_or_a_crlf(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert parse(chunks) == EXPECTED


def test_an_event_line_starts_a_new_event_without_a_blank_line() -> None:
    # Coze may omit the blank line between events (cozepy accepts it). A standard SSE
    # decoder (httpx-sse's included) would merge the two into one event named "b" with
    # both data lines, which is why this parser is kept instead of httpx-sse.
    assert parse([b"event:a\ndata:1\nevent:b\ndata:2\n"]) == [
        SseEvent("a", "1"),
        SseEvent("b", "2"),
    ]


def test_undecodable_bytes_are_replaced_not_fatal() -> None:
    assert parse([b"data:\xff\xfe\n\n"]) == [SseEvent("message", "\ufffd\ufffd")]


def test_a_line_that_never_ends_is_refused() -> None:
    parser = SseParser(max_line=1024)
    assert parser.feed(b"data:" + b"x" * 1000) == []
    with pytest.raises(UpstreamError, match="malformed"):
        parser.feed(b"x" * 100)


def test_a_long_line_within_the_limit_is_kept_whole() -> None:
    text = "字" * 5000
    line = f"data:{text}\n\n".encode()
    parser = SseParser(max_line=len(line))
    events = [e for i in range(0, len(line), 4096) for e in parser.feed(line[i : i + 4096])]
    assert events == [SseEvent("message", text)]
