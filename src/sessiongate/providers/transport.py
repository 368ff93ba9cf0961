"""The one place where ``httpx`` (and ``httpx2``, which ``openai>=3`` uses) and ``aiohttp``
(the Coze workflow stream) transport failures become sessiongate errors.

The caller's message names only the upstream in plain words; the exception type, its
text and the URL go to ``detail`` and the log, never to a client.
"""

from __future__ import annotations

import logging

import aiohttp
import httpx

from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    # The builtin TimeoutError: what a caller's own timer (``tasks.Watchdog``) reports.
    timeouts: list[type[Exception]] = [httpx.TimeoutException, TimeoutError]
    errors: list[type[Exception]] = [httpx.HTTPError, aiohttp.ClientError]
    try:
        import httpx2
    except ImportError:
        pass
    else:
        timeouts.append(httpx2.TimeoutException)
        errors.append(httpx2.HTTPError)
    return tuple(timeouts), tuple(errors)


#: (timeouts, every transport error) of httpx, httpx2 and aiohttp.
TIMEOUT_ERRORS, TRANSPORT_ERRORS = _transport_errors()


def transport_error(
    exc: BaseException,
    *,
    upstream: str,
    started: bool,
    logid: str | None = None,
    where: str | None = None,
) -> UpstreamError:
    """Map a transport failure talking to ``upstream`` (a plain name, e.g. "Coze").

    ``started``: whether the response had begun (a cut stream, not an unreachable
    host). ``where`` (a URL or setting) and the exception go to ``detail`` only.
    Timeouts → ``UpstreamTimeout`` (504); a cut stream → ``UpstreamError`` (502);
    anything else → ``UpstreamUnavailable`` (502).
    """
    detail = f"{upstream}{f' at {where}' if where else ''}: {type(exc).__name__}: {exc}"
    suffix = f" (log id {logid})" if logid else ""
    error: UpstreamError
    if isinstance(exc, TIMEOUT_ERRORS):
        what = "stopped sending" if started else "did not answer in time"
        error = UpstreamTimeout(f"{upstream} {what}.{suffix}", logid=logid, detail=detail)
    elif started:
        error = UpstreamError(
            f"The connection to {upstream} broke mid-reply.{suffix}", logid=logid, detail=detail
        )
    else:
        error = UpstreamUnavailable(
            f"{upstream} could not be reached.{suffix}", logid=logid, detail=detail
        )
    log.warning("upstream transport failure: %s", detail)
    return error


__all__ = ["TIMEOUT_ERRORS", "TRANSPORT_ERRORS", "transport_error"]
