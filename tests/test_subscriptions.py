"""The Subscription resource over HTTP: create, read, update, delete and search by its
owner only; validation naming the element; patient-bound tokens; $status; the topic
definitions and the CapabilityStatement."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Client, Server, count_rows, token_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update
from werkzeug.serving import make_server

from api.app import create_app
from api.config import Settings
from fhir_mappings.topics import BY_ID, TOPICS
from service import audit_journal
from service.db import Database
from service.endpoint_policy import parse_networks
from service.models import Subscription

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "https://ipt-careplans.org/fhir/SubscriptionTopic"
ENDPOINT = "http://127.0.0.1:9/notifications"
SUBSCRIBER = ["system/Subscription.cruds", "system/*.rs"]


@pytest.fixture(scope="module")
def hub(database: Database) -> Iterator[Server]:
    """A server whose subscriptions may notify this machine (the allow-list)."""
    settings = Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="WARNING",
        token_lifetime_seconds=3600,
        token_attempts_per_address=1_000_000,
        subscription_allowed_destinations=parse_networks("127.0.0.0/8"),
    )
    app = create_app(settings, database)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{http.server_port}", app, settings)
    http.shutdown()


def caller(
    hub: Server, database: Database, scopes: list[str], patient: str | None = None
) -> Client:
    return Client(hub.url, token_for(hub, database, scopes, patient=patient))


@pytest.fixture
def owner(hub: Server, database: Database) -> Client:
    return caller(hub, database, SUBSCRIBER)


def subscription(
    topic: str = "goal",
    filters: tuple[str, ...] = (),
    payload: str | None = "id-only",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "follow the goals",
        "criteria": f"{TOPIC}/{topic}",
        "channel": {
            "type": "rest-hook",
            "endpoint": ENDPOINT,
            "payload": "application/fhir+json",
            "header": ["Authorization: Bearer receiver-secret"],
            "extension": [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60}],
        },
    }
    if payload is not None:
        body["channel"]["_payload"] = {
            "extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": payload}]
        }
    if filters:
        body["_criteria"] = {
            "extension": [
                {"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f} for f in filters
            ]
        }
    body.update(fields)
    return body


def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/fhir/Subscription", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def expressions(response: Any) -> list[str]:
    assert response.headers["Content-Type"].startswith("application/fhir+json"), response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def test_a_subscription_is_created_requested_and_read_back_with_its_headers(owner: Client) -> None:
    created = create(owner, subscription(filters=("Goal?patient=Patient/123",)))
    assert created["status"] == "requested"
    assert created["meta"]["versionId"] == "1"
    assert f"{BACKPORT}/backport-subscription" in created["meta"]["profile"]
    read = owner.get(f"/fhir/Subscription/{created['id']}")
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"1"'
    body = read.json()
    assert body["channel"]["header"] == ["Authorization: Bearer receiver-secret"]
    assert body["_criteria"]["extension"][0]["valueString"] == "Goal?patient=Patient/123"


def test_headers_are_sealed_at_rest(owner: Client, database: Database) -> None:
    created = create(owner, subscription())
    with database.engine.connect() as connection:
        sealed, content = connection.execute(
            text("SELECT headers_sealed, content FROM subscriptions WHERE id = :id"),
            {"id": created["id"]},
        ).one()
    assert "receiver-secret" not in sealed
    assert "receiver-secret" not in content
    owner.get(f"/fhir/Subscription/{created['id']}")
    audit_journal.move(database)
    with database.engine.connect() as connection:
        trail = connection.execute(text("SELECT * FROM audit_events")).all()
    assert trail
    assert "receiver-secret" not in repr(trail)


def test_update_needs_the_current_version_when_if_match_is_given(owner: Client) -> None:
    created = create(owner, subscription())
    path = f"/fhir/Subscription/{created['id']}"
    changed = {**created, "status": "off"}
    stale = owner.request("PUT", path, json=changed, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    updated = owner.request("PUT", path, json=changed, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "off"
    assert updated.json()["meta"]["versionId"] == "2"


def test_a_client_cannot_make_a_subscription_active(owner: Client, database: Database) -> None:
    response = owner.post("/fhir/Subscription", json=subscription(status="active"))
    assert response.status_code == 422
    assert "Subscription.status" in expressions(response)
    assert count_rows(database, "subscriptions") == 0


def test_deleted_subscriptions_are_gone(owner: Client) -> None:
    created = create(owner, subscription())
    path = f"/fhir/Subscription/{created['id']}"
    assert owner.delete(path).status_code == 204
    assert owner.get(path).status_code == 410
    assert owner.get("/fhir/Subscription").json()["total"] == 0


def test_an_unknown_topic_is_refused_naming_it(owner: Client) -> None:
    response = owner.post("/fhir/Subscription", json=subscription(topic="encounter-complete"))
    assert response.status_code == 422
    assert "Subscription.criteria" in expressions(response)
    assert "encounter-complete" in response.text


@pytest.mark.parametrize(
    ("changes", "element"),
    [
        ({"channel": {"type": "websocket", "endpoint": ENDPOINT}}, "Subscription.channel.type"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://10.1.2.3/hook"}},
            "Subscription.channel.endpoint",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "payload": "text/xml"}},
            "Subscription.channel.payload",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": ["no colon"]}},
            "Subscription.channel.header[0]",
        ),
        ({"end": "2001-01-01T00:00:00Z"}, "Subscription.end"),
    ],
)
def test_bad_subscriptions_are_refused_naming_the_element(
    owner: Client, database: Database, changes: dict[str, Any], element: str
) -> None:
    response = owner.post("/fhir/Subscription", json=subscription(**changes))
    assert response.status_code == 422, response.text
    assert element in expressions(response)
    assert count_rows(database, "subscriptions") == 0


def test_a_header_value_is_never_echoed_in_an_error(owner: Client) -> None:
    body = subscription()
    body["channel"]["header"] = ["Content-Type: secret-value-1234"]
    response = owner.post("/fhir/Subscription", json=body)
    assert response.status_code == 422
    assert "secret-value-1234" not in response.text


_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_:", min_size=1, max_size=20)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=_NAMES, value=st.text(min_size=0, max_size=12))
def test_filters_on_parameters_the_topic_does_not_allow_are_refused(
    owner: Client, database: Database, name: str, value: str
) -> None:
    topic = BY_ID["goal"]
    allowed = name in topic.filters and value.strip() and "," not in value and "&" not in value
    if allowed:
        return
    response = owner.post(
        "/fhir/Subscription", json=subscription(filters=(f"Goal?{name}={value}",))
    )
    assert response.status_code == 422, response.text
    assert any(
        e.startswith(("Subscription.criteria", "Subscription._criteria"))
        for e in expressions(response)
    ), response.text
    assert count_rows(database, "subscriptions") == 0


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.id)
def test_every_filter_a_topic_declares_is_accepted(owner: Client, topic: Any) -> None:
    values = {
        "patient": "Patient/123",
        "part-of": "CarePlan/abc",
        "based-on": "CarePlan/abc",
    }
    filters = tuple(
        f"{topic.resource_type}?{name}={values.get(name, 'x')}" for name in topic.filters
    )
    create(owner, subscription(topic=topic.id, filters=filters))


def test_a_filter_of_another_type_is_refused(owner: Client) -> None:
    response = owner.post(
        "/fhir/Subscription", json=subscription(filters=("CarePlan?patient=Patient/1",))
    )
    assert response.status_code == 422
    assert "Subscription.criteria.extension[0]" in expressions(response)


def test_only_the_owner_finds_a_subscription(
    hub: Server, database: Database, owner: Client
) -> None:
    created = create(owner, subscription())
    path = f"/fhir/Subscription/{created['id']}"
    other = caller(hub, database, SUBSCRIBER)
    nobody = other.get("/fhir/Subscription/nobody-has-this")
    for response in (
        other.get(path),
        other.request("PUT", path, json=created),
        other.delete(path),
        other.get(f"{path}/$status"),
        other.get(f"{path}/$events"),
    ):
        assert response.status_code == 404
        assert response.json()["issue"][0]["code"] == nobody.json()["issue"][0]["code"]
    assert other.get("/fhir/Subscription").json()["total"] == 0
    assert owner.get(path).status_code == 200


def test_subscriptions_need_a_subscription_scope(hub: Server, database: Database) -> None:
    reader = caller(hub, database, ["system/Goal.rs"])
    assert reader.post("/fhir/Subscription", json=subscription()).status_code == 403
    assert reader.get("/fhir/Subscription").status_code == 403


def test_a_patient_bound_token_subscribes_only_within_its_patient(
    hub: Server, database: Database
) -> None:
    bound = caller(hub, database, ["patient/Subscription.cruds", "patient/Goal.rs"], "Patient/7")
    for filters in ((), ("Goal?patient=Patient/8",), ("Goal?patient=Patient/7,Patient/8",)):
        response = bound.post("/fhir/Subscription", json=subscription(filters=filters))
        assert response.status_code == 422, response.text
        assert "Subscription.criteria.extension" in expressions(response)
    created = create(bound, subscription(filters=("Goal?patient=Patient/7",)))
    assert bound.get(f"/fhir/Subscription/{created['id']}").status_code == 200


def test_search_by_status_criteria_url_and_last_updated(owner: Client) -> None:
    goal = create(owner, subscription())
    plan = create(owner, subscription(topic="careplan", status="off"))

    def ids(**params: str) -> set[str]:
        response = owner.get("/fhir/Subscription", params=params)
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}

    assert ids() == {goal["id"], plan["id"]}
    assert ids(status="off") == {plan["id"]}
    assert ids(criteria=f"{TOPIC}/goal") == {goal["id"]}
    assert ids(url=ENDPOINT) == {goal["id"], plan["id"]}
    assert ids(_id=goal["id"]) == {goal["id"]}
    assert ids(_lastUpdated="ge2000-01-01") == {goal["id"], plan["id"]}
    assert ids(_lastUpdated="lt2000-01-01") == set()
    assert owner.get("/fhir/Subscription", params={"name": "x"}).status_code == 400


def test_status_reports_the_subscription(owner: Client) -> None:
    created = create(owner, subscription())
    for path in (
        f"/fhir/Subscription/{created['id']}/$status",
        f"/fhir/Subscription/$status?id={created['id']}",
    ):
        response = owner.get(path)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        parameters = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
        assert parameters["type"]["valueCode"] == "query-status"
        assert parameters["status"]["valueCode"] == "requested"
        assert parameters["events-since-subscription-start"]["valueString"] == "0"


def test_topics_are_served_and_listed_in_the_capability_statement(hub: Server) -> None:
    anonymous = Client(hub.url)
    statement = anonymous.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    entry = resources["Subscription"]
    canonicals = {
        e["valueCanonical"]
        for e in entry.get("extension", [])
        if e["url"].endswith("capabilitystatement-subscriptiontopic-canonical")
    }
    assert canonicals == {topic.url for topic in TOPICS}
    assert {"$status", "$events"} <= {op["name"] for op in entry["operation"]}
    for topic in TOPICS:
        basic = anonymous.get(f"/fhir/Basic/{topic.id}")
        assert basic.status_code == 200
        urls = [e for e in basic.json()["extension"] if e["url"].endswith("SubscriptionTopic.url")]
        assert urls[0]["valueUri"] == topic.url
    assert anonymous.get("/fhir/Basic").json()["total"] == len(TOPICS)


def test_an_active_subscription_pointed_elsewhere_is_requested_again(
    owner: Client, database: Database
) -> None:
    created = create(owner, subscription())
    with database.writing() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.id == created["id"])
            .values(status="active", next_attempt_at=None)
        )
    path = f"/fhir/Subscription/{created['id']}"
    active = owner.get(path).json()
    assert active["status"] == "active"
    unchanged = owner.request("PUT", path, json=active)
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["status"] == "active"
    moved = {**active, "channel": {**active["channel"], "endpoint": "http://127.0.0.2:9/hook"}}
    response = owner.request("PUT", path, json=moved)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "requested"
    with database.reading() as session:
        found = session.get(Subscription, created["id"])
        assert found is not None and found.next_attempt_at is not None


_ELEMENTS = (
    ("status",),
    ("criteria",),
    ("reason",),
    ("end",),
    ("channel", "type"),
    ("channel", "endpoint"),
    ("channel", "payload"),
    ("channel", "header"),
    ("channel", "extension"),
    ("_criteria",),
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    st.sampled_from(["active", "error", "off", "https://10.0.0.1/x", "ftp://example.org/"]),
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(element=st.sampled_from(_ELEMENTS), value=_VALUES)
def test_a_bad_subscription_is_refused_with_an_outcome_and_stores_nothing(
    owner: Client, database: Database, element: tuple[str, ...], value: Any
) -> None:
    body = subscription()
    target = body
    for name in element[:-1]:
        target = target[name]
    target[element[-1]] = value
    before = count_rows(database, "subscriptions")
    response = owner.post("/fhir/Subscription", json=body)
    assert response.status_code in (201, 400, 422), response.text
    if response.status_code != 201:
        assert response.json()["resourceType"] == "OperationOutcome"
        assert count_rows(database, "subscriptions") == before
