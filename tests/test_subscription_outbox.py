"""Events of subscriptions, written with the change they report: topic matching and
filters per topic, numbering without gaps (concurrent writers included), nothing for a
rolled-back change, the notification Bundles of every kind, $events and what the owner
may see."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import test_subscriptions
from conftest import TEST_DATABASE_URL, Client, Server, plan_url
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text, update
from test_subscriptions import SUBSCRIBER, caller, create, subscription

from fhir_mappings import outbox
from fhir_mappings.notifications import KINDS, channel_headers, notification_bundle
from fhir_mappings.topics import BY_ID, parse_filter
from service import audit_journal
from service.db import Database
from service.delivery import DeliveryPolicy, claim_due, release
from service.models import Subscription, SubscriptionEvent, utcnow
from service.subscriptions import number_pending

# The server of test_subscriptions, whose subscriptions may notify this machine.
hub = test_subscriptions.hub
BASE = "https://ipt.example.org/fhir"
ADMIN = ["system/*.cruds"]


@pytest.fixture
def writer(hub: Server, database: Database) -> Client:
    return caller(hub, database, ADMIN)


@pytest.fixture
def owner(hub: Server, database: Database) -> Client:
    return caller(hub, database, SUBSCRIBER)


def events_of(database: Database, subscription_id: str) -> list[SubscriptionEvent]:
    """The subscription's events, every committed one numbered first (as $events does)."""
    number_pending(database, [subscription_id])
    with database.reading() as session:
        return list(
            session.scalars(
                select(SubscriptionEvent)
                .where(SubscriptionEvent.subscription_id == subscription_id)
                .order_by(SubscriptionEvent.event_number)
            )
        )


def stored(database: Database, subscription_id: str) -> Subscription:
    number_pending(database, [subscription_id])
    with database.reading() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        return found


def focus(events: list[SubscriptionEvent]) -> list[tuple[str, str]]:
    return [(e.focus_type, e.focus_id) for e in events]


def goals_of(writer: Client, plan: dict[str, Any]) -> list[dict[str, Any]]:
    return list(writer.get(plan_url(plan, "goals")).json()["items"])


def test_goal_events_follow_the_patient_filter(
    owner: Client, writer: Client, database: Database
) -> None:
    mine = create(owner, subscription(filters=("Goal?patient=Patient/123",)))
    everyone = create(owner, subscription())
    plan = writer.create_plan(patient="Patient/123")
    writer.create_plan(patient="Patient/999")
    goal_ids = {g["id"] for g in goals_of(writer, plan)}
    assert goal_ids
    raised = events_of(database, mine["id"])
    assert {i for _, i in focus(raised)} == goal_ids
    assert [e.event_number for e in raised] == list(range(1, len(raised) + 1))
    assert {e.patient for e in raised} == {"Patient/123"}
    assert stored(database, mine["id"]).events_since_start == len(raised)
    assert stored(database, mine["id"]).next_attempt_at is not None
    assert len(events_of(database, everyone["id"])) == 2 * len(raised)


def test_goal_status_filters(owner: Client, writer: Client, database: Database) -> None:
    plan = writer.create_plan()
    goal = goals_of(writer, plan)[0]
    completed = create(owner, subscription(filters=("Goal?lifecycle-status=completed",)))
    achieved = create(
        owner,
        subscription(
            filters=(
                "Goal?achievement-status=http://terminology.hl7.org/CodeSystem/goal-achievement|achieved",
            )
        ),
    )
    response = writer.patch(plan_url(plan, "goals", goal["id"]), json={"priority": "low-priority"})
    assert response.status_code == 200, response.text
    assert events_of(database, completed["id"]) == []
    response = writer.patch(
        plan_url(plan, "goals", goal["id"]),
        json={"lifecycle_status": "completed", "achievement_status": "achieved"},
    )
    assert response.status_code == 200, response.text
    assert focus(events_of(database, completed["id"])) == [("Goal", goal["id"])]
    assert focus(events_of(database, achieved["id"])) == [("Goal", goal["id"])]


