"""The coze-bot and coze-workflow providers against the fake Coze: session_name in the
token and the body, history modes, stream and error mapping, retries, stream closing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import pytest

from sessiongate.coze.errors import CozeAuthError
from sessiongate.coze.provider import CozeProvider
from sessiongate.errors import BadRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from sessiongate.providers.base import (
    ChatMessage,
    ConversationBound,
    Finish,
    Provider,
    TextDelta,
    TurnRequest,
    Usage,
)

from ..fakes.coze_server import ChatRecord, FakeCoze
from .conftest import KeyPair, run_turn, user

MakeProvider = Callable[..., CozeProvider]
PROVIDERS = ["coze-bot", "coze-workflow"]
MODES = ["upstream", "gateway"]


def _assert_same_session_everywhere(record: ChatRecord, session_name: str) -> None:
    assert record.token_session == session_name
    assert record.body_session == session_name
    if record.path == "/v1/workflows/chat":
        assert record.ext_user_id == session_name


async def _closed(record: ChatRecord) -> str:
    """The record's outcome once the fake has seen the request end (connection closed)."""
    assert await asyncio.to_thread(record.closed.wait, 5), "the fake never saw the stream end"
    return record.outcome


# -- identity: one session_name in the token and in the body ---------------------------


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("history", MODES)
async def test_every_chat_carries_the_session_name_of_its_token_in_the_body(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str, history: str
) -> None:
    provider = make_provider(name, history=history)
    refs: dict[str, str | None] = {"sess-a": None, "sess-b": None}

    for _ in range(2):
        for session_name in refs:
            turn = await run_turn(
                provider, session_name, "hello", conversation_ref=refs[session_name]
            )
            refs[session_name] = turn.bound or refs[session_name]

    assert len(fake_coze.chats) == 4
    for record in fake_coze.chats:
        assert record.token_session in refs
        _assert_same_session_everywhere(record, record.token_session or "")
        assert record.outcome == "completed"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_s_sessions_with_m_concurrent_turns_cause_exactly_s_token_exchanges(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="gateway")
    sessions = [f"sess-{i}" for i in range(5)]

    turns = await asyncio.gather(
        *(run_turn(provider, s, f"hi from {s}") for s in sessions for _ in range(4))
    )

    assert fake_coze.exchanges == dict.fromkeys(sessions, 1)
    assert all(t.text.startswith("You said: hi from sess-") for t in turns)
    for record in fake_coze.chats:
        _assert_same_session_everywhere(record, record.token_session or "")


# -- history modes --------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_upstream_mode_creates_one_coze_conversation_with_the_sessions_token_and_reuses_it(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="upstream")

    first = await run_turn(provider, "sess-a", "my name is Alice")
    assert isinstance(first.events[0], ConversationBound)
    ref = first.bound
    assert ref is not None
    history = [ChatMessage("user", "my name is Alice"), ChatMessage("assistant", first.text)]
    second = await run_turn(
        provider, "sess-a", *history, ChatMessage("user", "what is my name?"), conversation_ref=ref
    )

    assert second.bound is None
    assert "Alice" in second.text
    assert [c.id for c in fake_coze.created_conversations] == [ref]
    assert fake_coze.conversations[ref].owner == "sess-a"
    assert [r.conversation_id for r in fake_coze.chats] == [ref, ref]
    # Only the newest message is sent: Coze holds the rest of the conversation.
    assert [m["content"] for m in fake_coze.chats[1].additional_messages] == ["what is my name?"]
    if name == "coze-bot":
        assert fake_coze.chats[1].body["auto_save_history"] is True


@pytest.mark.parametrize("name", PROVIDERS)
async def test_gateway_mode_sends_the_whole_history_and_never_a_conversation_id(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="gateway")
    messages = [
        ChatMessage("system", "You are helpful."),
        ChatMessage("user", "我叫小明"),
        ChatMessage("assistant", "你好，小明。"),
        ChatMessage("user", "我叫什么?"),
    ]

    turn = await run_turn(provider, "sess-a", *messages, conversation_ref=None)
    again = await run_turn(provider, "sess-a", "hello", conversation_ref="7400000001")

    assert "小明" in turn.text
    assert turn.bound is None and again.bound is None
    assert fake_coze.created_conversations == []
    first, second = fake_coze.chats
    assert first.conversation_id is None and second.conversation_id is None
    assert "conversation_id" not in first.body
    sent = [(m["role"], m["type"], m["content"]) for m in first.additional_messages]
    assert sent == [
        ("user", "question", "我叫小明"),
        ("assistant", "answer", "你好，小明。"),
        ("user", "question", "我叫什么?"),
    ]
    if name == "coze-bot":
        assert first.body["auto_save_history"] is False


