"""Delivery of subscription notifications, end to end: subscriptions created and plans
written over the FHIR and native APIs of a live server, a delivery worker running against
the same database, and a real receiver on 127.0.0.1 (the allow-list permits 127.0.0.0/8).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update
from werkzeug.serving import make_server

from api.app import create_app
from api.config import Settings
from api.worker import DeliveryWorker, start_health_server
from service.db import Database
from service.delivery import KINDS, DeliveryPolicy
from service.endpoint_policy import parse_networks, system_resolver
from service.models import AuditRecord, Subscription, SubscriptionEvent, utcnow
from service.subscriptions import number_pending
from tests.conftest import ROOT, Client, Server, token_for
from tests.receivers import Receiver

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "https://ipt-careplans.org/fhir/SubscriptionTopic/careplan"
LOCAL = "127.0.0.0/8,::1/128"


@pytest.fixture(scope="module")
def subs_live(database: Database) -> Iterator[Server]:
    """A live server whose subscriptions may name receivers on 127.0.0.0/8, with short
    retry delays."""
    settings = Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="WARNING",
        token_lifetime_seconds=3600,
        token_attempts_per_address=1_000_000,
        subscription_allowed_destinations=parse_networks(LOCAL),
        subscription_poll_ms=20,
        subscription_backoff_base_ms=50,
        subscription_backoff_max_ms=200,
        subscription_lease_margin_ms=300,
    )
    app = create_app(settings, database)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield Server(f"http://127.0.0.1:{http.server_port}", app, settings)
    http.shutdown()


@pytest.fixture
def api(subs_live: Server, database: Database) -> Client:
    scopes = ["system/*.cruds", "system/Subscription.cruds", "system/AuditEvent.rs"]
    return Client(subs_live.url, token_for(subs_live, database, scopes))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


class Running:
    """Delivery workers running in threads of the test process, stopped at the end."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(self, **kwargs: Any) -> DeliveryWorker:
        worker = DeliveryWorker(self.database, self.settings, **kwargs)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        self._stops.append((stop, thread))
        return worker

    def stop(self) -> None:
        for stop, _ in self._stops:
            stop.set()
        for _, thread in self._stops:
            thread.join(30)
        self._stops.clear()


@pytest.fixture
def workers(database: Database, subs_live: Server) -> Iterator[Running]:
    running = Running(database, subs_live.settings)
    yield running
    running.stop()