def test_a_deleted_goal_is_an_event_of_its_deletion(
    owner: Client, writer: Client, database: Database
) -> None:
    plan = writer.create_plan()
    goal = goals_of(writer, plan)[0]
    watching = create(owner, subscription(filters=("Goal?patient=Patient/123",)))
    assert writer.delete(plan_url(plan, "goals", goal["id"])).status_code == 204
    [event] = [e for e in events_of(database, watching["id"]) if e.focus_id == goal["id"]]
    with database.reading() as session:
        sub = session.get(Subscription, watching["id"])
        assert sub is not None
        bundle = notification_bundle(session, sub, "event-notification", [event], base_url=BASE)
    assert bundle["entry"][1]["request"] == {"method": "DELETE", "url": f"Goal/{goal['id']}"}
    assert "resource" not in bundle["entry"][1]


def test_a_recorded_session_raises_the_session_topic(
    owner: Client, writer: Client, database: Database
) -> None:
    plan = writer.create_plan()
    sessions = create(owner, subscription(topic="session-recorded"))
    plans = create(owner, subscription(topic="careplan", filters=("CarePlan?patient=Patient/123",)))
    before = len(events_of(database, plans["id"]))
    response = writer.post(
        plan_url(plan, "sessions"),
        json={"number": 1, "date": "2026-01-05", "status": "attended"},
    )
    assert response.status_code == 201, response.text
    phases = writer.get(plan_url(plan, "phases")).json()["items"]
    initial = next(p for p in phases if p["code"] == "initial")
    assert focus(events_of(database, sessions["id"])) == [("CarePlan", initial["id"])]
    assert len(events_of(database, plans["id"])) > before
    # A change of the phase that records no session is no session event.
    response = writer.patch(plan_url(plan), json={"formulation": "changed"})
    assert len(events_of(database, sessions["id"])) == 1


def test_a_score_and_a_safety_signal_raise_their_topics(
    owner: Client, writer: Client, database: Database
) -> None:
    plan = writer.create_plan()
    scores = create(
        owner, subscription(topic="score-recorded", filters=("Observation?code=44261-6",))
    )
    anxiety = create(
        owner, subscription(topic="score-recorded", filters=("Observation?code=70274-6",))
    )
    flags = create(
        owner, subscription(topic="safety-signal", filters=("Flag?patient=Patient/123",))
    )
    answers = {f"phq-9-{n}": 1 for n in range(1, 10)}
    response = writer.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": "2026-01-12", "answers": answers},
    )
    assert response.status_code == 201, response.text
    administration = response.json()["id"]
    assert focus(events_of(database, scores["id"])) == [("Observation", administration)]
    assert events_of(database, anxiety["id"]) == []
    [flag] = events_of(database, flags["id"])
    assert flag.focus_type == "Flag"


def test_subscriptions_off_deleted_or_ended_collect_nothing(
    owner: Client, writer: Client, database: Database
) -> None:
    off = create(owner, subscription(status="off"))
    deleted = create(owner, subscription())
    owner.delete(f"/fhir/Subscription/{deleted['id']}")
    ended = create(owner, subscription())
    with database.writing() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.id == ended["id"])
            .values(end=utcnow() - timedelta(seconds=1))
        )
    writer.create_plan()
    for created in (off, deleted, ended):
        assert events_of(database, created["id"]) == []


def test_a_rolled_back_change_raises_no_event(
    owner: Client, writer: Client, database: Database
) -> None:
    plan = writer.create_plan()
    goal = goals_of(writer, plan)[0]
    watching = create(owner, subscription())
    resource = writer.get(f"/fhir/Goal/{goal['id']}").json()
    changed = {**resource, "priority": {"text": "high"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": changed, "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}},
            {"request": {"method": "GET", "url": f"Goal/{goal['id']}"}},
            {
                "resource": changed,
                "request": {"method": "PUT", "url": f"Goal/{goal['id']}", "ifMatch": 'W/"99"'},
            },
        ],
    }
    response = writer.post("/fhir", json=bundle)
    assert response.status_code >= 400, response.text
    assert events_of(database, watching["id"]) == []
    assert stored(database, watching["id"]).events_since_start == 0


