"""Prometheus metrics at ``GET /metrics``: requests, latency, errors, FHIR writes, the pool.

Labels are route templates (``/fhir/<resource_type>/<resource_id>``), methods, statuses and
FHIR resource types: never a URL, an id, a query string or anything about a patient.

Under gunicorn with several workers every worker counts in its own files in the directory
``PROMETHEUS_MULTIPROC_DIR`` (``serve`` makes a fresh one when the variable is absent) and
a scrape, answered by any worker, adds up the files of all of them. Without the variable
(the development server, the tests) the process's own registry answers.

``prometheus_client`` decides between the two when it is first imported, so it is imported
here only inside the functions: ``serve`` sets the variable before building the app.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy import event

from service.db import Database

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "(unmatched)"
# Seconds: from a health probe to a large transaction Bundle.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# FHIR write routes (view function) -> interaction label.
FHIR_WRITES = {
    "fhir.create": "create",
    "fhir.update": "update",
    "fhir.conditional_update": "update",
    "fhir.patch": "patch",
    "fhir.delete": "delete",
}
FHIR_TYPES = ("CarePlan", "Goal", "QuestionnaireResponse", "Observation", "Flag")
# Label combinations whose metric children are kept at hand (routes x methods x statuses).
MAX_CACHED_LABELS = 4096


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


@dataclass
class _Metrics:
    requests: Any
    duration: Any
    errors: Any
    fhir_writes: Any
    audit_commits: Any
    audit_records: Any
    pool_in_use: Any | None  # a live gauge in multiprocess mode; a scrape-time collector else


_lock = threading.Lock()
_metrics: _Metrics | None = None
# The engines of this process: the pool gauge is their sum.
_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def _connections_in_use() -> float:
    total = 0
    for engine in list(_engines):
        checkedout = getattr(engine.pool, "checkedout", None)
        if checkedout is not None:  # QueuePool; SQLite's in-memory pools do not count
            total += checkedout()
    return float(total)


class _PoolCollector:
    """``ipt_db_pool_connections_in_use``, read from the pools when scraped."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "ipt_db_pool_connections_in_use",
            "Database connections checked out of the pool (in use by a request).",
            value=_connections_in_use(),
        )


def _create() -> _Metrics:
    from prometheus_client import REGISTRY, Counter, Gauge, Histogram, values

    if multiprocess_dir() and "Mmaped" not in getattr(values.ValueClass, "__name__", ""):
        # prometheus_client was imported before the variable was set: count in files now.
        values.ValueClass = values.get_value_class()
    pool_in_use = None
    if multiprocess_dir():
        # Each worker keeps its pool's count up to date; a scrape sums the live workers'.
        pool_in_use = Gauge(
            "ipt_db_pool_connections_in_use",
            "Database connections checked out of the pool (in use by a request).",
            multiprocess_mode="livesum",
        )
    else:
        REGISTRY.register(_PoolCollector())
    return _Metrics(
        requests=Counter(
            "ipt_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
        ),
        duration=Histogram(
            "ipt_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=BUCKETS,
        ),
        errors=Counter(
            "ipt_http_server_errors",
            "HTTP requests answered with a 5xx status, by method and route template.",
            ["method", "route"],
        ),
        fhir_writes=Counter(
            "ipt_fhir_writes",
            "FHIR resources written (2xx), by resource type and interaction; Bundle entries "
            "count one by one.",
            ["resource_type", "interaction"],
        ),
        audit_commits=Counter(
            "ipt_audit_commits",
            "Transactions of audit records of reads, searches and refusals, by outcome "
            "(committed or failed); each holds the records of every request waiting.",
            ["outcome"],
        ),
        audit_records=Counter(
            "ipt_audit_records",
            "Audit records of reads, searches and refusals committed before their response.",
        ),
        pool_in_use=pool_in_use,
    )


def _get() -> _Metrics:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _create()
        return _metrics


def _watch_pool(database: Database, gauge: Any) -> None:
    engine = database.engine
    if engine in _engines:
        return
    _engines.add(engine)
    if gauge is not None:
        # Engine-level listeners outlive engine.dispose(), which replaces the pool.
        event.listen(engine, "checkout", lambda *_: gauge.inc())
        event.listen(engine, "checkin", lambda *_: gauge.dec())


def _bundle_writes() -> Iterator[tuple[str, str]]:
    """(resource type, interaction) of each entry of a Bundle that was written, as the
    Bundle's route recorded them (never read again from the raw body)."""
    yield from g.get("fhir_bundle_writes", ())


