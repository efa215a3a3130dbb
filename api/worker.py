"""The delivery worker: sends subscription notifications from the outbox.

``ipt-careplans worker`` runs it on its own (several replicas share the outbox on
PostgreSQL); ``ipt-careplans serve`` runs one beside its web workers when
``Settings.delivers_in_process`` (by default on SQLite), as a process of its own started
afresh like the audit writer, so that the web workers never wait for a receiver.

The loop claims due subscriptions (``service.delivery.claim_due``) while it has free
threads, builds each notification with the owner's access, sends it (``service.
receiver_http``) and records the outcome (``service.delivery.finish``). A slow receiver
holds one thread for at most its subscription's timeout; other subscriptions go on in the
other threads. On SIGTERM it claims nothing more, lets the attempts under way end (each
within its timeout), gives back what it claimed but never started, and exits.

Its health and metrics are served on a small port of its own: ``/livez`` (the loop is
turning), ``/readyz`` (the database answers, its schema is current) and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from api import metrics
from api.child_process import ChildProcess
from api.config import Settings
from fhir_mappings.notifications import channel_headers, notification_bundle
from service.db import Database
from service.delivery import (
    DELIVERED,
    FAILED,
    REFUSED,
    Claim,
    DeliveryPolicy,
    Outcome,
    claim_due,
    events_of,
    finish,
    release,
)
from service.endpoint_policy import Network, Resolver, system_resolver
from service.models import Subscription
from service.receiver_http import post_notification

log = logging.getLogger("ipt_careplans.delivery")
# The loop turns at least this often while it is healthy (it waits at most a poll interval,
# and a claim is one short transaction): /livez fails past it.
LIVENESS_SECONDS = 60.0


def pool_size(settings: Settings) -> int:
    """Database connections a worker needs: one per thread, and the loop's."""
    return max(settings.db_pool_size, settings.subscription_delivery_concurrency + 2)


def policy_of(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        backoff_base=timedelta(milliseconds=settings.subscription_backoff_base_ms),
        backoff_max=timedelta(milliseconds=settings.subscription_backoff_max_ms),
        retention=timedelta(days=settings.subscription_retention_days),
        lease_margin=timedelta(milliseconds=settings.subscription_lease_margin_ms),
    )


