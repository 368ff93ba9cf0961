"""CozeTokenManager against the fake Coze: per-session_name tokens, single-flight,
early refresh on a controlled clock, bounded retries, clear refusals, no leaked secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import jwt
import pytest
from pydantic import SecretStr

from sessiongate.coze.auth import (
    AccessToken,
    CozeTokenManager,
    MemoryTokenCache,
    StaticTokenSource,
)
from sessiongate.coze.errors import CozeAuthError
from sessiongate.coze.settings import CozeSettings
from sessiongate.errors import UpstreamUnavailable

from ..conftest import wait_until
from ..fakes.coze_server import FakeClock, FakeCoze
from .conftest import KeyPair


async def test_token_is_bound_to_session_name_and_expires_at_an_absolute_time(
    manager: CozeTokenManager, fake_coze: FakeCoze, clock: FakeClock
) -> None:
    token, expires_at = await manager.issue_token("sess-a")

    issued = fake_coze.tokens[token]
    assert issued.session_name == "sess-a"
    # Coze's expires_in is an absolute unix time: now + SESSIONGATE_COZE_TOKEN_TTL.
    assert expires_at == int(clock()) + 3600 == issued.expires_at
    assert fake_coze.exchanges == {"sess-a": 1}


async def test_each_session_name_gets_its_own_cached_token(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    a1 = await manager.access_token("sess-a")
    a2 = await manager.access_token("sess-a")
    b1 = await manager.access_token("sess-b")

    assert a1 == a2 != b1
    assert fake_coze.tokens[b1].session_name == "sess-b"
    assert fake_coze.exchanges == {"sess-a": 1, "sess-b": 1}


async def test_s_sessions_times_m_concurrent_callers_cause_exactly_s_exchanges(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    sessions = [f"sess-{i}" for i in range(8)]
    callers = [s for s in sessions for _ in range(25)]

    tokens = await asyncio.gather(*(manager.access_token(s) for s in callers))

    assert fake_coze.exchanges == dict.fromkeys(sessions, 1)
    assert fake_coze.token_requests == len(sessions)
    by_session: dict[str, set[str]] = {}
    for session_name, token in zip(callers, tokens, strict=True):
        by_session.setdefault(session_name, set()).add(token)
    assert all(len(values) == 1 for values in by_session.values())
    assert all(fake_coze.tokens[t].session_name == s for s, v in by_session.items() for t in v)


async def test_one_sessions_slow_exchange_does_not_hold_up_another_session(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    tokens = CozeTokenManager.from_settings(
        make_settings(), clock=clock, backoff=0.001, max_attempts=1, timeout=10
    )
    fake_coze.switches.token_timeouts = 1  # the first exchange hangs
    try:
        stuck = asyncio.create_task(tokens.access_token("sess-slow"))
        await wait_until(lambda: fake_coze.token_requests == 1, timeout=5)

        other = await asyncio.wait_for(tokens.access_token("sess-fast"), 2)

        assert fake_coze.tokens[other].session_name == "sess-fast"
        assert not stuck.done()
    finally:
        await tokens.aclose()
    with pytest.raises(asyncio.CancelledError):
        await stuck


async def test_refresh_happens_at_expiry_minus_margin_not_after(
    manager: CozeTokenManager, fake_coze: FakeCoze, clock: FakeClock
) -> None:
    first = await manager.get_token("sess-a")
    assert first.expires_at == clock() + 3600

    clock.advance(3600 - 300 - 1)  # one second before the refresh point
    assert (await manager.get_token("sess-a")).value == first.value
    assert fake_coze.exchanges["sess-a"] == 1

    clock.advance(1)  # expires_at - refresh_margin: refresh now, 300 s before expiry
    second = await manager.get_token("sess-a")

    assert second.value != first.value
    assert fake_coze.exchanges["sess-a"] == 2
    assert clock() < first.expires_at  # the old token had not expired yet
    assert second.expires_at == clock() + 3600


async def test_transient_5xx_from_token_endpoint_is_retried_then_succeeds(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.token_5xx = 2

    token = await manager.access_token("sess-a")

    assert fake_coze.tokens[token].session_name == "sess-a"
    assert fake_coze.token_requests == 3
    # Each attempt signed a fresh JWT: the fake refuses a reused jti.
    assert len(fake_coze.used_jti) == 1 and not fake_coze.token_refusals


async def test_token_endpoint_timeout_is_retried(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    tokens = CozeTokenManager.from_settings(
        make_settings(), clock=clock, backoff=0.001, connect_timeout=1, timeout=0.2
    )
    fake_coze.switches.token_timeouts = 1
    try:
        token = await tokens.access_token("sess-a")
    finally:
        await tokens.aclose()

    assert fake_coze.tokens[token].session_name == "sess-a"
    assert fake_coze.token_requests == 2


async def test_retries_are_bounded_and_the_error_keeps_the_logid(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.token_5xx = 10

    with pytest.raises(UpstreamUnavailable) as caught:
        await manager.access_token("sess-a")

    assert fake_coze.token_requests == 3
    assert caught.value.logid and caught.value.logid in caught.value.message
    assert caught.value.upstream_code == 502


async def test_4xx_is_not_retried_and_names_the_setting_and_the_logid(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    tokens = CozeTokenManager.from_settings(
        make_settings(oauth_public_key_id="kid-not-uploaded"), clock=clock, backoff=0.001
    )
    try:
        with pytest.raises(CozeAuthError) as caught:
            await tokens.access_token("sess-a")
    finally:
        await tokens.aclose()

    assert fake_coze.token_requests == 1
    assert fake_coze.token_refusals == ["invalid_client"]
    error = caught.value
    assert "COZE_OAUTH_PUBLIC_KEY_ID" in (error.detail or "")
    assert "COZE_" not in error.message
    assert error.logid and error.logid in error.message
    assert error.status == 502 and error.code == "upstream_auth_failed"


async def test_wrong_audience_is_refused_and_points_at_coze_api_base(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    # Same server, but named "localhost": the JWT's aud no longer matches its host.
    settings = make_settings(api_base=fake_coze.url.replace("127.0.0.1", "localhost"))
    tokens = CozeTokenManager.from_settings(settings, clock=clock, backoff=0.001)
    try:
        with pytest.raises(CozeAuthError) as caught:
            await tokens.access_token("sess-a")
    finally:
        await tokens.aclose()

    assert fake_coze.token_refusals == ["invalid_request"]
    assert "COZE_API_BASE" in (caught.value.detail or "")
    assert "COZE_" not in caught.value.message and "localhost" not in caught.value.message


async def test_fake_refuses_a_replayed_jwt(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    tokens = CozeTokenManager.from_settings(make_settings(), clock=clock)
    assertion = tokens._sign_jwt("sess-a")
    await tokens.aclose()
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["session_name"] == "sess-a" and claims["iss"] and claims["jti"]
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": "kid-test-0001",
    }

    body = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "duration_seconds": 900}
    headers = {"Authorization": f"Bearer {assertion}"}
    async with httpx.AsyncClient(base_url=fake_coze.url) as client:
        first = await client.post("/api/permission/oauth2/token", json=body, headers=headers)
        replay = await client.post("/api/permission/oauth2/token", json=body, headers=headers)

    assert first.status_code == 200
    assert replay.status_code == 401 and replay.json()["error_code"] == "invalid_request"


async def test_invalidate_drops_only_the_token_that_failed(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    stale = await manager.access_token("sess-a")

    await manager.invalidate("sess-a", "some-other-token")
    assert await manager.access_token("sess-a") == stale

    await manager.invalidate("sess-a", stale)
    fresh = await manager.access_token("sess-a")
    assert fresh != stale
    assert fake_coze.exchanges["sess-a"] == 2


async def test_failed_early_refresh_keeps_the_still_valid_token(
    manager: CozeTokenManager, fake_coze: FakeCoze, clock: FakeClock
) -> None:
    current = await manager.get_token("sess-a")
    clock.advance(3600 - 100)  # inside the refresh margin, before expiry
    fake_coze.switches.token_5xx = 3

    assert (await manager.get_token("sess-a")).value == current.value
    assert fake_coze.token_requests == 4

    clock.advance(100)  # now expired: no fallback any more
    fake_coze.switches.token_5xx = 3
    with pytest.raises(UpstreamUnavailable):
        await manager.get_token("sess-a")


async def test_exchange_failure_reaches_every_waiter_and_the_next_call_retries(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.token_5xx = 3

    results = await asyncio.gather(
        *(manager.access_token("sess-a") for _ in range(5)), return_exceptions=True
    )

    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert fake_coze.token_requests == 3  # one exchange (3 attempts) shared by 5 callers
    assert fake_coze.tokens[await manager.access_token("sess-a")].session_name == "sess-a"


async def test_unreachable_token_endpoint_is_upstream_unavailable(
    make_settings: Callable[..., CozeSettings], clock: FakeClock
) -> None:
    tokens = CozeTokenManager.from_settings(
        make_settings(api_base="http://127.0.0.1:9"), clock=clock, backoff=0.001
    )
    try:
        with pytest.raises(UpstreamUnavailable) as caught:  # port 9 refuses at once
            await tokens.access_token("sess-a")
    finally:
        await tokens.aclose()
    assert caught.value.message == "Coze could not be reached."
    assert "COZE_API_BASE=http://127.0.0.1:9" in (caught.value.detail or "")


async def test_private_key_and_tokens_never_reach_logs_errors_or_reprs(
    make_settings: Callable[..., CozeSettings],
    fake_coze: FakeCoze,
    clock: FakeClock,
    key_pair: KeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = CozeTokenManager.from_settings(make_settings(), clock=clock, backoff=0.001)
    errors: list[str] = []
    try:
        token = await tokens.get_token("sess-a")
        fake_coze.switches.token_5xx = 1
        clock.advance(3600)
        await tokens.get_token("sess-a")
        fake_coze.switches.token_error = "invalid_client"
        clock.advance(3600)
        with pytest.raises(CozeAuthError) as caught:
            await tokens.get_token("sess-a")
        errors.append(str(caught.value))
        texts = [caplog.text, *errors, repr(tokens), repr(token), str(token)]
    finally:
        await tokens.aclose()

    key_body = "".join(key_pair.private_pem.strip().splitlines()[1:-1])
    issued = list(fake_coze.tokens)
    assert issued
    for text in texts:
        flat = text.replace("\n", "")
        assert key_body[:40] not in flat and key_body[-40:] not in flat
        assert not any(value in text for value in issued)
    assert "value" not in repr(AccessToken("secret-token", 1.0))
    assert "pat-secret" not in repr(StaticTokenSource(SecretStr("pat-secret")))


async def test_memory_cache_sweeps_expired_tokens_as_it_grows(clock: FakeClock) -> None:
    cache = MemoryTokenCache(clock=clock, sweep_above=4)
    for i in range(4):
        await cache.put(f"old-{i}", AccessToken(f"t{i}", clock() + 10))
    clock.advance(11)

    await cache.put("new", AccessToken("t-new", clock() + 10))

    assert len(cache) == 1 and await cache.get("new") is not None
    await cache.discard("new", "another-token")
    assert await cache.get("new") is not None
    await cache.discard("new")
    assert await cache.get("new") is None


async def test_manager_counts_its_exchange_attempts(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    fake_coze.switches.token_5xx = 1
    await asyncio.gather(*(manager.access_token(s) for s in ("a", "b", "a")))
    assert manager.exchange_count == fake_coze.token_requests == 3
