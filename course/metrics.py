"""Prometheus metrics: what the send loop counts, the backlog measured when scraped, and the
exposition that the web app's /metrics and each worker's port serve.

The recording functions (`sent`, `lag`, `rate_wait`, ...) run once per message, so they do no
I/O: a counter in memory, or in PROMETHEUS_MULTIPROC_DIR's memory-mapped files when that is set.

Several processes (`course web --workers N`, Celery's prefork pool) each count their own; with
PROMETHEUS_MULTIPROC_DIR set to an empty folder (the same one for every process of one service,
emptied before the service starts) a scrape of any of them adds up all of them. prometheus_client
reads the variable when it is first imported, so it must be in the environment before the
process starts. Without it, each process shows only its own numbers: right for one process.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The kinds of email (course.models.DeliveryKind, which sits above this module): a label
# value outside them becomes "other", so a caller's mistake cannot grow the series without end.
KINDS = ("lesson", "confirm", "data", "paused", "resend")
OTHER = "other"

# Due to sent: seconds when all is well, hours when the relay is down or the backlog is a morning.
LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

_SENT = Counter("homeward_emails_sent", "Emails the relay accepted", ["kind"])
_FAILED = Counter(
    "homeward_emails_failed", "Emails given up after repeated temporary errors", ["kind"]
)
_RETRIED = Counter(
    "homeward_emails_retried", "Temporary send errors, each put back to try again", ["kind"]
)
_BOUNCED = Counter("homeward_emails_bounced", "Emails the relay refused for good", ["kind"])
_RATE_WAITS = Counter(
    "homeward_rate_limit_waits", "Times a sender waited for the shared sending rate"
)
_RATE_WAIT_SECONDS = Counter(
    "homeward_rate_limit_wait_seconds", "Seconds senders spent waiting for the sending rate"
)
# Summed over the live processes: a dead worker's connections are gone with it.
_CONNECTIONS = Gauge(
    "homeward_smtp_connections_open",
    "SMTP connections open to the relay",
    multiprocess_mode="livesum",
)
# The breaker is shared by every worker; the latest word from any live process is the state.
_BREAKER = Gauge(
    "homeward_relay_paused",
    "1 while the circuit breaker holds all sending back from the relay, else 0",
    multiprocess_mode="livemostrecent",
)
_LAG = Histogram(
    "homeward_delivery_lag_seconds",
    "From when an email was queued (a lesson: claimed, as it fell due) to when the relay"
    " accepted it",
    buckets=LAG_BUCKETS,
)

for _label in (*KINDS, OTHER):
    # Every series exists from the start at 0, so rate() sees the first increase.
    for _counter in (_SENT, _FAILED, _RETRIED, _BOUNCED):
        _counter.labels(_label)


def _kind(kind: str) -> str:
    return kind if kind in KINDS else OTHER


def sent(kind: str, count: int = 1) -> None:
    """`count` emails of `kind` ("lesson", "confirm", ...) accepted by the relay."""
    _SENT.labels(_kind(kind)).inc(count)


def failed(kind: str, count: int = 1) -> None:
    """`count` emails given up for good after repeated temporary errors."""
    _FAILED.labels(_kind(kind)).inc(count)


def retried(kind: str, count: int = 1) -> None:
    """`count` temporary errors, each email to be tried again later."""
    _RETRIED.labels(_kind(kind)).inc(count)


def bounced(kind: str, count: int = 1) -> None:
    """`count` emails the relay refused for good (a hard bounce)."""
    _BOUNCED.labels(_kind(kind)).inc(count)


def lag(seconds: float) -> None:
    """One email accepted `seconds` after it was queued to go. A lesson is queued when a tick
    claims it, which is when it falls due unless the ticks are behind: lessons due and not
    yet claimed show in homeward_oldest_due_seconds instead."""
    # A clock a little apart between hosts can make it negative: that is "on time".
    _LAG.observe(max(seconds, 0.0))


def rate_wait(seconds: float) -> None:
    """A sender waited `seconds` for the shared sending rate."""
    _RATE_WAITS.inc()
    _RATE_WAIT_SECONDS.inc(max(seconds, 0.0))


def connection_opened() -> None:
    _CONNECTIONS.inc()


def connection_closed() -> None:
    _CONNECTIONS.dec()


def breaker(open: bool) -> None:
    """The circuit breaker opened (the relay is paused) or closed again."""
    _BREAKER.set(1 if open else 0)


# --- the backlog, measured at scrape time ---------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    due: int  # active enrollments whose next lesson is due and not yet claimed
    pending: int  # deliveries claimed and not yet sent (in flight or waiting for a retry)
    oldest_due: datetime | None  # when the longest-waiting due lesson became due


class BacklogCollector:
    """`homeward_due_backlog{state="due"|"pending"}` and `homeward_oldest_due_seconds`, from
    `measure` (one indexed query, course.backlog) run at most once every `ttl_seconds`: many
    scrapers, or many web processes scraped at once, cannot turn into a query each. When the
    query fails the metrics are left out of that scrape (Prometheus shows them absent) and the
    error is logged, instead of the whole scrape failing."""

    def __init__(
        self,
        measure: Callable[[], Backlog],
        now: Callable[[], datetime],
        *,
        ttl_seconds: float = 10.0,
    ) -> None:
        self._measure = measure
        self._now = now
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._cached: Backlog | None = None
        self._taken = -float("inf")

    def _current(self) -> Backlog | None:
        if time.monotonic() - self._taken < self._ttl:
            return self._cached
        # A scrape that arrives while another is measuring takes the last figure, not a turn.
        if not self._lock.acquire(blocking=self._cached is None):
            return self._cached
        try:
            if time.monotonic() - self._taken < self._ttl:
                return self._cached
            try:
                self._cached = self._measure()
            except Exception:
                log.warning("the due backlog could not be measured", exc_info=True)
                self._cached = None
            self._taken = time.monotonic()
            return self._cached
        finally:
            self._lock.release()

    def collect(self) -> Iterator[Metric]:
        backlog = self._current()
        if backlog is None:
            return
        family = GaugeMetricFamily(
            "homeward_due_backlog",
            "Lessons due and not yet claimed (due), and emails claimed and not yet sent (pending)",
            labels=["state"],
        )
        family.add_metric(["due"], backlog.due)
        family.add_metric(["pending"], backlog.pending)
        yield family
        oldest = 0.0
        if backlog.oldest_due is not None:
            oldest = max((self._now() - backlog.oldest_due).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "homeward_oldest_due_seconds",
            "How long the longest-waiting due lesson has been due (0: none is waiting)",
            value=oldest,
        )


# --- exposition --------------------------------------------------------------------------


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _Together:
    """Several collectors scraped as one."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self._parts = list(parts)

    def collect(self) -> Iterator[Metric]:
        for part in self._parts:
            yield from part.collect()


