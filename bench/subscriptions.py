"""Subscription notifications: latency from commit to receiver, and nothing lost.

The service runs as deployed with PostgreSQL: ``ipt-careplans serve`` taking the writes
and a separate ``ipt-careplans worker`` delivering (on SQLite, ``serve`` delivers itself,
as it does by default). A receiver in this process records every notification.
``--subscriptions-subs`` subscriptions (default 10) follow the ``goal`` topic without a
filter, so every Goal written raises one event for each; writers create Goals at
``--subscriptions-rate`` writes per second (default 50) for the run's length.

Latency is the time from an event's ``timestamp`` (the write's transaction time, on this
machine's clock) to its arrival at the receiver. In soak mode the receiver goes down for
``--receiver-down`` seconds every ``--down-every`` seconds; at the end the run waits for
the outbox to drain and checks that every subscription received every event number from 1
to its count: none lost (duplicates, which at-least-once delivery allows after an outage,
are counted too).
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bench.processes import BIN, Server
from bench.scores import percentile
from bench.workload import fetch_token, workload
from service.db import Database
from service.models import Subscription
from service.subscriptions import number_pending

TOPIC = "https://ipt-careplans.org/fhir/SubscriptionTopic/goal"
WRITERS = 8
DRAIN_SECONDS = 300.0


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 that records (subscription, event number, latency)."""

    port: int = 0
    events: list[tuple[str, int, float]] = field(default_factory=list)
    notifications: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                receiver.record(body, arrived)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, bundle: dict[str, Any], arrived: float) -> None:
        status = bundle["entry"][0]["resource"]["parameter"]
        subscription = ""
        found: list[tuple[str, int, float]] = []
        for parameter in status:
            if parameter["name"] == "subscription":
                subscription = parameter["valueReference"]["reference"].rsplit("/", 1)[-1]
            if parameter["name"] == "notification-event":
                parts = {p["name"]: p for p in parameter["part"]}
                number = int(parts["event-number"]["valueString"])
                stamp = datetime.fromisoformat(parts["timestamp"]["valueInstant"]).timestamp()
                found.append((subscription, number, arrived - stamp))
        with self._lock:
            self.notifications += 1
            self.events.extend((subscription, number, lag) for _, number, lag in found)


