"""Numbers and dates at the edges: every whole number the native API reads is bounded by its
schema (and the OpenAPI document says so), every date the domain keeps lies in the supported
calendar, and anything beyond is refused with the field named and nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import codes
from service.rules import EARLIEST_DATE, INTEGER_MAX, INTEGER_MIN, LATEST_DATE
from tests.conftest import Client, plan_url, problem_fields
from tests.test_fhir_write import new_episode, new_goal, send, unprocessable

Json = dict[str, Any]

INT64_MAX = 2**63 - 1


# --- the OpenAPI document: every integer bounded ------------------------------------------


def unbounded_integers(document: Json, prefix: str = "/api/") -> list[str]:
    """Every integer (or number) schema reachable from the paths under ``prefix`` that lacks
    a ``minimum`` or ``maximum`` within an integer column's range, by its location."""
    components = document.get("components", {}).get("schemas", {})
    found: list[str] = []
    seen: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}/{index}")
            return
        if not isinstance(node, dict):
            return
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/components/schemas/"):
            name = reference.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                walk(components[name], f"#/components/schemas/{name}")
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "integer" in types or "number" in types:
            low, high = node.get("minimum"), node.get("maximum")
            if low is None or high is None or low < INTEGER_MIN or high > INTEGER_MAX:
                found.append(where)
        for key, value in node.items():
            walk(value, f"{where}/{key}")

    for path, item in document["paths"].items():
        if path.startswith(prefix):
            walk(item, f"{path}")
    return found


def test_every_integer_of_the_native_api_is_bounded_in_the_openapi_document(server: str) -> None:
    document = requests.get(f"{server}/openapi.json", timeout=30).json()
    assert unbounded_integers(document) == []
    # The check itself sees an unbounded integer, one too wide, and one behind a $ref.
    sample = {
        "paths": {
            "/api/x": {
                "get": {
                    "parameters": [
                        {"name": "a", "schema": {"type": "integer"}},
                        {
                            "name": "b",
                            "schema": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                        },
                    ],
                    "responses": {"200": {"$ref": "#/components/schemas/C"}},
                }
            }
        },
        "components": {"schemas": {"C": {"properties": {"n": {"type": ["integer", "null"]}}}}},
    }
    assert len(unbounded_integers(sample)) == 3


def test_the_phase_path_parameter_is_the_enumeration_of_phase_codes(server: str) -> None:
    document = requests.get(f"{server}/openapi.json", timeout=30).json()
    path = document["paths"]["/api/v1/care-plans/{plan_id}/phases/{phase}"]
    (phase,) = [p for p in path["parameters"] if p["name"] == "phase"]
    assert phase["schema"]["enum"] == codes.values(codes.PhaseCode)
    session = document["paths"]["/api/v1/care-plans/{plan_id}/sessions/{number}"]
    (number,) = [p for p in session["parameters"] if p["name"] == "number"]
    assert number["schema"] == {"type": "integer", "minimum": 1, "maximum": INTEGER_MAX}


# --- what "nothing stored" means ------------------------------------------------------------


def state_of(client: Client, plan: Json) -> tuple[Any, ...]:
    """What any write would change: the plan's version (every change to it or to anything in
    it increments it, in the transaction of the change) and the number of plans."""
    version = client.get(plan_url(plan)).json()["version"]
    plans = client.get("/api/v1/care-plans").json()["total"]
    return version, plans


def assert_refused(
    response: requests.Response, status: int, field: str, location: str = "json"
) -> Json:
    assert response.status_code == status, response.text
    named = [(e["field"], e["location"]) for e in response.json().get("errors", [])]
    assert field in problem_fields(response), response.text
    assert (field, location) in named, named
    return dict(response.json())


# --- integers -------------------------------------------------------------------------------

BEYOND = [2**31, 2**63 - 1, 2**63, 10**20, -(2**31) - 1]