@pytest.mark.slow
@pytest.mark.skipif(not TEST_DATABASE_URL, reason="concurrent writers need PostgreSQL")
def test_concurrent_writers_number_events_without_gaps(
    owner: Client, hub: Server, database: Database
) -> None:
    first = create(owner, subscription())
    second = create(owner, subscription(topic="careplan"))
    writers = [caller(hub, database, ADMIN) for _ in range(4)]
    writing = threading.Event()

    def write(index: int) -> None:
        writers[index % 4].create_plan(patient=f"Patient/{index}")

    def numbering() -> int:
        # Numberings run all along, as the worker and $status run them beside the writes.
        rounds = 0
        while writing.is_set():
            number_pending(database, [first["id"], second["id"]])
            rounds += 1
        return rounds

    writing.set()
    with ThreadPoolExecutor(max_workers=6) as pool:
        numberers = [pool.submit(numbering) for _ in range(2)]
        list(pool.map(write, range(12)))
        writing.clear()
        assert all(numberer.result() > 0 for numberer in numberers)
    for created in (first, second):
        numbers = [e.event_number for e in events_of(database, created["id"])]
        assert numbers == list(range(1, len(numbers) + 1))
        assert stored(database, created["id"]).events_since_start == len(numbers)
        assert len(numbers) >= 12


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="row locks are PostgreSQL's")
def test_writes_matching_one_subscription_do_not_wait_for_each_other(
    owner: Client, writer: Client, database: Database
) -> None:
    """A write still open (its events inserted, not committed) keeps neither another write
    matching the same subscription, nor the numbering, nor $status waiting."""
    watching = create(owner, subscription(filters=("Goal?patient=Patient/123",)))
    plan = writer.create_plan()
    goal = goals_of(writer, plan)[0]
    content = json.dumps(writer.get(f"/fhir/Goal/{goal['id']}").json())
    before = stored(database, watching["id"]).events_since_start
    assert before > 0
    version = {
        "resource_type": "Goal",
        "id": goal["id"],
        "version_id": 99,
        "deleted": False,
        "method": "PUT",
        "content": content,
    }
    status = f"/fhir/Subscription/{watching['id']}/$status"

    def counted() -> int:
        response = owner.get(status)
        assert response.status_code == 200, response.text
        parameters = response.json()["entry"][0]["resource"]["parameter"]
        counter = "events-since-subscription-start"
        [value] = [p["valueString"] for p in parameters if p["name"] == counter]
        return int(value)

    with ThreadPoolExecutor(max_workers=1) as pool, database.writing() as held:
        # The outbox's part of a write, as publishing runs it, left uncommitted.
        outbox.record(held, [version], {}, {}, utcnow())
        assert (
            held.scalar(
                select(func.count())
                .select_from(SubscriptionEvent)
                .where(
                    SubscriptionEvent.subscription_id == watching["id"],
                    SubscriptionEvent.event_number.is_(None),
                )
            )
            == 1
        )
        # Another write raising events for the same subscription commits meanwhile.
        other = pool.submit(writer.create_plan)
        assert other.result(timeout=20)["id"]
        # Its events are numbered and counted; the open write's are not (yet).
        after = counted()
        assert after > before
        numbered = events_of(database, watching["id"])
        assert [e.event_number for e in numbered] == list(range(1, after + 1))
        # A worker claims it meanwhile too: its lock neither waits for the open write nor
        # skips the row that write references.
        claiming = pool.submit(claim_due, database, "outbox-test", 1000, DeliveryPolicy())
        try:
            claimed = claiming.result(timeout=20)
        finally:
            claiming.add_done_callback(lambda _: release(database, "outbox-test"))
        claims = [c for c in claimed if c.subscription_id == watching["id"]]
        assert [c.kind for c in claims] == ["handshake"]
    # Committed now: numbered next, after the others, with no gap.
    assert counted() == after + 1
    numbers = [e.event_number for e in events_of(database, watching["id"])]
    assert numbers == list(range(1, after + 2))
    [last] = [e for e in events_of(database, watching["id"]) if e.event_number == after + 1]
    assert (last.focus_id, last.focus_version) == (goal["id"], 99)


