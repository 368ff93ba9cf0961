"""The turn: one user message in, the assistant's reply streamed out and stored.

Order, per DESIGN.md: (identity already verified) → take the session's lock → store
the user message → build the context from this session's conversation only → stream
from the provider → store the reply → release. A turn of another session never waits
for this lock. The user's message is stored before the provider is called, so it is
never lost; the reply is stored ``complete``, ``incomplete`` (the client left; the
partial text is kept) or ``error`` (the provider failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import anyio
from sqlalchemy.ext.asyncio import async_sessionmaker

from .errors import (
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceBusy,
    SessiongateError,
    UpstreamError,
    UpstreamTimeout,
)
from .providers.base import (
    ChatMessage,
    ConversationBound,
    Provider,
    ProviderEvent,
    TextDelta,
    TurnRequest,
    Usage,
)
from .ratelimit import TurnLimiter
from .store import ConversationRow, DbSession, SessionRow
from .store import queries as q

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    """A piece of reply text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The reply was stored complete."""

    conversation_id: str
    message_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """The provider failed; the (partial) reply was stored with status ``error``."""

    conversation_id: str
    message_id: str
    error: SessiongateError


TurnEvent = ReplyDelta | TurnDone | TurnFailed


class SessionLocks:
    """One asyncio lock per session id, created on demand and dropped when unused.

    Serialises turns of one session inside this process; sessions never share a lock.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(slots=True)
class Turn:
    """A validated, admitted turn waiting to run. ``release`` must be called once."""

    session: SessionRow
    message: str
    conversation_id: str | None
    _service: ChatService
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._service._release(self.session.id)


