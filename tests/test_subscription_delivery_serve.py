"""On SQLite `ipt-careplans serve` delivers notifications itself: the README's start
command is all a single-machine installation runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from api.app import create_app
from api.config import Settings
from fhir_mappings.notifications import seal_headers
from service.db import Database
from service.models import Subscription, new_id, utcnow
from tests.conftest import Server, token_for
from tests.receivers import Receiver
from tests.test_process import serving

pytestmark = pytest.mark.slow

TOPIC = "https://ipt-careplans.org/fhir/SubscriptionTopic/careplan"
ADMIN = ["system/*.cruds"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def test_serve_on_sqlite_delivers_in_a_process_of_its_own(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    env = {
        "IPT_DATABASE_URL": url,
        "IPT_AUTO_MIGRATE": "false",
        "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS": "127.0.0.0/8",
        "IPT_SUBSCRIPTION_POLL_MS": "50",
    }
    database = Database(url)
    database.upgrade()
    # A token the server accepts: signed with the key kept in the database they share.
    settings = Settings(database_url=url, auto_migrate=False, log_level="WARNING")
    token = token_for(Server("", create_app(settings, database), settings), database, ADMIN)
    subscription = new_id()
    with database.writing() as session:
        session.add(
            Subscription(
                id=subscription,
                status="requested",
                topic=TOPIC,
                filters=["CarePlan?patient=Patient/7"],
                endpoint=receiver.url,
                headers_sealed=seal_headers(subscription, []),
                payload="id-only",
                content_type="application/fhir+json",
                heartbeat_seconds=None,
                timeout_seconds=5,
                max_count=50,
                owner_client_id="test",
                owner_scopes="system/*.cruds",
                owner_patient=None,
                content="{}",
                created_at=utcnow(),
            )
        )
    try:
        with serving(env, 2, tmp_path / "serve.log") as server:
            receiver.wait_for(lambda got: any(r.kind == "handshake" for r in got), timeout=60)
            created = requests.post(
                f"{server.url}/api/v1/care-plans",
                json={
                    "patient": "Patient/7",
                    "problem_areas": ["grief"],
                    "planned_sessions": 12,
                    "start_date": "2026-01-05",
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            receiver.wait_for(
                lambda got: any(r.kind == "event-notification" for r in got), timeout=30
            )
            deadline = time.monotonic() + 30
            while True:
                with database.reading() as session:
                    found = session.get(Subscription, subscription)
                    assert found is not None
                if found.delivered_through == found.events_since_start:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert found.status == "active"
            scrape = requests.get(f"{server.url}/metrics", timeout=10).text
            assert "ipt_subscription_events_undelivered 0.0" in scrape
            assert 'ipt_subscription_notifications_total{kind="handshake",outcome="delivered"}' in (
                scrape
            )
        assert server.process.returncode == 0
    finally:
        database.dispose()
