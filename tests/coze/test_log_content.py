"""Coze's failure texts may quote the conversation: they reach the log only as a length."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from sessiongate.coze.provider import CozeProvider
from sessiongate.errors import UpstreamError

from ..fakes.coze_server import FakeCoze
from .conftest import run_turn


@pytest.mark.parametrize("switch", ["chat_failed_bare", "error_event"])
async def test_coze_failure_text_is_logged_only_as_its_length(
    make_provider: Callable[..., CozeProvider],
    fake_coze: FakeCoze,
    caplog: pytest.LogCaptureFixture,
    switch: str,
) -> None:
    caplog.set_level(logging.WARNING)
    provider = make_provider("coze-workflow")
    setattr(fake_coze.switches, switch, 1)

    with pytest.raises(UpstreamError):
        await run_turn(provider, "sess-a", "hello")

    failure = "node failed" if switch == "chat_failed_bare" else "error"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sessiongate.coze")]
    assert any(f"msg=<{len(failure)} characters>" in line for line in lines), lines
    assert not any(f"msg={failure}" in line for line in lines)
