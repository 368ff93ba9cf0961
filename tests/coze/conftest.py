"""Fixtures for the Coze tests: a key pair, a clock the test moves, the fake Coze on
loopback, and settings, token managers and providers pointed at it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sessiongate.coze.auth import CozeTokenManager
from sessiongate.coze.keys import generate_keypair
from sessiongate.coze.provider import CozeProvider, build_coze_provider
from sessiongate.coze.settings import CozeSettings
from sessiongate.providers.base import (
    ChatMessage,
    ConversationBound,
    ProviderEvent,
    TextDelta,
    TurnRequest,
    Usage,
)

from ..fakes.coze_server import FakeClock, FakeCoze, serve_fake_coze

CLIENT_ID = "1170000000001"
PUBLIC_KEY_ID = "kid-test-0001"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    private_pem: str
    public_pem: bytes


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    private_path, public_path = generate_keypair(tmp_path_factory.mktemp("coze-keys"))
    return KeyPair(private_path, private_path.read_text(), public_path.read_bytes())


@pytest.fixture(autouse=True)
def _clean_coze_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings come from each test's own values, never from the developer's shell.
    for name in list(os.environ):
        if name.startswith(("COZE_", "SESSIONGATE_COZE_")):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def _fake_coze_server(key_pair: KeyPair) -> Iterator[FakeCoze]:
    # One uvicorn for the whole run; each test gets it reset to a blank state.
    fake = FakeCoze(
        clock=FakeClock(), public_keys={PUBLIC_KEY_ID: key_pair.public_pem}, client_id=CLIENT_ID
    )
    with serve_fake_coze(fake):
        yield fake


@pytest.fixture
def fake_coze(_fake_coze_server: FakeCoze, clock: FakeClock) -> FakeCoze:
    """The fake Coze on loopback, blank, on this test's ``clock``."""
    _fake_coze_server.reset(clock=clock)
    return _fake_coze_server


@pytest.fixture
def make_settings(fake_coze: FakeCoze, key_pair: KeyPair) -> Callable[..., CozeSettings]:
    """``make_settings(**overrides)``: OAuth JWT settings for the fake (attribute names)."""

    def make(**overrides: Any) -> CozeSettings:
        values: dict[str, Any] = {
            "api_base": fake_coze.url,
            "oauth_client_id": CLIENT_ID,
            "oauth_public_key_id": PUBLIC_KEY_ID,
            "oauth_private_key_file": key_pair.private_path,
            "bot_id": fake_coze.bot_id,
            "workflow_id": fake_coze.workflow_id,
        }
        values.update(overrides)
        return CozeSettings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
async def manager(
    make_settings: Callable[..., CozeSettings], clock: FakeClock
) -> AsyncIterator[CozeTokenManager]:
    tokens = CozeTokenManager.from_settings(
        make_settings(), clock=clock, backoff=0.001, connect_timeout=2, timeout=2
    )
    yield tokens
    await tokens.aclose()


@pytest.fixture
async def make_provider(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> AsyncIterator[Callable[..., CozeProvider]]:
    """``make_provider(name, *, idle_timeout=5, **settings)``; closed after the test.

    ``coze-workflow`` defaults to a workflow in an app (``COZE_APP_ID``, no bot id).
    """
    made: list[CozeProvider] = []

    def make(
        name: str = "coze-bot", *, idle_timeout: float = 5.0, **overrides: Any
    ) -> CozeProvider:
        if name == "coze-workflow":
            overrides = {"bot_id": None, "app_id": fake_coze.app_id, **overrides}
        provider = build_coze_provider(
            name,  # type: ignore[arg-type]
            make_settings(**overrides),
            connect_timeout=2.0,
            idle_timeout=idle_timeout,
            clock=clock,
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@dataclass
class Turn:
    """What one turn yielded, in order."""

    events: list[ProviderEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def usage(self) -> Usage | None:
        return next((e for e in self.events if isinstance(e, Usage)), None)

    @property
    def bound(self) -> str | None:
        return next(
            (e.conversation_ref for e in self.events if isinstance(e, ConversationBound)), None
        )


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


async def run_turn(
    provider: CozeProvider,
    session_name: str,
    *texts: str | ChatMessage,
    conversation_ref: str | None = None,
) -> Turn:
    """Run one turn; plain strings are user messages. Raises what the provider raises."""
    messages = [t if isinstance(t, ChatMessage) else user(t) for t in texts]
    turn = Turn()
    request = TurnRequest(
        session_name=session_name, messages=messages, conversation_ref=conversation_ref
    )
    async for event in provider.stream_reply(request):
        turn.events.append(event)
    return turn