# (method, path under the plan or absolute, query, body, field, location)
INTEGER_CASES: list[tuple[str, str, Json | None, Json | None, str, str]] = [
    *[("GET", "/api/v1/care-plans", {"page": n}, None, "page", "query") for n in BEYOND],
    ("GET", "/api/v1/care-plans", {"page": 0}, None, "page", "query"),
    ("GET", "/api/v1/care-plans", {"page": "1.5"}, None, "page", "query"),
    ("GET", "/api/v1/care-plans", {"page": "1_0"}, None, "page", "query"),
    ("GET", "/api/v1/care-plans", {"page": "\u0661"}, None, "page", "query"),
    ("GET", "/api/v1/care-plans", {"page_size": 101}, None, "page_size", "query"),
    ("GET", "changes", {"page": INT64_MAX}, None, "page", "query"),
    ("GET", "sessions", {"page_size": 2**31}, None, "page_size", "query"),
    *[("GET", f"sessions/{n}", None, None, "number", "path") for n in (0, *BEYOND)],
    ("GET", "sessions/" + "9" * 5000, None, None, "number", "path"),
    ("PATCH", f"sessions/{10**20}", None, {"status": "cancelled"}, "number", "path"),
    ("DELETE", f"sessions/{2**31}", None, None, "number", "path"),
    *[("POST", "sessions", None, {"number": n}, "number", "json") for n in BEYOND],
    ("POST", "sessions", None, {"number": 1.5}, "number", "json"),
    ("POST", "sessions", None, {"number": "1_0"}, "number", "json"),
    ("POST", "sessions", None, {"number": 1, "phq9_total": 2**63}, "phq9_total", "json"),
    ("POST", "sessions", None, {"number": 1, "phq9_total": 28}, "phq9_total", "json"),
    ("PATCH", "", None, {"planned_sessions": 2**63}, "planned_sessions", "json"),
    ("PATCH", "", None, {"planned_sessions": 10**20}, "planned_sessions", "json"),
    ("PATCH", "phases/initial", None, {"start_session": 2**31}, "start_session", "json"),
    ("PATCH", "phases/middle", None, {"end_session": -(2**63)}, "end_session", "json"),
    *[
        ("POST", "goals", None, _goal, "target.value", "json")
        for _goal in (
            {
                "kind": "symptom",
                "description": "Feel better.",
                "target": {"measure": "44261-6", "comparator": "<", "value": value},
            }
            for value in (1e308, "1" + "0" * 1000, "NaN", "Infinity", 1_000_000, "1e400", "\u0665")
        )
    ],
]


@pytest.mark.parametrize(("method", "path", "query", "body", "field", "location"), INTEGER_CASES)
def test_an_integer_beyond_its_bounds_is_refused_naming_it_and_nothing_is_stored(
    client: Client,
    plan: Json,
    method: str,
    path: str,
    query: Json | None,
    body: Json | None,
    field: str,
    location: str,
) -> None:
    before = state_of(client, plan)
    url = path if path.startswith("/") else plan_url(plan, path) if path else plan_url(plan)
    response = client.request(method, url, params=query, json=body)
    assert_refused(response, 422, field, location)
    assert state_of(client, plan) == before


def test_the_bounds_themselves_are_accepted(client: Client, plan: Json) -> None:
    """The largest number a path or query allows is read, not refused."""
    response = client.get(plan_url(plan, "sessions", INTEGER_MAX))
    assert response.status_code == 404, response.text
    assert "has not been recorded" in response.json()["detail"]
    response = client.get("/api/v1/care-plans", params={"page": INTEGER_MAX, "page_size": 100})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
    assert response.json()["total"] == 1


# --- dates ----------------------------------------------------------------------------------

OUTSIDE = ["0001-01-01", "1899-12-31", "3000-01-01", "9999-12-31"]
NEW_PLAN = {"patient": "Patient/123", "problem_areas": ["grief"], "start_date": "2026-01-05"}
GOAL = {"kind": "symptom", "description": "Feel better."}
HOMEWORK = {"kind": "reconnect", "description": "Call your sister.", "phase": "initial"}

