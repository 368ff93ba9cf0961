"""An OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Existing OpenAI clients and chat front ends put their users behind sessiongate by
pointing ``base_url`` at ``{gateway}/v1`` with a tenant API key (``sgk_...``) as the
key and the OpenAI ``user`` field naming the end user. Only tenant API keys are
accepted here: the ``user`` string is trusted because the tenant's backend vouches
for it, exactly as with ``user`` on ``/api/chat``.

Semantics, which differ from OpenAI's stateless API on purpose:

- The gateway owns history. Each (tenant, ``user``) is one session; its reply comes
  from the configured provider through that session (a Coze provider uses that user's
  own access token and ``session_name``).
- The LAST ``user`` message in ``messages`` is this turn's message. Earlier messages
  in the request are NOT used as context: the session's stored history is. (A client
  could otherwise inject a fabricated history, and isolation must not depend on what
  the client sends.)
- Conversation: the ``X-Sessiongate-Conversation`` request header picks one of the
  session's conversations (404 if it is not this session's). Without it, a request
  holding exactly one ``user`` message and no ``assistant`` message starts a new
  conversation (a fresh chat in the client); anything else continues the session's
  most recent conversation. The response always carries the conversation id in the
  ``X-Sessiongate-Conversation`` header.
- ``model`` is echoed back; sampling parameters, tools and the like are ignored (the
  gateway's provider settings apply).

Errors use OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}``, with the
HTTP status of the underlying ``SessiongateError``; once a stream has started, a
failure is one in-band ``data: {"error": {...}}`` frame, then the stream ends.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ..chat import ReplyDelta, Turn, TurnDone, TurnFailed
from ..errors import (
    AuthError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    SessiongateError,
    UpstreamError,
)
from ..store import MessageRow
from ..store import queries as q
from .chat import EventStreamResponse, sse_frame, turn_events
from .deps import Caller, GatewayState, get_state, identify_caller, pick_named_user, resolve_session

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

CONVERSATION_HEADER = "X-Sessiongate-Conversation"

# A client resends its whole chat each turn, so the body may be far larger than one
# message; the cap only protects memory.
_MAX_BODY_BYTES = 8 * 1024 * 1024

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": "OpenAI-shaped error: {error: {message, type, code, param}}"}
    for status in (400, 401, 403, 404, 413, 429, 502, 503, 504)
}


def openai_error(exc: SessiongateError) -> dict[str, Any]:
    """``exc`` as OpenAI's error object: ``{"message", "type", "code", "param": None}``."""
    if exc.status >= 500:
        kind = "server_error"
    else:
        kind = _ERROR_TYPES.get(exc.status, "invalid_request_error")
    return {"message": exc.message, "type": kind, "code": exc.code, "param": None}


def _error_response(exc: SessiongateError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": openai_error(exc)},
        status_code=exc.status,
        headers={**exc.headers(), **(headers or {})},
    )


def model_id(state: GatewayState) -> str:
    """The one model this gateway offers: ``sessiongate-<provider name>``."""
    return f"sessiongate-{state.provider.name}"


async def _tenant_caller(request: Request, state: GatewayState) -> Caller:
    """The verified caller; only tenant API keys may use this surface (401/403 otherwise)."""
    caller = await identify_caller(request, state)
    if caller.kind == "none":
        raise AuthError(
            "Send a tenant API key as 'Authorization: Bearer sgk_...'.", code="missing_api_key"
        )
    if caller.kind != "tenant":
        # Security: end-user credentials must not reach another user's session via `user`.
        raise Forbidden(
            "The OpenAI-compatible API needs a tenant API key.", code="api_key_required"
        )
    return caller


@dataclass(frozen=True, slots=True)
class _Completion:
    """A validated ``/v1/chat/completions`` request."""

    message: str
    user: str | None
    model: str | None
    stream: bool
    include_usage: bool
    starts_conversation: bool


async def _read_json(request: Request) -> Any:
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body exceeds {_MAX_BODY_BYTES} bytes.", code="body_too_large"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from exc


def _text_of(content: Any) -> str:
    """The text of a message's ``content``: a string or a list of ``text`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest("Only text content is supported.", code="unsupported_content")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest("A text part has no 'text' string.", code="invalid_messages")
            texts.append(text)
        return "".join(texts)
    raise BadRequest("A message's 'content' must be a string or a list.", code="invalid_messages")


def _parse_completion(body: Any) -> _Completion:
    """Validate the request body; raises ``BadRequest`` naming what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_request")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", code="invalid_messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("Each message needs a 'role' string.", code="invalid_messages")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise BadRequest("'messages' holds no user message.", code="no_user_message")
    message = _text_of(users[-1].get("content"))
    if not message.strip():
        raise BadRequest("The last user message is empty.", code="empty_message")
    user = body.get("user")
    model = body.get("model")
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    n = body.get("n", 1)
    if user is not None and not isinstance(user, str):
        raise BadRequest("'user' must be a string.", code="invalid_user")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string.", code="invalid_request")
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise BadRequest("'stream' must be a boolean.", code="invalid_request")
    if n not in (1, None):
        raise BadRequest("Only n=1 is supported.", code="unsupported_parameter")
    return _Completion(
        message=message,
        user=user,
        model=model,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        starts_conversation=len(users) == 1 and not any(m["role"] == "assistant" for m in messages),
    )


