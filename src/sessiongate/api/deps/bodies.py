"""Request-body guards: JSON only, and a size cap."""

from __future__ import annotations

from fastapi import Depends, Request

from ...config import Settings
from ...errors import BadRequest


def json_body_limit(settings: Settings) -> int:
    """Largest ``/api`` request body, bytes: enough for the longest valid message.

    JSON escapes can take 6 bytes per character; anything larger cannot be valid. The
    edge (``api.middleware.body_limit``) enforces it, whatever the body's framing.
    """
    return settings.max_message_chars * 6 + 16_384


def require_json(request: Request) -> None:
    """Refuse non-JSON bodies (415). (Sizes are capped at the edge, in bytes.)"""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(
            "Send the body as JSON with 'Content-Type: application/json'.",
            code="unsupported_media_type",
            status=415,
        )


JsonBody = Depends(require_json)


__all__ = [
    "JsonBody",
    "json_body_limit",
    "require_json",
]