def test_a_write_is_numbered_only_once_committed(
    owner: Client, writer: Client, database: Database
) -> None:
    """Writes leave their events unnumbered; numbering gives them the next numbers once."""
    watching = create(owner, subscription())
    writer.create_plan()
    with database.reading() as session:
        waiting = session.scalars(
            select(SubscriptionEvent.event_number).where(
                SubscriptionEvent.subscription_id == watching["id"]
            )
        ).all()
    assert waiting and all(number is None for number in waiting)
    with database.reading() as session:
        found = session.get(Subscription, watching["id"])
        assert found is not None and found.events_since_start == 0
    numbers = [e.event_number for e in events_of(database, watching["id"])]
    assert numbers == list(range(1, len(waiting) + 1))
    number_pending(database, [watching["id"]])  # nothing left: nothing changes
    assert [e.event_number for e in events_of(database, watching["id"])] == numbers
    assert stored(database, watching["id"]).events_since_start == len(numbers)


@pytest.fixture
def raised(owner: Client, writer: Client, database: Database) -> Iterator[dict[str, Any]]:
    """A goal subscription with the events of a new plan's goals."""
    created = create(owner, subscription(payload="full-resource"))
    writer.create_plan()
    yield created


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", ["empty", "id-only", "full-resource"])
def test_bundles_of_every_kind_are_valid_r4(
    raised: dict[str, Any], database: Database, kind: str, payload: str
) -> None:
    events = events_of(database, raised["id"])
    with database.reading() as session:
        sub = session.get(Subscription, raised["id"])
        assert sub is not None
        session.expunge(sub)
        sub.payload = payload
        bundle = notification_bundle(session, sub, kind, events, base_url=BASE)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    Parameters.model_validate(status)
    parameters = status["parameter"]
    assert parameters[3] == {"name": "type", "valueCode": kind}
    notified = [p for p in parameters if p["name"] == "notification-event"]
    entries = bundle["entry"][1:]
    if kind in ("event-notification", "query-event"):
        numbers = [p["part"][0]["valueString"] for p in notified]
        assert numbers == [str(e.event_number) for e in events]
        with_focus = [p for p in notified if any(part["name"] == "focus" for part in p["part"])]
        assert len(with_focus) == (0 if payload == "empty" else len(events))
        assert len(entries) == (0 if payload == "empty" else len(events))
        if payload == "full-resource":
            assert all(e["resource"]["resourceType"] == "Goal" for e in entries)
        if payload == "id-only":
            assert all("resource" not in e and e["request"]["method"] == "POST" for e in entries)
    else:
        assert notified == [] and entries == []


def test_the_owner_sees_only_what_its_scopes_allow(
    hub: Server, writer: Client, database: Database
) -> None:
    narrow = caller(hub, database, ["system/Subscription.cruds", "system/CarePlan.rs"])
    created = create(narrow, subscription())
    writer.create_plan()
    events = events_of(database, created["id"])
    assert events
    with database.reading() as session:
        sub = session.get(Subscription, created["id"])
        assert sub is not None
        bundle = notification_bundle(session, sub, "event-notification", events, base_url=BASE)
    notified = [
        p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
    ]
    assert len(notified) == len(events)
    assert all(len(p["part"]) == 2 for p in notified)  # number and timestamp: no focus
    assert len(bundle["entry"]) == 1