class DeliveryWorker:
    """One worker: the loop, its threads and what it has in flight.

    ``resolve`` is how endpoint host names are resolved when each notification is sent
    (the system's resolver; a test passes its own to re-point a name).
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        resolve: Resolver = system_resolver,
    ) -> None:
        self.database = database
        self.settings = settings
        self.policy = policy_of(settings)
        self.allowed: Sequence[Network] = settings.subscription_allowed_destinations
        self.resolve = resolve
        self.base_url = f"{settings.public_base_url}/fhir"
        self.concurrency = settings.subscription_delivery_concurrency
        self.poll = settings.subscription_poll_ms / 1000
        # Unique per process and start: a lease names the worker holding it.
        self.owner = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
        self.last_turn = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_turn < max(LIVENESS_SECONDS, 10 * self.poll)

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, then finish what is under way."""
        log.info("delivery worker started", extra={"worker": self.owner})
        in_flight: set[Future[None]] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="delivery") as pool:
            while not stop.is_set():
                self.last_turn = time.monotonic()
                free = self.concurrency - len(in_flight)
                claims = self._claim(free)
                for claim in claims:
                    in_flight.add(pool.submit(self.attempt, claim))
                if claims and len(claims) == free:
                    # Every thread busy: go on as soon as one is free.
                    done, _ = wait(in_flight, timeout=self.poll, return_when=FIRST_COMPLETED)
                elif claims:
                    continue  # more may be due: look again at once
                elif in_flight:
                    done, _ = wait(in_flight, timeout=self.poll, return_when=FIRST_COMPLETED)
                else:
                    stop.wait(self.poll)
                    done = set()
                in_flight = {future for future in in_flight if not future.done()}
                del done
            log.info("delivery worker stopping", extra={"in_flight": len(in_flight)})
        try:
            release(self.database, self.owner)
        except Exception:
            log.exception("leases could not be given back; they run out on their own")
        log.info("delivery worker stopped", extra={"worker": self.owner})

    def _claim(self, free: int) -> list[Claim]:
        if free <= 0:
            return []
        try:
            return claim_due(self.database, self.owner, free, self.policy)
        except Exception:
            # The database is away: try again next turn (the readiness probe says so).
            log.exception("due subscriptions could not be claimed")
            return []

    def attempt(self, claim: Claim) -> None:
        """Build, send and record one notification."""
        started = time.perf_counter()
        patients: list[str | None] = []
        try:
            with self.database.reading() as session:
                subscription = session.get(Subscription, claim.subscription_id)
                if subscription is None:
                    return
                events = events_of(session, claim)
                patients = [event.patient for event in events]
                bundle = notification_bundle(
                    session, subscription, claim.kind, events, base_url=self.base_url
                )
                headers = channel_headers(subscription)
                endpoint = subscription.endpoint
            body = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            answer = post_notification(
                endpoint,
                body,
                headers,
                timeout=claim.timeout,
                allowed=self.allowed,
                resolve=self.resolve,
            )
            result = DELIVERED if answer.delivered else REFUSED if answer.refused else FAILED
            outcome = Outcome(result, answer.status, answer.error, answer.address)
        except Exception:
            log.exception(
                "a notification could not be built",
                extra={"subscription": claim.subscription_id, "kind": claim.kind},
            )
            outcome = Outcome(FAILED, reason="the notification could not be built")
        try:
            status = finish(self.database, claim, outcome, self.policy, patients)
        except Exception:
            # Nothing recorded: the lease runs out and the notification is sent again.
            log.exception("a delivery's outcome could not be recorded")
            return
        elapsed = time.perf_counter() - started
        metrics.count_notification(claim.kind, outcome.result, elapsed)
        log.info(
            "notification sent",
            extra={
                "subscription": claim.subscription_id,
                "kind": claim.kind,
                "events": [claim.first, claim.last] if claim.last else [],
                "outcome": outcome.result,
                "receiver_status": outcome.status,
                "reason": outcome.reason,
                "became": status,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )


# --- health and metrics --------------------------------------------------------------------


def _health_handler(worker: DeliveryWorker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ipt-careplans-worker"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path == "/livez":
                alive = worker.alive
                self._json(200 if alive else 503, {"status": "ok" if alive else "stalled"})
            elif self.path == "/readyz":
                self._ready()
            elif self.path == "/metrics":
                body, content_type = metrics.exposition(worker.database)
                self._send(200, body, content_type)
            else:
                self._json(404, {"status": "not found"})

        def _ready(self) -> None:
            try:
                worker.database.ping()
                current = worker.database.current_revision()
                head = worker.database.head_revision()
            except Exception:
                self._json(503, {"status": "unavailable", "database": "unreachable"})
                return
            if current != head:
                self._json(503, {"status": "unavailable", "schema": f"at {current}, needs {head}"})
                return
            self._json(200, {"status": "ok", "database": "reachable", "schema": current})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes are not logged

    return Handler


def start_health_server(worker: DeliveryWorker, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /livez, /readyz and /metrics on ``host:port`` in a thread of its own."""
    server = ThreadingHTTPServer((host, port), _health_handler(worker))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    return server


def run(
    settings: Settings,
    database: Database,
    *,
    host: str,
    port: int,
    resolve: Resolver = system_resolver,
) -> None:
    """Run a worker in this process until SIGTERM or SIGINT; health on ``port`` unless 0."""
    worker = DeliveryWorker(database, settings, resolve=resolve)
    stop = threading.Event()

    def stopping(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    server = start_health_server(worker, host, port) if port else None
    try:
        worker.run(stop)
    finally:
        if server is not None:
            server.shutdown()


# --- beside serve ----------------------------------------------------------------------------


class WorkerProcess:
    """The delivery worker ``serve`` runs beside its web workers: started afresh (not
    forked from the master, which holds the app's connections), started again a second
    after it exits, stopped gracefully with the server (each attempt under way ends within
    its timeout)."""

    def __init__(self) -> None:
        self._child = ChildProcess(
            "delivery worker",
            [sys.executable, "-m", "api.worker"],
            log=log,
            restart_delay=1.0,
            stop_patience=60.0,
        )

    def start(self) -> None:
        self._child.start()

    def stop(self, patience: float = 60.0) -> None:
        self._child.stop(patience)


def _main() -> None:
    """``python -m api.worker``: the worker serve starts, without a health port (serve's
    own probes and /metrics cover it)."""
    from api.config import load
    from api.request_log import configure_logging

    settings = load()
    configure_logging(settings.log_level)
    database = Database(settings.database_url, pool_size=pool_size(settings))
    try:
        run(settings, database, host="127.0.0.1", port=0)
    finally:
        database.dispose()


if __name__ == "__main__":
    _main()
