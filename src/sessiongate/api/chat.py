"""``POST /api/chat`` (one JSON reply) and ``POST /api/chat/stream`` (Server-Sent Events),
and the SSE relay every streamed reply goes through."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..chat import TurnInput
from ..errors import BadRequest, Forbidden, UpstreamError
from ..providers.base import AcceptsClientParameters, Provider
from ..replies import Frame, LiveReply
from ..store import SessionRow
from .deps import CallerDep, JsonBody, StateDep, pick_named_user, resolve_session
from .schemas import ChatRequest, ChatResponse, ErrorEnvelope

router = APIRouter(prefix="/api", tags=["chat"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
}


async def chat_session(
    request: Request, state: StateDep, caller: CallerDep, body: ChatRequest
) -> SessionRow:
    """The session of this turn; API-key callers name the user in the body or header.

    A body that will be refused (an empty or too long message, inconsistent flags,
    upstream inputs from anyone but a tenant) is refused here, before a cookie-less
    caller would be given a new session for it."""
    state.chat.validate(
        TurnInput(
            message=body.message,
            conversation_id=body.conversation_id,
            new_conversation=body.new_conversation,
            regenerate=body.regenerate,
            edit_last=body.edit_last,
        )
    )
    if caller.kind != "tenant":
        _refuse_inputs(body)
    named = pick_named_user(request, body.user, body.user_id)
    return await resolve_session(request, state, caller, named)


def _inputs_sent(body: ChatRequest) -> dict[str, Any]:
    """The upstream-input fields present in ``body``, by name."""
    fields = (("parameters", body.parameters), ("custom_variables", body.custom_variables))
    return {name: value for name, value in fields if value is not None}


def _refuse_inputs(body: ChatRequest) -> None:
    if sent := _inputs_sent(body):
        raise Forbidden(
            f"Only a tenant's API key may send upstream inputs ({', '.join(sent)}); "
            "the operator sets everyone else's.",
            code="parameters_not_allowed",
        )


ChatSession = Annotated[SessionRow, Depends(chat_session)]


def turn_input(body: ChatRequest, session: SessionRow, provider: Provider) -> TurnInput:
    """The turn a chat request asks for.

    ``parameters`` / ``custom_variables`` (the tenant's Coze inputs) are checked here,
    before anything is stored: 403 ``parameters_not_allowed`` for callers other than a
    tenant's API key, 400 ``unsupported_parameter`` when the provider takes the other
    field or none, 400 ``parameter_not_allowed`` for a key the operator did not list.
    """
    return TurnInput(
        message=body.message,
        conversation_id=body.conversation_id,
        new_conversation=body.new_conversation,
        regenerate=body.regenerate,
        edit_last=body.edit_last,
        user=session.external_user if session.kind == "tenant" else None,
        client_parameters=_client_parameters(body, session, provider),
    )


def _client_parameters(
    body: ChatRequest, session: SessionRow, provider: Provider
) -> dict[str, Any] | None:
    sent = _inputs_sent(body)
    if not sent:
        return None
    if session.kind != "tenant":
        _refuse_inputs(body)
    taken = getattr(provider, "client_parameters_field", None)
    if refused := [name for name in sent if name != taken]:
        raise BadRequest(
            f"'{refused[0]}' is not taken by the {provider.name} provider.",
            code="unsupported_parameter",
        )
    assert isinstance(provider, AcceptsClientParameters)  # it takes the field sent
    return provider.check_client_parameters(sent[provider.client_parameters_field])


async def wait_for_reply(live: LiveReply) -> LiveReply:
    """Follow ``live`` to its end; raises its error if it failed."""
    async for _ in live.follow():
        pass
    if live.error is not None:
        raise live.error
    return live


@router.post("/chat", response_model=ChatResponse, dependencies=[JsonBody], responses=_ERRORS)
async def chat(body: ChatRequest, session: ChatSession, state: StateDep) -> ChatResponse:
    """Send one message and wait for the whole reply.

    Without `conversation_id` the session's most recent conversation continues (a new
    one is created if there is none, or always with `new_conversation`). The user's
    message is stored before the model is asked; if the model fails, the failed reply
    is stored with status `error` and the error is returned (502/504, or 429 when the
    upstream rate-limits). 409 `session_busy` when another turn of this session runs
    longer than `SESSIONGATE_TURN_WAIT`.
    """
    turn = turn_input(body, session, state.provider)
    live = await wait_for_reply(await state.chat.start_turn(session, turn))
    return ChatResponse(
        message=live.text,
        conversation_id=live.conversation_id,
        message_id=live.message_id,
        finish_reason=live.finish_reason or "stop",
    )


@router.post(
    "/chat/stream",
    dependencies=[JsonBody],
    responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
)
async def chat_stream(
    body: ChatRequest, session: ChatSession, state: StateDep
) -> StreamingResponse:
    """Send one message and receive the reply as Server-Sent Events.

    Frames are `data: {json}` lines: `{"type":"start","conversation_id","message_id"}`,
    then `{"type":"message","content":<text delta>}` as the reply grows, then
    `{"type":"done","content":"","conversation_id","message_id","finish_reason"}`. A
    failure after the stream started is `{"type":"error","code","message",...}`, then
    the stream ends. Lines starting with `:` are keep-alives. The reply does not depend
    on this connection: closing it leaves the reply running (reattach with
    `GET /api/conversations/{id}/reply`, stop it with `POST .../stop`), unless the
    gateway runs with `SESSIONGATE_ON_DISCONNECT=cancel`, where closing it stops the
    reply and keeps it `incomplete`. Everything that can be refused (bad input, unknown
    conversation, busy session or model, rate limits) is refused with a JSON error
    before the stream starts.
    """
    live = await state.chat.start_turn(session, turn_input(body, session, state.provider))
    cancel = state.settings.on_disconnect == "cancel"
    return EventStreamResponse(
        sse_frames(
            live.follow(
                keepalive=state.settings.keepalive_interval,
                flush_interval=state.settings.stream_flush_interval,
            )
        ),
        on_close=(lambda: live.request_stop("disconnect")) if cancel else None,
    )


def sse_frame(payload: dict[str, Any]) -> str:
    """One SSE event carrying ``payload`` as compact JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def sse_frames(frames: AsyncGenerator[Frame | None, None]) -> AsyncIterator[str]:
    """A reply's frames as SSE text, None as a keep-alive comment. A follower that fails
    mid-stream ends the stream with an ``error`` frame, never a silent cut."""
    yield ": stream open\n\n"
    async with contextlib.aclosing(frames):
        try:
            async for frame in frames:
                yield ": keep-alive\n\n" if frame is None else sse_frame(frame)
        except Exception:
            error = UpstreamError("The reply could not be relayed; reload to see it.")
            yield sse_frame({"type": "error", "code": "relay_failed", "message": error.message})


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that always closes its iterator and then runs
    ``on_close`` (if given) when the stream ended or the client left."""

    def __init__(
        self, content: AsyncIterator[str], *, on_close: Callable[[], object] | None = None
    ) -> None:
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
                if self._on_close is not None:
                    self._on_close()


__all__ = [
    "EventStreamResponse",
    "router",
    "sse_frame",
    "sse_frames",
    "turn_input",
    "wait_for_reply",
]
