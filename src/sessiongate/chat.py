"""The turn: one user message in, the assistant's reply generated, streamed and stored.

Order, per DESIGN.md: (identity already verified) → admission (turns in progress of
the session, fleet-wide; the local model's queue; rate limits) → the session's lock
(any process; a second turn waits up to ``SESSIONGATE_TURN_WAIT``, then 409
``session_busy``) → one transaction stores the user message and the reply's row
(``streaming``) and reads this conversation's context → the provider streams in a task
of its own → the reply's text is saved as it grows and finally with its status →
release.

Everything that can be refused is refused by ``start_turn``, before any response
starts. The reply does not depend on the connection that asked for it: under
``on_disconnect=continue`` (the default) a client that leaves can come back and follow
it (``replies``); ``stop`` ends it on request from any process.

Reply ``status``: ``complete``; ``incomplete`` (stopped by the user or a leaving client
under ``cancel``: ``finish_reason="cancelled"``; or cut at ``max_reply_chars``:
``"length"``); ``error`` (the provider failed: ``error_code``, ``upstream_logid``);
``interrupted`` (this process stopped mid-reply, or died: the recovery sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from . import metrics
from .coordination import HeldLock, SessionCoordination
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
    Finish,
    Provider,
    TextDelta,
    TurnRequest,
    Usage,
)
from .ratelimit import TurnLimiter
from .replies import Frame, LiveReply, RedisReplyStream, ReplyFollower, ReplyRegistry
from .store import DbSession, SessionRow
from .store import turns as t
from .store.models import new_id, utcnow
from .tasks import Deferred, Watchdog

log = logging.getLogger(__name__)

#: Seconds a finishing turn lets a progress save in flight complete before cancelling
#: it: longer than a save waits for a pooled connection and the SQLite writer lock
#: under the default ``SESSIONGATE_DB_POOL_TIMEOUT`` (10). A pool timeout set above it
#: lets a save still waiting for a connection be cancelled (not yet derived from it).
_SAVE_GRACE = 15.0


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What the caller asked for.

    ``message``: the user's text (may be empty only with ``regenerate``).
    ``conversation_id``: continue this conversation (else the latest, or a new one with
    ``new_conversation``). ``regenerate``/``edit_last``: answer the last user message
    again, or replace it with ``message`` first. ``system_prompt``: replaces the
    gateway's for this turn (tenants allowed to). ``client_parameters``: upstream
    parameters a tenant supplied (the provider decides which it accepts). ``user``: the
    tenant's end-user name, if any.
    """

    message: str
    conversation_id: str | None = None
    new_conversation: bool = False
    regenerate: bool = False
    edit_last: bool = False
    system_prompt: str | None = None
    client_parameters: Mapping[str, Any] | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """The turn's limits and timings (seconds, characters, messages); see ``Settings``."""

    system_prompt: str = ""
    max_message_chars: int = 8000
    max_reply_chars: int = 20000
    idle_ttl: int = 86400
    idle_timeout: float = 60.0
    turn_timeout: float = 300.0
    turn_wait: float = 30.0
    max_concurrent_turns: int | None = 8
    history_messages: int = 200
    save_interval: float = 1.0


@dataclass(slots=True)
class _Outcome:
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    status: str = "complete"
    finish_reason: str = "stop"
    error: SessiongateError | None = None
    usage: Usage = field(default_factory=Usage)
    upstream_ref: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the saver stops


