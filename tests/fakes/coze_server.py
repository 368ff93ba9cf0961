"""A protocol-faithful fake Coze OpenAPI server, served by a real uvicorn on loopback.

It speaks the parts of Coze that sessiongate uses (``COZE_PROTOCOL.md``):

* ``POST /api/permission/oauth2/token`` — verifies the RS256 JWT against the uploaded
  public key (by ``kid``), ``iss``, ``aud`` (this server's host:port), ``exp`` against
  the test's clock, refuses a reused ``jti``, and binds the issued token to the JWT's
  ``session_name``. ``expires_in`` is an absolute unix time, as Coze answers.
* ``POST /v1/conversation/create`` — a conversation belongs to the creating session.
* ``POST /v3/chat?conversation_id=`` and ``POST /v1/workflows/chat`` — Coze's SSE framing
  (one ``event:`` and one ``data:`` line per event), Coze's error envelope
  ``{"code","msg","detail":{"logid"}}`` with ``X-Tt-Logid``; a conversation used with
  another session's token is refused with 4101.

Each chat request is recorded (token's session_name, body session_name/user_id,
``parameters``, ``custom_variables``, ...) so tests can assert what was sent; as in
Coze, ``custom_variables`` maps strings to strings and ``parameters`` is an object
(4000 otherwise). Replies come from a per-session_name memory: "my name is
X" / "我叫X" / "my <thing> is <value>" are remembered, "what is my name?" / "我叫什么" /
"what is my <thing>?" answered from it, so a leak between session_names shows in the
text. ``switches`` inject failures. All state lives on ``FakeCoze`` (itself the ASGI
app); ``serve_fake_coze`` runs it on the server thread's loop, and tests read the state
after awaiting their requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class FakeClock:
    """A unix clock the test moves by hand (seconds). Call it to read the time."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Switches:
    """Failure injection. Counters apply to that many next requests, then reset to normal."""

    token_5xx: int = 0  # token endpoint answers 502 with a non-JSON body
    token_timeouts: int = 0  # token endpoint never answers (until the client leaves)
    token_error: str | None = None  # token endpoint answers 401 with this OAuth error_code
    chat_5xx: int = 0  # chat answers 502 with a non-JSON body
    busy: int = 0  # chat answers code 4016 (a chat is running in the conversation)
    rate_limited: int = 0  # chat answers HTTP 429, Retry-After: 7, code 4009
    token_invalid: int = 0  # chat answers code 4100 whatever the token
    cut_stream: int = 0  # abort the TCP connection after the first delta
    end_early: int = 0  # end the SSE body cleanly after the first delta, no completion
    chat_failed: int = 0  # conversation.chat.failed (Chat with last_error)
    chat_failed_bare: int = 0  # conversation.chat.failed with {"code": "720702204", ...}
    error_event: int = 0  # SSE `error` event with error_event_code
    error_event_code: int = 5000
    unknown_event: bool = False  # also send an event this client has never heard of
    delta_delay: float = 0.0  # seconds between two deltas
    shared_memory: bool = False  # one memory for every session_name (a planted leak)

    def take(self, name: str) -> bool:
        """Consume one count of switch ``name``; True when it fired."""
        value = getattr(self, name)
        if value > 0:
            setattr(self, name, value - 1)
            return True
        return False


@dataclass
class IssuedToken:
    value: str
    session_name: str | None  # None for a personal access token
    expires_at: int | None
    revoked: bool = False


@dataclass
class Conversation:
    id: str
    owner: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChatRecord:
    """One chat request as the fake saw it."""

    path: str
    token_session: str | None
    body_session: str | None  # user_id (bot chat) or top-level session_name (workflow)
    ext_user_id: str | None
    conversation_id: str | None
    body: dict[str, Any]
    outcome: str = "open"  # completed | disconnected | cut | failed | refused
    refused_code: int | None = None  # Coze code of a refusal (4101, 4016, ...)
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def additional_messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("additional_messages") or [])

    @property
    def parameters(self) -> dict[str, Any] | None:
        """The workflow's (or bot chat's) ``parameters`` as sent; None if absent."""
        value = self.body.get("parameters")
        return dict(value) if isinstance(value, dict) else None

    @property
    def custom_variables(self) -> dict[str, str] | None:
        """A bot chat's ``custom_variables`` as sent; None if absent."""
        value = self.body.get("custom_variables")
        return dict(value) if isinstance(value, dict) else None


