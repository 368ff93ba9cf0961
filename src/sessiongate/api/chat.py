"""``POST /api/chat`` (one JSON reply) and ``POST /api/chat/stream`` (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..chat import ChatService, ReplyDelta, Turn, TurnDone, TurnEvent, TurnFailed
from ..errors import UpstreamError
from ..store import SessionRow
from .deps import CallerDep, JsonBody, StateDep, pick_named_user, resolve_session
from .schemas import ChatRequest, ChatResponse, ErrorEnvelope

router = APIRouter(prefix="/api", tags=["chat"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 413, 415, 422, 502, 503, 504)
}


async def chat_session(
    request: Request, state: StateDep, caller: CallerDep, body: ChatRequest
) -> SessionRow:
    """The session of this turn; API-key callers name the user in the body or header."""
    named = pick_named_user(request, body.user, body.user_id)
    return await resolve_session(request, state, caller, named)


ChatSession = Annotated[SessionRow, Depends(chat_session)]


@router.post("/chat", response_model=ChatResponse, dependencies=[JsonBody], responses=_ERRORS)
async def chat(body: ChatRequest, session: ChatSession, state: StateDep) -> ChatResponse:
    """Send one message and wait for the whole reply.

    Without `conversation_id` the session's most recent conversation continues (a new
    one is created if there is none). The user's message is stored before the model
    is asked; if the model fails, the failed reply is stored with status `error` and
    the error is returned (502/504, or 429 when the upstream rate-limits).
    """
    turn = await state.chat.begin_turn(session, body.message, body.conversation_id)
    async with contextlib.aclosing(state.chat.stream_turn(turn)) as events:
        async for event in events:
            if isinstance(event, TurnDone):
                return ChatResponse(
                    message=event.text,
                    conversation_id=event.conversation_id,
                    message_id=event.message_id,
                )
            if isinstance(event, TurnFailed):
                raise event.error
    raise UpstreamError("The turn ended without a reply.")  # pragma: no cover


@router.post(
    "/chat/stream",
    dependencies=[JsonBody],
    responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
)
async def chat_stream(
    body: ChatRequest, session: ChatSession, state: StateDep
) -> StreamingResponse:
    """Send one message and receive the reply as Server-Sent Events.

    Frames are `data: {json}` lines: `{"type":"message","content":<text delta>}` as the
    reply grows, then `{"type":"done","content":"","conversation_id","message_id"}`.
    A failure after the stream started is `{"type":"error","code","message",...}`, then
    the stream ends. Lines starting with `:` are keep-alives. Closing the connection
    stops generation; the partial reply is kept with status `incomplete`. Everything
    that can be refused (bad input, unknown conversation, busy model) is refused with a
    JSON error before the stream starts.
    """
    turn = await state.chat.begin_turn(session, body.message, body.conversation_id)
    return EventStreamResponse(
        sse_frames(state.chat, turn, keepalive=state.settings.keepalive_interval),
        on_close=turn.release,
    )


def sse_frame(payload: dict[str, Any]) -> str:
    """One SSE event carrying ``payload`` as compact JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _frame_of(event: TurnEvent) -> str:
    if isinstance(event, ReplyDelta):
        return sse_frame({"type": "message", "content": event.text})
    if isinstance(event, TurnDone):
        return sse_frame(
            {
                "type": "done",
                "content": "",
                "conversation_id": event.conversation_id,
                "message_id": event.message_id,
            }
        )
    return sse_frame(
        {
            "type": "error",
            "code": event.error.code,
            "message": event.error.message,
            "conversation_id": event.conversation_id,
            "message_id": event.message_id,
        }
    )


async def turn_events(
    chat: ChatService, turn: Turn, *, keepalive: float
) -> AsyncGenerator[TurnEvent | None, None]:
    """Run ``turn`` in its own task and relay its events; None after ``keepalive`` seconds
    of silence (time for a keep-alive).

    The turn runs in one task from start to end (provider streams stay in one task);
    this generator only waits on a queue. If the consumer leaves (client disconnect),
    the turn task is cancelled and awaited: generation stops and the partial reply is
    stored before this generator finishes.
    """
    queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue(maxsize=256)  # None: finished

    async def produce() -> None:
        try:
            async with contextlib.aclosing(chat.stream_turn(turn)) as events:
                async for event in events:
                    await queue.put(event)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    task = asyncio.create_task(produce(), name=f"turn-{turn.session.id}")
    try:
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    event = await queue.get()
            except TimeoutError:
                yield None
                continue
            if event is None:
                break
            yield event
            if not isinstance(event, ReplyDelta):
                break
        await task
    finally:
        with anyio.CancelScope(shield=True):
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def sse_frames(chat: ChatService, turn: Turn, *, keepalive: float) -> AsyncIterator[str]:
    """The turn as ``/api/chat/stream`` SSE frames, with keep-alive comments."""
    yield ": stream open\n\n"
    events = turn_events(chat, turn, keepalive=keepalive)
    async with contextlib.aclosing(events):
        async for event in events:
            yield ": keep-alive\n\n" if event is None else _frame_of(event)


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that always closes its iterator and runs ``on_close``."""

    def __init__(self, content: AsyncIterator[str], *, on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._iterator = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                self._on_close()


__all__ = ["EventStreamResponse", "router", "sse_frame", "sse_frames", "turn_events"]