def subscribe(
    api: Client,
    endpoint: str,
    *,
    heartbeat: int | None = None,
    timeout: int = 5,
    max_count: int = 100,
    payload: str = "id-only",
    headers: list[str] | None = None,
    criteria: str = "CarePlan?patient=Patient/123",
) -> str:
    """Create a rest-hook subscription to the careplan topic over FHIR: its id."""
    extensions: list[dict[str, Any]] = [
        {"url": f"{BACKPORT}/backport-timeout", "valueUnsignedInt": timeout},
        {"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": max_count},
    ]
    if heartbeat is not None:
        extensions.append(
            {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": heartbeat}
        )
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "delivery test",
        "criteria": TOPIC,
        "_criteria": {
            "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": criteria}]
        },
        "channel": {
            "extension": extensions,
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": payload}]
            },
        },
    }
    if headers:
        body["channel"]["header"] = headers  # type: ignore[index]
    response = api.post("/fhir/Subscription", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def row(database: Database, subscription_id: str) -> Subscription:
    """The subscription as $status would report it: its committed events numbered."""
    number_pending(database, [subscription_id])
    with database.reading() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        return found


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def write_plans(api: Client, count: int, patient: str = "Patient/123") -> None:
    for _ in range(count):
        api.create_plan(patient=patient)


def all_events(database: Database, subscription_id: str) -> list[int]:
    """The numbers of every event raised for the subscription: 1 to its count, no gap."""
    raised = row(database, subscription_id).events_since_start
    assert raised > 0
    return list(range(1, raised + 1))


def received_all(database: Database, receiver: Receiver, subscription_id: str) -> bool:
    """Every event raised for the subscription is delivered and the receiver has every
    number from 1 to the count (read again until both agree)."""
    if not delivered_all(database, subscription_id):
        return False
    return set(receiver.numbers(subscription_id)) == set(all_events(database, subscription_id))


def delivered_all(database: Database, subscription_id: str) -> bool:
    found = row(database, subscription_id)
    return found.events_since_start > 0 and found.delivered_through == found.events_since_start


def test_handshake_activates_then_events_arrive_in_order(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    subscription = subscribe(api, receiver.url, headers=["Authorization: Bearer receiver-secret"])
    workers.start()
    receiver.wait_for(lambda got: any(r.kind == "handshake" for r in got))
    wait_until(lambda: row(database, subscription).status == "active")
    handshake = receiver.of(subscription, "handshake")[0]
    assert handshake.headers["Content-Type"] == "application/fhir+json"
    assert handshake.headers["Authorization"] == "Bearer receiver-secret"
    assert handshake.bundle["type"] == "history"

    write_plans(api, 5)
    write_plans(api, 2, patient="Patient/other")  # filtered out: no event
    wait_until(lambda: received_all(database, receiver, subscription))
    state = row(database, subscription)
    raised = state.events_since_start
    assert receiver.numbers(subscription) == list(range(1, raised + 1)), (
        raised,
        row(database, subscription).events_since_start,
        [(r.kind, r.event_numbers) for r in receiver.of(subscription)],
    )
    assert (state.delivered_through, state.failed_attempts) == (raised, 0)
    assert state.last_delivered_at is not None and state.lease_owner is None
    with database.reading() as session:
        stamped = session.scalars(
            select(SubscriptionEvent.delivered_at).where(
                SubscriptionEvent.subscription_id == subscription
            )
        ).all()
        assert len(stamped) == raised and all(stamped)
        audited = session.scalars(
            select(AuditRecord).where(AuditRecord.entity == f"Subscription/{subscription}")
        ).all()
    kinds = {(record.interaction, record.outcome, record.patient) for record in audited}
    assert ("handshake", "0", None) in kinds
    assert ("event-notification", "0", "Patient/123") in kinds
    # The AuditEvents are served like any other.
    trail = api.get(f"/fhir/AuditEvent?entity=Subscription/{subscription}")
    assert trail.status_code == 200, trail.text
    sent = {
        (e["resource"]["type"]["code"], e["resource"]["subtype"][0]["code"])
        for e in trail.json().get("entry", [])
        if e["resource"]["type"]["code"] != "rest"  # the subscription's own creation
    }
    assert sent == {("110106", "handshake"), ("110106", "event-notification")}


def test_max_count_splits_a_backlog_into_ordered_notifications(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    subscription = subscribe(api, receiver.url, max_count=2)
    write_plans(api, 5)  # written before the handshake: they wait for it
    workers.start()
    wait_until(lambda: received_all(database, receiver, subscription))
    batches = [r.event_numbers for r in receiver.of(subscription, "event-notification")]
    raised = row(database, subscription).events_since_start
    assert [n for batch in batches for n in batch] == list(range(1, raised + 1))
    assert all(len(batch) == 2 for batch in batches[:-1]) and 1 <= len(batches[-1]) <= 2


@pytest.mark.slow
def test_heartbeat_when_idle(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    subscription = subscribe(api, receiver.url, heartbeat=10)
    # The API accepts heartbeats of 10 s or more: a second is long enough to test it.
    with database.writing() as session:
        session.execute(
            update(Subscription).where(Subscription.id == subscription).values(heartbeat_seconds=1)
        )
    workers.start()
    receiver.wait_for(lambda got: any(r.kind == "heartbeat" for r in got), timeout=5)
    handshake = receiver.of(subscription, "handshake")[0]
    heartbeat = receiver.of(subscription, "heartbeat")[0]
    assert heartbeat.at - handshake.at >= 0.9


@pytest.mark.slow
def test_receiver_down_then_back_gets_every_event(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    subscription = subscribe(api, receiver.url, max_count=3)
    workers.start()
    wait_until(lambda: row(database, subscription).status == "active")
    receiver.stop()
    write_plans(api, 7)
    wait_until(lambda: row(database, subscription).failed_attempts >= 3)
    failing = row(database, subscription)
    assert failing.failing_since is not None and failing.delivered_through == 0
    assert failing.status == "active"
    receiver.start()
    write_plans(api, 2)
    wait_until(lambda: received_all(database, receiver, subscription))
    numbers = receiver.numbers(subscription)
    # None lost, in order; a number seen twice would be a duplicate, never a gap.
    assert sorted(set(numbers)) == all_events(database, subscription)
    assert numbers == sorted(numbers)
    back = row(database, subscription)
    assert back.failed_attempts == 0 and back.failing_since is None


def test_redirect_is_a_failure_and_not_followed(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    elsewhere = Receiver().start()
    try:
        receiver.status, receiver.location = 307, elsewhere.url
        subscription = subscribe(api, receiver.url)
        workers.start()
        wait_until(lambda: row(database, subscription).failed_attempts >= 2)
        assert row(database, subscription).status == "requested"
        assert elsewhere.received == []
        with database.reading() as session:
            outcomes = session.scalars(
                select(AuditRecord.outcome).where(
                    AuditRecord.interaction.in_(KINDS),
                    AuditRecord.entity == f"Subscription/{subscription}",
                )
            ).all()
        assert outcomes and set(outcomes) == {"4"}
    finally:
        elsewhere.stop()


@pytest.mark.slow
def test_slow_receiver_delays_neither_writes_nor_other_subscriptions(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    fast = Receiver().start()
    try:
        slow = subscribe(api, receiver.url, timeout=2)
        quick = subscribe(api, fast.url)
        receiver.delay = 5.0  # longer than its timeout: every attempt to it times out
        workers.start()
        fast.wait_for(lambda got: any(r.kind == "handshake" for r in got))
        receiver.wait_for(lambda got: len(got) >= 1)
        started = time.monotonic()
        write_plans(api, 3)
        assert time.monotonic() - started < 2.0
        wait_until(lambda: delivered_all(database, quick), timeout=2.0)
        assert row(database, slow).status == "requested"
        wait_until(lambda: row(database, slow).failed_attempts >= 1, timeout=4)
    finally:
        fast.stop()


def test_retention_window_ends_in_error_with_events_kept(
    api: Client, receiver: Receiver, workers: Running, database: Database, subs_live: Server
) -> None:
    subscription = subscribe(api, receiver.url)
    workers.start()
    wait_until(lambda: row(database, subscription).status == "active")
    receiver.status = 503
    # It has been failing for longer than the retention window already.
    days = subs_live.settings.subscription_retention_days
    with database.writing() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.id == subscription)
            .values(failing_since=utcnow() - timedelta(days=days, seconds=1), failed_attempts=9)
        )
    write_plans(api, 2)
    wait_until(lambda: row(database, subscription).status == "error")
    failed = row(database, subscription)
    assert failed.reason and "503" in failed.reason and "retention" in failed.reason
    assert failed.delivered_through == 0
    with database.reading() as session:
        kept = session.scalars(
            select(SubscriptionEvent.event_number).where(
                SubscriptionEvent.subscription_id == subscription
            )
        ).all()
    assert sorted(kept) == all_events(database, subscription)
    attempts = len(receiver.of(subscription, "event-notification"))
    time.sleep(0.2)  # an error subscription is not tried again
    assert len(receiver.of(subscription, "event-notification")) == attempts


def test_end_of_subscription_ends_retrying(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    receiver.status = 500
    subscription = subscribe(api, receiver.url)
    with database.writing() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.id == subscription)
            .values(end=utcnow() - timedelta(seconds=1))
        )
    workers.start()
    wait_until(lambda: row(database, subscription).status == "error")
    assert "end" in (row(database, subscription).reason or "")


def test_refused_destination_at_send_time_is_never_contacted(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    # Accepted when written (localhost is 127.0.0.1 then) ...
    endpoint = receiver.url.replace("127.0.0.1", "localhost")
    subscription = subscribe(api, endpoint)

    def rebound(host: str, port: int) -> list[str]:
        # ... re-pointed at the cloud metadata address and a private one when sent.
        if host == "localhost":
            return ["127.0.0.1", "169.254.169.254", "10.0.0.7"]
        return system_resolver(host, port)

    workers.start(resolve=rebound)
    wait_until(lambda: row(database, subscription).failed_attempts >= 2)
    assert receiver.received == []
    assert row(database, subscription).status == "requested"
    with database.reading() as session:
        outcomes = session.scalars(
            select(AuditRecord.outcome).where(
                AuditRecord.interaction.in_(KINDS),
                AuditRecord.entity == f"Subscription/{subscription}",
            )
        ).all()
    assert outcomes and set(outcomes) == {"4"}


def test_two_workers_never_send_one_subscription_at_once(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    receiver.delay = 0.03
    ids = [subscribe(api, receiver.url, max_count=2) for _ in range(3)]
    workers.start()
    workers.start()
    write_plans(api, 8)
    wait_until(lambda: all(received_all(database, receiver, s) for s in ids), timeout=20)
    assert receiver.most_in_flight == 1
    for subscription in ids:
        assert receiver.numbers(subscription) == all_events(database, subscription)
        assert len(receiver.of(subscription, "handshake")) == 1


def worker_environment(database: Database, settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "IPT_DATABASE_URL": database.url.render_as_string(hide_password=False),
        "IPT_AUTO_MIGRATE": "false",
        "IPT_LOG_LEVEL": "WARNING",
        "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS": LOCAL,
        "IPT_SUBSCRIPTION_POLL_MS": str(settings.subscription_poll_ms),
        "IPT_SUBSCRIPTION_BACKOFF_BASE_MS": str(settings.subscription_backoff_base_ms),
        "IPT_SUBSCRIPTION_BACKOFF_MAX_MS": str(settings.subscription_backoff_max_ms),
        "IPT_SUBSCRIPTION_LEASE_MARGIN_MS": str(settings.subscription_lease_margin_ms),
    }


@pytest.mark.slow
def test_worker_killed_mid_delivery_loses_nothing(
    api: Client, receiver: Receiver, workers: Running, database: Database, subs_live: Server
) -> None:
    subscription = subscribe(api, receiver.url, timeout=2, max_count=3)
    write_plans(api, 3)
    receiver.delay = 30.0  # the first worker is mid-delivery when it is killed
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--port", "0"],
        env=worker_environment(database, subs_live.settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        receiver.wait_for(lambda got: len(got) >= 1, timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    receiver.delay = 0.0
    assert row(database, subscription).lease_owner is not None  # its claim outlives it
    workers.start()
    wait_until(lambda: received_all(database, receiver, subscription), timeout=15)
    assert receiver.of(subscription, "handshake")
    assert sorted(set(receiver.numbers(subscription))) == all_events(database, subscription)


@pytest.mark.slow
def test_worker_stops_gracefully_on_sigterm(
    api: Client, receiver: Receiver, database: Database, subs_live: Server
) -> None:
    subscription = subscribe(api, receiver.url)
    write_plans(api, 2)
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--port", "0"],
        env=worker_environment(database, subs_live.settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: delivered_all(database, subscription), timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert row(database, subscription).lease_owner is None


def test_worker_health_and_metrics(
    api: Client, receiver: Receiver, workers: Running, database: Database
) -> None:
    subscription = subscribe(api, receiver.url)
    worker = workers.start()
    wait_until(lambda: row(database, subscription).status == "active")
    receiver.stop()
    write_plans(api, 2)
    server = start_health_server(worker, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["database"] == "reachable"
        wait_until(lambda: row(database, subscription).failed_attempts >= 1)
        scrape = requests.get(f"{base}/metrics", timeout=5).text
        waiting = row(database, subscription).events_since_start
        assert f"ipt_subscription_events_undelivered {waiting:.1f}" in scrape
        assert "ipt_subscription_oldest_undelivered_event_age_seconds" in scrape
        assert 'ipt_subscriptions{status="active"} 1.0' in scrape
        assert 'ipt_subscription_notifications_total{kind="handshake",outcome="delivered"}' in (
            scrape
        )
        assert 'kind="event-notification",outcome="failed"' in scrape
        assert requests.get(f"{base}/nothing", timeout=5).status_code == 404
    finally:
        server.shutdown()


@given(
    failures=st.integers(min_value=0, max_value=200),
    base_ms=st.integers(min_value=10, max_value=10_000),
    cap_ms=st.integers(min_value=10, max_value=600_000),
)
def test_backoff_is_full_jitter_capped(failures: int, base_ms: int, cap_ms: int) -> None:
    policy = DeliveryPolicy(
        backoff_base=timedelta(milliseconds=base_ms), backoff_max=timedelta(milliseconds=cap_ms)
    )
    ceiling = min(cap_ms / 1000, base_ms / 1000 * 2 ** max(failures - 1, 0))
    wait = policy.backoff(failures).total_seconds()
    assert 0 <= wait <= ceiling + 1e-9


def test_settings_refuse_bad_delivery_values() -> None:
    from api.config import ConfigError, load

    for name, value in [
        ("IPT_SUBSCRIPTION_POLL_MS", "0"),
        ("IPT_SUBSCRIPTION_DELIVERY_CONCURRENCY", "many"),
        ("IPT_SUBSCRIPTION_BACKOFF_BASE_MS", "5"),
        ("IPT_SUBSCRIPTION_LEASE_MARGIN_MS", "10"),
        ("IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS", "maybe"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load({name: value})
    with pytest.raises(ConfigError, match="IPT_SUBSCRIPTION_BACKOFF_MAX_MS"):
        load({"IPT_SUBSCRIPTION_BACKOFF_BASE_MS": "5000", "IPT_SUBSCRIPTION_BACKOFF_MAX_MS": "100"})
    assert load({"IPT_DATABASE_URL": "sqlite:///x.db"}).delivers_in_process
    assert not load({"IPT_DATABASE_URL": "postgresql://h/db"}).delivers_in_process
    assert load(
        {"IPT_DATABASE_URL": "postgresql://h/db", "IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS": "true"}
    ).delivers_in_process
    assert replace(Settings(), subscription_delivery_in_process=False).delivers_in_process is False
