"""Logging: structlog rendering for every log record of the process, configured once.

The code logs through the standard library (``logging.getLogger(__name__)``); so do
uvicorn and the libraries. ``configure_logging`` puts one handler on the root logger
whose formatter is structlog's ``ProcessorFormatter``, so every record — ours, uvicorn's
access and error logs, SQLAlchemy's, cozepy's — comes out in one format:

- ``json``: one JSON object per line (``timestamp``, ``level``, ``logger``, ``event``,
  and the request's ``request_id`` / ``upstream_logid`` when bound);
- ``console`` (default): aligned text for people, values ``repr``'d.

Security: either way no value can forge a line. JSON escapes control characters; the
console renderer ``repr``s values and ``escape_controls`` escapes the event text, so a
path id containing ``%0A`` shows as ``\\n`` inside its own line.

Message content (what end users wrote and models answered) never reaches a log unless
``SESSIONGATE_LOG_CONTENT=true``: the gateway's own code passes any content through
``content_for_log``, and the libraries that log request bodies or SQL parameters at
debug level (openai, aiosqlite, cozepy, httpcore, SQLAlchemy's engine echo) are held at
a level where they do not.

Nothing here runs at import: ``sessiongate serve`` and the app factory call
``configure_logging`` / ``ensure_logging``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]

# Logger name prefix -> the lowest level let through while content logging is off. These
# libraries write request bodies or bound SQL parameters (chat messages) below it.
_CONTENT_BEARING: dict[str, int] = {
    "openai": logging.INFO,  # "Request options: {... json_data: {messages: ...}}"
    "aiosqlite": logging.INFO,  # "executing functools.partial(..., (params))"
    "cozepy": logging.INFO,  # request and response bodies
    "httpcore": logging.INFO,
    "hpack": logging.INFO,
    "uvicorn.asgi": logging.INFO,  # ASGI messages, bodies included (trace level)
    "sqlalchemy.engine": logging.WARNING,  # INFO is echo: statements with parameters
}
# uvicorn configures these itself unless told not to; they must reach the root handler.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

_content_enabled = False
_configured = False

# C0 controls, DEL, NEL and the Unicode line/paragraph separators: anything a log viewer
# may treat as the end of a line.
_CONTROL_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, 0x85]},
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def content_for_log(text: str) -> str:
    """``text`` if ``SESSIONGATE_LOG_CONTENT`` is on, else only its length.

    The one gate for message content (user messages, replies, upstream bodies quoting
    them) in the gateway's own log calls: ``log.debug("reply %s", content_for_log(t))``.
    """
    return text if _content_enabled else f"<{len(text)} characters>"


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters written as escapes."""
    return text.translate(_CONTROL_ESCAPES)


def _drop_uvicorn_colors(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes an ANSI-coloured copy of some messages as an ``extra``.
    event_dict.pop("color_message", None)
    return event_dict


def _escape_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = escape_controls(event)
    return event_dict


class _ContentFilter(logging.Filter):
    """Drops records of content-bearing libraries below their safe level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _content_enabled:
            return True
        for prefix, lowest in _CONTENT_BEARING.items():
            if record.name == prefix or record.name.startswith(prefix + "."):
                return record.levelno >= lowest
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    (A handler that kept the stream it was built with would write to a closed stream
    once a test runner or a daemonizer swapped ``sys.stderr``.)
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        return None


def _renderer(fmt: LogFormat) -> list[Processor]:
    if fmt == "json":
        return [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ]
    return [
        _escape_event,
        structlog.dev.ConsoleRenderer(
            colors=False,
            repr_native_str=True,
            exception_formatter=structlog.dev.plain_traceback,
        ),
    ]


def configure_logging(
    *, fmt: LogFormat = "console", level: str = "info", log_content: bool = False
) -> None:
    """Route every log record of the process through structlog, rendered as ``fmt``.

    ``level``: debug, info, warning or error (root logger level). ``log_content``: let
    message content into the logs (``content_for_log``; the libraries' debug bodies).
    Replaces the handler an earlier call installed and leaves other handlers (a test
    runner's) alone. Raises ``ValueError`` for an unknown ``fmt`` or ``level``.
    """
    global _content_enabled, _configured
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}: use json or console")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    _content_enabled = log_content

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        _drop_uvicorn_colors,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderer(fmt),
            ],
        )
    )
    handler.addFilter(_ContentFilter())
    handler._sessiongate = True  # type: ignore[attr-defined]

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_sessiongate", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    _configured = True


def ensure_logging(*, fmt: LogFormat, level: str, log_content: bool) -> None:
    """``configure_logging`` unless this process already configured it (app factory)."""
    if not _configured:
        configure_logging(fmt=fmt, level=level, log_content=log_content)


def bind_request_context(**values: Any) -> None:
    """Add ``values`` (e.g. ``upstream_logid``) to every later log line of this request."""
    structlog.contextvars.bind_contextvars(**values)


__all__ = [
    "LogFormat",
    "bind_request_context",
    "configure_logging",
    "content_for_log",
    "ensure_logging",
    "escape_controls",
]
