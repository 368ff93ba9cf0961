"""The Coze token manager's metrics: exchange attempts by outcome, cache hits and misses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from sessiongate.coze.auth import CozeTokenManager
from sessiongate.coze.errors import CozeAuthError
from sessiongate.coze.settings import CozeSettings

from ..fakes.coze_server import FakeClock, FakeCoze


def exchanges(outcome: str) -> float:
    name = "sessiongate_coze_token_exchanges_total"
    return REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0


def lookups(result: str) -> float:
    name = "sessiongate_coze_token_cache_lookups_total"
    return REGISTRY.get_sample_value(name, {"result": result}) or 0.0


async def test_concurrent_first_callers_are_misses_and_later_callers_hits(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    ok, hits, misses = exchanges("ok"), lookups("hit"), lookups("miss")

    await asyncio.gather(*(manager.access_token("sess-a") for _ in range(5)))
    for _ in range(3):
        await manager.access_token("sess-a")

    assert fake_coze.exchanges["sess-a"] == 1
    assert exchanges("ok") - ok == 1
    assert lookups("miss") - misses == 5
    assert lookups("hit") - hits == 3


async def test_transient_failures_count_as_errors_before_the_exchange_that_succeeds(
    manager: CozeTokenManager, fake_coze: FakeCoze
) -> None:
    ok, errors = exchanges("ok"), exchanges("error")
    fake_coze.switches.token_5xx = 2

    await manager.access_token("sess-b")

    assert (exchanges("error") - errors, exchanges("ok") - ok) == (2, 1)


async def test_a_refused_exchange_counts_as_refused(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    refused, ok = exchanges("refused"), exchanges("ok")
    tokens = CozeTokenManager.from_settings(
        make_settings(oauth_public_key_id="kid-not-uploaded"), clock=clock, backoff=0.001
    )
    try:
        with pytest.raises(CozeAuthError):
            await tokens.access_token("sess-c")
    finally:
        await tokens.aclose()

    assert (exchanges("refused") - refused, exchanges("ok") - ok) == (1, 0)
