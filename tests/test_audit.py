"""The audit trail: a FHIR AuditEvent for every request that touches patient data.

Writes are recorded in their own transaction; reads, searches, refusals and failed writes
before their response leaves (``api.audit.AuditLog``).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Client, Server, count_rows, plan_url, token_for
from sqlalchemy import insert, select, text
from test_fhir_bundle import new_goal, post_bundle, transaction
from test_fhir_read import assert_valid, outcome_code

from api.audit import stored_event
from fhir_mappings.audit_event import AuditFacts, render_audit_event
from fhir_mappings.projection import instant, serialise
from service import audit_journal
from service.db import Database
from service.models import AuditRecord

RESTFUL = "http://hl7.org/fhir/restful-interaction"
AUDITOR = {"X-Actor": "auditor"}
STORED = [column.key for column in AuditRecord.__table__.columns]


@pytest.fixture(autouse=True)
def empty_trail(database: Database) -> None:
    """Records buffered by earlier tests are written (and removed) before each test."""
    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_journal"))
        connection.execute(text("DELETE FROM audit_events"))


def rows(database: Database) -> list[dict[str, Any]]:
    """Every stored audit record, oldest first, with its AuditEvent as served (``served``)
    and parsed (``event``)."""
    audit_journal.move(database)
    with database.reading() as session:
        found = session.scalars(select(AuditRecord).order_by(AuditRecord.recorded, AuditRecord.id))
        return [
            {
                **{name: getattr(record, name) for name in STORED},
                "served": stored_event(record),
                "event": json.loads(stored_event(record)),
            }
            for record in found
        ]


def of_request(database: Database, request_id: str) -> list[dict[str, Any]]:
    return [row for row in rows(database) if request_id_of(row["event"]) == request_id]


def request_id_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        if entity.get("type", {}).get("code") == "XrequestId":
            return str(entity["what"]["identifier"]["value"])
    return None


def subtype(event: dict[str, Any]) -> str:
    [coding] = event["subtype"]
    assert coding["system"] == RESTFUL
    return str(coding["code"])


def query_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        if "query" in entity:
            return base64.b64decode(entity["query"]).decode()
    return None


def search(client: Client, **params: str) -> dict[str, Any]:
    response = client.get("/fhir/AuditEvent", params=params, headers=AUDITOR)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    assert_valid(bundle)
    return bundle


def ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def test_a_native_create_is_committed_with_its_audit_record(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(patient="Patient/p-1")
    # Committed in the write's own transaction.
    [record] = rows(database)
    assert (record["action"], record["outcome"], record["agent"]) == ("C", "0", client.client_id)
    response = client.post(
        "/api/v1/care-plans",
        json={"patient": "Patient/p-2", "problem_areas": ["grief"], "start_date": "2026-01-05"},
        headers={"X-Actor": "dr.rivera", "X-Request-ID": "create-1"},
    )
    assert response.status_code == 201
    [created] = of_request(database, "create-1")
    assert created["action"] == "C"
    assert created["outcome"] == "0"
    assert created["agent"] == "dr.rivera"
    assert created["entity"] == f"CarePlan/{response.json()['id']}"
    assert created["patient"] == "Patient/p-2"
    event = created["event"]
    assert_valid(event)
    assert subtype(event) == "create"
    assert event["type"]["code"] == "rest"
    caller, asserted, server = event["agent"]
    # The client the token was issued to, and beside it the user it says it acts for: the
    # client's word (X-Actor), not a user the service authenticated.
    assert caller["who"]["identifier"]["value"] == client.client_id
    assert "altId" not in caller
    assert caller["requestor"] is True
    assert asserted["who"] == {"display": "dr.rivera"}
    assert asserted["requestor"] is False
    assert "asserted by the client" in asserted["role"][0]["text"]
    assert caller["network"] == {"address": "127.0.0.1", "type": "2"}
    assert server["requestor"] is False
    assert event["source"]["type"][0]["code"] == "4"
    references = {e["what"].get("reference"): e["role"]["code"] for e in event["entity"][1:]}
    assert references == {created["entity"]: "4", "Patient/p-2": "1"}
    # Nothing else was recorded for it, later or twice.
    assert len(of_request(database, "create-1")) == 1
    goal = client.post(
        plan_url(plan, "goals"), json={"kind": "symptom", "description": "Sleep through"}
    )
    assert rows(database)[-1]["entity"] == f"Goal/{goal.json()['id']}"


def test_a_refused_write_records_the_attempt_and_nothing_else(
    client: Client, database: Database
) -> None:
    response = client.post(
        "/api/v1/care-plans",
        json={"patient": "Patient/p-1", "problem_areas": ["grief"], "planned_sessions": 0},
        headers={"X-Actor": "dr.rivera", "X-Request-ID": "refused-1"},
    )
    assert response.status_code == 422
    [attempt] = rows(database)
    assert (attempt["action"], attempt["outcome"], attempt["agent"]) == ("C", "4", "dr.rivera")
    assert attempt["event"]["outcomeDesc"] == "422 Unprocessable Entity"
    assert request_id_of(attempt["event"]) == "refused-1"
    assert count_rows(database, "care_plans") == 0
    assert count_rows(database, "plan_changes") == 0


def test_a_transaction_rolled_back_after_auditing_leaves_no_success_record(
    client: Client, database: Database
) -> None:
    first, second = client.create_plan(), client.create_plan(patient="Patient/456")
    before = rows(database)
    # Two goals claiming one identifier: the first plan's change is published and audited,
    # then the second's publication conflicts and the whole transaction rolls back.
    goals = []
    for plan in (first, second):
        goal = new_goal(client, plan, f"CarePlan/{plan['id']}")
        goal["identifier"] = [{"system": "urn:example:goal", "value": "G-1"}]
        goals.append({"resource": goal, "request": {"method": "POST", "url": "Goal"}})
    response = client.post(
        "/fhir",
        data=json.dumps(transaction(*goals)),
        headers={"Content-Type": "application/fhir+json", "X-Request-ID": "rolled-back"},
    )
    assert response.status_code == 409
    assert outcome_code(response) == "conflict"
    [attempt] = of_request(database, "rolled-back")
    assert (attempt["action"], attempt["outcome"]) == ("E", "4")
    assert subtype(attempt["event"]) == "transaction"

    def writes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["action"] in "CUD" and r["outcome"] == "0"]

    assert writes(rows(database)) == writes(before)


def test_a_transaction_records_each_plan_it_changed(client: Client, database: Database) -> None:
    first, second = client.create_plan(), client.create_plan(patient="Patient/456")
    goals = [
        {
            "resource": new_goal(client, plan, f"CarePlan/{plan['id']}"),
            "request": {"method": "POST", "url": "Goal"},
        }
        for plan in (first, second)
    ]
    response = post_bundle(client, transaction(*goals))
    assert response.status_code == 200, response.text
    created = [e["resource"]["id"] for e in response.json()["entry"]]
    records = [r for r in rows(database) if subtype(r["event"]) == "transaction"]
    assert sorted((r["entity"], r["patient"], r["action"]) for r in records) == sorted(
        [(f"Goal/{created[0]}", "Patient/123", "U"), (f"Goal/{created[1]}", "Patient/456", "U")]
    )


def test_reads_and_searches_are_recorded_with_the_query(
    client: Client, database: Database, plan: dict
) -> None:
    read = client.get(f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": "read-1"})
    assert read.status_code == 200
    found = client.get(
        "/fhir/CarePlan",
        params={"patient": "Patient/123", "status": "active"},
        headers={"X-Request-ID": "search-1"},
    )
    assert found.status_code == 200
    native = client.get(plan_url(plan, "goals"), headers={"X-Request-ID": "goals-1"})
    assert native.status_code == 200
    [record] = of_request(database, "read-1")
    assert (record["action"], record["outcome"]) == ("R", "0")
    assert subtype(record["event"]) == "read"
    assert record["entity"] == f"CarePlan/{plan['id']}"
    assert record["patient"] == "Patient/123"
    [searched] = of_request(database, "search-1")
    assert searched["action"] == "E"
    assert subtype(searched["event"]) == "search-type"
    assert query_of(searched["event"]) == found.url.split("?", 1)[1]
    assert searched["patient"] == "Patient/123"
    [listed] = of_request(database, "goals-1")
    assert subtype(listed["event"]) == "search-type"
    assert (listed["entity"], listed["patient"]) == (f"CarePlan/{plan['id']}", "Patient/123")


def test_every_read_of_a_patient_record_names_the_patient(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(patient="Patient/read-me")
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    goal_read = client.get(f"/fhir/Goal/{goals[0]['id']}", headers={"X-Request-ID": "goal-1"})
    etag = goal_read.headers["ETag"]
    unchanged = client.get(
        f"/fhir/Goal/{goals[0]['id']}", headers={"X-Request-ID": "goal-2", "If-None-Match": etag}
    )
    assert unchanged.status_code == 304
    assert client.delete(plan_url(plan, "goals", goals[1]["id"])).status_code == 204
    gone = client.get(f"/fhir/Goal/{goals[1]['id']}", headers={"X-Request-ID": "goal-3"})
    assert gone.status_code == 410
    missing = client.get("/fhir/Goal/no-such-goal", headers={"X-Request-ID": "goal-4"})
    assert missing.status_code == 404
    named = {rid: of_request(database, rid)[0]["patient"] for rid in ("goal-1", "goal-2", "goal-3")}
    assert named == dict.fromkeys(("goal-1", "goal-2", "goal-3"), "Patient/read-me")
    assert of_request(database, "goal-4")[0]["patient"] is None


def test_not_found_on_a_data_route_is_recorded(client: Client, database: Database) -> None:
    assert client.get("/fhir/Goal/missing", headers={"X-Request-ID": "nf-1"}).status_code == 404
    assert (
        client.get("/api/v1/care-plans/gone-1", headers={"X-Request-ID": "nf-2"}).status_code == 404
    )
    [fhir] = of_request(database, "nf-1")
    assert (fhir["action"], fhir["outcome"], fhir["entity"]) == ("R", "4", "Goal/missing")
    assert fhir["event"]["outcomeDesc"] == "404 Not Found"
    [native] = of_request(database, "nf-2")
    assert (native["outcome"], native["entity"]) == ("4", "CarePlan/gone-1")


def test_probes_metadata_and_conformance_resources_are_not_recorded(
    client: Client, database: Database
) -> None:
    for path in (
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/fhir/metadata",
        "/fhir/CodeSystem/ipt-problem-area",
        "/fhir/StructureDefinition/ipt-goal",
    ):
        assert client.get(path).status_code == 200, path
    assert rows(database) == []


def test_the_capability_statement_lists_the_audit_trail(client: Client) -> None:
    statement = client.get("/fhir/metadata").json()
    [audit] = [r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    assert [i["code"] for i in audit["interaction"]] == ["read", "search-type"]
    assert {p["name"] for p in audit["searchParam"]} == {
        "date",
        "agent",
        "entity",
        "patient",
        "outcome",
    }


def test_the_trail_is_searched_by_date_agent_entity_patient_and_outcome(
    client: Client, database: Database, live: Server
) -> None:
    first = client.create_plan(patient="Patient/p-1")
    time.sleep(0.01)
    boundary = datetime.now(UTC)
    time.sleep(0.01)
    second = client.post(
        "/api/v1/care-plans",
        json={"patient": "Patient/p-2", "problem_areas": ["grief"], "start_date": "2026-01-05"},
        headers={"X-Actor": "dr.b"},
    ).json()
    client.get("/fhir/CarePlan/missing", headers={"X-Actor": "dr.b"})
    other = Client(live.url, token_for(live, database, ["system/*.rs"]))
    other.get(f"/fhir/CarePlan/{first['id']}")
    by_entity = {(row["entity"], row["action"]): row["id"] for row in rows(database)}
    first_id = by_entity[(f"CarePlan/{first['id']}", "C")]
    second_id = by_entity[(f"CarePlan/{second['id']}", "C")]
    missing_id = by_entity[("CarePlan/missing", "R")]
    read_id = by_entity[(f"CarePlan/{first['id']}", "R")]

    assert ids(search(client, agent="dr.b")) == [missing_id, second_id]  # newest first
    # A client id finds everything done through that client, whoever it acted for.
    assert ids(search(client, agent=str(other.client_id))) == [read_id]
    assert {first_id, second_id, missing_id} <= set(ids(search(client, agent=client.client_id)))
    assert ids(search(client, entity=f"CarePlan/{second['id']}")) == [second_id]
    assert ids(search(client, entity=f"{client.base_url}/fhir/CarePlan/{second['id']}")) == [
        second_id
    ]
    # Reading the trail is recorded too, for the patients the records read name: only the
    # records of the requests above are compared.
    known = set(by_entity.values())

    def of_patient(patient: str) -> list[str]:
        return [found for found in ids(search(client, patient=patient)) if found in known]

    assert of_patient("Patient/p-1") == [read_id, first_id]
    assert of_patient("p-2") == [second_id]
    assert ids(search(client, outcome="4")) == [missing_id]
    assert ids(search(client, outcome="0,4", agent="dr.b")) == [missing_id, second_id]
    instant = boundary.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert ids(search(client, date=f"lt{instant}")) == [first_id]
    assert ids(search(client, date=f"ge{instant}", agent="dr.b")) == [missing_id, second_id]
    today = boundary.date().isoformat()
    assert set(ids(search(client, date=today))) >= {first_id, second_id, missing_id}
    tomorrow = (boundary + timedelta(days=1)).date().isoformat()
    assert ids(search(client, date=f"ge{tomorrow}")) == []

    paged = search(client, agent="dr.b", _count="1", _total="accurate")
    assert paged["total"] == 2
    assert ids(paged) == [missing_id]
    [next_url] = [link["url"] for link in paged["link"] if link["relation"] == "next"]
    following = client.get(next_url.removeprefix(client.base_url), headers=AUDITOR).json()
    assert ids(following) == [second_id]
    assert [link["relation"] for link in following["link"]] == ["self"]

    for bad in ({"date": "yesterday"}, {"outcome": "3"}, {"date": "ap2026-01-05"}):
        response = client.get("/fhir/AuditEvent", params=bad, headers=AUDITOR)
        assert response.status_code == 400, bad
        assert outcome_code(response) == "invalid"


def test_one_audit_event_is_read_as_recorded(client: Client, database: Database) -> None:
    client.create_plan()
    [record] = rows(database)
    response = client.get(f"/fhir/AuditEvent/{record['id']}", headers=AUDITOR)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.text == record["served"]
    assert_valid(response.json())
    missing = client.get("/fhir/AuditEvent/does-not-exist", headers=AUDITOR)
    assert missing.status_code == 404
    assert outcome_code(missing) == "not-found"


def test_audit_events_cannot_be_created_changed_or_deleted(
    client: Client, database: Database
) -> None:
    client.create_plan()
    [record] = rows(database)
    event, url = record["event"], f"/fhir/AuditEvent/{record['id']}"
    fhir_json = {"Content-Type": "application/fhir+json"}
    attempts = [
        client.post("/fhir/AuditEvent", data=json.dumps(event), headers=fhir_json),
        client.request("PUT", url, data=json.dumps({**event, "outcome": "8"}), headers=fhir_json),
        client.request("PUT", "/fhir/AuditEvent?agent=anonymous", data="{}", headers=fhir_json),
        client.patch(url, data="[]", headers={"Content-Type": "application/json-patch+json"}),
        client.delete(url),
        client.delete("/fhir/AuditEvent"),
    ]
    for response in attempts:
        assert response.status_code == 405, response.request.method
        assert response.headers["Allow"] == "GET"
        assert outcome_code(response) == "not-supported"
    after = rows(database)
    assert after[0] == record
    # Each attempt is on the record, as a failure.
    assert [(r["outcome"], r["action"]) for r in after[1:]] == [
        ("4", "C"),
        ("4", "U"),
        ("4", "U"),
        ("4", "U"),
        ("4", "D"),
        ("4", "D"),
    ]


def test_every_audit_event_is_valid_fhir(client: Client, database: Database, plan: dict) -> None:
    client.patch(plan_url(plan), json={"formulation": "x"}, headers={"X-Actor": "dr.rivera"})
    client.get(f"/fhir/CarePlan/{plan['id']}/_history")
    client.get("/fhir/_history")
    client.get("/fhir/Goal", params={"subject": "Patient/123"})
    client.post("/fhir/CarePlan/_search", data={"patient": "123"})
    client.get(f"/fhir/CarePlan/{plan['id']}/_history/1")
    client.delete(plan_url(plan), headers={"If-Match": '"1"'})
    client.delete(plan_url(plan))
    records = rows(database)
    assert len(records) >= 9
    for record in records:
        assert_valid(record["event"])
    kinds = {subtype(r["event"]) for r in records}
    assert kinds >= {"create", "patch", "history-instance", "history-system", "search-type"}
    assert {"vread", "delete"} <= kinds
    posted = [r for r in records if query_of(r["event"]) == "patient=123"]
    assert [r["patient"] for r in posted] == ["Patient/123"]
    assert_valid(search(client))


def test_no_body_text_token_or_secret_is_recorded(client: Client, database: Database) -> None:
    secret = "Lost her job; conflict with sister Anna-Zqxjv"
    headers = {"X-Actor": "dr.rivera"}
    plan = client.post(
        "/api/v1/care-plans",
        json={
            "patient": "Patient/123",
            "problem_areas": ["role-dispute"],
            "start_date": "2026-01-05",
            "formulation": secret,
        },
        headers=headers,
    ).json()
    client.patch(plan_url(plan), json={"relapse_prevention": secret}, headers=headers)
    client.patch(plan_url(plan), json={"formulation": secret, "bogus": secret}, headers=headers)
    client.get(f"/fhir/CarePlan/{plan['id']}", headers=headers)
    forged = "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJXcXZ5ayJ9.Wqvyk"
    refused = client.get(
        f"/fhir/CarePlan/{plan['id']}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert refused.status_code == 401
    stored = rows(database)
    assert len(stored) == 5
    token = client.http.headers["Authorization"].removeprefix("Bearer ")
    for record in stored:
        for value in record.values():
            assert "Zqxjv" not in str(value)
            assert "Wqvyk" not in str(value)
            assert token not in str(value)
            assert token.split(".")[2] not in str(value)


def test_refusals_are_recorded(
    client: Client, anonymous: Client, database: Database, live: Server, plan: dict
) -> None:
    assert (
        anonymous.get(f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": "r-401"}).status_code
        == 401
    )
    goals_only = Client(live.url, token_for(live, database, ["system/Goal.rs"]))
    forbidden = goals_only.get(plan_url(plan), headers={"X-Request-ID": "r-403"})
    assert forbidden.status_code == 403
    # The audit trail itself is for holders of system/AuditEvent.rs only.
    users = Client(live.url, token_for(live, database, ["user/*.cruds"]))
    assert users.get("/fhir/AuditEvent", headers={"X-Request-ID": "r-audit"}).status_code == 403
    [unauthenticated] = of_request(database, "r-401")
    assert (unauthenticated["outcome"], unauthenticated["agent"]) == ("4", "anonymous")
    assert unauthenticated["event"]["outcomeDesc"] == "401 Unauthorized"
    assert unauthenticated["patient"] == "Patient/123"
    [scoped] = of_request(database, "r-403")
    assert (scoped["outcome"], scoped["agent"]) == ("4", goals_only.client_id)
    assert scoped["entity"] == f"CarePlan/{plan['id']}"
    assert_valid(scoped["event"])
    [audit_search] = of_request(database, "r-audit")
    assert (audit_search["outcome"], audit_search["agent"]) == ("4", users.client_id)


def test_buffered_records_are_written_within_about_a_second(
    client: Client, database: Database, plan: dict
) -> None:
    before = len(rows(database))
    client.get(f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": "late-1"})
    deadline = time.monotonic() + 3
    while not of_request(database, "late-1"):
        assert time.monotonic() < deadline, "the buffered record was not written in 3 s"
        time.sleep(0.05)
    assert len(rows(database)) == before + 1


# --- stored facts, rendered when read -------------------------------------------------------

GOLDEN = Path(__file__).parent / "data" / "audit_events_rendered_at_write.jsonl"
# The facts of each line of GOLDEN: the AuditEvents the service rendered and stored when
# each record was written, before records kept their facts in columns.
GOLDEN_FACTS = [
    AuditFacts(
        id="0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        recorded=datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
        started=datetime(2026, 3, 4, 5, 6, 7, 880000, tzinfo=UTC),
        interaction="search-type",
        action="E",
        outcome="4",
        agent="dr.rivera",
        status=404,
        client_id="client-1",
        user="dr.rivera",
        address="10.0.0.7",
        request_id="req-1",
        entity="CarePlan/abc",
        query="patient=Patient%2F123&status=active",
        patient="Patient/123",
    ),
    AuditFacts(
        id="0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c",
        recorded=datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
        # Started after recorded (clocks of two processes): the period starts at recorded.
        started=datetime(2026, 3, 4, 5, 6, 7, 900000, tzinfo=UTC),
        interaction="read",
        action="R",
        outcome="0",
        agent="anonymous",
    ),
    AuditFacts(
        id="0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2d",
        recorded=datetime(2026, 3, 4, 5, 6, 8, 0, tzinfo=UTC),
        started=datetime(2026, 3, 4, 5, 6, 7, 990000, tzinfo=UTC),
        interaction="update",
        action="U",
        outcome="0",
        agent="ehr-user@example.org",
        client_id="ehr",
        user="ehr-user@example.org",
        address="::1",
        request_id="0123456789abcdef",
        entity="Goal/g-1",
        patient="Patient/p 1é",
    ),
]


def columns(facts: AuditFacts, content: str | None = None) -> dict[str, Any]:
    """The audit_events row of ``facts``: their columns, and ``content`` if given."""
    row = {("user_name" if name == "user" else name): value for name, value in vars(facts).items()}
    return {**row, "content": content}


def insert_rows(database: Database, *records: dict[str, Any]) -> None:
    with database.writing() as session:
        session.execute(insert(AuditRecord), list(records))


def test_an_audit_event_is_served_as_it_was_rendered_when_recorded(
    client: Client, database: Database
) -> None:
    rendered_at_write = GOLDEN.read_text(encoding="utf-8").splitlines()
    assert len(rendered_at_write) == len(GOLDEN_FACTS)
    insert_rows(database, *(columns(facts) for facts in GOLDEN_FACTS))
    with database.reading() as session:
        assert session.scalars(select(AuditRecord.content)).all() == [None] * len(GOLDEN_FACTS)
    for facts, expected in zip(GOLDEN_FACTS, rendered_at_write, strict=True):
        assert serialise(render_audit_event(facts)) == expected
        response = client.get(f"/fhir/AuditEvent/{facts.id}", headers=AUDITOR)
        assert response.status_code == 200
        assert response.text == expected
        assert response.headers["ETag"] == 'W/"1"'
        assert_valid(response.json())
    # A search serves the same AuditEvents.
    bundle = search(client, date="2026-03-04")
    served = {entry["resource"]["id"]: entry["resource"] for entry in bundle["entry"]}
    assert served == {
        facts.id: json.loads(text)
        for facts, text in zip(GOLDEN_FACTS, rendered_at_write, strict=True)
    }


def test_a_record_stored_with_its_audit_event_is_served_as_stored(
    client: Client, database: Database
) -> None:
    facts = GOLDEN_FACTS[0]
    # Written before the facts had columns: the AuditEvent text, and the columns of then
    # (client_id copied from the text by the migration).
    stored = serialise({**render_audit_event(facts), "outcomeDesc": "as stored then"})
    legacy = {
        "id": facts.id,
        "recorded": facts.recorded,
        "action": facts.action,
        "outcome": facts.outcome,
        "agent": facts.agent,
        "entity": facts.entity,
        "patient": facts.patient,
        "client_id": facts.client_id,
        "content": stored,
    }
    insert_rows(database, legacy)
    response = client.get(f"/fhir/AuditEvent/{facts.id}", headers=AUDITOR)
    assert response.status_code == 200
    assert response.text == stored
    [entry] = search(client, agent="client-1")["entry"]
    assert entry["resource"] == json.loads(stored)
    assert ids(search(client, agent="dr.rivera")) == [facts.id]
    assert ids(search(client, agent="other-client")) == []


def test_records_keep_their_facts_in_columns_not_a_rendered_event(
    client: Client, database: Database, plan: dict
) -> None:
    client.get(
        "/fhir/CarePlan",
        params={"patient": "Patient/123", "status": "active"},
        headers={"X-Actor": "dr.rivera", "X-Request-ID": "facts-1"},
    )
    written, searched = rows(database)
    assert written["content"] is None and searched["content"] is None
    assert (written["interaction"], written["status"], written["query"]) == ("create", None, None)
    assert written["client_id"] == client.client_id
    assert searched["interaction"] == "search-type"
    assert searched["status"] == 200
    # X-Actor is the client's word: the actor, not a user the token named.
    assert (searched["client_id"], searched["user_name"]) == (client.client_id, None)
    assert searched["agent"] == "dr.rivera"
    assert (searched["address"], searched["request_id"]) == ("127.0.0.1", "facts-1")
    assert searched["query"] == "patient=Patient%2F123&status=active"
    assert searched["started"] <= searched["recorded"]
    event = searched["event"]
    assert event["period"]["start"] == instant(searched["started"])
    assert event["outcomeDesc"] == "200 OK"
    assert query_of(event) == searched["query"]


def test_a_large_batch_is_written_whole_with_every_column(
    client: Client, database: Database, plan: dict
) -> None:
    """More reads than one statement's rows: every record lands, its times and facts as
    recorded."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    request_ids = [f"many-{n}" for n in range(130)]
    for request_id in request_ids:
        read = client.get(f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": request_id})
        assert read.status_code == 200
    stored = {request_id_of(row["event"]): row for row in rows(database)}
    for request_id in request_ids:
        row = stored[request_id]
        assert (row["entity"], row["patient"]) == (f"CarePlan/{plan['id']}", "Patient/123")
        assert before <= row["recorded"] <= datetime.now(UTC)
        assert row["event"]["recorded"] == instant(row["recorded"])
