"""Pure-ASGI middlewares, one per edge rule (see each module's docstring)."""

from .body_limit import BodySizeLimitMiddleware, BodyTooLarge
from .cross_site import CrossSiteMiddleware, is_cross_site
from .json_text import JsonTextMiddleware
from .page_headers import PageHeadersMiddleware

__all__ = [
    "BodySizeLimitMiddleware",
    "BodyTooLarge",
    "CrossSiteMiddleware",
    "JsonTextMiddleware",
    "PageHeadersMiddleware",
    "is_cross_site",
]
