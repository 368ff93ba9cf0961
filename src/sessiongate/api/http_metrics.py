"""HTTP request counts and durations by route template: a pure-ASGI middleware.

Labelled with the route's template (``/api/conversations/{conversation_id}``), never the
raw path, so ids and scanners' random paths cannot blow up the metric's cardinality:
paths no route matches count as ``unmatched``, mounted apps (``/static``) under their
mount path. A streaming response is timed until its last byte.
"""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (after the app ran)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # The router put the mounted app it chose into the scope as its endpoint.
    endpoint = scope.get("endpoint")
    router = getattr(scope.get("app"), "router", None)
    for candidate in getattr(router, "routes", ()):
        if isinstance(candidate, Mount) and endpoint is not None and candidate.app is endpoint:
            return candidate.path + "/{path}"
    return UNMATCHED


class HttpMetricsMiddleware:
    """Counts HTTP requests by method, route template and status, and times them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before it answers

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "OTHER"
            route = route_template(scope)
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_SECONDS.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )


__all__ = ["HttpMetricsMiddleware", "UNMATCHED", "route_template"]
