"""Two ``sessiongate serve`` replicas on one PostgreSQL and one Redis, behind HAProxy
(round robin, no stickiness), with the fake Coze: every session rule holds across them."""

from __future__ import annotations

import time

import httpx
import pytest

from ..conftest import wait_until
from ..fakes.coze_server import FakeCoze
from . import scenarios
from .conftest import REPLICA_HEADER, Fleet, GatewayClient, figure, read_sse

pytestmark = pytest.mark.postgres


async def test_turns_of_one_session_alternate_between_replicas_in_order(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.turns_alternate_between_replicas(fleet, http)


async def test_concurrent_turns_of_one_session_on_both_replicas_are_all_stored_in_order(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.concurrent_turns_of_one_session(fleet, http)


async def test_one_coze_token_exchange_per_session_across_replicas(
    fleet: Fleet, http: httpx.AsyncClient, fleet_coze: FakeCoze
) -> None:
    await scenarios.one_token_exchange_per_session(fleet, http, fleet_coze)


async def test_session_rate_limit_is_exact_across_replicas(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.session_rate_limit_is_exact(fleet, http)


async def test_tenant_rate_limit_is_exact_across_replicas(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.tenant_rate_limit_is_exact(fleet, http)


async def test_only_one_cleanup_runs_at_a_time_across_replicas(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.one_cleanup_at_a_time(fleet, http)


async def test_reply_started_on_replica_1_is_reattached_through_replica_2(
    fleet: Fleet, http: httpx.AsyncClient, fleet_coze: FakeCoze
) -> None:
    first, second = fleet.replicas
    await scenarios.reply_reattached_on_another_replica(
        fleet, http, fleet_coze, origin=first.url, other=second.url
    )


async def test_a_replica_killed_mid_stream_leaves_the_other_serving_and_the_reply_marked(
    fleet: Fleet, http: httpx.AsyncClient, fleet_coze: FakeCoze
) -> None:
    fleet_coze.switches.delta_delay = 0.2
    victim, _ = fleet.replicas
    client = await GatewayClient(http, fleet.url).open_session()
    conversation = await client.new_conversation()
    async with client.open_stream(scenarios.LONG_MESSAGE, conversation, base_url=victim.url) as (
        response,
        stream,
    ):
        assert response.status_code == 200, stream.body
        await read_sse(response, stream, until=2)
        assert stream.frames[0]["type"] == "start", stream.frames
        message_id = stream.frames[0]["message_id"]
        victim.kill()
        killed_at = time.monotonic()
        await read_sse(response, stream)
    # The dead process cannot say goodbye: the client sees the stream cut (or, had the
    # balancer been in between, an error frame) — never a clean `done`.
    assert stream.cut or stream.last.get("type") == "error", stream.frames

    # The other replica serves everyone at once: HAProxy retries connections refused by
    # the dead one elsewhere, so other sessions see no error at all.
    other = await GatewayClient(http, fleet.url).open_session()
    other_conversation = await other.new_conversation()
    for i in range(4):
        reply = await other.chat(f"turn {i} after a replica died", other_conversation)
        assert reply.status_code == 200, reply.text
        assert reply.headers[REPLICA_HEADER] == "gw2"

    # The client reattaches through the balancer: the reply has no writer any more, so
    # it is told so (404 reply_not_found, or an error frame) instead of waiting forever.
    reattached = await client.reattach(conversation)
    if reattached.status == 200:
        assert reattached.last.get("type") == "error", reattached.frames
        told = f"an error frame ({reattached.last.get('code')})"
    else:
        told = "404 reply_not_found"
        assert reattached.status == 404, reattached.body
        assert reattached.body["error"]["code"] == "reply_not_found", reattached.body

    # The same session goes on through the survivor once the dead turn's lock is gone
    # (bounded: the lock dies with its holder, at worst after SESSIONGATE_TURN_WAIT).
    deadline = time.monotonic() + 90
    while True:
        continued = await client.chat("a turn after my replica died", conversation)
        if continued.status_code != 409 or time.monotonic() > deadline:
            break
    assert continued.status_code == 200, continued.text
    resumed_after = time.monotonic() - killed_at

    # The killed reply is marked (at the latest when its replica comes back).
    victim.start()

    async def marked() -> bool:
        messages = await client.messages(conversation)
        return any(m["id"] == message_id and m["status"] == "interrupted" for m in messages)

    await wait_until(marked, timeout=60)
    messages = await client.messages(conversation)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"], messages
    assert messages[0]["content"] == scenarios.LONG_MESSAGE
    figure(
        fleet,
        f"replica SIGKILLed mid-stream: reattaching gave {told}; the session went on "
        f"{resumed_after:.2f} s later",
    )


async def test_audit_through_the_balancer_finds_no_leak(fleet: Fleet) -> None:
    await scenarios.audit_passes(fleet)