# (method, path under the plan or absolute, body, field)
DATE_CASES: list[tuple[str, str, Json, str]] = [
    *[("POST", "/api/v1/care-plans", {**NEW_PLAN, "start_date": d}, "start_date") for d in OUTSIDE],
    *[("POST", "/api/v1/care-plans", {**NEW_PLAN, "end_date": d}, "end_date") for d in OUTSIDE[2:]],
    *[("PATCH", "", {"start_date": d}, "start_date") for d in OUTSIDE],
    ("PATCH", "", {"end_date": "9999-12-31"}, "end_date"),
    ("PATCH", "phases/initial", {"start_date": "0001-01-01"}, "start_date"),
    ("PATCH", "phases/initial", {"end_date": "9999-12-31"}, "end_date"),
    ("POST", "goals", {**GOAL, "start_date": "0001-01-01"}, "start_date"),
    *[("POST", "goals", {**GOAL, "target": {"due_date": d}}, "target.due_date") for d in OUTSIDE],
    ("POST", "homework", {**HOMEWORK, "due_on": "9999-12-31"}, "due_on"),
    ("POST", "homework", {**HOMEWORK, "assigned_on": "3000-01-01"}, "assigned_on"),
    *[("POST", "sessions", {"number": 1, "date": d}, "date") for d in OUTSIDE],
    ("POST", "sessions", {"number": 1, "status": "attended", "date": "9999-12-31"}, "date"),
    (
        "PATCH",
        "",
        {"notes": [{"text": "Seen.", "time": "9999-12-31T23:59:59-14:00"}]},
        "notes.0.time",
    ),
    (
        "PATCH",
        "",
        {"notes": [{"text": "Seen.", "time": "0001-01-01T00:00:00+14:00"}]},
        "notes.0.time",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), DATE_CASES)
def test_a_date_outside_the_supported_calendar_is_refused_naming_it_and_nothing_is_stored(
    client: Client, plan: Json, method: str, path: str, body: Json, field: str
) -> None:
    before = state_of(client, plan)
    url = path if path.startswith("/") else plan_url(plan, path) if path else plan_url(plan)
    problem = assert_refused(client.request(method, url, json=body), 422, field)
    messages = [e["message"] for e in problem["errors"] if e["field"] == field]
    assert any("1900-01-01 to 2999-12-31" in m for m in messages), messages
    assert state_of(client, plan) == before


def test_the_first_and_last_supported_dates_are_kept(client: Client) -> None:
    for day in (EARLIEST_DATE, LATEST_DATE):
        plan = client.create_plan(start_date=day.isoformat(), planned_sessions=52)
        goals = client.get(plan_url(plan, "goals")).json()["items"]
        assert {g["start_date"] for g in goals} == {day.isoformat()}
        # The template's due date lies a year after the start: computed, not refused.
        assert plan["expected_end_date"] > day.isoformat()


@pytest.mark.parametrize(
    "value", ["2026-1-5", "20260105", "2026-01-05T00:00:00", "05/01/2026", "2026-02-30", 20260105]
)
def test_a_date_in_another_form_is_refused_saying_the_form(client: Client, value: Any) -> None:
    response = client.post("/api/v1/care-plans", json={**NEW_PLAN, "start_date": value})
    problem = assert_refused(response, 422, "start_date")
    assert [e["message"] for e in problem["errors"]] == ["Not a valid date: use YYYY-MM-DD."]
    assert client.get("/api/v1/care-plans").json()["total"] == 0