def test_a_patient_bound_owner_sees_only_its_patient(
    hub: Server, writer: Client, database: Database
) -> None:
    bound = caller(hub, database, ["patient/Subscription.cruds", "patient/Goal.rs"], "Patient/5")
    created = create(bound, subscription(filters=("Goal?patient=Patient/5",)))
    writer.create_plan(patient="Patient/5")
    events = events_of(database, created["id"])
    with database.writing() as session:
        # An event of another patient (a filter can only narrow): it keeps its number only.
        session.execute(
            update(SubscriptionEvent)
            .where(
                SubscriptionEvent.subscription_id == created["id"],
                SubscriptionEvent.event_number == 1,
            )
            .values(patient="Patient/6")
        )
    events = events_of(database, created["id"])
    with database.reading() as session:
        sub = session.get(Subscription, created["id"])
        assert sub is not None
        bundle = notification_bundle(session, sub, "event-notification", events, base_url=BASE)
    assert len(bundle["entry"]) == len(events)  # the status, and every focus but one


def test_events_returns_ranges_and_says_what_is_gone(
    owner: Client, writer: Client, database: Database
) -> None:
    created = create(owner, subscription())
    writer.create_plan()
    writer.create_plan()
    total = stored(database, created["id"]).events_since_start
    assert total >= 4
    path = f"/fhir/Subscription/{created['id']}/$events"

    def numbers(response: Any) -> list[int]:
        assert response.status_code == 200, response.text
        parameters = response.json()["entry"][0]["resource"]["parameter"]
        return [
            int(p["part"][0]["valueString"])
            for p in parameters
            if p["name"] == "notification-event"
        ]

    assert numbers(owner.get(path, params={"eventsSinceNumber": 2, "eventsUntilNumber": 3})) == [
        2,
        3,
    ]
    assert numbers(owner.get(path)) == list(range(1, total + 1))
    posted = owner.post(
        path,
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "eventsSinceNumber", "valueString": str(total)}],
        },
    )
    assert numbers(posted) == [total]
    full = owner.get(path, params={"content": "full-resource", "eventsSinceNumber": 1}).json()
    assert full["entry"][1]["resource"]["resourceType"] == "Goal"
    assert owner.get(path, params={"eventsSinceNumber": "x"}).status_code == 400
    assert owner.get(path, params={"content": "everything"}).status_code == 400
    with database.writing() as session:
        session.execute(
            update(SubscriptionEvent)
            .where(
                SubscriptionEvent.subscription_id == created["id"],
                SubscriptionEvent.event_number <= 2,
            )
            .values(occurred_at=utcnow() - timedelta(days=30))
        )
    response = owner.get(path, params={"eventsSinceNumber": 1})
    assert numbers(response) == list(range(3, total + 1))
    outcome = response.json()["entry"][0]["response"]["outcome"]
    assert "gone" in outcome["issue"][0]["diagnostics"]


def test_channel_headers_are_unsealed_for_delivery(owner: Client, database: Database) -> None:
    created = create(owner, subscription())
    assert channel_headers(stored(database, created["id"])) == [
        ("Authorization", "Bearer receiver-secret")
    ]


def test_a_write_with_no_subscriptions_costs_one_query_of_them(
    writer: Client, database: Database
) -> None:
    plan = writer.create_plan()
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "subscription" in statement:
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        response = writer.patch(plan_url(plan), json={"formulation": "changed"})
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.text
    assert len(statements) == 1
    assert "FROM subscriptions" in statements[0]


def test_a_write_with_a_subscription_only_reads_it_and_inserts_events(
    owner: Client, writer: Client, database: Database
) -> None:
    """With a matching subscription, a write still reads the subscriptions once, then
    inserts its events with one statement: it neither updates nor locks the subscription."""
    plan = writer.create_plan()
    goal = goals_of(writer, plan)[0]
    watching = create(owner, subscription())
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "subscription" in statement:
            statements.append(" ".join(statement.split()))

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        response = writer.patch(
            plan_url(plan, "goals", goal["id"]), json={"priority": "low-priority"}
        )
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.text
    assert len(statements) == 2, statements
    assert statements[0].startswith("SELECT") and "FROM subscriptions" in statements[0]
    assert "FOR" not in statements[0].split("FROM subscriptions")[1]
    assert statements[1].startswith("INSERT INTO subscription_events")
    assert [e.focus_id for e in events_of(database, watching["id"])] == [goal["id"]]


