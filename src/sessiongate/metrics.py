"""Prometheus metrics of the gateway (prometheus-client), safe with several processes.

Every metric is defined here, once, at import; callers only ``inc``/``observe``/``set``.
Durations are seconds. Label values are bounded sets (provider names, outcomes, error
codes, route templates), never ids or user input.

Several processes (``sessiongate serve --workers N``, or several ``serve`` processes on
one host) share counts through prometheus-client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set *before this module is imported*, each process writes its
values to files there and ``GET /metrics`` on any process sums them (gauges marked
``livesum`` add up the live processes only). ``prepare_multiprocess`` sets that up for a
parent process before it starts its workers. Without the variable each process counts
for itself (one process: the common case).

Values that are not a process's to count — how many sessions are active — are read from
the database at scrape time (``sessions_active_family``), so every process reports the
fleet's truth instead of its own share.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The environment variable prometheus-client reads at import to enable multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Decided once, like prometheus-client decides how the values below are stored.
_SHARED_DIR = Path(os.environ[MULTIPROC_ENV]) if os.environ.get(MULTIPROC_ENV) else None
if _SHARED_DIR is not None:
    # Unlabelled gauges open their file as soon as they are defined, just below.
    _SHARED_DIR.mkdir(parents=True, exist_ok=True)

# No `_created` series beside every counter and histogram: Prometheus does not need them
# and they double the exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Turns take from well under a second (cached fake upstreams) to minutes (long replies of
# a slow model); first tokens and upstream calls cluster lower.
_TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# -- turns (called from the turn core) -------------------------------------------------

TURNS = Counter(
    "sessiongate_turns",
    "Turns finished, by provider and outcome (complete, incomplete, error, interrupted, ...).",
    ["provider", "outcome"],
)
"""Turns finished. Labels: ``provider`` (local, openai, coze-bot, coze-workflow) and
``outcome`` (the stored reply's status: complete, incomplete, error, ...). Exposed as
``sessiongate_turns_total``."""

TURN_SECONDS = Histogram(
    "sessiongate_turn_duration_seconds",
    "Whole turns, from admission to the stored reply, in seconds.",
    ["provider"],
    buckets=_TURN_BUCKETS,
)
"""Duration of whole turns (seconds), from admission to the stored reply, by provider."""

TTFT_SECONDS = Histogram(
    "sessiongate_time_to_first_token_seconds",
    "Time from the start of a turn to the first text delta of its reply, in seconds.",
    ["provider"],
    buckets=_FIRST_TOKEN_BUCKETS,
)
"""Time to first token (seconds): turn start to the first reply delta, by provider."""

UPSTREAM_SECONDS = Histogram(
    "sessiongate_upstream_duration_seconds",
    "The provider's part of a turn: from asking the upstream to the end of its reply.",
    ["provider"],
    buckets=_TURN_BUCKETS,
)
"""Upstream latency (seconds): from the provider request to the end of its stream."""

REPLIES_IN_PROGRESS = Gauge(
    "sessiongate_replies_in_progress",
    "Replies being generated right now (summed over live processes).",
    multiprocess_mode="livesum",
)
"""Replies being generated now; ``inc`` when generation starts, ``dec`` when it ends."""

# -- providers and Coze ----------------------------------------------------------------

QUEUE_DEPTH = Gauge(
    "sessiongate_provider_queue_depth",
    "Turns waiting for the embedded model while another one generates.",
    multiprocess_mode="livesum",
)
"""Turns handed to the local model's worker that have not started generating yet."""

TOKEN_EXCHANGES = Counter(
    "sessiongate_coze_token_exchanges",
    "Coze OAuth JWT token exchange attempts, by outcome (ok, refused, error).",
    ["outcome"],
)
"""Coze token exchange attempts. ``outcome``: ``ok`` (a token), ``refused`` (Coze said no:
configuration), ``error`` (timeout, unreachable, 5xx or 429: retried)."""

TOKEN_CACHE = Counter(
    "sessiongate_coze_token_cache_lookups",
    "Coze access token lookups: hit (a cached, fresh token) or miss (waited for an exchange).",
    ["result"],
)
"""Coze access token lookups by ``result``: ``hit`` or ``miss``."""

# -- the HTTP edge ---------------------------------------------------------------------

REFUSED = Counter(
    "sessiongate_refused_requests",
    "Requests answered with the error envelope, by error code.",
    ["code"],
)
"""Requests answered with ``{"error": {"code", ...}}``, by ``code``."""

RATE_LIMITED = Counter(
    "sessiongate_rate_limited_requests",
    "Requests refused with 429 (rate limits, concurrent-turn caps), by error code.",
    ["code"],
)
"""Requests refused with HTTP 429, by error ``code``."""

HTTP_REQUESTS = Counter(
    "sessiongate_http_requests",
    "HTTP requests, by method, route template and status.",
    ["method", "route", "status"],
)
"""HTTP requests by ``method``, ``route`` (the template, e.g. ``/api/conversations/{id}``;
``unmatched`` for no route) and ``status``."""

HTTP_SECONDS = Histogram(
    "sessiongate_http_request_duration_seconds",
    "HTTP request durations (streams: until the last byte), by method and route template.",
    ["method", "route"],
    buckets=_HTTP_BUCKETS,
)
"""HTTP request duration (seconds) until the response's last byte, by method and route."""


# -- multiprocess set-up ---------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    """The shared directory this process writes its metrics to, or None (counts alone).

    Fixed when this module is imported (``PROMETHEUS_MULTIPROC_DIR`` at that moment).
    """
    return _SHARED_DIR


def prepare_multiprocess(directory: str | os.PathLike[str] | None = None) -> Path:
    """Set up multiprocess metrics for the worker processes this process will start.

    ``directory``: where the workers write their values; None makes a new temporary one
    (remove it at exit with ``cleanup_multiprocess``). The directory is created and
    emptied of earlier runs' ``*.db`` files (stale counts would be summed in), then
    ``PROMETHEUS_MULTIPROC_DIR`` is set in ``os.environ`` so that workers started
    afterwards inherit it. Call it before starting the workers and before anything in
    them imports prometheus-client (a spawned worker is a fresh interpreter, so setting
    the variable in the parent is enough). Do not point two independently started
    servers' ``prepare_multiprocess`` at one directory: the second would wipe the
    first's counts — give them a shared ``PROMETHEUS_MULTIPROC_DIR`` instead.
    Returns the directory.
    """
    path = (
        Path(directory)
        if directory is not None
        else Path(tempfile.mkdtemp(prefix="sessiongate-metrics-"))
    )
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def cleanup_multiprocess(directory: Path) -> None:
    """Remove a directory made by ``prepare_multiprocess(None)`` (after the workers exit)."""
    shutil.rmtree(directory, ignore_errors=True)


def mark_process_dead(pid: int | None = None) -> None:
    """Drop this (or ``pid``'s) live gauges from the shared directory; call at shutdown.

    Without it a stopped worker's ``livesum`` gauges (replies in progress, queue depth)
    would still be summed in. A no-op outside multiprocess mode.
    """
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            pid if pid is not None else os.getpid(), str(directory)
        )


# -- exposition ------------------------------------------------------------------------


def sessions_active_family(count: int) -> GaugeMetricFamily:
    """The ``sessiongate_sessions_active`` gauge with ``count`` (read from the database)."""
    return GaugeMetricFamily(
        "sessiongate_sessions_active",
        "Sessions not yet expired (from the database at scrape time: the fleet's count).",
        value=count,
    )


class _Fixed(Collector):
    """A collector that yields metric families computed before the scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(extra: Iterable[Metric] = ()) -> bytes:
    """The Prometheus text exposition of every metric, plus ``extra`` families.

    In multiprocess mode the values of all processes writing to the shared directory
    are aggregated (counters and histograms summed, ``livesum`` gauges over live
    processes); otherwise this process's registry is rendered.
    """
    directory = multiprocess_dir()
    if directory is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(_Fixed(extra))
    return generate_latest(registry) + generate_latest(scraped)


__all__ = [
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "MULTIPROC_ENV",
    "QUEUE_DEPTH",
    "RATE_LIMITED",
    "REFUSED",
    "REPLIES_IN_PROGRESS",
    "TOKEN_CACHE",
    "TOKEN_EXCHANGES",
    "TTFT_SECONDS",
    "TURNS",
    "TURN_SECONDS",
    "UPSTREAM_SECONDS",
    "cleanup_multiprocess",
    "mark_process_dead",
    "multiprocess_dir",
    "prepare_multiprocess",
    "render",
    "sessions_active_family",
]