async def test_default_history_is_upstream_for_bots_and_gateway_for_workflows(
    make_provider: MakeProvider,
) -> None:
    assert make_provider("coze-bot").history_mode == "upstream"
    assert make_provider("coze-workflow").history_mode == "gateway"


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("history", MODES)
async def test_one_sessions_coze_conversation_is_never_used_with_another_sessions_token(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str, history: str
) -> None:
    provider = make_provider(name, history=history)
    refs: dict[str, str | None] = {f"sess-{i}": None for i in range(3)}

    for round_ in range(3):
        results = await asyncio.gather(
            *(run_turn(provider, s, f"round {round_}", conversation_ref=refs[s]) for s in refs)
        )
        for session_name, turn in zip(refs, results, strict=True):
            refs[session_name] = turn.bound or refs[session_name]

    for record in fake_coze.chats:
        assert record.refused_code is None
        if record.conversation_id is not None:
            owner = fake_coze.conversations[record.conversation_id].owner
            assert owner == record.token_session
    if history == "upstream":
        assert len(set(refs.values())) == 3
        assert len(fake_coze.created_conversations) == 3


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_foreign_conversation_ref_is_refused_by_coze_and_reported(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="upstream")
    ref = (await run_turn(provider, "sess-a", "hello")).bound

    with pytest.raises(UpstreamError) as caught:
        await run_turn(provider, "sess-b", "hello", conversation_ref=ref)

    assert fake_coze.chats[-1].refused_code == 4101
    assert caught.value.status == 502 and caught.value.upstream_code == 4101


# -- isolation as a user would notice it ---------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("history", MODES)
async def test_two_sessions_telling_their_names_do_not_see_each_others_name(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str, history: str
) -> None:
    provider = make_provider(name, history=history)
    alice = await run_turn(provider, "sess-alice", "my name is Alice")
    bob = await run_turn(provider, "sess-bob", "我叫Bob")

    # A new conversation each: only Coze's per-session memory could answer.
    alice_asks = await run_turn(provider, "sess-alice", "what is my name?")
    bob_asks = await run_turn(provider, "sess-bob", "我叫什么?")

    assert alice.text and bob.text
    assert "Alice" in alice_asks.text and "Bob" not in alice_asks.text
    assert "Bob" in bob_asks.text and "Alice" not in bob_asks.text


