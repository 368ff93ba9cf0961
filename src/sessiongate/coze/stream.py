"""Coze chat streams: SSE framing in, sessiongate ``ProviderEvent``s out.

Coze's bot chat (``/v3/chat``) and workflow chat (``/v1/workflows/chat``) answer with the
same server-sent events (``COZE_PROTOCOL.md``, "SSE framing"): each event is one
``event:`` line and one ``data:`` line holding JSON. ``ReplyMapper`` is the single place
that decides what an event means for the turn, whichever client read it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..errors import UpstreamError
from ..logs import content_for_log
from ..providers.base import ProviderEvent, TextDelta, Usage
from .errors import chat_error, parse_code, with_logid

log = logging.getLogger(__name__)

# Coze chat event names (Coze chat v3 / workflow chat "streaming response" docs).
CHAT_CREATED = "conversation.chat.created"
CHAT_IN_PROGRESS = "conversation.chat.in_progress"
MESSAGE_DELTA = "conversation.message.delta"
MESSAGE_COMPLETED = "conversation.message.completed"
CHAT_COMPLETED = "conversation.chat.completed"
CHAT_FAILED = "conversation.chat.failed"
CHAT_REQUIRES_ACTION = "conversation.chat.requires_action"
AUDIO_DELTA = "conversation.audio.delta"
ERROR = "error"
DONE = "done"

_QUIET = frozenset({CHAT_CREATED, CHAT_IN_PROGRESS, AUDIO_DELTA})


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its ``event`` name and raw ``data`` text."""

    event: str
    data: str


#: Longest SSE line accepted (bytes). A Coze event is one ``data:`` line; the longest
#: real one repeats a whole reply (``conversation.message.completed``).
MAX_LINE_BYTES = 4 * 1024 * 1024


