"""The workflow stream's aiohttp pool: the proxy comes from the environment, looked up
once per upstream URL (aiohttp's ``trust_env`` would look on every request)."""

from __future__ import annotations

import pytest
from yarl import URL

from sessiongate.coze.sdk import ssl_context
from sessiongate.coze.workflow_http import StreamPool


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_proxy_comes_from_the_environment_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "coze.internal")
    pool = StreamPool(limit=4, ssl_context=ssl_context())

    proxy, auth = pool.proxy_for("https://api.coze.cn")
    assert proxy == URL("http://proxy.internal:3128")
    assert auth is not None and (auth.login, auth.password) == ("user", "secret")
    assert pool.proxy_for("https://coze.internal") == (None, None)
    assert pool.proxy_for("http://api.coze.cn") == (None, None)  # no HTTP_PROXY set


def test_the_proxy_is_looked_up_once_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    pool = StreamPool(limit=4, ssl_context=ssl_context())
    first = pool.proxy_for("https://api.coze.cn")
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.internal:8080")
    assert pool.proxy_for("https://api.coze.cn") == first  # kept, not read again
    assert pool.proxy_for("https://api.coze.com")[0] == URL("http://elsewhere.internal:8080")
