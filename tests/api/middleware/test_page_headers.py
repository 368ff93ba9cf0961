"""Page headers (api/middleware/page_headers.py): CSP without inline script, nosniff,
Referrer-Policy and frame-ancestors from SESSIONGATE_FRAME_ANCESTORS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sessiongate.api.web import WEB_DIR

from ...conftest import Gateway, running_gateway
from ...fakes.openai_server import FakeOpenAI


@pytest.mark.parametrize("path", ["/", "/admin", "/static/app.js", "/static/style.css"])
async def test_pages_and_static_files_carry_the_security_headers(
    sqlite_gateway: Gateway, path: str
) -> None:
    async with sqlite_gateway.client() as client:
        r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["x-frame-options"] == "DENY"
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


async def test_api_responses_are_nosniff_without_a_page_policy(sqlite_gateway: Gateway) -> None:
    async with sqlite_gateway.client() as client:
        r = await client.get("/api/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in r.headers


async def test_frame_ancestors_comes_from_the_setting(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(
            sqlite_url, fake_openai_server[1], frame_ancestors="'self' https://shop.example"
        ) as gw,
        gw.client() as client,
    ):
        r = await client.get("/")
    assert "frame-ancestors 'self' https://shop.example" in r.headers["content-security-policy"]
    assert "x-frame-options" not in r.headers


@pytest.mark.parametrize("page", sorted(p.name for p in Path(WEB_DIR).glob("*.html")))
def test_the_pages_hold_no_inline_script_the_policy_would_block(page: str) -> None:
    html = (Path(WEB_DIR) / page).read_text(encoding="utf-8")
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, f"inline <script> in {page}"
    assert not re.search(r"\son[a-z]+\s*=", html), f"inline event handler in {page}"
