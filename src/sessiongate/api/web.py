"""The chat page at ``/``, its static files at ``/static``, its settings at ``/api/ui``,
and the API documentation at ``/docs`` and ``/redoc`` (served offline, no CDN).

Everything the page shows comes from files installed with the package
(``sessiongate/web``: the page, its string catalogues in ``web/i18n`` and the vendored
libraries in ``web/vendor``), so it works without internet access.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .. import __version__
from ..config import Settings
from ..errors import NotFound, SessiongateError
from .deps import StateDep, identify_caller

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
I18N_DIR = WEB_DIR / "i18n"
AVATAR_PATH = "/api/ui/avatar"

router = APIRouter(include_in_schema=False)
ui_router = APIRouter(prefix="/api/ui", tags=["session"])


def _html(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type="text/html; charset=utf-8")


@router.get("/")
async def index() -> FileResponse:
    return _html("index.html")


@router.get("/docs")
async def swagger_docs() -> FileResponse:
    # Swagger UI from web/vendor; its start-up code is a file too (no inline script).
    return _html("docs.html")


@router.get("/redoc")
async def redoc_docs() -> FileResponse:
    return _html("redoc.html")


def ui_languages() -> list[str]:
    """The languages the page has a catalogue for (``web/i18n/<tag>.json``), sorted."""
    return sorted(path.stem for path in I18N_DIR.glob("*.json"))


def avatar_file(settings: Settings) -> Path | None:
    """The local image file ``SESSIONGATE_UI_AVATAR`` names, if it names an existing file."""
    value = settings.ui_avatar.strip()
    if not value or value.startswith(("http://", "https://")):
        return None
    path = Path(value).expanduser()
    return path if path.is_file() else None


def avatar_url(settings: Settings) -> str | None:
    """Where the page loads the bot's avatar: a URL, a same-origin path, or None.

    An existing local file is served at ``/api/ui/avatar``; a value that is neither a
    URL, a file nor a ``/path`` is ignored (and logged), so a typo shows the initial.
    """
    value = settings.ui_avatar.strip()
    if not value:
        return None
    if value.startswith(("https://", "http://")):
        return value
    if avatar_file(settings) is not None:
        return AVATAR_PATH
    if value.startswith("/") and not value.startswith("//"):
        return value
    log.warning("SESSIONGATE_UI_AVATAR is neither a URL, a file nor a /path: %r", value)
    return None


def ui_image_sources(settings: Settings) -> tuple[str, ...]:
    """CSP ``img-src`` sources the chat page needs beyond its own origin: the image hosts
    replies may show (``SESSIONGATE_UI_IMAGE_HOSTS``) and an avatar URL's origin."""
    sources = [f"https://{host}" for host in settings.ui_image_hosts if host.strip()]
    sources += [f"http://{host}" for host in settings.ui_image_hosts if host.strip()]
    avatar = settings.ui_avatar.strip()
    if avatar.startswith(("https://", "http://")):
        parts = urlsplit(avatar)
        sources.append(f"{parts.scheme}://{parts.netloc}")
    # A source is one token: drop anything that could end the directive or add another.
    return tuple(dict.fromkeys(s for s in sources if not any(c in s for c in " ;,'\"")))


class UiConfig(BaseModel):
    """What the chat page needs to know to show itself: language, brand and limits."""

    language: str = Field(description="`auto` (the browser's languages) or a language tag.")
    languages: list[str] = Field(description="Languages the page has strings for.")
    title: str = Field(description="Page title; empty: the localized default.")
    bot_name: str = Field(description="The bot's name on its messages; empty: localized.")
    avatar_url: str | None = Field(description="The bot's avatar image; null: its initial.")
    welcome: str = Field(description="Markdown shown on an empty conversation.")
    suggestions: list[str] = Field(description="Questions offered on an empty conversation.")
    accent_color: str = Field(description="`#rrggbb` or `#rgb`; empty: the default.")
    image_hosts: list[str] = Field(description="Hosts whose images replies may show.")
    max_message_chars: int = Field(description="Longest user message the server accepts.")
    provider: str | None = Field(None, description="The provider; admins only.")
    version: str | None = Field(None, description="The gateway version; admins only.")


async def _is_admin(request: Request, state: StateDep) -> bool:
    try:
        caller = await identify_caller(request, state)
    except SessiongateError:
        return False  # a stale cookie must not break the page's start-up
    return caller.is_admin


@ui_router.get("", response_model=UiConfig)
async def ui_config(request: Request, state: StateDep) -> UiConfig:
    """The chat page's settings. Needs no session (it never creates one); the provider and
    version are included only for admin credentials."""
    settings = state.settings
    admin = await _is_admin(request, state)
    return UiConfig(
        language=settings.ui_language,
        languages=ui_languages(),
        title=settings.ui_title,
        bot_name=settings.ui_bot_name,
        avatar_url=avatar_url(settings),
        welcome=settings.ui_welcome,
        suggestions=settings.ui_suggestions,
        accent_color=settings.ui_accent_color,
        image_hosts=settings.ui_image_hosts,
        max_message_chars=settings.max_message_chars,
        provider=state.provider.name if admin else None,
        version=__version__ if admin else None,
    )


@ui_router.get("/avatar", include_in_schema=False)
async def ui_avatar(state: StateDep) -> FileResponse:
    """The avatar file named by ``SESSIONGATE_UI_AVATAR`` (404 unless it names a file)."""
    path = avatar_file(state.settings)
    if path is None:
        raise NotFound("No avatar file is configured.", code="avatar_not_found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not media_type.startswith("image/"):
        raise NotFound("The configured avatar is not an image.", code="avatar_not_found")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


__all__ = ["I18N_DIR", "WEB_DIR", "router", "ui_image_sources", "ui_router"]