def _counted() -> Collector:
    if multiprocess():
        # Read afresh at every scrape: the files of every process of this service, added up.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition(accept: str | None, *extra: Collector) -> tuple[bytes, str]:
    """The body and content type of a scrape, in the format the scraper's Accept header asks
    for (Prometheus text or OpenMetrics), with `extra` collectors (the backlog) added."""
    encode, content_type = choose_encoder(accept or "")
    return encode(_Together([_counted(), *extra])), content_type


def serve_worker_metrics(port: int, host: str = "127.0.0.1") -> WSGIServer | None:
    """Serve this process's metrics (with PROMETHEUS_MULTIPROC_DIR: all of its service's
    processes') on http://host:port/metrics, from a daemon thread, until the process ends or
    the server returned is shut down. 0 turns it off.

    A Celery worker calls it once in its main process. With the prefork pool the lessons are
    sent in child processes, whose counts only reach this port through PROMETHEUS_MULTIPROC_DIR.
    """
    if not port:
        return None
    if not multiprocess():
        log.warning(
            "worker metrics on %s:%d show this process only: set %s to an empty folder to add up"
            " a prefork pool's processes",
            host,
            port,
            MULTIPROC_ENV,
        )
    server, _ = start_http_server(port, addr=host, registry=_Together([_counted()]))
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server


def share_between_processes(processes: int) -> str | None:
    """Before starting `processes` processes of one service (`course web --workers N`): with
    more than one and PROMETHEUS_MULTIPROC_DIR unset, point it at a fresh temporary folder,
    removed at exit; when it is set, empty it of an earlier run's files, or a restarted service
    would count on from the old figures. Returns the folder in use, if any. Processes started
    from this one inherit the variable; this process's own metrics, if it already imported
    prometheus_client, do not change."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        for stale in Path(folder).glob("*.db"):
            stale.unlink(missing_ok=True)
        return folder
    if processes <= 1:
        return None
    folder = tempfile.mkdtemp(prefix="homeward-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = folder
    return folder


def process_exited(pid: int | None = None) -> None:
    """Forget an ended process's open connections and breaker word (multiprocess mode only):
    its counters stay, as they should."""
    if multiprocess():
        mark_process_dead(pid if pid is not None else os.getpid())  # type: ignore[no-untyped-call]