class ChatService:
    """Runs turns against one provider with per-session locking and admission control.

    ``idle_timeout`` (seconds of provider silence) and ``turn_timeout`` (seconds for the
    whole reply) end a turn with ``UpstreamTimeout``.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        provider: Provider,
        *,
        locks: SessionLocks,
        system_prompt: str,
        max_message_chars: int,
        idle_ttl: int,
        idle_timeout: float,
        turn_timeout: float,
        limiter: TurnLimiter | None = None,
        max_concurrent_turns: int | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.provider = provider
        self._system_prompt = system_prompt
        self._max_message_chars = max_message_chars
        self._idle_ttl = idle_ttl
        self._idle_timeout = idle_timeout
        self._turn_timeout = turn_timeout
        self._locks = locks
        self._mean_turn_seconds = 5.0
        self._limiter = limiter
        self._max_concurrent = max_concurrent_turns
        # Admitted, unfinished turns per session id; their sum is the provider's load.
        self._per_session: dict[str, int] = {}

    def _admit(self, session_id: str) -> None:
        self._per_session[session_id] = self._per_session.get(session_id, 0) + 1

    def _release(self, session_id: str) -> None:
        left = self._per_session.get(session_id, 1) - 1
        if left > 0:
            self._per_session[session_id] = left
        else:
            self._per_session.pop(session_id, None)

    @property
    def turns_in_progress(self) -> int:
        """Turns admitted and not yet finished (running or waiting)."""
        return sum(self._per_session.values())

    async def begin_turn(
        self, session: SessionRow, message: str, conversation_id: str | None
    ) -> Turn:
        """Validate and admit a turn; everything that can fail before streaming fails here.

        Raises ``BadRequest`` (empty message), ``PayloadTooLarge`` (over
        ``max_message_chars``), ``NotFound`` (conversation not in this session) and
        ``ServiceBusy`` (provider queue full, with Retry-After). Nothing is stored.
        """
        if not message.strip():
            raise BadRequest("The message is empty.", code="empty_message")
        if len(message) > self._max_message_chars:
            raise PayloadTooLarge(
                f"The message has {len(message)} characters; the limit is "
                f"{self._max_message_chars}.",
                code="message_too_long",
            )
        if conversation_id is not None:
            async with self._sessionmaker() as db:
                await q.get_conversation(db, session.id, conversation_id)
        if self._max_concurrent is not None:
            if self._per_session.get(session.id, 0) >= self._max_concurrent:
                raise RateLimited(
                    f"At most {self._max_concurrent} turns of one session may be in progress.",
                    code="too_many_concurrent_turns",
                    retry_after=1,
                )
        limit = self.provider.max_pending
        admitted = self.turns_in_progress
        if limit is not None and admitted >= limit:
            waiting = admitted - limit + 1
            raise ServiceBusy(
                "The model is busy with other conversations; try again shortly.",
                code="provider_busy",
                retry_after=max(1, math.ceil(self._mean_turn_seconds * waiting)),
            )
        # Reserve before awaiting the limiter (Redis): checks and reservation happen with
        # no await between them, so concurrent requests cannot all pass a full queue.
        self._admit(session.id)
        if self._limiter is not None:
            try:
                await self._limiter.hit(session)
            except BaseException:
                self._release(session.id)
                raise
        return Turn(
            session=session, message=message, conversation_id=conversation_id, _service=self
        )

    async def stream_turn(self, turn: Turn) -> AsyncGenerator[TurnEvent, None]:
        """Run ``turn``: yields ``ReplyDelta``s then one ``TurnDone`` or ``TurnFailed``.

        If the consumer is cancelled or stops iterating, generation stops and the
        partial reply is stored ``incomplete``. Releases the turn on every path.
        """
        started = time.monotonic()
        try:
            async with self._locks.hold(turn.session.id):
                conversation, request = await self._store_user_message(turn)
                generation = self._generate(turn.session, conversation, request)
                async with contextlib.aclosing(generation):
                    async for event in generation:
                        yield event
        finally:
            turn.release()
            elapsed = time.monotonic() - started
            self._mean_turn_seconds = 0.8 * self._mean_turn_seconds + 0.2 * elapsed

    async def _store_user_message(self, turn: Turn) -> tuple[ConversationRow, TurnRequest]:
        session_id = turn.session.id
        async with self._sessionmaker() as db, db.begin():
            if turn.conversation_id is not None:
                conversation = await q.get_conversation(db, session_id, turn.conversation_id)
            else:
                latest = await q.latest_conversation(db, session_id)
                conversation = latest or await q.create_conversation(db, session_id)
            await q.append_message(db, conversation, role="user", content=turn.message)
            await q.touch_session(db, session_id, idle_ttl=self._idle_ttl)
            history, _ = await q.list_messages(db, session_id, conversation.id)
        context = [ChatMessage("system", self._system_prompt)] if self._system_prompt else []
        # Failed replies carry no model text worth repeating; everything else is context.
        context += [
            ChatMessage("user" if m.role == "user" else "assistant", m.content)
            for m in history
            if m.status != "error" and m.content
        ]
        request = TurnRequest(
            session_name=turn.session.session_name,
            messages=context,
            conversation_ref=conversation.upstream_conversation_id,
        )
        return conversation, request

    async def _generate(
        self, session: SessionRow, conversation: ConversationRow, request: TurnRequest
    ) -> AsyncGenerator[TurnEvent, None]:
        parts: list[str] = []
        usage = Usage()
        try:
            async with contextlib.aclosing(self.provider.stream_reply(request)) as events:
                async for event in self._with_timeouts(events):
                    if isinstance(event, TextDelta):
                        if event.text:
                            parts.append(event.text)
                            yield ReplyDelta(event.text)
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, ConversationBound):
                        await self._bind(session.id, conversation.id, event.conversation_ref)
        except SessiongateError as exc:
            log.warning(
                "turn failed: session=%s code=%s logid=%s",
                session.id,
                exc.code,
                getattr(exc, "logid", None),
            )
            message_id = await self._store_reply(session, conversation, parts, "error", usage, exc)
            yield TurnFailed(conversation.id, message_id, exc)
            return
        except BaseException:
            # Cancelled (client disconnect) or closed early: keep what was said so far.
            with anyio.CancelScope(shield=True):
                await self._store_reply(session, conversation, parts, "incomplete", usage, None)
            raise
        message_id = await self._store_reply(session, conversation, parts, "complete", usage, None)
        yield TurnDone(conversation.id, message_id, "".join(parts))

    async def _with_timeouts(
        self, events: AsyncIterator[ProviderEvent]
    ) -> AsyncIterator[ProviderEvent]:
        deadline = time.monotonic() + self._turn_timeout
        iterator = aiter(events)
        while True:
            remaining = deadline - time.monotonic()
            wait = min(self._idle_timeout, remaining)
            try:
                # asyncio.timeout, not wait_for: the provider's stream must stay in this task.
                async with asyncio.timeout(max(wait, 0)):
                    event = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                which = "turn deadline" if remaining <= self._idle_timeout else "idle timeout"
                raise UpstreamTimeout(
                    f"The model did not answer in time ({which}).", code="upstream_timeout"
                ) from exc
            yield event

    async def _bind(self, session_id: str, conversation_id: str, upstream_id: str) -> None:
        async with self._sessionmaker() as db, db.begin():
            await q.bind_upstream_conversation(db, session_id, conversation_id, upstream_id)

    async def _store_reply(
        self,
        session: SessionRow,
        conversation: ConversationRow,
        parts: list[str],
        status: str,
        usage: Usage,
        error: SessiongateError | None,
    ) -> str:
        async with self._sessionmaker() as db, db.begin():
            row = await q.append_message(
                db,
                conversation,
                role="assistant",
                content="".join(parts),
                status=status,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                error_code=error.code if error else None,
                upstream_logid=error.logid if isinstance(error, UpstreamError) else None,
            )
            await q.touch_session(db, session.id, idle_ttl=self._idle_ttl)
            return row.id


__all__ = [
    "ChatService",
    "ReplyDelta",
    "SessionLocks",
    "Turn",
    "TurnDone",
    "TurnEvent",
    "TurnFailed",
]
