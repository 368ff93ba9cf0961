"""The page's server side (api/web.py and the cookie in api/deps.py): UI settings at
/api/ui, the avatar file, the session cookie outliving the session, offline docs and the
vendored files the package must ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sessiongate.api.deps import COOKIE_MAX_AGE
from sessiongate.api.web import WEB_DIR
from sessiongate.config import Settings

from ..conftest import running_gateway
from ..fakes.openai_server import FakeOpenAI
from .conftest import ADMIN_TOKEN, png_bytes


async def test_ui_settings_carry_the_brand_and_limits_but_not_the_provider(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    avatar = tmp_path / "bot.png"
    avatar.write_bytes(png_bytes())
    async with (
        running_gateway(
            sqlite_url,
            fake_openai_server[1],
            ui_language="zh-CN",
            ui_title="客服",
            ui_bot_name="小美",
            ui_avatar=str(avatar),
            ui_suggestions=["如何退货？"],
            ui_accent_color="#d9480f",
            ui_image_hosts=["img.example.com"],
            max_message_chars=1234,
            admin_token=ADMIN_TOKEN,
        ) as gw,
        gw.client() as client,
    ):
        r = await client.get("/api/ui")
        ui = r.json()
        assert ui["language"] == "zh-CN" and set(ui["languages"]) >= {"en", "zh-CN"}
        assert ui["title"] == "客服" and ui["bot_name"] == "小美"
        assert ui["avatar_url"] == "/api/ui/avatar"
        assert ui["suggestions"] == ["如何退货？"] and ui["image_hosts"] == ["img.example.com"]
        assert ui["max_message_chars"] == 1234
        assert ui["provider"] is None and ui["version"] is None
        # Reading the settings does not create a session.
        assert "set-cookie" not in r.headers
        admin = await client.get("/api/ui", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.json()["provider"] == "openai"

        picture = await client.get("/api/ui/avatar")
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.content == png_bytes()


async def test_avatar_url_is_passed_through_and_missing_file_answers_404(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str]
) -> None:
    async with (
        running_gateway(
            sqlite_url, fake_openai_server[1], ui_avatar="https://cdn.example.com/a.png"
        ) as gw,
        gw.client() as client,
    ):
        assert (await client.get("/api/ui")).json()["avatar_url"] == "https://cdn.example.com/a.png"
        assert (await client.get("/api/ui/avatar")).status_code == 404


def test_accent_colour_must_be_a_hex_colour() -> None:
    with pytest.raises(ValueError):
        Settings(_env_file=None, ui_accent_color="red; background: url(x)")  # type: ignore[call-arg]


async def test_session_cookie_outlives_the_session_so_expiry_is_reported(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str]
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1]) as gw, gw.client() as client:
        r = await client.post("/api/session")
        cookie = r.headers["set-cookie"]
        max_age = int(re.search(r"Max-Age=(\d+)", cookie, re.I).group(1))  # type: ignore[union-attr]
        assert max_age == COOKIE_MAX_AGE > gw.settings.session_idle_ttl


async def test_docs_pages_load_only_vendored_files(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str]
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1]) as gw, gw.client() as client:
        for path in ("/docs", "/redoc", "/"):
            html = (await client.get(path)).text
            assert "cdn" not in html.lower() and "https://" not in html
            assert "<script>" not in html and " on" + "click=" not in html
            for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
                assert (await client.get(src)).status_code == 200, src


def test_vendored_libraries_ship_with_their_licenses() -> None:
    vendor = WEB_DIR / "vendor"
    for name in ("markdown-it", "dompurify", "swagger-ui", "redoc"):
        assert (vendor / name / "LICENSE").is_file(), name
    readme = (vendor / "README.md").read_text("utf-8")
    for name in ("markdown-it", "dompurify", "swagger-ui-dist", "redoc"):
        assert name in readme