def test_fhir_writes_refuse_a_date_outside_the_calendar_naming_the_element(
    client: Client, plan: Json
) -> None:
    before = state_of(client, plan)
    episode = new_episode(client, plan, period={"start": "9999-12-31"})
    response = send(client, "POST", "/fhir/CarePlan", episode)
    assert "CarePlan.period.start" in unprocessable(response)
    goal = new_goal(client, plan, target=[{"dueDate": "0001-01-01"}])
    response = send(client, "POST", "/fhir/Goal", goal)
    assert any(e.startswith("Goal.target") for e in unprocessable(response)), response.text
    assert state_of(client, plan) == before


# --- the patient filter ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["123", "Practitioner/1", "Patient/", "Patient/a b"])
def test_a_patient_filter_that_is_no_patient_reference_is_refused_as_on_create(
    client: Client, value: str
) -> None:
    listed = client.get("/api/v1/care-plans", params={"patient": value})
    created = client.post("/api/v1/care-plans", json={**NEW_PLAN, "patient": value})
    assert_refused(listed, 422, "patient", "query")
    assert_refused(created, 422, "patient", "json")
    assert listed.json()["errors"][0]["message"] == created.json()["errors"][0]["message"]
    assert client.get("/api/v1/care-plans").json()["total"] == 0


# --- property: no number or date makes a 5xx --------------------------------------------------

EDGES = sorted(
    {
        edge + delta
        for edge in (0, 1, 27, 100, INTEGER_MAX, INTEGER_MIN, INT64_MAX, -INT64_MAX - 1, 10**20)
        for delta in (-1, 0, 1)
    }
)
DATE_EDGES = [EARLIEST_DATE, LATEST_DATE, date(1, 1, 1), date(9999, 12, 31)]


def _number_requests(plan: Json, n: int) -> Iterator[tuple[str, str, Json | None, Json | None]]:
    yield "GET", "/api/v1/care-plans", {"page": n}, None
    yield "GET", plan_url(plan, "sessions"), {"page_size": n}, None
    yield "GET", plan_url(plan, "sessions", n), None, None
    yield "DELETE", plan_url(plan, "sessions", n), None, None
    yield "POST", plan_url(plan, "sessions"), None, {"number": n}
    yield "POST", plan_url(plan, "sessions"), None, {"number": 2, "phq9_total": n}
    yield "PATCH", plan_url(plan), None, {"planned_sessions": n}
    yield "PATCH", plan_url(plan, "phases/middle"), None, {"end_session": n}
    target = {"measure": "44261-6", "comparator": "<", "value": n}
    yield "POST", plan_url(plan, "goals"), None, {**GOAL, "target": target}


def _date_requests(plan: Json, day: str) -> Iterator[tuple[str, str, Json | None, Json | None]]:
    yield "POST", "/api/v1/care-plans", None, {**NEW_PLAN, "start_date": day}
    yield "PATCH", plan_url(plan), None, {"end_date": day}
    yield "PATCH", plan_url(plan, "phases/termination"), None, {"end_date": day}
    yield "POST", plan_url(plan, "goals"), None, {**GOAL, "target": {"due_date": day}}
    yield "POST", plan_url(plan, "homework"), None, {**HOMEWORK, "due_on": day}
    yield "POST", plan_url(plan, "sessions"), None, {"number": 3, "date": day}


@pytest.mark.slow
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    number=st.one_of(st.sampled_from(EDGES), st.integers(min_value=-(2**70), max_value=2**70)),
    day=st.one_of(st.sampled_from(DATE_EDGES), st.dates()),
)
def test_no_number_or_date_at_the_edges_makes_a_server_error(
    client: Client, plan: Json, number: int, day: date
) -> None:
    cases = [*_number_requests(plan, number), *_date_requests(plan, day.isoformat())]
    # Only these requests change anything: the state after one is the state before the next.
    before = state_of(client, plan)
    for method, url, query, body in cases:
        response = client.request(method, url, params=query, json=body)
        assert response.status_code < 500, (method, url, query, body, response.text)
        after = state_of(client, plan)
        if response.status_code >= 400:
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert after == before, (method, url, query, body)
        before = after
    assert client.get("/healthz").status_code == 200