async def test_the_fakes_shared_memory_switch_makes_a_leak_visible(
    make_provider: MakeProvider, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.shared_memory = True
    provider = make_provider("coze-bot")
    await run_turn(provider, "sess-alice", "my name is Alice")
    await run_turn(provider, "sess-bob", "my name is Bob")

    assert "Bob" in (await run_turn(provider, "sess-alice", "what is my name?")).text


# -- stream mapping -------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_answer_deltas_become_text_and_completion_gives_usage(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    fake_coze.switches.unknown_event = True  # skipped, not an error
    provider = make_provider(name, history="gateway")
    assert isinstance(provider, Provider)

    turn = await run_turn(provider, "sess-a", "hello there, Coze")

    deltas = [e for e in turn.events if isinstance(e, TextDelta)]
    assert len(deltas) > 1  # streamed, not one block
    # follow_up ("Anything else?") and verbose messages are not reply text.
    assert turn.text == "You said: hello there, Coze"
    assert turn.events[-2] == turn.usage == Usage(prompt_tokens=12, completion_tokens=len(deltas))
    assert turn.events[-1] == Finish("stop")
    # The body was read to its end (trailing `done` included), not dropped.
    assert await _closed(fake_coze.chats[0]) == "completed"


FAILURES = [
    # switch, status, code, message fragment
    ("chat_5xx", 502, "upstream_error", "HTTP 502"),
    ("busy", 409, "conversation_busy", "still being generated"),
    ("rate_limited", 429, "rate_limited", "rate-limiting"),
    ("chat_failed", 502, "upstream_error", "code 5000"),
    # The workflow docs' bare {"code": "720702204"} failure (cozepy cannot parse it for
    # bot chat, so the bot provider reports an unreadable reply instead of the code).
    ("chat_failed_bare", 502, "upstream_error", "code 720702204|could not read"),
    ("error_event", 502, "upstream_error", "code 5000"),
    ("cut_stream", 502, "upstream_error", "broke mid-reply"),
    ("end_early", 502, "upstream_error", "ended before the chat completed"),
]


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize(("switch", "status", "code", "fragment"), FAILURES)
async def test_each_upstream_failure_is_a_clear_error_and_the_next_turn_works(
    make_provider: MakeProvider,
    fake_coze: FakeCoze,
    name: str,
    switch: str,
    status: int,
    code: str,
    fragment: str,
) -> None:
    provider = make_provider(name, history="gateway")
    setattr(fake_coze.switches, switch, 1)

    with pytest.raises(UpstreamError) as caught:
        await run_turn(provider, "sess-a", "hello")

    error = caught.value
    assert (error.status, error.code) == (status, code)
    assert any(part in error.message for part in fragment.split("|"))
    assert error.logid and error.logid in error.message
    assert "<html>" not in error.message and "internal error" not in error.message
    if switch == "rate_limited":
        assert error.retry_after == 7 and error.headers() == {"Retry-After": "7"}
    assert await _closed(fake_coze.chats[-1]) != "open"

    assert (await run_turn(provider, "sess-a", "hello again")).text == "You said: hello again"


async def test_cozepys_bare_exception_for_an_error_event_becomes_a_sessiongate_error(
    make_provider: MakeProvider, fake_coze: FakeCoze
) -> None:
    # cozepy raises `Exception("error event: {...}")`; its code must still be honoured.
    fake_coze.switches.error_event = 1
    fake_coze.switches.error_event_code = 4016
    provider = make_provider("coze-bot", history="gateway")

    with pytest.raises(UpstreamError) as caught:
        await run_turn(provider, "sess-a", "hello")

    assert type(caught.value) is UpstreamError
    assert (caught.value.status, caught.value.code) == (409, "conversation_busy")
    assert caught.value.upstream_code == 4016


# -- "token invalid" -----------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_token_invalid_refreshes_the_sessions_token_once_and_retries_once(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="upstream")
    ref = (await run_turn(provider, "sess-a", "hello")).bound
    fake_coze.expire_all_tokens()  # Coze now answers 4100 to the cached token

    turn = await run_turn(provider, "sess-a", "again", conversation_ref=ref)

    assert turn.text == "You said: again"
    assert fake_coze.exchanges["sess-a"] == 2
    refused, retried = fake_coze.chats[-2:]
    assert refused.refused_code == 4100 and retried.outcome == "completed"
    _assert_same_session_everywhere(retried, "sess-a")
    assert retried.conversation_id == ref  # the conversation belongs to the session


@pytest.mark.parametrize("name", PROVIDERS)
async def test_token_invalid_after_the_retry_is_an_auth_error_without_a_loop(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    provider = make_provider(name, history="gateway")
    fake_coze.switches.token_invalid = 5

    with pytest.raises(CozeAuthError) as caught:
        await run_turn(provider, "sess-a", "hello")

    assert fake_coze.exchanges["sess-a"] == 2
    assert len(fake_coze.chats) == 2
    assert caught.value.logid and caught.value.upstream_code == 4100


async def test_token_invalid_as_an_error_event_before_any_text_is_retried(
    make_provider: MakeProvider, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.error_event = 1
    fake_coze.switches.error_event_code = 4100
    provider = make_provider("coze-bot", history="gateway")

    assert (await run_turn(provider, "sess-a", "hello")).text == "You said: hello"
    assert fake_coze.exchanges["sess-a"] == 2


async def test_token_invalid_in_upstream_mode_creating_the_conversation_is_retried(
    make_provider: MakeProvider, fake_coze: FakeCoze
) -> None:
    provider = make_provider("coze-bot", history="upstream")
    fake_coze.switches.token_invalid = 1  # hits /v1/conversation/create

    turn = await run_turn(provider, "sess-a", "hello")

    assert turn.text == "You said: hello" and turn.bound is not None
    assert len(fake_coze.created_conversations) == 1
    assert fake_coze.exchanges["sess-a"] == 2


# -- closing streams and timeouts ------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_upstream_stream_is_closed_when_the_consumer_stops_early(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    fake_coze.switches.delta_delay = 0.5  # the fake is mid-reply when we leave
    provider = make_provider(name, history="gateway")
    request = TurnRequest("sess-a", [ChatMessage("user", "a long question " * 5)])

    async with contextlib.aclosing(provider.stream_reply(request)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break

    assert await _closed(fake_coze.chats[-1]) == "disconnected"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_upstream_stream_is_closed_when_the_callers_turn_deadline_cancels_it(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    fake_coze.switches.delta_delay = 0.5
    provider = make_provider(name, history="gateway")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run_turn(provider, "sess-a", "a long question " * 5), 0.2)

    assert await _closed(fake_coze.chats[-1]) == "disconnected"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_silence_between_chunks_longer_than_idle_timeout_is_an_upstream_timeout(
    make_provider: MakeProvider, fake_coze: FakeCoze, name: str
) -> None:
    fake_coze.switches.delta_delay = 2.0
    provider = make_provider(name, history="gateway", idle_timeout=0.2)

    with pytest.raises(UpstreamTimeout) as caught:
        await run_turn(provider, "sess-a", "a long question " * 3)

    assert caught.value.status == 504 and caught.value.logid
    assert await _closed(fake_coze.chats[-1]) == "disconnected"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_unreachable_coze_is_upstream_unavailable(
    make_provider: MakeProvider, name: str
) -> None:
    provider = make_provider(
        name, auth_mode="PAT", api_token="pat-x", api_base="http://127.0.0.1:9"
    )

    with pytest.raises(UpstreamUnavailable):
        await run_turn(provider, "sess-a", "hello")


# -- PAT mode and secrets ------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_pat_mode_warns_forces_gateway_history_and_still_names_the_session(
    make_provider: MakeProvider,
    fake_coze: FakeCoze,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_coze.add_personal_access_token("pat-shared-by-everyone")
    caplog.set_level(logging.WARNING)

    provider = make_provider(
        name, auth_mode="PAT", api_token="pat-shared-by-everyone", history="upstream"
    )
    turn = await run_turn(provider, "sess-a", "hello")

    assert "cannot isolate users" in caplog.text
    assert provider.history_mode == "gateway" and provider.token_manager is None
    assert turn.text == "You said: hello" and turn.bound is None
    assert fake_coze.exchanges == {} and fake_coze.created_conversations == []
    record = fake_coze.chats[0]
    assert record.token_session is None and record.body_session == "sess-a"
    assert "pat-shared-by-everyone" not in caplog.text


async def test_pat_rejected_as_invalid_names_coze_api_token(
    make_provider: MakeProvider, fake_coze: FakeCoze
) -> None:
    provider = make_provider("coze-bot", auth_mode="PAT", api_token="pat-revoked")

    with pytest.raises(CozeAuthError) as caught:
        await run_turn(provider, "sess-a", "hello")

    # The operator's words (the setting to fix) go to the log, not to the end user.
    assert "COZE_API_TOKEN" in (caught.value.detail or "")
    assert "COZE_" not in caught.value.message
    assert len(fake_coze.chats) == 1  # no pointless retry with the same token


@pytest.mark.parametrize("name", PROVIDERS)
async def test_tokens_and_private_key_never_reach_logs_or_errors(
    make_provider: MakeProvider,
    fake_coze: FakeCoze,
    key_pair: KeyPair,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_provider(name, history="upstream")
    messages: list[str] = []
    ref = (await run_turn(provider, "sess-a", "hello")).bound
    for switch in ("chat_5xx", "error_event", "chat_failed", "cut_stream", "rate_limited"):
        setattr(fake_coze.switches, switch, 1)
        with pytest.raises(UpstreamError) as caught:
            await run_turn(provider, "sess-a", "hello", conversation_ref=ref)
        messages.append(str(caught.value))
    fake_coze.expire_all_tokens()
    await run_turn(provider, "sess-a", "hello", conversation_ref=ref)

    tokens = list(fake_coze.tokens)
    assert len(tokens) == 2
    key_lines = key_pair.private_pem.strip().splitlines()[1:-1]
    for text in [caplog.text, *messages, repr(provider), repr(provider.token_manager)]:
        assert not any(token in text for token in tokens)
        assert not any(line in text for line in key_lines)


# --- inputs: workflow parameters and bot custom_variables --------------------------------


async def test_workflow_gets_configured_parameters_filled_in_for_each_turn(
    make_provider: Callable[..., CozeProvider], fake_coze: FakeCoze
) -> None:
    provider = make_provider(
        "coze-workflow",
        workflow_parameters={
            "USER_INPUT": "{message}",
            "SESSION": "{session_name}",
            "CUSTOMER": "user={user}",
            "TIER": 3,
            "BRACES": "{{literal}}",
        },
    )
    request = TurnRequest(
        session_name="sn-alice", messages=[user("where is order 77?")], user="alice@acme"
    )
    events = [event async for event in provider.stream_reply(request)]
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert fake_coze.chats[-1].parameters == {
        "USER_INPUT": "where is order 77?",
        "SESSION": "sn-alice",
        "CUSTOMER": "user=alice@acme",
        "TIER": 3,
        "BRACES": "{literal}",
    }


async def test_workflow_parameters_are_empty_by_default_and_user_blank_for_anonymous(
    make_provider: Callable[..., CozeProvider], fake_coze: FakeCoze
) -> None:
    plain = make_provider("coze-workflow")
    await run_turn(plain, "sn-a", "hi")
    assert fake_coze.chats[-1].parameters == {}
    templated = make_provider("coze-workflow", workflow_parameters={"WHO": "[{user}]"})
    await run_turn(templated, "sn-a", "hi")
    assert fake_coze.chats[-1].parameters == {"WHO": "[]"}


async def test_tenant_parameters_are_added_only_for_allowed_keys(
    make_provider: Callable[..., CozeProvider], fake_coze: FakeCoze
) -> None:
    provider = make_provider(
        "coze-workflow",
        workflow_parameters={"USER_INPUT": "{message}", "TIER": "basic"},
        workflow_client_parameters=["ORDER_NO", "TIER"],
    )
    assert provider.client_parameters_field == "parameters"
    checked = provider.check_client_parameters({"ORDER_NO": "A-1", "TIER": "gold"})
    request = TurnRequest(
        session_name="sn-b", messages=[user("status?")], client_parameters=checked
    )
    async for _ in provider.stream_reply(request):
        pass
    assert fake_coze.chats[-1].parameters == {
        "USER_INPUT": "status?",
        "ORDER_NO": "A-1",
        "TIER": "gold",  # the tenant's value wins for a key it may set
    }
    with pytest.raises(BadRequest, match="USER_INPUT") as refused:
        provider.check_client_parameters({"USER_INPUT": "spoofed", "ORDER_NO": "1"})
    assert refused.value.code == "parameter_not_allowed"
    with pytest.raises(BadRequest):
        provider.check_client_parameters(["ORDER_NO"])


async def test_bot_gets_custom_variables_configured_and_from_the_tenant(
    make_provider: Callable[..., CozeProvider], fake_coze: FakeCoze
) -> None:
    provider = make_provider(
        "coze-bot",
        bot_custom_variables={"customer": "{user}", "channel": "web"},
        bot_client_variables="tier, region",
    )
    assert provider.client_parameters_field == "custom_variables"
    checked = provider.check_client_parameters({"tier": "gold"})
    request = TurnRequest(
        session_name="sn-c", messages=[user("hello")], user="carol", client_parameters=checked
    )
    async for _ in provider.stream_reply(request):
        pass
    assert fake_coze.chats[-1].custom_variables == {
        "customer": "carol",
        "channel": "web",
        "tier": "gold",
    }
    with pytest.raises(BadRequest, match="channel"):
        provider.check_client_parameters({"channel": "api"})
    with pytest.raises(BadRequest, match="strings"):
        provider.check_client_parameters({"tier": 3})


async def test_bot_sends_no_custom_variables_when_none_are_configured(
    make_provider: Callable[..., CozeProvider], fake_coze: FakeCoze
) -> None:
    await run_turn(make_provider("coze-bot"), "sn-d", "hi")
    assert fake_coze.chats[-1].custom_variables is None
