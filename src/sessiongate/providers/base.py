"""The provider interface: one turn in, an async stream of events out.

A provider receives this session's context only (the chat service built it from this
session's rows) and yields ``TextDelta`` events as the reply grows, then at most one
``Usage`` and at most one ``Finish`` (why the upstream stopped). It raises
``sessiongate.errors.UpstreamError`` (or a subclass) on failure, never a foreign
exception. Closing the iterator early (client disconnect) must stop
generation and release every upstream stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import ContextOverflow

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of context: ``role`` and its text ``content``."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What a provider needs for one turn.

    ``messages`` is the system prompt (if any) then this conversation's history, oldest
    first, ending with the new user message. ``session_name`` is the session's opaque
    upstream identity. ``conversation_ref`` is the upstream conversation id bound to
    this gateway conversation, if the provider keeps one. ``user``: the end user's name
    as the tenant sent it (None for anonymous and IdP sessions). ``client_parameters``:
    upstream inputs the tenant's request supplied, already checked against what the
    operator allows (Coze workflow ``parameters`` or bot ``custom_variables``).
    """

    session_name: str
    messages: Sequence[ChatMessage]
    conversation_ref: str | None = None
    # Upstream parameters a tenant supplied with its request (the provider decides which
    # it accepts) and the tenant's end-user name, if any.
    client_parameters: Mapping[str, Any] | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of the turn, where the provider knows them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ConversationBound:
    """The provider created an upstream conversation to reuse for later turns."""

    conversation_ref: str


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the upstream stopped: ``length`` (the reply hit the token limit) or ``stop``
    (it ended on its own). Other upstream reasons are passed as they came."""

    reason: str


ProviderEvent = TextDelta | Usage | ConversationBound | Finish


@runtime_checkable
class AcceptsClientParameters(Protocol):
    """A provider that takes per-request upstream inputs from tenants.

    ``client_parameters_field``: the request body field that carries them
    (``parameters`` for a Coze workflow, ``custom_variables`` for a Coze bot).
    """

    @property
    def client_parameters_field(self) -> str: ...

    def check_client_parameters(self, values: Any) -> dict[str, Any]:
        """Return ``values`` if the operator allows every key; raises ``BadRequest``."""
        ...


@runtime_checkable
class Provider(Protocol):
    """An upstream that produces the assistant's reply.

    ``max_pending``: how many turns may be admitted at once (running plus waiting);
    None for no limit. Beyond it the gateway answers 503 with Retry-After.
    """

    @property
    def name(self) -> str:
        """The provider's name as configured (``local``, ``openai``, ``coze-bot``, ...)."""
        ...

    @property
    def max_pending(self) -> int | None: ...

    def stream_reply(self, request: TurnRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream the reply to ``request``; raises ``UpstreamError`` subclasses."""
        ...

    async def aclose(self) -> None:
        """Release every resource (HTTP clients, the model)."""
        ...


@runtime_checkable
class SessionCredentials(Protocol):
    """An optional capability: the provider keeps an upstream credential per session
    (Coze OAuth JWT: one access token per ``session_name``)."""

    async def issue_session_token(self, session_name: str) -> tuple[str, int]:
        """The session's upstream access token and its expiry (unix seconds)."""
        ...

    async def forget_session(self, session_name: str) -> None:
        """Drop the session's cached credential, on every replica sharing the cache."""
        ...


@dataclass(slots=True)
class ContextWindow:
    """Trims a context to a token budget, dropping the oldest history first.

    ``budget`` is in tokens; ``count_tokens`` measures one message's content. The system
    prompt (a leading ``system`` message) and the newest message are always kept.
    Raises ``ContextOverflow`` when those two alone exceed the budget.
    """

    budget: int
    count_tokens: Callable[[str], int]
    per_message_overhead: int = 4

    def _cost(self, message: ChatMessage) -> int:
        return self.count_tokens(message.content) + self.per_message_overhead

    def trim(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """Return the longest suffix of the history that fits, with the system prompt."""
        if not messages:
            return []
        head = [messages[0]] if messages[0].role == "system" else []
        body = list(messages[len(head) :])
        if not body:
            return head
        used = sum(self._cost(m) for m in head) + self._cost(body[-1])
        if used > self.budget:
            raise ContextOverflow(
                "This message is too long for the model's context window; shorten it."
            )
        kept = [body[-1]]
        for message in reversed(body[:-1]):
            cost = self._cost(message)
            if used + cost > self.budget:
                break
            used += cost
            kept.append(message)
        kept.reverse()
        # A context must not open on an orphaned assistant reply.
        while len(kept) > 1 and kept[0].role == "assistant":
            kept.pop(0)
        return head + kept


__all__ = [
    "AcceptsClientParameters",
    "ChatMessage",
    "ContextWindow",
    "ConversationBound",
    "Finish",
    "Provider",
    "ProviderEvent",
    "Role",
    "SessionCredentials",
    "TextDelta",
    "TurnRequest",
    "Usage",
]
