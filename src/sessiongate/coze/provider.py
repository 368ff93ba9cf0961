"""The ``coze-bot`` and ``coze-workflow`` providers.

Each request reaches Coze with the session's own access token (OAuth JWT with
``session_name``, from a ``TokenSource``) and names the same ``session_name`` in the
body: ``user_id`` for bot chat, top-level ``session_name`` and ``ext.user_id`` for
workflow chat. Two history modes (``SESSIONGATE_COZE_HISTORY``):

* ``upstream``: one Coze conversation per gateway conversation, created with the
  session's token (``POST /v1/conversation/create``), reported as ``ConversationBound``
  and reused; only the newest user message is sent.
* ``gateway``: this conversation's history from the gateway store is sent as
  ``additional_messages`` every turn and no conversation id is ever sent, so isolation
  does not depend on how the bot or workflow keeps context.

Inputs: a workflow's ``parameters`` come from ``COZE_WORKFLOW_PARAMETERS`` (templated
with ``{message}``, ``{session_name}``, ``{user}``) plus the tenant's own values for the
keys ``COZE_WORKFLOW_CLIENT_PARAMETERS`` allows; a bot's ``custom_variables`` likewise
from ``COZE_BOT_CUSTOM_VARIABLES`` and ``COZE_BOT_CLIENT_VARIABLES``. The tenant's
values win for the keys it may set; they are sent as given, never templated.

Clients: bot chat and conversation creation go through the official SDK ``cozepy``
(``AsyncCoze``, on httpx). Workflow chat is posted directly because cozepy's
``workflows.chat.stream`` cannot send the top-level ``session_name`` field, with aiohttp
(``coze.workflow_http``: a sixth of httpx's CPU per streamed turn); it reads the same
SSE framing (``stream.SseParser``). Every cozepy, httpx and aiohttp failure is
translated at this boundary (``coze.sdk``), and every HTTP response is closed on every
path, including when the consumer stops iterating early.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from ..errors import BadRequest, ConfigurationError, NotFound, UpstreamError
from ..providers.base import (
    ChatMessage,
    ConversationBound,
    Finish,
    ProviderEvent,
    TextDelta,
    TurnRequest,
)
from ..providers.transport import TRANSPORT_ERRORS
from ..tasks import Watchdog
from .auth import CozeTokenManager, StaticTokenSource, TokenSource
from .cache import Clock, TokenCache
from .errors import CozeAuthError, CozeTokenInvalid, with_logid
from .sdk import (
    TurnHTTPClient,
    adopt_cozepy_logging,
    cozepy,
    envelope_error,
    event_pair,
    from_cozepy,
    new_http_client,
    ssl_context,
    transport_error,
)
from .settings import CozeProviderName, CozeSettings, HistoryMode, render_inputs
from .stream import ReplyMapper, SseParser, decode_data
from .workflow_http import StreamPool, timeouts

log = logging.getLogger(__name__)

#: Coze limits on ``additional_messages`` (cozepy docstrings: 100 for bot chat, 50 for
#: workflow chat); gateway history beyond it is dropped oldest first.
_MAX_ADDITIONAL_MESSAGES: dict[CozeProviderName, int] = {"coze-bot": 100, "coze-workflow": 50}
_WORKFLOW_CHAT_PATH = "/v1/workflows/chat"
#: Bytes of a non-SSE error body read to find Coze's JSON envelope.
_MAX_ERROR_BODY = 64 * 1024
#: Connections of the workflow stream pool (as the httpx pool's ``max_connections``).
_STREAM_CONNECTIONS = 200


@dataclass(slots=True)
class _TurnState:
    """What a turn has already done, so a retry after "token invalid" does not redo it."""

    conversation_ref: str | None
    replied: bool = False


def _history(messages: Sequence[ChatMessage], limit: int) -> list[ChatMessage]:
    """Gateway history for ``additional_messages``: no system prompt, at most ``limit``,
    starting with a user message (Coze expects a question first)."""
    kept = [m for m in messages if m.role != "system"][-limit:]
    while len(kept) > 1 and kept[0].role != "user":
        kept.pop(0)
    return kept


def _newest_user_message(messages: Sequence[ChatMessage]) -> ChatMessage:
    for message in reversed(messages):
        if message.role == "user":
            return message
    raise ValueError("a turn needs a user message")


class _CozeChatProvider:
    """What both Coze providers share: tokens, history modes, retry on "token invalid"."""

    name: CozeProviderName
    max_pending: int | None = None
    #: The bot or workflow defines its own prompt; Coze chat has no system message.
    takes_system_prompt = False
    #: The request body field tenants use for their inputs (see ``check_client_parameters``).
    client_parameters_field: str

    def __init__(
        self,
        settings: CozeSettings,
        *,
        token_source: TokenSource,
        connect_timeout: float,
        idle_timeout: float,
        http_client: httpx.AsyncClient | None = None,
        history: HistoryMode | None = None,
        owns_token_source: bool = False,
        owns_http_client: bool | None = None,
    ) -> None:
        adopt_cozepy_logging()
        self._settings = settings
        self._base = settings.api_base_url
        self._tokens = token_source
        self._owns_tokens = owns_token_source
        mode = history or settings.history_mode_for(self.name)
        if not token_source.refreshable and mode == "upstream":
            # One token for everyone: a Coze conversation would be the only isolation.
            mode = "gateway"
        self._history: HistoryMode = mode
        # read = the idle timeout between two chunks of a stream. Set on every request,
        # so a shared client's own defaults never apply to Coze calls.
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=idle_timeout, write=idle_timeout, pool=connect_timeout
        )
        self._owns_http = http_client is None if owns_http_client is None else owns_http_client
        self._http = http_client or new_http_client()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_base={self._base!r}, history={self._history!r})"

    def _inputs(self) -> tuple[dict[str, Any], list[str]]:
        """(configured input template, keys tenants may set) of this provider."""
        raise NotImplementedError

    def check_client_parameters(self, values: Any) -> dict[str, Any]:
        """Return the tenant's inputs if every key is one the operator allows.

        Raises ``BadRequest`` (``invalid_parameters`` when not an object of the right
        value types, ``parameter_not_allowed`` naming the keys that are not allowed).
        """
        field = self.client_parameters_field
        if not isinstance(values, dict):
            raise BadRequest(f"'{field}' must be a JSON object.", code="invalid_parameters")
        _, allowed = self._inputs()
        refused = sorted(key for key in values if key not in allowed)
        if refused:
            allowed_text = ", ".join(allowed) if allowed else "none"
            raise BadRequest(
                f"'{field}' may not set {', '.join(refused)}; keys the operator allows: "
                f"{allowed_text}.",
                code="parameter_not_allowed",
            )
        return dict(values)

    def inputs_for(self, request: TurnRequest) -> dict[str, Any]:
        """The inputs to send this turn: the configured template filled in for this
        request, then the tenant's own values (already checked) on top."""
        template, _ = self._inputs()
        values = render_inputs(
            template,
            message=_newest_user_message(request.messages).content,
            session_name=request.session_name,
            user=request.user,
        )
        values.update(request.client_parameters or {})
        return values

    @property
    def history_mode(self) -> HistoryMode:
        """The effective history mode (``gateway`` or ``upstream``)."""
        return self._history

    @property
    def token_manager(self) -> CozeTokenManager | None:
        """The OAuth JWT token manager (for ``POST /api/coze/token``); None under PAT."""
        return self._tokens if isinstance(self._tokens, CozeTokenManager) else None

    async def issue_session_token(self, session_name: str) -> tuple[str, int]:
        """``SessionCredentials``: the session's Coze access token and its expiry (unix s).

        Raises ``NotFound`` (``coze_token_unavailable``) unless under OAuth JWT.
        """
        manager = self.token_manager
        if manager is None:
            raise NotFound(
                "Coze access tokens are issued only under COZE_AUTH_MODE=OAUTH_JWT.",
                code="coze_token_unavailable",
            )
        return await manager.issue_token(session_name)

    async def forget_session(self, session_name: str) -> None:
        """``SessionCredentials``: drop the session's cached token (every replica, when
        the cache is shared)."""
        if (manager := self.token_manager) is not None:
            await manager.invalidate(session_name)

    async def stream_reply(self, request: TurnRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream the reply to ``request`` from Coze.

        Yields ``ConversationBound`` first when an upstream conversation was created,
        then ``TextDelta``s, then one ``Usage``. Raises ``UpstreamError`` subclasses (see
        ``coze.errors.chat_error``). A "token invalid" answer before any reply text
        invalidates the session's token and retries once with a new one.
        """
        state = _TurnState(conversation_ref=request.conversation_ref)
        for attempt in (1, 2):
            token = await self._tokens.access_token(request.session_name)
            try:
                async with contextlib.aclosing(self._attempt(request, token, state)) as events:
                    async for event in events:
                        yield event
                return
            except CozeTokenInvalid as exc:
                if not self._tokens.refreshable:
                    raise CozeAuthError(
                        with_logid(
                            "The AI service is not available right now (upstream sign-in failed).",
                            exc.logid,
                        ),
                        upstream_code=exc.upstream_code,
                        logid=exc.logid,
                        detail="Coze rejected COZE_API_TOKEN (token invalid); renew the "
                        "personal access token.",
                    ) from None
                if attempt == 2 or state.replied:
                    raise
                log.info(
                    "Coze said the token of session_name=%s is invalid (logid %s); "
                    "exchanging a new one and retrying once",
                    request.session_name,
                    exc.logid,
                )
                await self._tokens.invalidate(request.session_name, token)

    async def _attempt(
        self, request: TurnRequest, token: str, state: _TurnState
    ) -> AsyncGenerator[ProviderEvent, None]:
        if self._history == "upstream":
            if state.conversation_ref is None:
                state.conversation_ref = await self._create_conversation(token)
                yield ConversationBound(state.conversation_ref)
            messages = [_newest_user_message(request.messages)]
            conversation_ref: str | None = state.conversation_ref
        else:
            messages = _history(request.messages, _MAX_ADDITIONAL_MESSAGES[self.name])
            conversation_ref = None  # gateway mode never reuses an upstream conversation
        mapper = ReplyMapper(session_name=request.session_name)
        async with contextlib.aclosing(
            self._chat_events(
                token, request.session_name, conversation_ref, messages, mapper, request
            )
        ) as events:
            try:
                async for name, data in events:
                    if mapper.completed:
                        # Only `done` follows; reading the body to its end lets the
                        # connection go back to the pool instead of being dropped.
                        continue
                    event = mapper.map(name, data)
                    if isinstance(event, TextDelta):
                        state.replied = True
                    if event is not None:
                        yield event
            except UpstreamError:
                if not mapper.completed:
                    raise
                # The reply and its usage are complete; a failure while draining the
                # trailing `done` costs nothing but the connection.
                log.debug("Coze stream failed after the chat completed (logid %s)", mapper.logid)
        if not mapper.completed:
            raise mapper.incomplete()
        # Coze reports no token-limit cut: a completed chat ended on its own.
        yield Finish("stop")

    def _coze(self, token: str, client: TurnHTTPClient) -> cozepy.AsyncCoze:
        return cozepy.AsyncCoze(
            auth=cozepy.AsyncTokenAuth(token), base_url=self._base, http_client=client
        )

    async def _create_conversation(self, token: str) -> str:
        """Create a Coze conversation owned by ``token``'s session; return its id."""
        client = TurnHTTPClient(self._http, self._timeout)
        try:
            conversation = await self._coze(token, client).conversations.create(
                bot_id=self._settings.bot_id or None
            )
        except Exception as exc:
            raise from_cozepy(exc, client.last_response) from None
        finally:
            await client.close_responses()
        return conversation.id

    def _chat_events(
        self,
        token: str,
        session_name: str,
        conversation_ref: str | None,
        messages: list[ChatMessage],
        mapper: ReplyMapper,
        request: TurnRequest,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the HTTP pool and the token source this provider created."""
        # Tokens first: a pending exchange may be using the pool.
        if self._owns_tokens:
            await self._tokens.aclose()
        if self._owns_http:
            await self._http.aclose()


class CozeBotProvider(_CozeChatProvider):
    """``coze-bot``: Coze bot chat v3 (``POST /v3/chat``, streamed) through cozepy.

    ``user_id`` is the ``session_name`` (Coze keys per-user memory and variables on it).
    In gateway mode ``auto_save_history`` is false: Coze allows it for streamed chats
    (only non-streamed chats require it, error 4007), and the history then lives only in
    the gateway.
    """

    name: CozeProviderName = "coze-bot"
    client_parameters_field = "custom_variables"

    def __init__(self, settings: CozeSettings, **kwargs: Any) -> None:
        if not settings.bot_id:
            raise ConfigurationError("COZE_BOT_ID is required for SESSIONGATE_PROVIDER=coze-bot.")
        super().__init__(settings, **kwargs)

    def _inputs(self) -> tuple[dict[str, Any], list[str]]:
        return dict(self._settings.bot_custom_variables), list(self._settings.bot_client_variables)

    def check_client_parameters(self, values: Any) -> dict[str, Any]:
        """As the base, and every value must be a string (Coze: ``custom_variables`` is
        a map of string to string)."""
        checked = super().check_client_parameters(values)
        if not all(isinstance(v, str) for v in checked.values()):
            raise BadRequest(
                "'custom_variables' values must be strings.", code="invalid_parameters"
            )
        return checked

    async def _chat_events(
        self,
        token: str,
        session_name: str,
        conversation_ref: str | None,
        messages: list[ChatMessage],
        mapper: ReplyMapper,
        request: TurnRequest,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        client = TurnHTTPClient(self._http, self._timeout)
        additional = [
            cozepy.Message.build_user_question_text(m.content)
            if m.role == "user"
            else cozepy.Message.build_assistant_answer(m.content)
            for m in messages
        ]
        assert self._settings.bot_id is not None
        variables = {key: str(value) for key, value in self.inputs_for(request).items()}
        stream = self._coze(token, client).chat.stream(
            bot_id=self._settings.bot_id,
            user_id=session_name,
            additional_messages=additional,
            auto_save_history=self._history == "upstream",
            conversation_id=conversation_ref,
            custom_variables=variables or None,
        )
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    try:
                        event = await anext(stream)
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        raise from_cozepy(exc, client.last_response) from None
                    if mapper.logid is None and client.last_response is not None:
                        mapper.logid = client.last_response.headers.get("x-tt-logid")
                    yield event_pair(event)
        finally:
            await client.close_responses()


class CozeWorkflowProvider(_CozeChatProvider):
    """``coze-workflow``: Coze workflow (chatflow) chat, ``POST /v1/workflows/chat``.

    Sent directly, not through cozepy, because the body carries a top-level
    ``session_name`` (what operators' earlier backends sent; harmless to Coze) that
    cozepy cannot add, besides ``ext.user_id``; and sent with aiohttp, not httpx, for
    its CPU cost per streamed turn (``coze.workflow_http``). ``app_id`` or ``bot_id``
    names where the workflow lives.
    """

    name: CozeProviderName = "coze-workflow"
    client_parameters_field = "parameters"

    def __init__(self, settings: CozeSettings, **kwargs: Any) -> None:
        if not settings.workflow_id:
            raise ConfigurationError(
                "COZE_WORKFLOW_ID is required for SESSIONGATE_PROVIDER=coze-workflow."
            )
        super().__init__(settings, **kwargs)
        self._streams = StreamPool(limit=_STREAM_CONNECTIONS, ssl_context=ssl_context())
        self._stream_timeout = timeouts(connect=kwargs["connect_timeout"])
        self._idle_timeout: float = kwargs["idle_timeout"]

    def _inputs(self) -> tuple[dict[str, Any], list[str]]:
        return dict(self._settings.workflow_parameters), list(
            self._settings.workflow_client_parameters
        )

    def _body(
        self,
        session_name: str,
        conversation_ref: str | None,
        messages: list[ChatMessage],
        parameters: dict[str, Any],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "workflow_id": self._settings.workflow_id,
            "additional_messages": [
                {
                    "role": m.role,
                    "type": "question" if m.role == "user" else "answer",
                    "content": m.content,
                    "content_type": "text",
                }
                for m in messages
            ],
            "parameters": parameters,
            "session_name": session_name,
            "ext": {"user_id": session_name},
        }
        if self._settings.app_id:
            body["app_id"] = self._settings.app_id
        else:
            body["bot_id"] = self._settings.bot_id
        if conversation_ref is not None:
            body["conversation_id"] = conversation_ref
        return body

    async def _chat_events(
        self,
        token: str,
        session_name: str,
        conversation_ref: str | None,
        messages: list[ChatMessage],
        mapper: ReplyMapper,
        request: TurnRequest,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        body = self._body(session_name, conversation_ref, messages, self.inputs_for(request))
        proxy, proxy_auth = self._streams.proxy_for(self._base)
        started = False

        def silence(which: str) -> UpstreamError:
            quiet = TimeoutError(f"no answer for {self._idle_timeout} s ({which})")
            return transport_error(quiet, mapper.logid, started=started)

        # The idle timeout: one timer for the whole stream, paused while the consumer
        # handles an event, instead of aiohttp's read timeout re-armed on every chunk.
        with Watchdog(idle=self._idle_timeout, error=silence) as watchdog:
            try:
                response = await self._streams.session().post(
                    f"{self._base}{_WORKFLOW_CHAT_PATH}",
                    data=json.dumps(body, ensure_ascii=False).encode(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Accept": "text/event-stream",
                        "Content-Type": "application/json",
                    },
                    timeout=self._stream_timeout,
                    allow_redirects=False,  # as httpx: a 3xx is an answer, reported as an error
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                )
            except TRANSPORT_ERRORS as exc:
                raise transport_error(exc, None, started=False) from None
            started = True
            watchdog.poke()
            mapper.logid = response.headers.get("x-tt-logid")
            try:
                content_type = response.headers.get("content-type", "")
                if response.status != 200 or "text/event-stream" not in content_type:
                    raise await self._error_from_response(response)
                parser = SseParser()
                try:
                    async for chunk in response.content.iter_any():
                        watchdog.poke()
                        for sse in parser.feed(chunk):
                            watchdog.pause()
                            yield sse.event, decode_data(sse.data)
                            watchdog.poke()
                    for sse in parser.close():
                        watchdog.pause()
                        yield sse.event, decode_data(sse.data)
                except TRANSPORT_ERRORS as exc:
                    raise transport_error(exc, mapper.logid, started=True) from None
            finally:
                # A body read to its end goes back to the pool; anything else is dropped.
                if response.content.at_eof():
                    response.release()
                else:
                    response.close()

    async def _error_from_response(self, response: aiohttp.ClientResponse) -> UpstreamError:
        logid = response.headers.get("x-tt-logid")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_ERROR_BODY:
                    break
        except TRANSPORT_ERRORS as exc:
            return transport_error(exc, logid, started=False)
        try:
            body = json.loads(b"".join(chunks))
        except ValueError:
            body = None
        return envelope_error(response.status, body, logid, response.headers.get("retry-after"))

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._streams.aclose()


CozeProvider = CozeBotProvider | CozeWorkflowProvider


def build_coze_provider(
    name: CozeProviderName,
    settings: CozeSettings,
    *,
    connect_timeout: float,
    idle_timeout: float,
    token_source: TokenSource | None = None,
    http_client: httpx.AsyncClient | None = None,
    clock: Clock = time.time,
    cache: TokenCache | None = None,
) -> CozeProvider:
    """Validate ``settings`` for ``name`` and build the provider.

    ``connect_timeout``/``idle_timeout``: seconds to reach Coze / of silence between two
    stream chunks (the whole-turn deadline is the caller's). ``token_source``: share an
    existing ``CozeTokenManager`` (e.g. the one behind ``/api/coze/token``); by default
    one is built from the settings (``StaticTokenSource`` under PAT) and closed by the
    provider's ``aclose``. ``http_client``: a connection pool to use (default: a new
    one, shared with the token manager and closed by ``aclose``); the workflow stream
    itself goes through the provider's own aiohttp pool (``coze.workflow_http``). ``clock``: for the
    token manager built here. ``cache``: where that manager keeps tokens (default in
    process; ``RedisTokenCache`` shares them fleet-wide). Raises ``ConfigurationError``
    naming a missing or malformed setting; logs the PAT warning.
    """
    settings.validate_for(name)
    owns_http = http_client is None
    pool = http_client or new_http_client()
    owns = token_source is None
    if token_source is None:
        if settings.auth_mode == "PAT":
            assert settings.api_token is not None  # validate_for checked it
            token_source = StaticTokenSource(settings.api_token)
        else:
            token_source = CozeTokenManager.from_settings(
                settings,
                clock=clock,
                http_client=pool,
                connect_timeout=connect_timeout,
                timeout=idle_timeout,
                cache=cache,
            )
    cls: type[CozeBotProvider] | type[CozeWorkflowProvider] = (
        CozeBotProvider if name == "coze-bot" else CozeWorkflowProvider
    )
    return cls(
        settings,
        token_source=token_source,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        http_client=pool,
        owns_token_source=owns,
        owns_http_client=owns_http,
    )


__all__ = [
    "CozeBotProvider",
    "CozeProvider",
    "CozeWorkflowProvider",
    "build_coze_provider",
    "new_http_client",
]