def _subscribe(service: Server, token: str, endpoint: str) -> str:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "benchmark",
        "criteria": TOPIC,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
    }
    connection = http.client.HTTPConnection("127.0.0.1", int(service.url.rsplit(":", 1)[1]))
    connection.request(
        "POST",
        "/fhir/Subscription",
        json.dumps(body),
        {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
    )
    answer = connection.getresponse()
    created = json.loads(answer.read())
    connection.close()
    if answer.status != 201:
        raise RuntimeError(f"the subscription was refused: {created}")
    return str(created["id"])


def _fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace(f"@@{name}@@", value)
    return template


def _write_goals(
    service: Server, token: str, data: dict[str, Any], rate: float, seconds: float
) -> tuple[int, int]:
    """Create Goals at ``rate`` per second for ``seconds``: (written, failed)."""
    port = int(service.url.rsplit(":", 1)[1])
    targets = data["writable"]
    started = time.monotonic()
    counts = [0, 0]
    lock = threading.Lock()
    run = str(time.time_ns())

    def writer(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        made = 0
        while True:
            due = started + (made * WRITERS + index) / rate
            if due - started >= seconds:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            target = targets[(made * WRITERS + index) % len(targets)]
            body = _fill(
                data["goal_create"],
                {
                    "EPISODE": str(target["id"]),
                    "PATIENT": str(target["patient"]),
                    "AREA": str(target["area"]),
                    "TEXT": "Rejoin the Tuesday choir",
                    "VALUE": f"{run}-{index}-{made}",
                },
            )
            made += 1
            try:
                connection.request(
                    "POST",
                    "/fhir/Goal",
                    body,
                    {
                        "Content-Type": "application/fhir+json",
                        "Authorization": f"Bearer {token}",
                        "Prefer": "return=minimal",
                    },
                )
                answer = connection.getresponse()
                answer.read()
                ok = answer.status == 201
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            with lock:
                counts[0 if ok else 1] += 1
        connection.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts[0], counts[1]


def _outages(receiver: Receiver, down: float, every: float, stop: threading.Event) -> int:
    """Take the receiver down for ``down`` seconds every ``every`` seconds until ``stop``."""
    count = 0
    while not stop.wait(max(every - down, 0.1)):
        receiver.stop()
        count += 1
        stop.wait(down)
        receiver.start()
    return count


def _raised(database: Database, ids: list[str]) -> dict[str, tuple[int, int]]:
    # Events committed and not yet numbered are counted too (as $status would).
    number_pending(database, ids)
    with database.reading() as session:
        rows = session.execute(
            select(
                Subscription.id, Subscription.events_since_start, Subscription.delivered_through
            ).where(Subscription.id.in_(ids))
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def _retire_earlier(database: Database) -> None:
    """Turn off the subscriptions earlier runs left in the benchmark's database (``--reuse``):
    their receivers are gone, and their events and failing deliveries would load this run."""
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE subscriptions SET status = 'off', next_attempt_at = NULL "
                "WHERE status IN ('requested', 'active', 'error') AND deleted = :no"
            ),
            {"no": False},
        )


def run_subscriptions(
    kind: str, url: str, options: argparse.Namespace, work: Path, client: tuple[str, str]
) -> dict[str, Any]:
    """One latency (or soak) run against a seeded database at ``url``."""
    seconds = options.subscriptions_soak or options.subscriptions
    soak = bool(options.subscriptions_soak)
    receiver = Receiver()
    receiver.start()
    env = {
        "IPT_DATABASE_URL": url,
        "IPT_AUTO_MIGRATE": "false",
        "IPT_TOKEN_LIFETIME_SECONDS": "3600",
        "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS": "127.0.0.0/8",
        "IPT_SUBSCRIPTION_POLL_MS": str(options.poll_ms),
        # Short retries, so that an outage ends in deliveries soon after the receiver is
        # back (production's default backoff reaches 5 minutes).
        "IPT_SUBSCRIPTION_BACKOFF_MAX_MS": "5000",
    }
    if options.workers:
        env["IPT_WORKERS"] = str(options.workers)
    serve = [str(BIN / "ipt-careplans"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    worker = [str(BIN / "ipt-careplans"), "worker", "--port", "{port}"]
    database = Database(url)
    _retire_earlier(database)
    separate = kind != "sqlite"
    with Server("ipt-careplans", serve, env, work / f"subs-serve-{kind}.log", "/readyz") as api:
        delivery = (
            Server("worker", worker, env, work / f"subs-worker-{kind}.log", "/readyz")
            if separate
            else None
        )
        if delivery is not None:
            delivery.__enter__()
        try:
            token = fetch_token(api.url, *client)
            data = workload(database, token, WRITERS)
            ids = [_subscribe(api, token, receiver.url) for _ in range(options.subscriptions_subs)]
            # The handshakes first: latency is measured on events only.
            deadline = time.monotonic() + 60
            while receiver.notifications < len(ids) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop = threading.Event()
            outages: list[int] = []
            chaos = threading.Thread(
                target=lambda: outages.append(
                    _outages(receiver, options.receiver_down, options.down_every, stop)
                )
            )
            if soak:
                chaos.start()
            writing = time.monotonic()
            written, failed = _write_goals(api, token, data, options.subscriptions_rate, seconds)
            writing = time.monotonic() - writing
            stop.set()
            if soak:
                chaos.join()
            drained_in = time.monotonic()
            deadline = drained_in + DRAIN_SECONDS
            while time.monotonic() < deadline:
                states = _raised(database, ids)
                if all(raised == delivered for raised, delivered in states.values()):
                    break
                time.sleep(0.2)
            drained = time.monotonic() - drained_in
        finally:
            if delivery is not None:
                delivery.__exit__(None, None, None)
    receiver.stop()
    states = _raised(database, ids)
    database.dispose()
    lost = duplicates = raised_total = 0
    by_subscription: dict[str, list[int]] = {i: [] for i in ids}
    for subscription, number, _ in receiver.events:
        by_subscription.setdefault(subscription, []).append(number)
    for subscription, (raised, _) in states.items():
        numbers = by_subscription.get(subscription, [])
        raised_total += raised
        lost += len(set(range(1, raised + 1)) - set(numbers))
        duplicates += len(numbers) - len(set(numbers))
    lags = sorted(lag for _, _, lag in receiver.events)
    return {
        "database": kind,
        "mode": "soak" if soak else "latency",
        "seconds": seconds,
        "rate": options.subscriptions_rate,
        "subscriptions": len(ids),
        "writes": written,
        # Below the rate asked for when the service cannot take the writes that fast.
        "writes_per_second": round(written / writing, 1) if writing else None,
        "write_errors": failed,
        "events_raised": raised_total,
        "events_received": len(receiver.events),
        "notifications": receiver.notifications,
        "lost": lost,
        "duplicates": duplicates,
        "outages": outages[0] if outages else 0,
        "drain_seconds": round(drained, 1),
        "latency_p50_ms": percentile(lags, 0.5) if lags else None,
        "latency_p99_ms": percentile(lags, 0.99) if lags else None,
        "latency_max_ms": round(lags[-1] * 1000, 1) if lags else None,
    }


def markdown(runs: list[dict[str, Any]]) -> str:
    lines = [
        "## Subscription notifications",
        "",
        "| database | mode | s | writes/s asked | writes/s made | subs | events | lost "
        "| duplicates | outages | p50 ms | p99 ms | drain s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run['database']} | {run['mode']} | {run['seconds']:g} | {run['rate']:g} "
            f"| {run['writes_per_second']} "
            f"| {run['subscriptions']} | {run['events_raised']} | {run['lost']} "
            f"| {run['duplicates']} | {run['outages']} | {run['latency_p50_ms']} "
            f"| {run['latency_p99_ms']} | {run['drain_seconds']} |"
        )
    return "\n".join(lines)
