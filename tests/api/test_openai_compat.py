"""/v1/chat/completions and /v1/models: the official openai SDK against a gateway on
loopback, per-user isolation, tenant separation, auth and bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from sessiongate.store import MessageRow, create_engine, create_sessionmaker
from sessiongate.store.tenants import create_tenant, revoke_tenant

from ..conftest import Gateway, LiveGateway, running_gateway, wait_until
from ..fakes.openai_server import FakeOpenAI

CONV = "X-Sessiongate-Conversation"


async def make_tenant(gw: Gateway, name: str) -> str:
    async with gw.state.sessionmaker() as db, db.begin():
        _, key = await create_tenant(db, name)
    return key


async def make_live_tenant(live: LiveGateway, name: str) -> str:
    engine = create_engine(live.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            _, key = await create_tenant(db, name)
        return key
    finally:
        await engine.dispose()


@pytest.fixture
async def sdk(live_gateway: LiveGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    key = await make_live_tenant(live_gateway, "acme")
    client = openai.AsyncOpenAI(base_url=f"{live_gateway.url}/v1", api_key=key, max_retries=0)
    async with client:
        yield client


def upstream_texts(fake: FakeOpenAI, user: str) -> list[list[str]]:
    """Contents (system prompt excluded) of each upstream request of session ``user``."""
    return [
        [m["content"] for m in r.messages if m["role"] != "system"] for r in fake.requests_for(user)
    ]


def parse_sse(body: str) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
        for line in body.splitlines()
        if line.startswith("data: ")
    ]


def chat(user: str | None, *texts: str, **extra: Any) -> dict[str, Any]:
    """A request body whose messages alternate user/assistant, starting with user."""
    roles = ["user", "assistant"]
    body: dict[str, Any] = {
        "model": "my-model",
        "messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)],
        **extra,
    }
    if user is not None:
        body["user"] = user
    return body


async def count_messages(gw: Gateway) -> int:
    async with gw.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(MessageRow)) or 0)


# --- the official SDK on loopback -------------------------------------------------------


async def test_openai_sdk_completes_a_chat(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="my-model", messages=[{"role": "user", "content": "hello there"}], user="alice"
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    # The reply names the gateway's model, not whatever the client asked for.
    assert completion.model == "sessiongate-openai"
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.total_tokens == 15
    assert raw.headers[CONV]


async def test_openai_sdk_streams_a_chat(sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="my-model",
        messages=[{"role": "user", "content": "stream me"}],
        user="alice",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream me"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert fake_openai.requests[-1].stream is True


async def test_openai_sdk_two_users_get_isolated_histories(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    async def say(user: str, messages: list[dict[str, str]]) -> str:
        done = await sdk.chat.completions.create(model="m", messages=messages, user=user)  # type: ignore[arg-type]
        return done.choices[0].message.content or ""

    first = [{"role": "user", "content": "my secret is 4242"}]
    reply = await say("alice", first)
    await say("bob", [{"role": "user", "content": "what is the secret?"}])
    await say(
        "alice",
        [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "again"}],
    )
    alice_name, bob_name = fake_openai.requests[0].user, fake_openai.requests[1].user
    assert alice_name and bob_name and alice_name != bob_name
    assert all("4242" not in t for ctx in upstream_texts(fake_openai, bob_name) for t in ctx)
    assert upstream_texts(fake_openai, alice_name)[-1] == [
        "my secret is 4242",
        "Echo: my secret is 4242",
        "again",
    ]


async def test_openai_sdk_lists_the_model(sdk: openai.AsyncOpenAI) -> None:
    models = [m async for m in sdk.models.list()]
    assert [(m.id, m.owned_by) for m in models] == [("sessiongate-openai", "sessiongate")]


async def test_openai_sdk_raises_for_refused_requests(live_gateway: LiveGateway) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{live_gateway.url}/v1", api_key="sgk_not-a-real-key", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], user="alice"
            )
    assert info.value.code == "invalid_api_key"


@pytest.mark.gateway_settings(on_disconnect="cancel")
async def test_stream_disconnect_under_cancel_stops_generation_and_keeps_partial_reply(
    live_gateway: LiveGateway,
) -> None:
    fake = live_gateway.fake
    fake.behaviour.chunk_delay = 0.05
    fake.behaviour.chunk_size = 2
    fake.behaviour.reply = lambda _: "abcdefghij" * 40  # 200 chunks: ~10 s if not stopped
    key = await make_live_tenant(live_gateway, "acme")
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat("alice", "go on", stream=True),
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            assert r.status_code == 200
            conversation_id = r.headers[CONV]
            received = ""
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    choice = json.loads(line[6:])["choices"][0]
                    received += choice["delta"].get("content") or ""
                    if len(received) >= 6:
                        break

    async def stored_incomplete() -> bool:
        rows = await live_gateway.messages(conversation_id)
        return len(rows) == 2 and rows[1][1] == "incomplete"

    await wait_until(stored_incomplete)
    await wait_until(lambda: fake.disconnects == 1)
    assert fake.chunks_sent < 150


# --- in-process: semantics --------------------------------------------------------------


async def test_same_user_under_two_tenants_gets_two_sessions(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    acme, globex = (
        await make_tenant(gateway, "acme"),
        await make_tenant(gateway, "globex"),
    )
    async with gateway.client() as client:
        r1 = await client.post(
            "/v1/chat/completions",
            json=chat("u1", "acme secret 777"),
            headers={"Authorization": f"Bearer {acme}"},
        )
        r2 = await client.post(
            "/v1/chat/completions",
            json=chat("u1", "hello", "Echo: hello", "and now?"),
            headers={"Authorization": f"Bearer {globex}"},
        )
    assert r1.status_code == 200 and r2.status_code == 200, r2.text
    acme_name, globex_name = fake_openai.requests[0].user, fake_openai.requests[1].user
    assert acme_name and globex_name and acme_name != globex_name
    # globex's u1 has no history yet: the client's claimed history is not used either.
    assert upstream_texts(fake_openai, globex_name) == [["and now?"]]


async def test_earlier_request_messages_are_not_trusted_as_context(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "m",
                "user": "alice",
                "messages": [
                    {"role": "user", "content": "fabricated"},
                    {"role": "assistant", "content": "fabricated reply"},
                    {"role": "user", "content": [{"type": "text", "text": "real question"}]},
                ],
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Echo: real question"
    sent = fake_openai.requests[-1].messages
    assert not any("fabricated" in m["content"] for m in sent)


async def test_conversation_choice_new_continue_and_header(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:

        async def post(body: dict[str, Any], **headers: str) -> httpx.Response:
            return await client.post("/v1/chat/completions", json=body, headers=headers)

        a = await post(chat("alice", "one"))
        b = await post(chat("alice", "fresh chat"))  # one user message: a new conversation
        assert a.headers[CONV] != b.headers[CONV]
        c = await post(chat("alice", "fresh chat", "Echo: fresh chat", "more"))
        assert c.headers[CONV] == b.headers[CONV]  # continues the most recent
        assert upstream_texts(fake_openai, fake_openai.requests[0].user or "")[-1] == [
            "fresh chat",
            "Echo: fresh chat",
            "more",
        ]
        d = await post(chat("alice", "back to one"), **{CONV: a.headers[CONV]})
        assert d.status_code == 200 and d.headers[CONV] == a.headers[CONV]
        assert fake_openai.requests[-1].messages[-3]["content"] == "one"
        # Another user's conversation id is not found for bob.
        e = await post(chat("bob", "peek"), **{CONV: a.headers[CONV]})
        assert e.status_code == 404
        assert e.json()["error"]["type"] == "not_found_error"


async def test_stream_frames_follow_openai_wire_format(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=chat("alice", "我叫张三", stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers[CONV]
    frames = parse_sse(r.text)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert all(
        c["object"] == "chat.completion.chunk" and c["model"] == "sessiongate-openai"
        for c in chunks
    )
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: 我叫张三"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert "usage" not in chunks[-1]


async def test_upstream_failure_is_openai_error_before_and_in_stream(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.fail_status = 500
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=chat("alice", "hi"))
        assert r.status_code == 502
        assert r.json() == {
            "error": {
                "message": r.json()["error"]["message"],
                "type": "server_error",
                "code": "upstream_error",
                "param": None,
            }
        }
        assert "fake failure" not in r.text
        s = await client.post("/v1/chat/completions", json=chat("alice", "hi", stream=True))
    assert s.status_code == 200
    frames = parse_sse(s.text)
    assert frames[-1]["error"]["code"] == "upstream_error"
    assert "[DONE]" not in frames
    assert "fake failure" not in s.text


# --- in-process: auth and bad input -----------------------------------------------------


async def test_missing_user_is_400_and_nothing_is_stored(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=chat(None, "hi"))
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["code"] == "user_required"
    assert fake_openai.requests == [] and await count_messages(sqlite_gateway) == 0


async def test_no_credentials_or_session_token_is_refused(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        r = await client.post("/v1/chat/completions", json=chat("alice", "hi"))
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert (await client.get("/v1/models")).status_code == 401
        # An anonymous browser session's token must not reach a named user's session.
        await client.post("/api/chat", json={"message": "hello"})
        token = client.cookies["sessiongate_session"]
        client.cookies.clear()
        headers = {"Authorization": f"Bearer {token}"}
        r = await client.post("/v1/chat/completions", json=chat("alice", "hi"), headers=headers)
        assert r.status_code == 403
        assert r.json()["error"]["type"] == "permission_error"
        assert (await client.get("/v1/models", headers=headers)).status_code == 403
    assert all(req.messages[-1]["content"] != "hi" for req in fake_openai.requests)


async def test_revoked_key_is_401_at_once(sqlite_gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        assert (await client.post("/v1/chat/completions", json=chat("a", "hi"))).status_code == 200
        async with sqlite_gateway.state.sessionmaker() as db, db.begin():
            await revoke_tenant(db, "acme")
        r = await client.post("/v1/chat/completions", json=chat("a", "hi"))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "api_key_revoked"


async def test_models_lists_the_provider_model(sqlite_gateway: Gateway) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    assert r.json() == {
        "object": "list",
        "data": [
            {"id": "sessiongate-openai", "object": "model", "created": 0, "owned_by": "sessiongate"}
        ],
    }


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (json.dumps({"model": "m", "user": "a", "messages": []}), "invalid_messages"),
        (json.dumps({"model": "m", "user": "a"}), "invalid_messages"),
        (
            json.dumps({"user": "a", "messages": [{"role": "system", "content": "x"}]}),
            "no_user_message",
        ),
        (json.dumps(chat("a", "hi", "Echo: hi", "   ")), "empty_message"),
        (
            json.dumps(
                {"user": "a", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
            ),
            "unsupported_content",
        ),
        (json.dumps(chat("a", "hi", stream="yes")), "invalid_request"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_request"),
    ],
)
async def test_bad_input_is_openai_shaped_400_and_nothing_is_stored(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI, content: str, code: str
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client() as client:
        r = await client.post(
            "/v1/chat/completions",
            content=content,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"] and error["param"] is None
    assert fake_openai.requests == [] and await count_messages(sqlite_gateway) == 0


# --- fidelity: finish_reason, refused fields, system prompts, models ---------------------


async def test_reply_cut_by_the_token_limit_says_length_whole_and_streamed(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.reply = lambda _: "one two three four five six seven"
    async with running_gateway(sqlite_url, fake_openai_server[1], openai_max_tokens=2) as gw:
        key = await make_tenant(gw, "acme")
        async with gw.client(headers={"Authorization": f"Bearer {key}"}) as client:
            whole = await client.post("/v1/chat/completions", json=chat("alice", "talk"))
            streamed = await client.post(
                "/v1/chat/completions", json=chat("alice", "talk", stream=True)
            )
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == "one two "
    assert whole.json()["choices"][0]["finish_reason"] == "length"
    chunks = parse_sse(streamed.text)[:-1]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert fake_openai.requests[-1].stream is True


async def test_reply_that_ends_on_its_own_says_stop(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1], openai_max_tokens=50) as gw:
        key = await make_tenant(gw, "acme")
        async with gw.client(headers={"Authorization": f"Bearer {key}"}) as client:
            r = await client.post("/v1/chat/completions", json=chat("alice", "short"))
    assert r.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"temperature": 0.2}, "temperature"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"seed": 1}, "seed"),
        ({"n": 2}, "n"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
        ),
        ({"parameters": {"ORDER": "1"}}, "parameters"),
        ({"made_up_field": 1}, "made_up_field"),
    ],
)
async def test_every_unhonoured_field_is_400_naming_the_parameter(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI, extra: dict[str, Any], param: str
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=chat("alice", "hi", **extra))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_parameter"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[-1] in error["message"]
    assert fake_openai.requests == [] and await count_messages(sqlite_gateway) == 0


async def test_null_fields_and_n_of_one_count_as_not_sent(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post(
            "/v1/chat/completions",
            json=chat("alice", "hi", tools=None, temperature=None, n=1),
        )
    assert r.status_code == 200, r.text


async def test_tool_messages_are_refused_naming_the_role(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    body = {
        "model": "m",
        "user": "alice",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "tool", "tool_call_id": "1", "content": "sunny"},
            {"role": "user", "content": "so?"},
        ],
    }
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert r.json()["error"]["code"] == "unsupported_message_role"


def with_system(prompt: str, *texts: str) -> dict[str, Any]:
    body = chat("alice", *texts)
    body["messages"].insert(0, {"role": "system", "content": prompt})
    return body


async def test_client_system_prompt_is_refused_unless_the_tenant_allows_it(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=with_system("Talk like a pirate", "hi"))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "system_prompt_not_allowed" and error["param"] == "messages"
    assert "--allow-system-prompt" in error["message"]
    assert fake_openai.requests == [] and await count_messages(sqlite_gateway) == 0


async def test_client_system_prompt_replaces_the_gateways_when_allowed(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.state.sessionmaker() as db, db.begin():
        _, key = await create_tenant(db, "acme", allow_system_prompt=True)
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/chat/completions", json=with_system("Talk like a pirate", "hi"))
        assert r.status_code == 200, r.text
        # The next turn without a system message gets the gateway's prompt again.
        r2 = await client.post(
            "/v1/chat/completions", json=chat("alice", "hi", "Echo: hi", "again")
        )
        assert r2.status_code == 200
    first, second = fake_openai.requests[-2].messages, fake_openai.requests[-1].messages
    assert first[0] == {"role": "system", "content": "Talk like a pirate"}
    assert [m for m in first if m["role"] == "system"] == [first[0]]
    assert second[0]["role"] == "system"
    assert second[0]["content"] == sqlite_gateway.settings.system_prompt


async def test_openai_sdk_retrieves_the_model_and_gets_openai_shaped_404(
    sdk: openai.AsyncOpenAI,
) -> None:
    model = await sdk.models.retrieve("sessiongate-openai")
    assert (model.id, model.owned_by) == ("sessiongate-openai", "sessiongate")
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.models.retrieve("gpt-4o")
    assert info.value.code == "model_not_found"
    assert info.value.body["param"] == "model"  # type: ignore[index]


async def test_unknown_v1_path_is_openai_shaped_404(sqlite_gateway: Gateway) -> None:
    key = await make_tenant(sqlite_gateway, "acme")
    async with sqlite_gateway.client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_openai_sdk_tool_call_is_refused_not_answered_as_text(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            user="alice",
            tools=[
                {
                    "type": "function",
                    "function": {"name": "weather", "parameters": {"type": "object"}},
                }
            ],
        )
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "tools"
    assert fake_openai.requests == []


# --- langchain-openai -------------------------------------------------------------------


def langchain_model(live: LiveGateway, key: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=f"{live.url}/v1",
        api_key=key,  # type: ignore[arg-type]
        model="gpt-4o",
        max_retries=0,
        model_kwargs={"user": "alice"},
    )


async def test_langchain_plain_chat_works(live_gateway: LiveGateway) -> None:
    key = await make_live_tenant(live_gateway, "acme")
    reply = await langchain_model(live_gateway, key).ainvoke("hello from langchain")
    assert reply.content == "Echo: hello from langchain"
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "sessiongate-openai"


async def test_langchain_bind_tools_gets_400_instead_of_plain_text(
    live_gateway: LiveGateway,
) -> None:
    from langchain_core.tools import tool

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    key = await make_live_tenant(live_gateway, "acme")
    model = langchain_model(live_gateway, key).bind_tools([weather])
    with pytest.raises(openai.BadRequestError) as info:
        await model.ainvoke("weather in Paris?")
    assert info.value.code == "unsupported_parameter"
    assert info.value.param in ("tools", "tool_choice", "parallel_tool_calls")
    assert live_gateway.fake.requests == []


async def test_langchain_structured_output_gets_400_instead_of_a_parse_error(
    live_gateway: LiveGateway,
) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    key = await make_live_tenant(live_gateway, "acme")
    model = langchain_model(live_gateway, key).with_structured_output(Person)
    with pytest.raises(openai.BadRequestError) as info:
        await model.ainvoke("Alice is 30.")
    assert info.value.code == "unsupported_parameter"
    assert info.value.param in ("response_format", "tools", "tool_choice")
    assert live_gateway.fake.requests == []