class SseParser:
    """Server-sent events from a byte stream, parsed as the chunks arrive.

    ``feed(chunk)`` returns the events the chunk completed; ``close()`` those left when
    the stream ends. Lines end with LF or CRLF and are UTF-8 (undecodable bytes are
    replaced). Coze sends exactly one ``event:`` and one ``data:`` line per event,
    usually followed by a blank line; an event is emitted at the blank line, or when a
    new ``event:`` line starts before one (cozepy accepts that framing too). Several
    ``data:`` lines are joined with newlines as the SSE standard says; ``id:``,
    ``retry:`` and comments are ignored. An event with no ``event:`` line is named
    ``message`` (the SSE default).

    A plain synchronous parser, not a chain of async generators: on a streamed turn it
    runs for every chunk, and each generator layer costs a task switch's worth of CPU.
    Raises ``UpstreamError`` when a line grows past ``max_line`` bytes (an upstream
    that never ends a line cannot fill the memory).
    """

    def __init__(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._partial: list[bytes] = []  # the unfinished line's pieces (no LF in them)
        self._partial_size = 0
        self._name: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        start = 0
        # Only the new chunk is searched: the unfinished line holds no LF, so a long
        # line costs linear time, not a rescan per chunk.
        while (end := chunk.find(b"\n", start)) != -1:
            line = chunk[start:end]
            if self._partial:
                line = b"".join([*self._partial, line])
                self._partial, self._partial_size = [], 0
            self._line(line, events)
            start = end + 1
        if start < len(chunk):
            self._partial.append(chunk[start:])
            self._partial_size += len(chunk) - start
            if self._partial_size > self._max_line:
                raise UpstreamError(
                    "The upstream sent a malformed stream (a line too long).",
                    detail=f"an SSE line grew past {self._max_line} bytes without an end",
                )
        return events

    def close(self) -> list[SseEvent]:
        events: list[SseEvent] = []
        if self._partial:
            self._line(b"".join(self._partial), events)
            self._partial, self._partial_size = [], 0
        if self._data:
            events.append(SseEvent(self._name or "message", "\n".join(self._data)))
            self._name, self._data = None, []
        return events

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line:
            if self._data:
                events.append(SseEvent(self._name or "message", "\n".join(self._data)))
            self._name, self._data = None, []
            return
        if line.startswith(":"):
            return
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            if self._data:
                events.append(SseEvent(self._name or "message", "\n".join(self._data)))
                self._data = []
            self._name = value.strip()
        elif key == "data":
            self._data.append(value)


def decode_data(text: str) -> Any:
    """The JSON value of an event's ``data``, or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(slots=True)
class ReplyMapper:
    """Maps one chat's Coze events to ``ProviderEvent``s and remembers how it ended.

    ``map`` returns a ``TextDelta`` for an answer delta, a ``Usage`` for
    ``conversation.chat.completed`` (and sets ``completed``), None for everything that
    is not reply text (follow-up suggestions, verbose, tool calls, unknown events). It
    raises ``UpstreamError`` subclasses (see ``errors.chat_error``) for
    ``conversation.chat.failed``, ``error`` and ``requires_action``. ``logid``: the log id
    of the HTTP response carrying the stream, put on every error.
    """

    session_name: str
    logid: str | None = None
    completed: bool = False
    done: bool = False
    _streamed_ids: set[str] = field(default_factory=set)

    def map(self, event: str, data: Any) -> ProviderEvent | None:
        if event == MESSAGE_DELTA:
            return self._delta(data)
        if event == MESSAGE_COMPLETED:
            return self._completed_message(data)
        if event == CHAT_COMPLETED:
            self.completed = True
            usage = data.get("usage") if isinstance(data, dict) else None
            if not isinstance(usage, dict):
                return Usage()
            return Usage(
                prompt_tokens=_int_or_none(usage.get("input_count")),
                completion_tokens=_int_or_none(usage.get("output_count")),
            )
        if event == CHAT_FAILED:
            # A Chat object with last_error {code, msg}; the workflow docs also show a
            # bare {"code": "720702204", "msg": ...} here.
            info = data.get("last_error") if isinstance(data, dict) else None
            if not isinstance(info, dict):
                info = data if isinstance(data, dict) else {}
            raise self._failure("conversation.chat.failed", info)
        if event == ERROR:
            raise self._failure("error event", data if isinstance(data, dict) else {})
        if event == CHAT_REQUIRES_ACTION:
            raise UpstreamError(
                with_logid(
                    "The Coze bot asked the caller to run a tool (requires_action); "
                    "sessiongate does not run client-side tools. Remove the plugin from "
                    "the bot or make it server-side.",
                    self.logid,
                ),
                logid=self.logid,
            )
        if event == DONE:
            self.done = True
            return None
        if event not in _QUIET:
            log.debug("Coze event %r skipped (logid %s)", event, self.logid)
        return None

    def _delta(self, data: Any) -> TextDelta | None:
        if not _is_answer(data):
            return None
        message_id = data.get("id")
        if isinstance(message_id, str):
            self._streamed_ids.add(message_id)
        content = data.get("content")
        return TextDelta(content) if isinstance(content, str) and content else None

    def _completed_message(self, data: Any) -> TextDelta | None:
        # Answers normally arrive as deltas and the completed message repeats them. A
        # workflow output node may emit an answer only as a completed message; show it
        # then, and only then, so text is never doubled.
        if not _is_answer(data) or data.get("id") in self._streamed_ids:
            return None
        if not isinstance(data.get("id"), str) and self._streamed_ids:
            return None
        content = data.get("content")
        return TextDelta(content) if isinstance(content, str) and content else None

    def _failure(self, what: str, info: dict[str, Any]) -> UpstreamError:
        code = parse_code(info.get("code"))
        # A run's failure text may quote the conversation (a workflow node's input).
        log.warning(
            "Coze %s for session_name=%s: code=%s msg=%.200s logid=%s",
            what,
            self.session_name,
            info.get("code"),
            content_for_log(str(info.get("msg"))),
            self.logid,
        )
        return chat_error(code, logid=self.logid)

    def incomplete(self) -> UpstreamError:
        """The error for a stream that ended before ``conversation.chat.completed``."""
        return UpstreamError(
            with_logid(
                "Coze's reply stream ended before the chat completed; the reply is incomplete.",
                self.logid,
            ),
            logid=self.logid,
        )


def _is_answer(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("type", "answer") == "answer"
        and data.get("role", "assistant") == "assistant"
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["MAX_LINE_BYTES", "ReplyMapper", "SseEvent", "SseParser", "decode_data"]