def install(app: Flask, database: Database) -> None:
    """Count the app's requests and serve ``GET /metrics``."""
    metrics = _get()
    _watch_pool(database, metrics.pool_in_use)

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    # The (request counter, duration histogram) of each (method, route, status): looking a
    # labelled child up in prometheus_client costs more than counting with it.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else UNMATCHED
        if rule == "/metrics":
            return response
        method, status = request.method, response.status_code
        elapsed = time.perf_counter() - g.get("metrics_started", time.perf_counter())
        key = (method, rule, status)
        counted = children.get(key)
        if counted is None:
            labels = (method, rule, str(status))
            counted = metrics.requests.labels(*labels), metrics.duration.labels(*labels)
            if len(children) < MAX_CACHED_LABELS:
                children[key] = counted
        counted[0].inc()
        counted[1].observe(elapsed)
        if status >= 500:
            metrics.errors.labels(method, rule).inc()
        if 200 <= status < 300:
            endpoint = request.endpoint or ""
            interaction = FHIR_WRITES.get(endpoint)
            resource_type = str((request.view_args or {}).get("resource_type", ""))
            if interaction and resource_type in FHIR_TYPES:
                metrics.fhir_writes.labels(resource_type, interaction).inc()
            elif endpoint == "fhir.bundle":
                for written in _bundle_writes():
                    metrics.fhir_writes.labels(*written).inc()
        return response

    settings = app.extensions.get("ipt_settings")
    # With the delivery worker beside the web workers, their scrape shows its backlog too.
    backlog_of = database if settings is not None and settings.delivers_in_process else None

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = exposition(backlog_of)
        return Response(body, content_type=content_type)


def count_audit_commit(records: int, committed: bool) -> None:
    """A transaction of audit records ended (api.audit.AuditLog)."""
    metrics = _get()
    metrics.audit_commits.labels("committed" if committed else "failed").inc()
    if committed:
        metrics.audit_records.inc(records)


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay in the sums)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# --- subscription delivery (the worker) ----------------------------------------------------

# Seconds: from a local receiver's answer to a subscription's longest timeout.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class _DeliveryMetrics:
    attempts: Any
    duration: Any


_delivery: _DeliveryMetrics | None = None


def _delivery_metrics() -> _DeliveryMetrics:
    global _delivery
    from prometheus_client import Counter, Histogram

    with _lock:
        if _delivery is None:
            _delivery = _DeliveryMetrics(
                attempts=Counter(
                    "ipt_subscription_notifications",
                    "Notifications sent to subscriptions' receivers, by kind (handshake, "
                    "heartbeat, event-notification) and outcome (delivered; failed: no 2xx "
                    "answer; refused: the endpoint failed the destination check when sent).",
                    ["kind", "outcome"],
                ),
                duration=Histogram(
                    "ipt_subscription_notification_duration_seconds",
                    "Time to build and send one notification until the receiver answered "
                    "(or the attempt failed), by kind.",
                    ["kind"],
                    buckets=DELIVERY_BUCKETS,
                ),
            )
        return _delivery


def count_notification(kind: str, outcome: str, seconds: float) -> None:
    """One delivery attempt ended (api.worker)."""
    delivery = _delivery_metrics()
    delivery.attempts.labels(kind, outcome).inc()
    delivery.duration.labels(kind).observe(seconds)


class BacklogCollector:
    """The delivery backlog, read from the database when scraped: undelivered events, the
    age of the oldest, subscriptions by status. Whichever worker is scraped reads the same
    shared numbers."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from service.delivery import backlog

        try:
            found = backlog(self.database)
        except Exception:  # the database is down: the readiness probe says so
            return
        yield GaugeMetricFamily(
            "ipt_subscription_events_undelivered",
            "Events of active subscriptions not yet acknowledged by their receivers (the "
            "outbox's queue depth).",
            value=found.undelivered,
        )
        yield GaugeMetricFamily(
            "ipt_subscription_oldest_undelivered_event_age_seconds",
            "Age of the oldest event of an active subscription not yet acknowledged; 0 when "
            "every event is delivered.",
            value=found.oldest_age_seconds,
        )
        statuses = GaugeMetricFamily(
            "ipt_subscriptions",
            "Subscriptions by status (requested, active, error, off).",
            labels=["status"],
        )
        for status in ("requested", "active", "error", "off"):
            statuses.add_metric([status], found.by_status.get(status, 0))
        yield statuses


def exposition(database: Database | None) -> tuple[bytes, str]:
    """The process's metrics (all workers' in multiprocess mode), with the delivery backlog
    when ``database`` is given: the body and content type of a scrape."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Everything(REGISTRY))
    if database is not None:
        registry.register(BacklogCollector(database))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Everything:
    """The default registry's metrics inside another registry."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()