class ChatService:
    """Runs turns against one provider, coordinated across processes by ``coordination``.

    ``replies`` holds this process's replies in progress; ``stream`` (Redis) also
    publishes their frames for followers on other replicas.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        provider: Provider,
        coordination: SessionCoordination,
        *,
        limits: TurnLimits,
        limiter: TurnLimiter | None = None,
        replies: ReplyRegistry | None = None,
        stream: RedisReplyStream | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # The turn's own statements are Core: they run on a plain connection, without an
        # ORM session's unit of work around them.
        self._engine: AsyncEngine = sessionmaker.kw["bind"]
        # One-statement writes need no BEGIN and COMMIT around them on PostgreSQL: in
        # autocommit mode they are one round trip instead of three. (SQLite's writes
        # take the engine's writer lock at their first statement either way.)
        self._autocommit: AsyncEngine | None = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._engine.dialect.name == "postgresql"
            else None
        )
        self.provider = provider
        self.coordination = coordination
        self.limits = limits
        self._limiter = limiter
        self.replies = replies if replies is not None else ReplyRegistry()
        self.stream = stream
        self.follower = ReplyFollower(sessionmaker, coordination, self.replies, stream)
        self._in_flight = 0  # this process's turns admitted and unfinished
        self._mean_turn_seconds = 5.0

    @property
    def turns_in_progress(self) -> int:
        """Turns this process admitted and has not finished (running or waiting)."""
        return self._in_flight

    def validate(self, turn: TurnInput) -> None:
        """Refuse an empty or too long message (``BadRequest``, ``PayloadTooLarge``)."""
        if turn.regenerate and (turn.edit_last or turn.new_conversation):
            raise BadRequest(
                "'regenerate' answers the last message again; it excludes 'edit_last' and "
                "'new_conversation'.",
                code="invalid_request",
            )
        if turn.regenerate:
            if turn.conversation_id is None:
                raise BadRequest(
                    "Name the conversation to regenerate with 'conversation_id'.",
                    code="conversation_required",
                )
            return
        if (turn.edit_last and turn.conversation_id is None) or (
            turn.new_conversation and turn.conversation_id is not None
        ):
            raise BadRequest(
                "'edit_last' needs 'conversation_id'; 'new_conversation' excludes it.",
                code="invalid_request",
            )
        if not turn.message.strip():
            raise BadRequest("The message is empty.", code="empty_message")
        if len(turn.message) > self.limits.max_message_chars:
            raise PayloadTooLarge(
                f"The message has {len(turn.message)} characters; the limit is "
                f"{self.limits.max_message_chars}.",
                code="message_too_long",
            )

    async def start_turn(self, session: SessionRow, turn: TurnInput) -> LiveReply:
        """Admit, lock, store the user message and the reply's row, and start generating.

        Returns the live reply (follow it for frames). Raises, with nothing stored:
        ``BadRequest``/``PayloadTooLarge`` (the message), ``RateLimited`` (429: too many
        turns of this session in progress, or a rate limit), ``ServiceBusy`` (503: the
        local model's queue is full), ``SessionBusy`` (409: the session's running turn
        did not finish within ``turn_wait``), ``NotFound`` (the conversation is not the
        session's, or was deleted while this turn waited).
        """
        self.validate(turn)
        limits = self.limits
        turn_id = new_id()
        slot_ttl = limits.turn_wait + limits.turn_timeout + 30
        if limits.max_concurrent_turns is not None and not await self.coordination.admit(
            session.id, turn_id, limit=limits.max_concurrent_turns, ttl=slot_ttl
        ):
            raise RateLimited(
                f"At most {limits.max_concurrent_turns} turns of one session may be in progress.",
                code="too_many_concurrent_turns",
                retry_after=1,
            )
        try:
            if self._limiter is not None:
                await self._limiter.hit(session)
            held = await self.coordination.acquire(session.id, wait=limits.turn_wait)
            try:
                # A slot of the local model's queue is taken only once the session's lock
                # is held: a session's waiting turns never hold more than one slot, so
                # one session cannot crowd others out of the queue.
                self._reserve_queue_slot()
                try:
                    opened = await self._open(session, turn)
                except BaseException:
                    self._in_flight -= 1
                    raise
            except BaseException:
                await held.release()
                raise
        except BaseException:
            await self.coordination.leave(session.id, turn_id)
            raise
        live = LiveReply(session.id, opened.conversation_id, opened.reply_id)
        self.replies.add(live)
        live.task = asyncio.create_task(
            self._run(session, turn, opened, live, held, turn_id), name=f"turn-{opened.reply_id}"
        )
        return live

    def _reserve_queue_slot(self) -> None:
        # The local model lives in this process, so its queue is this process's: checked
        # and reserved with no await in between.
        limit = self.provider.max_pending
        if limit is not None and self._in_flight >= limit:
            waiting = self._in_flight - limit + 1
            raise ServiceBusy(
                "The model is busy with other conversations; try again shortly.",
                code="provider_busy",
                retry_after=max(1, math.ceil(self._mean_turn_seconds * waiting)),
            )
        self._in_flight += 1

    async def _open(self, session: SessionRow, turn: TurnInput) -> t.OpenedTurn:
        now = utcnow()
        ttl = self.limits.idle_ttl
        # Push the expiry out at most once a minute: most turns then write no session row.
        stale = (session.expires_at - now).total_seconds() < ttl - 60
        plain = not (turn.regenerate or turn.edit_last or turn.new_conversation)
        if self._autocommit is not None and plain and turn.conversation_id is not None:
            # PostgreSQL: the whole opening in one statement, one round trip.
            async with self._autocommit.connect() as db:
                return await t.open_turn_at_once(
                    db,
                    session.id,
                    text=turn.message,
                    conversation_id=turn.conversation_id,
                    history_limit=self.limits.history_messages,
                    touch_ttl=ttl if stale else None,
                    now=now,
                )
        async with self._engine.begin() as db:
            return await t.open_turn(
                db,
                session.id,
                text=None if turn.regenerate else turn.message,
                conversation_id=turn.conversation_id,
                new_conversation=turn.new_conversation,
                regenerate=turn.regenerate,
                edit_last=turn.edit_last,
                history_limit=self.limits.history_messages,
                touch_ttl=ttl if stale else None,
                now=now,
            )

    def _request_of(
        self, session: SessionRow, turn: TurnInput, opened: t.OpenedTurn
    ) -> TurnRequest:
        prompt = turn.system_prompt if turn.system_prompt is not None else self.limits.system_prompt
        context = [ChatMessage("system", prompt)] if prompt else []
        context += [
            ChatMessage("user" if m.role == "user" else "assistant", m.content)
            for m in opened.history
        ]
        return TurnRequest(
            session_name=session.session_name,
            messages=context,
            conversation_ref=opened.upstream_ref,
            client_parameters=dict(turn.client_parameters) if turn.client_parameters else None,
            user=turn.user,
        )

    async def _publish(self, live: LiveReply, frame: Frame) -> None:
        live.push(frame)
        if self.stream is not None:
            try:
                await self.stream.append(live.message_id, frame)
            except Exception:  # followers elsewhere fall back to the saved row
                log.exception("could not publish a reply frame to Redis")

    async def _run(
        self,
        session: SessionRow,
        turn: TurnInput,
        opened: t.OpenedTurn,
        live: LiveReply,
        held: HeldLock,
        turn_id: str,
    ) -> None:
        started = time.monotonic()
        outcome = _Outcome()
        provider = self.provider.name
        metrics.REPLIES_IN_PROGRESS.inc()
        saver = Deferred(
            self.limits.save_interval,
            lambda: self._save_periodically(live, outcome),
            name=f"save-{opened.reply_id}",
        )
        try:
            await self._publish(
                live,
                {
                    "type": "start",
                    "conversation_id": opened.conversation_id,
                    "message_id": opened.reply_id,
                },
            )
            request = self._request_of(session, turn, opened)
            try:
                await self._generate(request, live, outcome, started)
            finally:
                metrics.UPSTREAM_SECONDS.labels(provider).observe(time.monotonic() - started)
        except SessiongateError as exc:
            outcome.status, outcome.error = "error", exc
            # ``detail`` (what the operator should fix) reaches the log here: a streamed
            # or /v1 turn's failure never passes the HTTP error handler that logs it.
            log.warning(
                "turn failed: session=%s code=%s logid=%s detail=%s",
                session.id,
                exc.code,
                getattr(exc, "logid", None),
                exc.detail,
            )
        except asyncio.CancelledError:
            if live.stop_reason is None:  # the process is shutting down
                outcome.status = "interrupted"
                outcome.error = SessiongateError(
                    "The reply was interrupted; try again.", code="interrupted", status=503
                )
            else:
                outcome.status, outcome.finish_reason = "incomplete", "cancelled"
        except Exception:
            log.exception("turn failed unexpectedly: session=%s", session.id)
            outcome.status = "error"
            outcome.error = SessiongateError("The reply failed; try again.", code="internal_error")
        finally:
            with anyio.CancelScope(shield=True):
                # Told, not cancelled: a save in flight finishes its write first.
                outcome.ended.set()
                await saver.stop(grace=_SAVE_GRACE)
                final = await self._finish(session, opened, live, outcome)
                # Free the session before telling anyone the reply ended, so a client's
                # next turn, sent on the final frame, never finds it still busy.
                await held.release(leaving=turn_id)
                self._in_flight -= 1
                await self._publish(live, final)
                self.replies.remove(live.message_id)
                elapsed = time.monotonic() - started
                self._mean_turn_seconds = 0.8 * self._mean_turn_seconds + 0.2 * elapsed
                metrics.REPLIES_IN_PROGRESS.dec()
                metrics.TURNS.labels(provider, outcome.status).inc()
                metrics.TURN_SECONDS.labels(provider).observe(elapsed)

    async def _generate(
        self, request: TurnRequest, live: LiveReply, outcome: _Outcome, started: float
    ) -> None:
        cap = self.limits.max_reply_chars
        with Watchdog(
            idle=self.limits.idle_timeout, whole=self.limits.turn_timeout, error=_turn_timeout
        ) as watchdog:
            async with contextlib.aclosing(self.provider.stream_reply(request)) as events:
                async for event in events:
                    watchdog.poke()
                    if isinstance(event, TextDelta):
                        text = event.text[: cap - outcome.chars]
                        if text:
                            if not outcome.parts:
                                metrics.TTFT_SECONDS.labels(self.provider.name).observe(
                                    time.monotonic() - started
                                )
                            outcome.parts.append(text)
                            outcome.chars += len(text)
                            await self._publish(live, {"type": "message", "content": text})
                        if outcome.chars >= cap:
                            outcome.status, outcome.finish_reason = "incomplete", "length"
                            return
                    elif isinstance(event, Finish):
                        outcome.finish_reason = event.reason
                    elif isinstance(event, Usage):
                        outcome.usage = event
                    elif isinstance(event, ConversationBound):
                        outcome.upstream_ref = event.conversation_ref

    async def _save_periodically(self, live: LiveReply, outcome: _Outcome) -> None:
        """Save the growing text every ``save_interval`` seconds and read back the stop
        flag another process may have set; a reply no longer streaming (taken over by the
        recovery sweep) stops too."""
        saved = 0
        while not outcome.ended.is_set():  # else the turn is finishing
            # Started one interval into the turn (``Deferred``): save first, then wait.
            try:
                chars = outcome.chars
                async with self._one_statement() as db:
                    if chars != saved:
                        flag = await t.save_progress(
                            db, live.session_id, live.message_id, "".join(outcome.parts)
                        )
                    else:
                        flag = await t.stop_requested(db, live.session_id, live.message_id)
                saved = chars  # only once the write committed: a failed save is retried
            except Exception:
                log.exception("could not save a reply in progress")
            else:
                if outcome.ended.is_set():
                    return
                if flag is None or flag:
                    live.request_stop("stopped" if flag else "lost")
                    return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.save_interval):
                    await outcome.ended.wait()

    def _one_statement(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A connection for one write statement: autocommit on PostgreSQL, else a
        transaction."""
        if self._autocommit is not None:
            return self._autocommit.connect()
        return self._engine.begin()

    async def _finish(
        self, session: SessionRow, opened: t.OpenedTurn, live: LiveReply, outcome: _Outcome
    ) -> Frame:
        """Store the reply's end; returns the final frame to publish."""
        error = outcome.error
        # Binding the upstream conversation is a second statement: then a transaction.
        single = outcome.upstream_ref is None
        try:
            async with self._one_statement() if single else self._engine.begin() as db:
                await t.finish_reply(
                    db,
                    session.id,
                    opened.reply_id,
                    content="".join(outcome.parts),
                    status=outcome.status,
                    finish_reason=None if outcome.status == "error" else outcome.finish_reason,
                    error_code=error.code if error else None,
                    upstream_logid=error.logid if isinstance(error, UpstreamError) else None,
                    prompt_tokens=outcome.usage.prompt_tokens,
                    completion_tokens=outcome.usage.completion_tokens,
                    upstream_ref=outcome.upstream_ref,
                    conversation_id=opened.conversation_id,
                )
        except Exception:
            # The row stays ``streaming``; the recovery sweep marks it interrupted.
            log.exception("could not store a finished reply")
            error = error or SessiongateError("The reply could not be stored.", code="store_error")
        ids = {"conversation_id": opened.conversation_id, "message_id": opened.reply_id}
        live.error = error
        live.text = "".join(outcome.parts)
        live.finish_reason = outcome.finish_reason
        live.usage = outcome.usage
        if error is not None:
            frame: Frame = {"type": "error", "code": error.code, "message": error.message, **ids}
        else:
            frame = {"type": "done", "content": "", **ids, "finish_reason": outcome.finish_reason}
        return frame

    async def stop(self, session_id: str, conversation_id: str) -> bool:
        """Stop the conversation's reply in progress, on whichever process runs it.

        Returns False when none is in progress. Raises ``NotFound`` for a conversation
        that is not the session's. The reply is kept ``incomplete``.
        """
        async with self._sessionmaker() as db, db.begin():
            row = await t.streaming_reply(db, session_id, conversation_id)
            if row is None:
                return False
            live = self.replies.get(session_id, row.id)
            if live is not None:
                return live.request_stop("stopped")
            return await t.request_stop(db, session_id, row.id)

    async def recover_interrupted(self) -> int:
        """Mark ``interrupted`` every streaming reply whose turn no process runs (its
        process died: its session lock lapsed). Returns how many were marked."""
        async with self._sessionmaker() as db:
            candidates = await t.streaming_replies(db)
        marked = 0
        for message_id, session_id in candidates:
            if self.replies.get(session_id, message_id) is not None:
                continue
            if await self.coordination.is_locked(session_id):
                continue
            async with self._sessionmaker() as db, db.begin():
                marked += await t.mark_interrupted(db, session_id, message_id)
        if marked:
            log.warning("marked %d replies interrupted (their process stopped)", marked)
        return marked

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Let replies in progress finish for ``grace`` seconds, then interrupt them."""
        tasks = [r.task for r in self.replies.all() if r.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _turn_timeout(which: str) -> UpstreamTimeout:
    return UpstreamTimeout(f"The model did not answer in time ({which}).", code="upstream_timeout")


async def run_recovery_periodically(chat: ChatService, *, interval: float) -> None:
    """Background task: ``recover_interrupted`` every ``interval`` seconds."""
    while True:
        try:
            await chat.recover_interrupted()
        except Exception:  # keep the task alive; the next round retries
            log.exception("recovery sweep failed")
        await asyncio.sleep(interval)


__all__ = ["ChatService", "TurnInput", "TurnLimits", "run_recovery_periodically"]
