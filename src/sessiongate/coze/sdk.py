"""The boundary with the official SDK ``cozepy`` and with ``httpx`` (and the translation
of aiohttp's failures, whose client for the workflow stream is ``coze.workflow_http``).

Everything foreign is handled here: cozepy is imported without its import-time warning
and its logging is handed back to the application; each turn gives cozepy a client
that records the responses it opens so the turn can close them (cozepy never closes a
stream it hands out); and every cozepy or httpx failure — including the bare
``Exception`` cozepy raises for an SSE ``error`` event — is translated into a
sessiongate error.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import ssl
import warnings
from typing import Any

import httpx
from pydantic import ValidationError

from ..errors import SessiongateError, UpstreamError
from ..logs import content_for_log
from ..providers.transport import transport_error as _transport_error
from .errors import chat_error, parse_code, parse_retry_after, with_logid
from .stream import decode_data

with warnings.catch_warnings():
    # cozepy imports authlib.jose, which warns about its own deprecation at import time.
    # authlib installs an "always" filter for that warning when first imported, so it is
    # imported before our "ignore" goes on top; catch_warnings then drops both.
    with contextlib.suppress(ImportError):
        importlib.import_module("authlib.deprecate")
    warnings.simplefilter("ignore", DeprecationWarning)
    import cozepy
    from cozepy.exception import CozeAPIError
    from cozepy.request import AsyncHTTPClient

log = logging.getLogger(__name__)

_ERROR_EVENT_PREFIX = "error event: "


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The CA bundle every Coze client shares (building one loads it: ~50 ms)."""
    return httpx.create_ssl_context()


def new_http_client() -> httpx.AsyncClient:
    """A connection pool for Coze calls (timeouts are set per request by their users)."""
    return httpx.AsyncClient(
        verify=ssl_context(),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )


def adopt_cozepy_logging() -> None:
    """Route cozepy's log records through the application's logging configuration."""
    # cozepy attaches its own stderr handler at import and stops propagation; hand its
    # records back to the application's logging configuration instead.
    logger = logging.getLogger("cozepy")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


class _UnusedTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("requests of a turn are sent through the provider's pool")


_UNUSED_TRANSPORT = _UnusedTransport()


class TurnHTTPClient(AsyncHTTPClient):
    """The client cozepy uses for one turn: sends through the shared pool, keeps responses.

    cozepy returns streams without ever closing their responses; recording them here
    lets the turn close each one on every path, including an early stop by the consumer.
    """

    def __init__(self, pool: httpx.AsyncClient, timeout: httpx.Timeout) -> None:
        # cozepy's AsyncHTTPClient.__init__ is unannotated.
        super().__init__(transport=_UNUSED_TRANSPORT, trust_env=False)  # type: ignore[no-untyped-call]
        self._pool = pool
        # Not `_timeout`: httpx.AsyncClient keeps its own default under that name.
        self._turn_timeout = timeout.as_dict()
        self.responses: list[httpx.Response] = []

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        request.extensions["timeout"] = self._turn_timeout
        response = await self._pool.send(request, **kwargs)
        self.responses.append(response)
        return response

    @property
    def last_response(self) -> httpx.Response | None:
        return self.responses[-1] if self.responses else None

    async def close_responses(self) -> None:
        for response in self.responses:
            await response.aclose()


def transport_error(exc: BaseException, logid: str | None, *, started: bool) -> UpstreamError:
    """Map an httpx or aiohttp failure; ``started``: whether the response stream had begun."""
    return _transport_error(exc, upstream="Coze", started=started, logid=logid)


def envelope_error(
    status: int, body: Any, logid: str | None, retry_after: str | None
) -> UpstreamError:
    """The error for a JSON (non-SSE) answer: Coze's ``{"code","msg","detail":{"logid"}}``."""
    code = parse_code(body.get("code")) if isinstance(body, dict) else None
    if isinstance(body, dict) and logid is None:
        detail = body.get("detail")
        if isinstance(detail, dict) and isinstance(detail.get("logid"), str):
            logid = detail["logid"]
    if code == 0:
        code = None
    log.warning(
        "Coze answered HTTP %s code=%s msg=%.200s logid=%s",
        status,
        code,
        body.get("msg") if isinstance(body, dict) else None,
        logid,
    )
    return chat_error(
        code, logid=logid, http_status=status, retry_after=parse_retry_after(retry_after)
    )


def from_cozepy(exc: Exception, response: httpx.Response | None) -> SessiongateError:
    """Translate anything cozepy (or httpx beneath it) raised into a sessiongate error."""
    if isinstance(exc, SessiongateError):
        return exc
    logid = response.headers.get("x-tt-logid") if response is not None else None
    started = response is not None and response.status_code == 200
    if isinstance(exc, httpx.HTTPError):
        return transport_error(exc, logid, started=started)
    if isinstance(exc, CozeAPIError):
        logid = exc.logid or logid
        http_status = response.status_code if response is not None else None
        code = exc.code
        # cozepy reports a non-JSON error body as code=<HTTP status>: not a Coze code.
        if code is not None and http_status is not None and code == http_status and code >= 400:
            code = None
        log.warning(
            "Coze request failed: HTTP %s code=%s msg=%.200s logid=%s",
            http_status,
            code,
            exc.msg,
            logid,
        )
        retry_after = response.headers.get("retry-after") if response is not None else None
        return chat_error(
            code if code else None,
            logid=logid,
            http_status=http_status,
            retry_after=parse_retry_after(retry_after),
        )
    text = str(exc)
    if type(exc) is Exception and text.startswith(_ERROR_EVENT_PREFIX):
        # cozepy raises a bare Exception("error event: <data>") for an SSE error event.
        data = decode_data(text[len(_ERROR_EVENT_PREFIX) :])
        info = data if isinstance(data, dict) else {}
        # An in-stream error's text may quote the conversation.
        log.warning(
            "Coze error event: code=%s msg=%.200s logid=%s",
            info.get("code"),
            content_for_log(str(info.get("msg"))),
            logid,
        )
        return chat_error(parse_code(info.get("code")), logid=logid)
    kind = "malformed event" if isinstance(exc, cozepy.CozeError | ValidationError) else "failure"
    # An unexpected failure is logged with its whole chain and traceback, to be
    # diagnosable; a malformed event only by type (a validation error quotes the event,
    # which may quote the conversation).
    log.warning(
        "Coze client %s: %s (logid %s)",
        kind,
        type(exc).__name__,
        logid,
        exc_info=exc if kind == "failure" else None,
    )
    return UpstreamError(
        with_logid(f"Coze sent a reply the gateway could not read ({kind}).", logid), logid=logid
    )


def event_pair(event: Any) -> tuple[str, Any]:
    """A cozepy ``ChatEvent`` as (event name, JSON-like data), as ``ReplyMapper`` takes it."""
    name = getattr(event.event, "value", str(event.event))
    if event.message is not None:
        return name, event.message.model_dump(mode="json")
    if event.chat is not None:
        return name, event.chat.model_dump(mode="json")
    unknown = event.unknown if isinstance(event.unknown, dict) else {}
    return str(unknown.get("event", name)), decode_data(str(unknown.get("data", "")))


__all__ = [
    "CozeAPIError",
    "TurnHTTPClient",
    "adopt_cozepy_logging",
    "cozepy",
    "envelope_error",
    "event_pair",
    "from_cozepy",
    "new_http_client",
    "ssl_context",
    "transport_error",
]
