"""A fake OpenAI-compatible chat-completions server speaking the real wire format.

``POST /v1/chat/completions`` answers JSON or ``text/event-stream`` chunks
(``data: {chat.completion.chunk}`` ... ``data: [DONE]``) like OpenAI does, and records
every request (messages and ``user``) so tests can prove what context each session sent.
Switches: reply function, chunk delay, HTTP failure status, a stream cut mid-reply.
``max_tokens`` is honoured like OpenAI does: each chunk counts as one token, the reply
stops after ``max_tokens`` of them with ``finish_reason: "length"``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """Default reply: ``Echo: <last user message>``."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"Echo: {last}"


MARKDOWN_SAMPLE = """## 退货说明 Returns

**Bold** and *italic*, then a list:

- 第一步 step one
- 第二步 step two

| 项目 item | 费用 cost |
| --- | --- |
| 运费 shipping | ¥10 |

```python
print("你好")
```

See [the help page](https://help.example.com/returns) or ![logo](/api/ui/avatar).

You said: {last}"""

HOSTILE_SAMPLE = """Hostile reply.

<script>window.__xss = "script"</script>
<img src=x onerror="window.__xss = 'onerror'">
[click me](javascript:window.__xss='link')
[also me](JAVASCRIPT:alert(1))
<a href="javascript:window.__xss='raw'">raw link</a>
![tracker](https://evil.example/pixel.png)
![data](data:image/png;base64,iVBORw0KGgo=)
<iframe src="https://evil.example/"></iframe>
End."""


def markdown_reply(messages: list[dict[str, Any]]) -> str:
    """A markdown reply like Coze bots send: heading, list, table, code, link, image."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return MARKDOWN_SAMPLE.replace("{last}", last)


def hostile_reply(messages: list[dict[str, Any]]) -> str:
    """A reply that tries every usual way to run script or load foreign content."""
    return HOSTILE_SAMPLE


def split_chunks(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass
class Behaviour:
    reply: Callable[[list[dict[str, Any]]], str] = echo_reply
    chunk_size: int = 4
    chunk_delay: float = 0.0
    fail_status: int | None = None
    cut_after_chunks: int | None = None
    # A raw SSE frame sent after the first piece of the reply (a broken upstream).
    inject: str | None = None


@dataclass
class Recorded:
    user: str | None
    messages: list[dict[str, Any]]
    stream: bool
    model: str


@dataclass
class FakeOpenAI:
    """State shared between the server thread and the test."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[Recorded] = field(default_factory=list)
    chunks_sent: int = 0
    disconnects: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self.requests.clear()
            self.chunks_sent = 0
            self.disconnects = 0

    def requests_for(self, user: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.user == user]

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])]
        )

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        behaviour = self.behaviour
        with self._lock:
            self.requests.append(
                Recorded(
                    user=body.get("user"),
                    messages=body["messages"],
                    stream=bool(body.get("stream")),
                    model=body["model"],
                )
            )
        if behaviour.fail_status is not None:
            return JSONResponse(
                {"error": {"message": "fake failure", "type": "server_error", "code": None}},
                status_code=behaviour.fail_status,
                headers={"x-request-id": "req_fake_123"},
            )
        text = behaviour.reply(body["messages"])
        pieces = split_chunks(text, behaviour.chunk_size)
        finish = "stop"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and len(pieces) > max_tokens:
            pieces, finish = pieces[:max_tokens], "length"
            text = "".join(pieces)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> Any:
            try:
                yield chunk({"role": "assistant", "content": ""})
                for i, piece in enumerate(pieces):
                    if behaviour.cut_after_chunks is not None and i >= behaviour.cut_after_chunks:
                        raise ConnectionAbortedError("cut")
                    if behaviour.chunk_delay:
                        await asyncio.sleep(behaviour.chunk_delay)
                    with self._lock:
                        self.chunks_sent += 1
                    yield chunk({"content": piece})
                    if i == 0 and behaviour.inject is not None:
                        yield behaviour.inject
                yield chunk({}, finish)
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": body["model"],
                        "choices": [],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                    yield f"data: {json.dumps(usage)}\n\n"
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:
                with self._lock:
                    self.disconnects += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")