_NAME_STATEMENTS = (
    re.compile(r"\bmy name is\s+([^\s.,!?]+)", re.I),
    re.compile(r"我叫(?!什么)([^\s，。！？,.!?]+)"),
)
_NAME_QUESTIONS = (re.compile(r"\bwhat(?:'s| is) my name\b", re.I), re.compile(r"我叫什么"))
# "my code number is 123456." -> ("code number", "123456"); keys of one to three words.
_FACT_STATEMENT = re.compile(r"\bmy ((?:\w+ ){0,2}?\w+) is\s+([^\s,!?]+?)[.]?(?=\s|$)", re.I)
# In a question: "what is my name and my code number?" -> "name", "code number".
_FACT_ASKED = re.compile(r"\bmy ((?:\w+ ){0,2}?\w+)(?=\s*(?:\?|$|,|\band\b))", re.I)
_ANYONE_CALLED = re.compile(r"\banyone called\s+([^\s?.,!]+)", re.I)


@dataclass
class Memory:
    """What the fake "remembers" for one session_name (Coze's long-term memory)."""

    facts: dict[str, str] = field(default_factory=dict)  # "name" -> "Alice", ...
    people: dict[str, dict[str, str]] = field(default_factory=dict)  # lower(name) -> facts


class FakeCoze:
    """The fake Coze server. ``start()`` serves it on 127.0.0.1; ``url`` is its base URL.

    ``public_keys`` maps OAuth public key id → PEM; ``client_id`` is the OAuth app's.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        public_keys: dict[str, bytes],
        client_id: str,
        bot_id: str = "bot-7",
        workflow_id: str = "wf-9",
        app_id: str = "app-3",
        chunk_size: int = 8,
        reply_words: int = 0,
    ) -> None:
        self.clock = clock
        self.public_keys = public_keys
        self.client_id = client_id
        self.bot_id = bot_id
        self.workflow_id = workflow_id
        self.app_id = app_id
        self.chunk_size = chunk_size
        # Benchmark mode (bench/turns.py): every reply is this many words, one delta per
        # word, whatever was asked (Switches.delta_delay spaces them), and nothing is
        # learned or kept, so the fake's cost per turn stays constant.
        self.reply_words = reply_words
        self.port = 0
        self.reset()

    def reset(self, clock: Callable[[], float] | None = None) -> None:
        """Forget every token, conversation, memory and record; switches back to normal."""
        if clock is not None:
            self.clock = clock
        self.switches = Switches()
        self.tokens: dict[str, IssuedToken] = {}
        self.used_jti: set[str] = set()
        self.exchanges: Counter[str | None] = Counter()  # successful exchanges per session_name
        self.token_requests = 0  # every request to the token endpoint
        self.token_refusals: list[str] = []  # OAuth error_code of each refusal
        self.conversations: dict[str, Conversation] = {}
        self.created_conversations: list[Conversation] = []
        self.chats: list[ChatRecord] = []
        self.memory: dict[str, Memory] = {}

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (``COZE_API_BASE``) once served by ``serve_fake_coze``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def audience(self) -> str:
        """The ``aud`` this server expects: its own API host, as Coze expects its own."""
        return f"127.0.0.1:{self.port}"

    # -- test helpers ----------------------------------------------------------------

    def add_personal_access_token(self, value: str) -> None:
        """Accept ``value`` as a PAT: not bound to any session_name."""
        self.tokens[value] = IssuedToken(value=value, session_name=None, expires_at=None)

    def expire_all_tokens(self) -> None:
        """Make every token issued so far invalid (chats answer 4100), as after a revoke."""
        for token in self.tokens.values():
            token.revoked = True

    def chats_of(self, session_name: str) -> list[ChatRecord]:
        return [c for c in self.chats if c.token_session == session_name]

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        logid = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(6).upper()
        route = (scope["method"], scope["path"])
        if route == ("POST", "/api/permission/oauth2/token"):
            await self._token(headers, body, logid, receive, send)
        elif route == ("POST", "/v1/conversation/create"):
            await self._conversation_create(headers, body, logid, send)
        elif route == ("POST", "/v3/chat"):
            await self._bot_chat(headers, query, body, logid, receive, send)
        elif route == ("POST", "/v1/workflows/chat"):
            await self._workflow_chat(headers, body, logid, receive, send)
        else:
            await _send_json(send, 404, {"code": 4200, "msg": "not found"}, logid)

    # -- OAuth -----------------------------------------------------------------------

    async def _token(
        self, headers: dict[str, str], raw: bytes, logid: str, receive: Receive, send: Send
    ) -> None:
        self.token_requests += 1
        if self.switches.take("token_timeouts"):
            await _wait_for_disconnect(receive, timeout=30)
            return
        if self.switches.take("token_5xx"):
            await _send_text(send, 502, "<html>502 Bad Gateway</html>", logid)
            return
        if self.switches.token_error:
            await self._oauth_error(send, self.switches.token_error, "refused by switch", logid)
            return
        assertion = headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            await self._oauth_error(send, "invalid_request", "malformed JWT", logid)
            return
        key = self.public_keys.get(str(header.get("kid")))
        if header.get("alg") != "RS256" or header.get("typ") != "JWT" or key is None:
            await self._oauth_error(send, "invalid_client", "unknown kid or alg", logid)
            return
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=self.audience,
                # exp/iat are checked below against the test's clock, not the wall clock.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud", "iat", "exp", "jti"],
                },
            )
        except jwt.InvalidAudienceError:
            await self._oauth_error(send, "invalid_request", "aud mismatch", logid)
            return
        except jwt.PyJWTError:
            await self._oauth_error(send, "invalid_client", "bad signature", logid)
            return
        now = self.clock()
        if claims["iss"] != self.client_id:
            await self._oauth_error(send, "invalid_client", "unknown client", logid)
            return
        if claims["exp"] <= now or claims["iat"] > now + 60:
            await self._oauth_error(send, "invalid_request", "JWT expired", logid)
            return
        if claims["jti"] in self.used_jti:
            await self._oauth_error(send, "invalid_request", "jti reused", logid)
            return
        self.used_jti.add(claims["jti"])
        try:
            request = json.loads(raw)
        except ValueError:
            request = {}
        duration = request.get("duration_seconds", 900)
        if request.get("grant_type") != JWT_BEARER_GRANT:
            await self._oauth_error(send, "unsupported_grant_type", "grant", logid)
            return
        if not isinstance(duration, int) or not 0 < duration <= 86399:
            await self._oauth_error(send, "invalid_request", "duration_seconds", logid)
            return
        session_name = claims.get("session_name")
        value = "czs_" + secrets.token_urlsafe(24)
        expires_at = int(now) + duration
        self.tokens[value] = IssuedToken(value, session_name, expires_at)
        self.exchanges[session_name] += 1
        await _send_json(
            send,
            200,
            {"access_token": value, "expires_in": expires_at, "token_type": "Bearer"},
            logid,
        )

    async def _oauth_error(self, send: Send, error_code: str, message: str, logid: str) -> None:
        self.token_refusals.append(error_code)
        await _send_json(send, 401, {"error_code": error_code, "error_message": message}, logid)

    def _authorize(self, headers: dict[str, str]) -> IssuedToken | None:
        value = headers.get("authorization", "").removeprefix("Bearer ").strip()
        token = self.tokens.get(value)
        if token is None or token.revoked:
            return None
        if token.expires_at is not None and self.clock() >= token.expires_at:
            return None
        return token

    # -- conversations ---------------------------------------------------------------

    def _new_conversation(self, owner: str | None) -> Conversation:
        conversation = Conversation(id=str(7_400_000_000 + secrets.randbelow(10**9)), owner=owner)
        self.conversations[conversation.id] = conversation
        return conversation

    async def _conversation_create(
        self, headers: dict[str, str], raw: bytes, logid: str, send: Send
    ) -> None:
        token = self._authorize(headers)
        if token is None or self.switches.take("token_invalid"):
            await _send_error(send, 4100, "authentication is invalid", logid, status=401)
            return
        conversation = self._new_conversation(token.session_name)
        self.created_conversations.append(conversation)
        now = int(self.clock())
        data = {
            "id": conversation.id,
            "created_at": now,
            "updated_at": now,
            "meta_data": {},
            "last_section_id": conversation.id + "1",
            "creator_id": "creator-1",
            "connector_id": "1024",
        }
        await _send_json(
            send, 200, {"code": 0, "msg": "", "data": data, "detail": {"logid": logid}}, logid
        )

    # -- chats -----------------------------------------------------------------------

    async def _bot_chat(
        self,
        headers: dict[str, str],
        query: dict[str, str],
        raw: bytes,
        logid: str,
        receive: Receive,
        send: Send,
    ) -> None:
        body = _loads(raw)
        token = self._authorize(headers)
        record = ChatRecord(
            path="/v3/chat",
            token_session=token.session_name if token else None,
            body_session=body.get("user_id"),
            ext_user_id=None,
            conversation_id=query.get("conversation_id"),
            body=body,
        )
        self.chats.append(record)
        if body.get("bot_id") != self.bot_id:
            await self._refuse(send, record, 4015, "bot not published to API", logid)
            return
        if not body.get("user_id") or body.get("stream") is not True:
            await self._refuse(send, record, 4000, "invalid parameter", logid)
            return
        variables = body.get("custom_variables")
        # Coze: custom_variables is map<string, string>; anything else is a bad parameter.
        if variables is not None and not (
            isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())
        ):
            await self._refuse(send, record, 4000, "custom_variables must be strings", logid)
            return
        save = body.get("auto_save_history", True) is not False
        await self._chat(send, receive, record, token, save, logid, done_data="[DONE]")

    async def _workflow_chat(
        self, headers: dict[str, str], raw: bytes, logid: str, receive: Receive, send: Send
    ) -> None:
        body = _loads(raw)
        token = self._authorize(headers)
        ext = body.get("ext") if isinstance(body.get("ext"), dict) else {}
        record = ChatRecord(
            path="/v1/workflows/chat",
            token_session=token.session_name if token else None,
            body_session=body.get("session_name"),
            ext_user_id=ext.get("user_id"),
            conversation_id=body.get("conversation_id"),
            body=body,
        )
        self.chats.append(record)
        if body.get("workflow_id") != self.workflow_id:
            await self._refuse(send, record, 4200, "workflow not found", logid)
            return
        if bool(body.get("app_id")) == bool(body.get("bot_id")):
            await self._refuse(send, record, 4000, "exactly one of app_id and bot_id", logid)
            return
        if not isinstance(body.get("parameters", {}), dict):
            await self._refuse(send, record, 4000, "parameters must be an object", logid)
            return
        done = {"debug_url": "https://www.coze.com/work_flow?execute_id=1"}
        await self._chat(send, receive, record, token, True, logid, done_data=done)

    async def _refuse(
        self, send: Send, record: ChatRecord, code: int, msg: str, logid: str, status: int = 200
    ) -> None:
        record.outcome = "refused"
        record.refused_code = code
        record.closed.set()
        # Coze answers business errors with HTTP 200 and a non-zero code.
        await _send_error(send, code, msg, logid, status=status)

    async def _chat(
        self,
        send: Send,
        receive: Receive,
        record: ChatRecord,
        token: IssuedToken | None,
        save: bool,
        logid: str,
        *,
        done_data: Any,
    ) -> None:
        sw = self.switches
        if token is None or sw.take("token_invalid"):
            await self._refuse(send, record, 4100, "authentication is invalid", logid, 401)
            return
        if sw.take("chat_5xx"):
            record.outcome = "refused"
            record.closed.set()
            await _send_text(send, 502, "<html>502 Bad Gateway</html>", logid)
            return
        if sw.take("busy"):
            await self._refuse(send, record, 4016, "conversation is busy", logid)
            return
        if sw.take("rate_limited"):
            record.outcome = "refused"
            record.closed.set()
            await _send_json(
                send,
                429,
                {"code": 4009, "msg": "too many requests", "detail": {"logid": logid}},
                logid,
                extra_headers=[(b"retry-after", b"7")],
            )
            return
        if record.conversation_id is not None:
            conversation = self.conversations.get(record.conversation_id)
            if conversation is None:
                await self._refuse(send, record, 4002, "conversation not found", logid)
                return
            if conversation.owner != token.session_name:
                await self._refuse(send, record, 4101, "no permission", logid)
                return
        else:
            conversation = self._new_conversation(token.session_name)
        incoming = [m for m in record.additional_messages if isinstance(m, dict)]
        if self.reply_words:
            reply = " ".join(f"word{i}" for i in range(1, self.reply_words + 1))
            save = False
            self.conversations.pop(conversation.id, None)
        else:
            reply = self._answer(token.session_name, conversation.messages + incoming)
        if save:
            conversation.messages.extend(incoming)
            conversation.messages.append({"role": "assistant", "type": "answer", "content": reply})
        await self._stream_reply(send, receive, record, conversation.id, reply, logid, done_data)

    async def _stream_reply(
        self,
        send: Send,
        receive: Receive,
        record: ChatRecord,
        conversation_id: str,
        reply: str,
        logid: str,
        done_data: Any,
    ) -> None:
        sw = self.switches
        chat_id = secrets.token_hex(8)
        message_id = secrets.token_hex(8)
        chat = {
            "id": chat_id,
            "conversation_id": conversation_id,
            "bot_id": self.bot_id,
            "created_at": int(self.clock()),
            "last_error": {"code": 0, "msg": ""},
            "status": "created",
        }
        message = {
            "id": message_id,
            "conversation_id": conversation_id,
            "bot_id": self.bot_id,
            "chat_id": chat_id,
            "role": "assistant",
            "type": "answer",
            "content_type": "text",
        }
        cut = sw.take("cut_stream")
        end_early = sw.take("end_early")
        failed = sw.take("chat_failed")
        failed_bare = sw.take("chat_failed_bare")
        error_event = sw.take("error_event")
        disconnected = asyncio.Event()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-tt-logid", logid.encode()),
                ],
            }
        )
        listener = asyncio.create_task(_set_on_disconnect(receive, disconnected))

        async def emit(event: str, data: Any, delay: float = 0.0) -> bool:
            if delay:
                try:
                    await asyncio.wait_for(disconnected.wait(), delay)
                except TimeoutError:
                    pass
            if disconnected.is_set():
                return False
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            frame = f"event:{event}\ndata:{text}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            return True

        try:
            if not await emit("conversation.chat.created", chat):
                return
            await emit("conversation.chat.in_progress", {**chat, "status": "in_progress"})
            if sw.unknown_event:
                await emit("conversation.chat.heartbeat", {"at": int(self.clock())})
            if failed or failed_bare or error_event:
                if error_event:
                    payload: dict[str, Any] = {"code": sw.error_event_code, "msg": "error"}
                    await emit("error", payload)
                elif failed_bare:
                    await emit(
                        "conversation.chat.failed", {"code": "720702204", "msg": "node failed"}
                    )
                else:
                    last_error = {"code": 5000, "msg": "internal error"}
                    await emit(
                        "conversation.chat.failed",
                        {**chat, "status": "failed", "last_error": last_error},
                    )
                record.outcome = "failed"
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if self.reply_words:
                pieces = [w + " " for w in reply.split(" ")]
                pieces[-1] = pieces[-1].rstrip()
            else:
                size = self.chunk_size
                pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
            for index, piece in enumerate(pieces):
                delay = sw.delta_delay if index else 0.0
                if not await emit(
                    "conversation.message.delta", {**message, "content": piece}, delay
                ):
                    record.outcome = "disconnected"
                    return
                if cut:
                    record.outcome = "cut"
                    raise _CutConnection
                if end_early:
                    record.outcome = "cut"
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            await emit("conversation.message.completed", {**message, "content": reply})
            verbose = {**message, "id": secrets.token_hex(8), "type": "verbose"}
            await emit(
                "conversation.message.completed",
                {**verbose, "content": json.dumps({"msg_type": "generate_answer_finish"})},
            )
            follow_up = {**message, "id": secrets.token_hex(8), "type": "follow_up"}
            await emit("conversation.message.completed", {**follow_up, "content": "Anything else?"})
            usage = {
                "token_count": 12 + len(pieces),
                "output_count": len(pieces),
                "input_count": 12,
            }
            completed = {**chat, "status": "completed", "usage": usage}
            if not await emit("conversation.chat.completed", completed):
                record.outcome = "disconnected"
                return
            await emit("done", done_data)
            record.outcome = "completed"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if disconnected.is_set() and record.outcome == "open":
                record.outcome = "disconnected"
            listener.cancel()
            record.closed.set()

    # -- the "model" -----------------------------------------------------------------

    def _answer(self, session_name: str | None, messages: list[dict[str, Any]]) -> str:
        """Learn facts from every user message of the context, answer the last one.

        Memory is per session_name (switch ``shared_memory``: one for all, a leak).
        """
        key = "*" if self.switches.shared_memory else str(session_name)
        memory = self.memory.setdefault(key, Memory())
        user_texts = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        for text in user_texts:
            _learn(memory, text)
        question = user_texts[-1] if user_texts else ""
        called = _ANYONE_CALLED.search(question)
        if called is not None:
            person = memory.people.get(called.group(1).lower())
            if person is None:
                return f"I don't know anyone called {called.group(1)}."
            known = ", ".join(f"{k} {v}" for k, v in person.items() if k != "name")
            return f"Yes, {called.group(1)}: {known}."
        asked: list[str] = []
        if any(p.search(question) for p in _NAME_QUESTIONS):
            asked.append("name")
        if re.search(r"\bwhat\b", question, re.I):
            asked += [m.group(1).lower() for m in _FACT_ASKED.finditer(question)]
        if asked:
            parts = []
            for fact in dict.fromkeys(asked):
                value = memory.facts.get(fact)
                parts.append(f"Your {fact} is {value}." if value else f"I don't know your {fact}.")
            return " ".join(parts)
        if any(p.search(question) for p in _NAME_STATEMENTS):
            return f"Nice to meet you, {memory.facts['name']}."
        return f"You said: {question}"


def _learn(memory: Memory, text: str) -> None:
    for pattern in _NAME_STATEMENTS:
        for match in pattern.finditer(text):
            memory.facts["name"] = match.group(1)
    for match in _FACT_STATEMENT.finditer(text):
        if match.group(1).lower() != "name":
            memory.facts[match.group(1).lower()] = match.group(2)
    if "name" in memory.facts:
        memory.people[memory.facts["name"].lower()] = dict(memory.facts)


class _CutConnection(Exception):
    """Raised inside the app mid-response: uvicorn then drops the TCP connection."""


async def _set_on_disconnect(receive: Receive, event: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            event.set()
            return


async def _wait_for_disconnect(receive: Receive, *, timeout: float) -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_set_on_disconnect(receive, event))
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        task.cancel()


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    logid: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-tt-logid", logid.encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_error(send: Send, code: int, msg: str, logid: str, *, status: int = 200) -> None:
    await _send_json(send, status, {"code": code, "msg": msg, "detail": {"logid": logid}}, logid)


async def _send_text(send: Send, status: int, text: str, logid: str) -> None:
    payload = text.encode()
    headers = [
        (b"content-type", b"text/html"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-tt-logid", logid.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@contextmanager
def serve_fake_coze(fake: FakeCoze) -> Iterator[FakeCoze]:
    """Serve ``fake`` with a real uvicorn on a free loopback port for the ``with`` block."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say TCP,
    # and accepted sockets inherit the listener's proto. Without it every second
    # response on a kept-alive connection waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    fake.port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake, lifespan="off", log_level="critical", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Coze server did not start")
            time.sleep(0.005)
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = ["ChatRecord", "FakeClock", "FakeCoze", "Memory", "Switches", "serve_fake_coze"]
