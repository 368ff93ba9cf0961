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
- Nothing is silently ignored. The gateway honours ``messages``, ``model`` (any value;
  replies name the gateway's own model, ``sessiongate-<provider>``), ``stream``,
  ``stream_options.include_usage``, ``user`` and ``n: 1``; every other field with a
  non-null value (``tools``, ``tool_choice``, ``functions``, ``response_format``,
  ``logprobs``, ``temperature``, ``max_tokens``, ...) answers 400
  ``unsupported_parameter`` with ``param`` naming it. The provider's settings apply.
- A client ``system`` (or ``developer``) message is this turn's system prompt when the
  tenant allows it (``sessiongate tenants update NAME --allow-system-prompt``) and the
  provider takes one; otherwise 400 ``system_prompt_not_allowed``.
- ``finish_reason`` is ``length`` when the upstream's token limit or the gateway's
  reply cap (``SESSIONGATE_MAX_REPLY_CHARS``) cut the reply, else ``stop``.
- Coze inputs: with ``coze-workflow`` a ``parameters`` object, with ``coze-bot`` a
  ``custom_variables`` object (OpenAI SDKs: ``extra_body``), for the keys the operator
  lists in ``COZE_WORKFLOW_CLIENT_PARAMETERS`` / ``COZE_BOT_CLIENT_VARIABLES``; any
  other key answers 400.

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

from ..chat import TurnInput
from ..errors import (
    AuthError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    SessiongateError,
    UpstreamError,
)
from ..providers.base import AcceptsClientParameters
from ..replies import LiveReply
from .chat import EventStreamResponse, sse_frame, wait_for_reply
from .deps import Caller, GatewayState, get_state, identify_caller, pick_named_user, resolve_session

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

CONVERSATION_HEADER = "X-Sessiongate-Conversation"

# A client resends its whole chat each turn, so the body may be far larger than one
# message; the cap only protects memory.
MAX_BODY_BYTES = 8 * 1024 * 1024

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


#: Request fields the gateway honours; any other non-null field is refused (400).
_HONOURED_FIELDS = frozenset({"messages", "model", "stream", "stream_options", "user", "n"})
#: Roles whose text becomes this turn's system prompt (OpenAI: ``developer`` replaces
#: ``system`` for its newer models; both mean the same here).
_SYSTEM_ROLES = frozenset({"system", "developer"})
_HISTORY_ROLES = frozenset({"user", "assistant"})


class UnsupportedParameter(BadRequest):
    """A request field the gateway does not honour; ``param`` names it (OpenAI's shape)."""

    def __init__(self, message: str, *, param: str, code: str = "unsupported_parameter") -> None:
        super().__init__(message, code=code)
        self.param = param


def openai_error(exc: SessiongateError) -> dict[str, Any]:
    """``exc`` as OpenAI's error object: ``{"message", "type", "code", "param"}``.

    ``param`` names the offending request field where one is known, else null.
    """
    if exc.status >= 500:
        kind = "server_error"
    else:
        kind = _ERROR_TYPES.get(exc.status, "invalid_request_error")
    param = getattr(exc, "param", None)
    return {"message": exc.message, "type": kind, "code": exc.code, "param": param}


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
    system_prompt: str | None
    client_parameters: dict[str, Any] | None


async def _read_json(request: Request) -> Any:
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body exceeds {MAX_BODY_BYTES} bytes.", code="body_too_large"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
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


def _refuse_unhonoured(body: dict[str, Any], extension: str | None) -> None:
    """400 ``unsupported_parameter`` for the first field the gateway would not honour.

    A field sent as null counts as absent (some clients spell "not given" that way).
    ``extension``: the one gateway-specific field this provider accepts, if any.
    """
    for name, value in body.items():
        if value is None or name in _HONOURED_FIELDS or name == extension:
            continue
        raise UnsupportedParameter(
            f"'{name}' is not supported by this gateway; remove it from the request "
            "(the gateway's configured provider and settings decide how replies are made).",
            param=name,
        )
    n = body.get("n")
    if n is not None and n != 1:
        raise UnsupportedParameter("Only n=1 is supported.", param="n")
    options = body.get("stream_options")
    if isinstance(options, dict):
        for name, value in options.items():
            if name != "include_usage" and value is not None:
                raise UnsupportedParameter(
                    f"'stream_options.{name}' is not supported by this gateway.",
                    param=f"stream_options.{name}",
                )


def _parse_completion(body: Any, *, extension: str | None = None) -> _Completion:
    """Validate the request body; raises ``BadRequest`` naming what is wrong.

    ``extension``: the client-parameters field the provider accepts (Coze), if any.
    The system prompt is returned as sent; whether it may be used is checked later.
    """
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_request")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", code="invalid_messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("Each message needs a 'role' string.", code="invalid_messages")
    _refuse_unhonoured(body, extension)
    for m in messages:
        if m["role"] not in _HISTORY_ROLES | _SYSTEM_ROLES:
            # tool / function results: tool calling is not supported.
            raise UnsupportedParameter(
                f"Messages with role {m['role']!r} are not supported by this gateway.",
                param="messages",
                code="unsupported_message_role",
            )
        for name in ("tool_calls", "function_call"):
            if m.get(name) is not None:
                raise UnsupportedParameter(
                    f"Messages with '{name}' are not supported by this gateway.",
                    param=f"messages.{name}",
                )
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise BadRequest("'messages' holds no user message.", code="no_user_message")
    message = _text_of(users[-1].get("content"))
    if not message.strip():
        raise BadRequest("The last user message is empty.", code="empty_message")
    system_texts = [_text_of(m.get("content")) for m in messages if m["role"] in _SYSTEM_ROLES]
    user = body.get("user")
    model = body.get("model")
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    if user is not None and not isinstance(user, str):
        raise BadRequest("'user' must be a string.", code="invalid_user")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string.", code="invalid_request")
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise BadRequest("'stream' must be a boolean.", code="invalid_request")
    client_parameters = body.get(extension) if extension is not None else None
    return _Completion(
        message=message,
        user=user,
        model=model,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        starts_conversation=len(users) == 1 and not any(m["role"] == "assistant" for m in messages),
        system_prompt="\n\n".join(system_texts) if system_texts else None,
        client_parameters=client_parameters,
    )


def _check_system_prompt(state: GatewayState, caller: Caller, completion: _Completion) -> None:
    """A client system prompt is used only when the tenant allows it and the provider
    takes one; otherwise 400 (never silently replaced by the gateway's)."""
    if completion.system_prompt is None:
        return
    assert caller.tenant is not None
    if not caller.tenant.allow_system_prompt:
        raise UnsupportedParameter(
            "This tenant may not send its own system prompt; remove the system message, "
            f"or have the operator run `sessiongate tenants update {caller.tenant.name} "
            "--allow-system-prompt`.",
            param="messages",
            code="system_prompt_not_allowed",
        )
    if not getattr(state.provider, "takes_system_prompt", True):
        raise UnsupportedParameter(
            f"The {state.provider.name} provider takes no system prompt from the request "
            "(the bot or workflow defines its own); remove the system message.",
            param="messages",
            code="system_prompt_not_allowed",
        )


def _client_parameters(state: GatewayState, completion: _Completion) -> dict[str, Any] | None:
    """The tenant's upstream inputs, checked by the provider against what is allowed."""
    provider = state.provider
    if completion.client_parameters is None or not isinstance(provider, AcceptsClientParameters):
        return None
    try:
        return provider.check_client_parameters(completion.client_parameters)
    except BadRequest as exc:
        raise UnsupportedParameter(
            exc.message, param=provider.client_parameters_field, code=exc.code
        ) from None


def _usage(live: LiveReply) -> dict[str, int]:
    """The finished reply's token counts (zeros where the provider gave none); the same
    numbers its row stores, taken from memory (this process ran the turn)."""
    prompt = live.usage.prompt_tokens or 0
    completion = live.usage.completion_tokens or 0
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
    a failure after the stream started is one `data: {"error": {...}}` frame.

    Any `model` is accepted; the reply's `model` is the gateway's (`GET /v1/models`).
    `finish_reason` is `length` when the token limit cut the reply, else `stop`. Every
    field the gateway does not honour (`tools`, `response_format`, `temperature`, ...)
    answers 400 `unsupported_parameter` naming it in `param`. A `system` message is used
    as this turn's system prompt if the tenant is allowed one, else 400
    `system_prompt_not_allowed`. With a Coze provider, `parameters` (workflow) or
    `custom_variables` (bot) pass the keys the operator allows to Coze.
    """
    state = get_state(request)
    try:
        caller = await _tenant_caller(request, state)
        extension = (
            state.provider.client_parameters_field
            if isinstance(state.provider, AcceptsClientParameters)
            else None
        )
        completion = _parse_completion(await _read_json(request), extension=extension)
        _check_system_prompt(state, caller, completion)
        client_parameters = _client_parameters(state, completion)
        session = await resolve_session(
            request, state, caller, pick_named_user(request, completion.user)
        )
        header = request.headers.get(CONVERSATION_HEADER)
        live = await state.chat.start_turn(
            session,
            TurnInput(
                message=completion.message,
                conversation_id=header,
                new_conversation=header is None and completion.starts_conversation,
                system_prompt=completion.system_prompt,
                client_parameters=client_parameters,
                user=session.external_user,
            ),
        )
    except SessiongateError as exc:
        return _error_response(exc)
    # The reply names the model that answered, whatever the client asked for.
    model = model_id(state)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    headers = {CONVERSATION_HEADER: live.conversation_id}
    if completion.stream:
        response = EventStreamResponse(
            _chunk_frames(
                state,
                live,
                completion_id=completion_id,
                model=model,
                include_usage=completion.include_usage,
            ),
            on_close=(lambda: live.request_stop("disconnect"))
            if state.settings.on_disconnect == "cancel"
            else None,
        )
        response.headers.update(headers)
        return response
    try:
        await wait_for_reply(live)
    except SessiongateError as exc:
        return _error_response(exc, headers)
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": live.text},
                "finish_reason": _finish_reason(live.finish_reason),
            }
        ],
        "usage": _usage(live),
    }
    return JSONResponse(body, headers=headers)


def _finish_reason(reason: str | None) -> str:
    """OpenAI's ``finish_reason``: ``length`` when a limit cut the reply, else ``stop``."""
    return "length" if reason == "length" else "stop"


async def _chunk_frames(
    state: GatewayState, live: LiveReply, *, completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """The reply as OpenAI ``chat.completion.chunk`` SSE frames, then ``data: [DONE]``."""
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
    frames = live.follow(
        keepalive=state.settings.keepalive_interval,
        flush_interval=state.settings.stream_flush_interval,
    )
    async with contextlib.aclosing(frames):
        async for frame in frames:
            if frame is None:
                yield ": keep-alive\n\n"
            elif frame["type"] == "message":
                yield chunk({"content": frame["content"]})
            elif frame["type"] == "error":
                error = live.error or UpstreamError(frame["message"], code=frame["code"])
                yield sse_frame({"error": openai_error(error)})
                return
            elif frame["type"] == "done":
                yield chunk({}, _finish_reason(frame.get("finish_reason")))
                if include_usage:
                    usage = _usage(live)
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


def _model_object(state: GatewayState) -> dict[str, Any]:
    return {"id": model_id(state), "object": "model", "created": 0, "owned_by": "sessiongate"}


@router.get("/models", responses=_ERROR_RESPONSES)
async def list_models(request: Request) -> Response:
    """List the one model this gateway serves, `sessiongate-<provider>` (OpenAI-compatible).

    Needs a tenant API key. Any `model` is accepted by `/v1/chat/completions`; the
    reply always comes from the gateway's configured provider and names this model.
    """
    state = get_state(request)
    try:
        await _tenant_caller(request, state)
    except SessiongateError as exc:
        return _error_response(exc)
    return JSONResponse({"object": "list", "data": [_model_object(state)]})


@router.get("/models/{model}", responses=_ERROR_RESPONSES)
async def retrieve_model(model: str, request: Request) -> Response:
    """The model `model` if this gateway serves it (OpenAI-compatible); otherwise 404
    `model_not_found` in OpenAI's error shape. Needs a tenant API key."""
    state = get_state(request)
    try:
        await _tenant_caller(request, state)
    except SessiongateError as exc:
        return _error_response(exc)
    if model != model_id(state):
        return JSONResponse(
            {
                "error": {
                    "message": f"The model '{model}' does not exist; this gateway serves "
                    f"'{model_id(state)}'.",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            status_code=404,
        )
    return JSONResponse(_model_object(state))


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown_endpoint(path: str) -> Response:
    """Any other /v1 path: 404 in OpenAI's error shape, so OpenAI clients can read it."""
    return JSONResponse(
        {
            "error": {
                "message": f"Unknown endpoint /v1/{path}; this gateway serves "
                "/v1/chat/completions and /v1/models.",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_url",
            }
        },
        status_code=404,
    )


__all__ = [
    "CONVERSATION_HEADER",
    "MAX_BODY_BYTES",
    "UnsupportedParameter",
    "model_id",
    "openai_error",
    "router",
]