def test_an_events_answer_is_audited_for_the_patients_it_holds(
    owner: Client, writer: Client, database: Database
) -> None:
    created = create(owner, subscription(payload="full-resource"))
    writer.create_plan(patient="Patient/321")
    response = owner.get(
        f"/fhir/Subscription/{created['id']}/$events",
        headers={"X-Request-ID": "events-audit-1"},
    )
    assert response.status_code == 200
    audit_journal.move(database)
    with database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT patient, interaction FROM audit_events WHERE request_id = :id"),
            {"id": "events-audit-1"},
        ).all()
    assert [(row.patient, row.interaction) for row in rows] == [("Patient/321", "operation")]


_GOAL_STATUSES = ["proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled"]


@given(
    held=st.sampled_from(_GOAL_STATUSES),
    asked=st.lists(st.sampled_from(_GOAL_STATUSES), min_size=1, max_size=3),
    form=st.sampled_from(["{code}", "http://hl7.org/fhir/goal-status|{code}", "|{code}"]),
)
def test_a_token_filter_matches_as_the_search_would(held: str, asked: list[str], form: str) -> None:
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": held,
        "subject": {"reference": "Patient/1"},
    }
    values = ",".join(form.format(code=code) for code in asked)
    criterion = parse_filter(BY_ID["goal"], f"Goal?lifecycle-status={values}")
    # The index keeps goal-status codes with their system: "|code" asks for none.
    expected = held in asked and not form.startswith("|")
    assert criterion.matches(goal) == expected
    patient = parse_filter(BY_ID["goal"], "Goal?patient=1")
    assert patient.matches(goal)
    assert not parse_filter(BY_ID["goal"], "Goal?patient=Patient/2").matches(goal)


def test_the_migration_keeps_the_numbers_and_its_downgrade_numbers_the_rest(
    tmp_path: Any,
) -> None:
    """0013 keeps every event and its number; going back numbers those still unnumbered
    after each subscription's last one, so that none is lost."""
    database = Database(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        database.upgrade("0012")
        row = (
            "INSERT INTO subscriptions (id, version_id, last_updated, deleted, status, topic, "
            "filters, endpoint, payload, content_type, timeout_seconds, max_count, "
            "owner_client_id, owner_scopes, events_since_start, delivered_through, "
            "failed_attempts, content, created_at) VALUES (:id, 1, :at, false, 'active', 't', "
            "'[]', 'https://x', 'id-only', 'application/fhir+json', 10, 20, 'c', 's', 3, 1, 0, "
            "'{}', :at)"
        )
        event_row = (
            "INSERT INTO subscription_events (subscription_id, event_number, topic, focus_type, "
            "focus_id, focus_version, occurred_at) VALUES (:s, :n, 't', 'Goal', 'g', 1, :at)"
        )
        at = "2026-01-01 00:00:00.000000"
        with database.engine.begin() as connection:
            for sid in ("a", "b"):
                connection.execute(text(row), {"id": sid, "at": at})
                for number in (3, 1, 2):
                    connection.execute(text(event_row), {"s": sid, "n": number, "at": at})
        database.upgrade()
        with database.engine.begin() as connection:
            kept = connection.execute(
                text("SELECT subscription_id, event_number FROM subscription_events ORDER BY id")
            ).all()
            assert kept == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
            connection.execute(text(event_row), {"s": "a", "n": None, "at": at})
            connection.execute(text(event_row), {"s": "a", "n": None, "at": at})
        database.downgrade("0012")
        with database.engine.begin() as connection:
            numbers = connection.execute(
                text("SELECT event_number FROM subscription_events WHERE subscription_id = 'a'")
            ).scalars()
            assert sorted(numbers) == [1, 2, 3, 4, 5]
            counters = connection.execute(
                text("SELECT id, events_since_start FROM subscriptions ORDER BY id")
            ).all()
            assert counters == [("a", 5), ("b", 3)]
        database.upgrade()
        assert database.current_revision() == database.head_revision()
    finally:
        database.dispose()
