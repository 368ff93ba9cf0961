"""The one place where errors become HTTP: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import metrics
from ..errors import ServiceBusy, SessiongateError, UpstreamError
from ..logs import bind_request_context
from ..store.database import database_unavailable
from .request_id import HEADER as REQUEST_ID_HEADER

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",  # the edge's body cap (api.middleware.body_limit)
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error envelope with ``status``; counted in the refused-requests metrics."""
    metrics.REFUSED.labels(code=code).inc()
    if status == 429:
        metrics.RATE_LIMITED.labels(code=code).inc()
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def _sessiongate_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SessiongateError)
    if isinstance(exc, UpstreamError) and exc.logid:
        # Ties this request's later log lines (the access line too) to the upstream's.
        bind_request_context(upstream_logid=exc.logid)
    if exc.status >= 500:
        # The detail (settings, URLs, upstream words) is for operators only.
        log.warning("request failed: %s (%s)", exc.code, exc.detail or exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.headers())


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "The request body is not valid JSON.")
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    # Echo the field and the rule, never the submitted value.
    message = f"{where}: {first.get('msg', 'invalid')}"
    return error_response(422, "invalid_request", message)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def _is_bad_value(exc: BaseException) -> bool:
    """Whether a database error was caused by a value it cannot take (not by the database).

    asyncpg refuses an out-of-range argument with its ``DataError`` (a ``ValueError``),
    which SQLAlchemy wraps in a plain ``DBAPIError``; SQLite's driver raises
    ``OverflowError``.
    """
    if isinstance(exc, DataError | OverflowError):
        return True
    seen: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else None
    while seen is not None:
        if isinstance(seen, ValueError | OverflowError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A database that refuses connections or a pool that timed out is 503 with
    # Retry-After; a value it cannot hold is 400; anything else stays a 500.
    unavailable = database_unavailable(exc)
    if unavailable is not None:
        return await _sessiongate_error(request, unavailable)
    if _is_bad_value(exc):
        return await _out_of_range(request, exc)
    return await _unexpected_error(request, exc)


async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot represent (an offset past 2**63, a date before year 1
    # once shifted, text PostgreSQL refuses): the request's fault, not ours. The detail
    # (the driver's words) goes to the log only.
    log.warning("refused a value the database cannot hold: %r", exc)
    return error_response(400, "invalid_request", "A value in the request is out of range.")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the request-id middleware (Starlette's outermost layer answers 500s),
    # so the id is taken from the request state, for the log line and the header.
    request_id = getattr(request.state, "request_id", None)
    log.exception("unhandled error", exc_info=exc, extra={"request_id": request_id})
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return error_response(500, "internal_error", "Something went wrong on our side.", headers)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    # Redis (session locks, turn admission, token cache, reply streams) cannot be
    # reached or its pool stayed full: the request may be retried, so 503.
    log.warning("Redis unavailable: %r", exc)
    busy = ServiceBusy(
        "A shared service is unreachable; try again shortly.",
        code="coordination_unavailable",
        retry_after=5,
    )
    return await _sessiongate_error(request, busy)


def install_error_handlers(app: FastAPI) -> None:
    """Register the translations from exceptions to the error envelope."""
    app.add_exception_handler(SessiongateError, _sessiongate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)  # incl. pool timeouts
    app.add_exception_handler(OSError, _database_error)  # asyncpg's refused connect
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(Exception, _unexpected_error)


__all__ = ["error_response", "install_error_handlers"]
