"""The service's Prometheus metrics, and the one-line calls service modules make to count.

Service modules call the small functions below (``metrics.signin("denied", code)``);
none of them imports prometheus-client or knows how the numbers are exposed.
``/metrics`` (``idp_service/web/observability.py``) renders :func:`exposition`.

Under gunicorn every worker is its own process, so the values live in
prometheus-client's *multiprocess* files: ``devicetrust serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker starts, and
:func:`exposition` merges every process's files. Without that variable (the
development server, tests in one process) the default in-process registry is used.

Label values are always from a closed set (outcomes, protocol error codes, SCIM
operations, HTTP status codes, job names): nothing a client chooses freely.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

P = ParamSpec("P")
R = TypeVar("R")

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sign-in and verify latencies: a verify costs about a millisecond, a whole sign-in
# (page, agent, SAML) a few hundred milliseconds to a few seconds with a person in it.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_HUMAN = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

SIGNINS = Counter(
    "devicetrust_signins",
    "Sign-ins decided: verified (a device answer verified it), or denied with the refusal code."
    " A sign-in denied after it was verified (a posture block, a revocation) counts in both.",
    ["outcome", "code"],
)
SIGNIN_SECONDS = Histogram(
    "devicetrust_signin_duration_seconds",
    "Time from a sign-in's start to its hand-over, verified, to its surface (saml, admin, local).",
    ["kind"],
    buckets=_HUMAN,
)
VERIFY_SECONDS = Histogram(
    "devicetrust_verify_duration_seconds",
    "Time to judge a device's answer to a login challenge (the verify path).",
    ["result"],
    buckets=_FAST,
)
CHALLENGES = Counter(
    "devicetrust_challenges",
    "Login challenge answers: consumed (accepted once) or refused, by protocol code.",
    ["result", "code"],
)
REPORTS = Counter(
    "devicetrust_reports_ingested", "Posture reports from agents, by result (stored).", ["result"]
)
CHECK_RESULTS = Counter(
    "devicetrust_check_results",
    "Posture check results evaluated from reports, by status (PASS, FAIL, UNKNOWN, ERROR).",
    ["status"],
)
SCIM_REQUESTS = Counter(
    "devicetrust_scim_requests",
    "SCIM requests by operation (create, replace, patch, delete, get, list, ...) and status.",
    ["op", "status"],
)
WEBHOOK_DELIVERIES = Counter(
    "devicetrust_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed).",
    ["outcome"],
)
HTTP_REQUESTS = Counter(
    "devicetrust_http_requests",
    "HTTP requests answered, by status code class (2xx, 3xx, 4xx, 5xx).",
    ["status"],
)
DB_POOL = Gauge(
    "devicetrust_db_pool_connections",
    "Database connections of this deployment's pools: in use (checked out) or open.",
    ["state"],
    multiprocess_mode="livesum",
)
JOB_LAST_SUCCESS = Gauge(
    "devicetrust_job_last_success_timestamp_seconds",
    "When each periodic job last finished without error here (Unix time).",
    ["job"],
    multiprocess_mode="max",
)

# Every metric family name /metrics exposes (the dashboards and alerts may name only these,
# with the _total, _bucket, _sum, _count or _created suffixes prometheus-client adds).
FAMILIES = tuple(
    m._name  # noqa: SLF001 - the registered family name
    for m in (
        SIGNINS,
        SIGNIN_SECONDS,
        VERIFY_SECONDS,
        CHALLENGES,
        REPORTS,
        CHECK_RESULTS,
        SCIM_REQUESTS,
        WEBHOOK_DELIVERIES,
        HTTP_REQUESTS,
        DB_POOL,
        JOB_LAST_SUCCESS,
    )
)


def signin(outcome: str, code: str | None = None) -> None:
    """A sign-in was decided: ``verified``, or ``denied`` with its refusal code."""
    SIGNINS.labels(outcome, code or "").inc()


def signin_duration(kind: str, seconds: float) -> None:
    """A sign-in of surface ``kind`` (saml, admin, local) succeeded after ``seconds``."""
    if seconds >= 0:
        SIGNIN_SECONDS.labels(kind).observe(seconds)


def verify_path(func: Callable[P, R]) -> Callable[P, R]:
    """Decorates the verify path: times each call and counts its challenge (:func:`verifying`)."""

    @functools.wraps(func)
    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        with verifying():
            return func(*args, **kwargs)

    return timed


@contextmanager
def verifying() -> Iterator[None]:
    """Time the verify path and count the challenge: consumed, or refused with its code."""
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        code = str(getattr(exc, "code", "") or type(exc).__name__)
        VERIFY_SECONDS.labels("refused").observe(time.perf_counter() - start)
        CHALLENGES.labels("refused", code).inc()
        raise
    VERIFY_SECONDS.labels("ok").observe(time.perf_counter() - start)
    CHALLENGES.labels("consumed", "").inc()


def report_ingested() -> None:
    """An agent's posture report was stored."""
    REPORTS.labels("stored").inc()


def check_results(statuses: Iterable[str]) -> None:
    """Posture checks were evaluated, with these result statuses."""
    for status in statuses:
        CHECK_RESULTS.labels(status).inc()


def scim_request(op: str, status: int) -> None:
    """A SCIM request was answered."""
    SCIM_REQUESTS.labels(op, str(status)).inc()


def webhook_delivery(outcome: str) -> None:
    """A webhook delivery attempt ended: ``delivered``, ``retry`` or ``failed``."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def http_response(status: int) -> None:
    """An HTTP response was sent."""
    HTTP_REQUESTS.labels(f"{status // 100}xx").inc()


def age(since: dt.datetime) -> float:
    """Seconds from ``since`` (naive meaning UTC) to now."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - since).total_seconds()


def job_succeeded(job: str) -> None:
    """A periodic job finished without error in this process."""
    JOB_LAST_SUCCESS.labels(job).set(time.time())


def watch_pool(engine: Any) -> None:
    """Count the pool's connections (SQLAlchemy pool events) in ``DB_POOL``.

    Only connections opened (and checked out) after this call are counted, so a
    connection made earlier never drives the gauges below what they saw.
    """
    from sqlalchemy import event

    in_use, opened = DB_POOL.labels("in_use"), DB_POOL.labels("open")
    mark = "devicetrust.metrics"

    @event.listens_for(engine, "connect")
    def _connect(_: Any, record: Any) -> None:
        record.info[mark] = False  # counted open, not checked out
        opened.inc()

    @event.listens_for(engine, "close")
    def _close(_: Any, record: Any) -> None:
        if record.info.pop(mark, None) is not None:
            opened.dec()

    @event.listens_for(engine, "checkout")
    def _checkout(_: Any, record: Any, __: Any) -> None:
        if record.info.get(mark) is False:
            record.info[mark] = True
            in_use.inc()

    @event.listens_for(engine, "checkin")
    def _checkin(_: Any, record: Any) -> None:
        if record.info.get(mark) is True:
            record.info[mark] = False
            in_use.dec()


def use_multiprocess(directory: str) -> None:
    """Keep values in files in ``directory`` from now on (before any worker starts).

    Every metric above has labels, so no value exists before its first
    ``labels()``: values made after this call, in any worker, are file-backed.
    """
    from prometheus_client import values

    os.environ[MULTIPROC_VARIABLE] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The directory the processes' metric files are in, when running multiprocess."""
    return os.environ.get(MULTIPROC_VARIABLE) or None


def exposition() -> bytes:
    """Every process's metrics, in the Prometheus text format."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """A worker process exited: drop its live gauges (gunicorn's ``child_exit``)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