async def _choose_conversation(
    state: GatewayState, turn: Turn, *, starts_conversation: bool
) -> str:
    """Pin ``turn`` to a conversation before streaming, so its id can go in a header."""
    if turn.conversation_id is None:
        try:
            async with state.sessionmaker() as db, db.begin():
                latest = None
                if not starts_conversation:
                    latest = await q.latest_conversation(db, turn.session.id)
                conversation = latest or await q.create_conversation(db, turn.session.id)
        except BaseException:
            turn.release()
            raise
        turn.conversation_id = conversation.id
    return turn.conversation_id


async def _usage(state: GatewayState, message_id: str) -> dict[str, int]:
    """Token counts stored with the reply (zeros where the provider gave none)."""
    async with state.sessionmaker() as db:
        row = await db.get(MessageRow, message_id)
    prompt = (row.prompt_tokens if row else None) or 0
    completion = (row.completion_tokens if row else None) or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        **_ERROR_RESPONSES,
    },
)
async def create_chat_completion(request: Request) -> Response:
    """Create a chat completion for the end user named by `user` (OpenAI-compatible).

    Authenticate with a tenant API key (`Authorization: Bearer sgk_...`); `user` (or
    the `X-Sessiongate-User` header) is required and names the end user, whose own
    session holds the history. Only the LAST user message is sent: earlier messages
    in `messages` are not trusted as context, the session's stored history is used
    instead. Header `X-Sessiongate-Conversation` picks a conversation; otherwise a
    request with exactly one user message and no assistant message starts a new
    conversation, and any other continues the most recent one. The response header
    `X-Sessiongate-Conversation` names the conversation used.

    With `stream: true` the reply is `text/event-stream` of `data: {chat.completion.chunk}`
    frames ending in `data: [DONE]` (`stream_options.include_usage` adds a usage chunk);
    a failure after the stream started is one `data: {"error": {...}}` frame. Closing
    the connection stops generation. `model` is echoed; sampling options are ignored.
    """
    state = get_state(request)
    try:
        caller = await _tenant_caller(request, state)
        completion = _parse_completion(await _read_json(request))
        session = await resolve_session(
            request, state, caller, pick_named_user(request, completion.user)
        )
        turn = await state.chat.begin_turn(
            session, completion.message, request.headers.get(CONVERSATION_HEADER)
        )
        conversation_id = await _choose_conversation(
            state, turn, starts_conversation=completion.starts_conversation
        )
    except SessiongateError as exc:
        return _error_response(exc)
    model = completion.model or model_id(state)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    headers = {CONVERSATION_HEADER: conversation_id}
    if completion.stream:
        response = EventStreamResponse(
            _chunk_frames(
                state,
                turn,
                completion_id=completion_id,
                model=model,
                include_usage=completion.include_usage,
            ),
            on_close=turn.release,
        )
        response.headers.update(headers)
        return response
    async with contextlib.aclosing(state.chat.stream_turn(turn)) as events:
        async for event in events:
            if isinstance(event, TurnFailed):
                return _error_response(event.error, headers)
            if isinstance(event, TurnDone):
                body = {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": event.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": await _usage(state, event.message_id),
                }
                return JSONResponse(body, headers=headers)
    return _error_response(UpstreamError("The turn ended without a reply."))  # pragma: no cover


async def _chunk_frames(
    state: GatewayState, turn: Turn, *, completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """The turn as OpenAI ``chat.completion.chunk`` SSE frames, then ``data: [DONE]``."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if include_usage:
            payload["usage"] = None
        return sse_frame(payload)

    yield chunk({"role": "assistant", "content": ""})
    events = turn_events(state.chat, turn, keepalive=state.settings.keepalive_interval)
    async with contextlib.aclosing(events):
        async for event in events:
            if event is None:
                yield ": keep-alive\n\n"
            elif isinstance(event, ReplyDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, TurnFailed):
                yield sse_frame({"error": openai_error(event.error)})
                return
            else:
                yield chunk({}, "stop")
                if include_usage:
                    usage = await _usage(state, event.message_id)
                    yield sse_frame(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                yield "data: [DONE]\n\n"
                return


@router.get("/models", responses=_ERROR_RESPONSES)
async def list_models(request: Request) -> Response:
    """List the one model this gateway serves, `sessiongate-<provider>` (OpenAI-compatible).

    Needs a tenant API key. Any `model` is accepted by `/v1/chat/completions`; the
    reply always comes from the gateway's configured provider.
    """
    state = get_state(request)
    try:
        await _tenant_caller(request, state)
    except SessiongateError as exc:
        return _error_response(exc)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": model_id(state), "object": "model", "created": 0, "owned_by": "sessiongate"}
            ],
        }
    )


__all__ = ["CONVERSATION_HEADER", "model_id", "openai_error", "router"]
