"""Hostile inputs of each class of issue #14, table-driven and as Hypothesis properties.

For every case: never a 5xx; the status the issue asks for where it names one; the error
names what was wrong (problem+json ``errors[].field`` on the native API, OperationOutcome
``expression`` or ``diagnostics`` on FHIR routes); and for writes nothing was stored (the
row counts of every table a write touches, before and after). After every test the server
still answers ``/readyz``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import Client, Server, count_rows, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    BAD_BUNDLE_ENTRIES,
    CALENDAR_EDGE_DATETIMES,
    CALENDAR_EDGES,
    EDGE_INTEGERS,
    HOSTILE_HEADER_TEXTS,
    HOSTILE_QUERY_TEXTS,
    HOSTILE_TEXTS,
    WRONG_TYPES,
    calendar_edge_datetime,
    edge_integer,
    fhir_date_search_value,
    hostile_text,
    json_patch_wrong_types,
    nested_inside,
    nested_json,
)

from service.db import Database

FHIR_JSON = "application/fhir+json"
PATCH_JSON = "application/json-patch+json"
STORED_TABLES = [
    "care_plans",
    "plan_identifiers",
    "plan_contracts",
    "phases",
    "goals",
    "homework",
    "sessions",
    "plan_changes",
    "stored_resources",
    "resource_versions",
]
Json = Any
PROPERTY = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def server_keeps_answering(client: Client) -> Iterator[None]:
    yield
    response = client.get("/readyz")
    assert response.status_code == 200, response.text


def stored(database: Database) -> dict[str, int]:
    return {table: count_rows(database, table) for table in STORED_TABLES}


def not_a_server_error(response: requests.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"


def outcome_names(response: requests.Response, name: str) -> None:
    """An OperationOutcome whose expression (or, for parameters, diagnostics) names ``name``."""
    assert response.headers.get("Content-Type", "").startswith(FHIR_JSON), response.text[:300]
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    named = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    named += [issue.get("diagnostics", "") for issue in outcome["issue"]]
    assert any(name in text for text in named), (name, outcome)


def problem_names(response: requests.Response, field: str) -> None:
    assert response.headers.get("Content-Type", "").startswith("application/problem+json"), (
        response.text[:300]
    )
    fields = [e.get("field", "") for e in response.json().get("errors", [])]
    assert any(f == field or f.startswith(f"{field}.") for f in fields), (field, response.text)


def fhir_write(client: Client, method: str, path: str, body: str | bytes, **headers: str) -> Any:
    return client.request(
        method, path, data=body, headers={"Content-Type": FHIR_JSON, **headers}, timeout=60
    )


def episode(client: Client, plan: Json) -> Json:
    resource = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "goal", "text")}


def first_goal(client: Client, plan: Json) -> Json:
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    return dict(client.get(f"/fhir/Goal/{goal_id}").json())


# --- 1. deep nesting ------------------------------------------------------------------------

DEEP_BODIES = {
    "array": nested_json(1000, "array"),
    "object": nested_json(1000, "object"),
    "inside-a-resource": nested_inside({"resourceType": "CarePlan"}, "extension", 1000),
    # As deep as a body under the size limit of the test server (64 KiB) can be.
    "very-deep": nested_json(30_000, "array"),
}
NATIVE_WRITES = [
    ("POST", "/api/v1/care-plans"),
    ("PATCH", "{plan}"),
    ("POST", "{plan}/goals"),
    ("POST", "{plan}/homework"),
    ("POST", "{plan}/sessions"),
    ("PATCH", "{plan}/phases/initial"),
]
FHIR_WRITES = [
    ("POST", "/fhir/CarePlan", FHIR_JSON),
    ("PUT", "/fhir/CarePlan/{id}", FHIR_JSON),
    ("POST", "/fhir/Goal", FHIR_JSON),
    ("PATCH", "/fhir/CarePlan/{id}", PATCH_JSON),
    ("POST", "/fhir", FHIR_JSON),
]


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize(("method", "path"), NATIVE_WRITES, ids=lambda v: str(v))
def test_deep_nesting_on_native_writes_is_a_bad_request(
    client: Client, database: Database, plan: Json, method: str, path: str, body: str
) -> None:
    before = stored(database)
    url = path.replace("{plan}", f"/api/v1/care-plans/{plan['id']}")
    response = client.request(method, url, data=body, headers={"Content-Type": "application/json"})
    not_a_server_error(response)
    assert response.status_code == 400, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert stored(database) == before


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize(("method", "path", "media_type"), FHIR_WRITES, ids=lambda v: str(v))
def test_deep_nesting_on_fhir_writes_is_a_bad_request(
    client: Client,
    database: Database,
    plan: Json,
    method: str,
    path: str,
    media_type: str,
    body: str,
) -> None:
    before = stored(database)
    url = path.replace("{id}", plan["id"])
    response = client.request(method, url, data=body, headers={"Content-Type": media_type})
    not_a_server_error(response)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert stored(database) == before


# --- 2. text the database cannot store -------------------------------------------------------

#: Native fields that are stored as text, with a body that puts ``value`` there.
NATIVE_TEXT_FIELDS: dict[str, Any] = {
    "formulation": lambda v: {"formulation": v},
    "patient": lambda v: {"patient": f"Patient/{v}"},
    "condition": lambda v: {"condition": f"Condition/{v}"},
    "therapist": lambda v: {"therapist": f"Practitioner/{v}"},
    "notes": lambda v: {"notes": [{"text": v}]},
    "identifiers": lambda v: {"identifiers": [{"system": "urn:x", "value": v}]},
    "relapse_prevention": lambda v: {"relapse_prevention": {"warning_signs": [v]}},
}


def plan_body(**fields: Any) -> Json:
    return {
        "patient": "Patient/123",
        "problem_areas": ["grief"],
        "planned_sessions": 12,
        "start_date": "2026-01-05",
        **fields,
    }


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=ascii)
@pytest.mark.parametrize("field", NATIVE_TEXT_FIELDS)
def test_unstorable_text_in_a_new_plan_is_refused_naming_the_field(
    client: Client, database: Database, field: str, text: str
) -> None:
    before = stored(database)
    body = json.dumps(plan_body(**NATIVE_TEXT_FIELDS[field](text)))
    response = client.post(
        "/api/v1/care-plans", data=body, headers={"Content-Type": "application/json"}
    )
    not_a_server_error(response)
    assert response.status_code == 422, response.text[:300]
    problem_names(response, field)
    assert stored(database) == before


CHILD_TEXT_WRITES = [
    ("POST", "goals", {"kind": "problem-area", "problem_area": "grief"}, "description"),
    ("POST", "homework", {"kind": "reconnect", "phase": "initial"}, "description"),
    (
        "POST",
        "homework",
        {"kind": "reconnect", "phase": "initial", "description": "x"},
        "patient_report",
    ),
    ("POST", "sessions", {"number": 3, "status": "scheduled"}, "note"),
    ("PATCH", "phases/initial", {}, "description"),
    ("PATCH", "", {}, "formulation"),
    ("PATCH", "", {"planned_sessions": 14}, "contract_change_reason"),
]


@pytest.mark.parametrize("text", ["\ud800", "a\x00b"], ids=ascii)
@pytest.mark.parametrize(("method", "path", "fields", "field"), CHILD_TEXT_WRITES)
def test_unstorable_text_in_a_plans_records_is_refused_naming_the_field(
    client: Client,
    database: Database,
    plan: Json,
    method: str,
    path: str,
    fields: Json,
    field: str,
    text: str,
) -> None:
    before = stored(database)
    url = plan_url(plan, path) if path else plan_url(plan)
    body = json.dumps({**fields, field: text})
    response = client.request(
        method, url.rstrip("/"), data=body, headers={"Content-Type": "application/json"}
    )
    not_a_server_error(response)
    assert response.status_code == 422, response.text[:300]
    problem_names(response, field)
    assert stored(database) == before


@pytest.mark.parametrize("actor", HOSTILE_HEADER_TEXTS, ids=ascii)
def test_unstorable_x_actor_is_refused(client: Client, database: Database, actor: str) -> None:
    before = stored(database)
    response = client.post(
        "/api/v1/care-plans",
        data=json.dumps(plan_body()),
        headers={"Content-Type": "application/json", "X-Actor": actor},
    )
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    assert stored(database) == before


@pytest.mark.parametrize("value", HOSTILE_QUERY_TEXTS)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/care-plans?patient={v}",
        "/api/v1/care-plans?identifier={v}",
        "/fhir/CarePlan?patient={v}",
        "/fhir/CarePlan?identifier={v}",
        "/fhir/Goal?subject={v}",
        "/fhir/CarePlan?_id={v}",
        "/fhir/CarePlan/{v}",
        "/api/v1/care-plans/{v}",
    ],
)
def test_unstorable_text_in_a_query_or_path_never_fails(
    client: Client, plan: Json, path: str, value: str
) -> None:
    response = client.get(path.replace("{v}", value))
    not_a_server_error(response)
    assert response.status_code in (200, 400, 404, 422), response.text[:300]


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=ascii)
def test_unstorable_text_in_a_fhir_episode_is_refused(
    client: Client, database: Database, plan: Json, text: str
) -> None:
    before = stored(database)
    body = {**episode(client, plan), "description": text}
    response = fhir_write(client, "POST", "/fhir/CarePlan", json.dumps(body))
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    outcome_names(response, "CarePlan.description")
    assert stored(database) == before


@PROPERTY
@given(text=hostile_text(), field=st.sampled_from(sorted(NATIVE_TEXT_FIELDS)))
def test_property_unstorable_text_is_never_stored(
    client: Client, database: Database, text: str, field: str
) -> None:
    before = stored(database)
    body = json.dumps(plan_body(**NATIVE_TEXT_FIELDS[field](text)))
    response = client.post(
        "/api/v1/care-plans", data=body, headers={"Content-Type": "application/json"}
    )
    not_a_server_error(response)
    assert response.status_code == 422, response.text[:300]
    assert stored(database) == before


# --- 3. integers beyond the database's range -------------------------------------------------


@pytest.mark.parametrize("number", EDGE_INTEGERS)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/care-plans?page={n}",
        "/api/v1/care-plans?page_size={n}",
        "{plan}/changes?page={n}",
        "{plan}/goals?page={n}",
        "{plan}/sessions/{n}",
        "/fhir/CarePlan?_count={n}",
        "/fhir/_history?_count={n}",
        "/fhir/CarePlan/{id}/_history/{n}",
    ],
)
def test_integers_beyond_64_bits_in_paths_and_queries_are_refused(
    client: Client, plan: Json, path: str, number: int
) -> None:
    url = path.replace("{plan}", plan_url(plan)).replace("{id}", plan["id"])
    response = client.get(url.replace("{n}", str(number)))
    not_a_server_error(response)
    # Beyond 64 bits or below the schema's minimum: refused (or, for a session or version
    # number, not found). Within them, an empty page is a valid answer, and FHIR lets a
    # server answer fewer than `_count` asks for, so a large `_count` may be clamped.
    expected = {400, 404, 422}
    if 1 <= number <= 2**63 - 1 or "_count" in path:
        expected.add(200)
    assert response.status_code in expected, response.text[:300]


INTEGER_BODIES = [
    ("POST", "", "planned_sessions", plan_body),
    ("POST", "sessions", "number", lambda **f: {"status": "scheduled", **f}),
    (
        "POST",
        "sessions",
        "phq9_total",
        lambda **f: {"number": 1, "status": "attended", "date": "2026-01-05", **f},
    ),
    ("PATCH", "phases/initial", "end_session", lambda **f: f),
    ("PATCH", "self", "planned_sessions", lambda **f: {"contract_change_reason": "x", **f}),
]


@pytest.mark.parametrize("number", [2**63, 2**63 - 1, -(2**63) - 1, 10**20])
@pytest.mark.parametrize(("method", "path", "field", "make"), INTEGER_BODIES)
def test_integers_beyond_64_bits_in_bodies_are_refused_naming_the_field(
    client: Client,
    database: Database,
    plan: Json,
    method: str,
    path: str,
    field: str,
    make: Any,
    number: int,
) -> None:
    before = stored(database)
    url = (
        "/api/v1/care-plans"
        if path == ""
        else plan_url(plan, path)
        if path != "self"
        else plan_url(plan)
    )
    response = client.request(method, url, json=make(**{field: number}))
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    problem_names(response, field)
    assert stored(database) == before


@pytest.mark.parametrize("number", [2**63, 10**20])
def test_integers_beyond_64_bits_in_fhir_bodies_are_refused(
    client: Client, database: Database, plan: Json, number: int
) -> None:
    before = stored(database)
    body = episode(client, plan)
    for extension in body["extension"]:
        if extension["url"].endswith("ipt-planned-sessions"):
            extension["valuePositiveInt"] = number
    body["identifier"] = [{"system": "urn:x", "value": "int"}]
    response = fhir_write(client, "POST", "/fhir/CarePlan", json.dumps(body))
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    assert stored(database) == before


@PROPERTY
@given(number=edge_integer(), parameter=st.sampled_from(["page", "page_size"]))
def test_property_edge_integers_in_the_list_query_never_fail(
    client: Client, number: int, parameter: str
) -> None:
    response = client.get("/api/v1/care-plans", params={parameter: number})
    not_a_server_error(response)
    if number > 2**63 - 1 or number < 1:
        assert response.status_code in (400, 422), response.text[:300]


# --- 4. dates at the edge of the calendar ----------------------------------------------------

FHIR_DATE_SEARCHES = [
    ("/fhir/CarePlan", "_lastUpdated"),
    ("/fhir/CarePlan", "date"),
    ("/fhir/CarePlan", "activity-date"),
    ("/fhir/Goal", "target-date"),
    ("/fhir/Goal", "start-date"),
    ("/fhir/_history", "_since"),
    ("/fhir/_history", "_at"),
    ("/fhir/CarePlan/_history", "_since"),
    ("/fhir/AuditEvent", "date"),
]


def answered_or_refused_naming(response: requests.Response, parameter: str) -> None:
    """Clamped (200) or refused with 400 naming the parameter: never anything else."""
    not_a_server_error(response)
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 400:
        if response.headers["Content-Type"].startswith(FHIR_JSON):
            outcome_names(response, parameter)
        else:
            problem_names(response, parameter)


#: Each edge without a prefix, and the full instants with the prefixes that compare.
EDGE_SEARCH_VALUES = CALENDAR_EDGES + [
    prefix + value for prefix in ("ge", "le") for value in CALENDAR_EDGE_DATETIMES[:3:2]
]


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        (path, parameter, value)
        for path, parameter in FHIR_DATE_SEARCHES
        for value in EDGE_SEARCH_VALUES
        # _since and _at take an instant, without a prefix.
        if parameter not in ("_since", "_at") or value[0].isdigit()
    ],
)
def test_calendar_edges_in_fhir_date_parameters(
    client: Client, path: str, parameter: str, value: str
) -> None:
    response = client.get(path, params={parameter: value})
    answered_or_refused_naming(response, parameter)


@pytest.mark.parametrize("value", CALENDAR_EDGE_DATETIMES)
@pytest.mark.parametrize("parameter", ["updated_since", "updated_before"])
def test_calendar_edges_in_native_date_time_parameters(
    client: Client, plan: Json, parameter: str, value: str
) -> None:
    response = client.get("/api/v1/care-plans", params={parameter: value})
    answered_or_refused_naming(response, parameter)


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
@pytest.mark.parametrize("field", ["start_date", "end_date"])
def test_calendar_edges_in_native_dates_never_fail(
    client: Client, database: Database, field: str, day: str
) -> None:
    before = stored(database)
    response = client.post("/api/v1/care-plans", json=plan_body(**{field: day}))
    not_a_server_error(response)
    if response.status_code >= 400:
        problem_names(response, field)
        assert stored(database) == before


@PROPERTY
@given(value=fhir_date_search_value(), search=st.sampled_from(FHIR_DATE_SEARCHES[:5]))
def test_property_calendar_edges_in_fhir_searches(
    client: Client, value: str, search: tuple[str, str]
) -> None:
    path, parameter = search
    answered_or_refused_naming(client.get(path, params={parameter: value}), parameter)


@PROPERTY
@given(value=calendar_edge_datetime(), parameter=st.sampled_from(["_since", "_at"]))
def test_property_calendar_edges_in_history(client: Client, value: str, parameter: str) -> None:
    answered_or_refused_naming(client.get("/fhir/_history", params={parameter: value}), parameter)


# --- 5. wrong JSON types for FHIR elements ---------------------------------------------------

WRONG_TYPE_CASES = [
    (element, value)
    for element, values in WRONG_TYPES.items()
    if element not in ("description", "target")
    for value in values
]


@pytest.mark.parametrize(("element", "value"), WRONG_TYPE_CASES, ids=lambda v: json.dumps(v))
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_wrong_json_types_in_an_episode_are_refused_naming_the_element(
    client: Client, database: Database, plan: Json, method: str, element: str, value: Json
) -> None:
    body = {**episode(client, plan), element: value}
    path = "/fhir/CarePlan"
    if method == "PUT":
        body["id"] = plan["id"]
        path += f"/{plan['id']}"
    else:
        body["identifier"] = [{"system": "urn:x", "value": "wrong-type"}]
        if element == "identifier":
            body[element] = value
    before = stored(database)
    response = fhir_write(client, method, path, json.dumps(body))
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    outcome_names(response, f"CarePlan.{element}")
    assert stored(database) == before


@pytest.mark.parametrize(
    ("element", "value"),
    [(e, v) for e in ("subject", "description", "target", "extension") for v in WRONG_TYPES[e]],
    ids=lambda v: json.dumps(v),
)
def test_wrong_json_types_in_a_goal_are_refused_naming_the_element(
    client: Client, database: Database, plan: Json, element: str, value: Json
) -> None:
    goal = first_goal(client, plan)
    before = stored(database)
    response = fhir_write(
        client, "PUT", f"/fhir/Goal/{goal['id']}", json.dumps({**goal, element: value})
    )
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    outcome_names(response, f"Goal.{element}")
    assert stored(database) == before


@pytest.mark.parametrize("patch", json_patch_wrong_types(), ids=lambda p: json.dumps(p))
def test_json_patch_to_wrong_types_is_refused_and_changes_nothing(
    client: Client, database: Database, plan: Json, patch: Json
) -> None:
    before = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    counts = stored(database)
    response = client.patch(
        f"/fhir/CarePlan/{plan['id']}",
        data=json.dumps(patch),
        headers={"Content-Type": PATCH_JSON},
    )
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/CarePlan/{plan['id']}").json() == before
    assert stored(database) == counts


@pytest.mark.parametrize("bad", BAD_BUNDLE_ENTRIES, ids=lambda e: json.dumps(e))
def test_a_transaction_with_a_malformed_entry_is_refused_whole(
    client: Client, database: Database, plan: Json, bad: Json
) -> None:
    before = stored(database)
    good = {
        "resource": {**episode(client, plan), "identifier": [{"system": "urn:t", "value": "tx"}]},
        "request": {"method": "POST", "url": "CarePlan"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [good, bad]}
    response = fhir_write(client, "POST", "/fhir", json.dumps(bundle))
    not_a_server_error(response)
    assert response.status_code in (400, 422), response.text[:300]
    outcome_names(response, "Bundle.entry[1]")
    assert stored(database) == before


@pytest.mark.parametrize("bad", BAD_BUNDLE_ENTRIES, ids=lambda e: json.dumps(e))
def test_a_batch_answers_a_malformed_entry_on_its_own(
    client: Client, plan: Json, bad: Json
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [bad, {"request": {"method": "GET", "url": f"CarePlan/{plan['id']}"}}],
    }
    response = fhir_write(client, "POST", "/fhir", json.dumps(bundle))
    not_a_server_error(response)
    assert response.status_code == 200, response.text[:300]
    bad_entry, good_entry = response.json()["entry"]
    assert bad_entry["response"]["status"].startswith("4"), bad_entry
    assert bad_entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert good_entry["response"]["status"].startswith("200"), good_entry
    assert good_entry["resource"]["id"] == plan["id"]


# --- 6. bodies over the size limit -----------------------------------------------------------


def oversized(limit: int) -> bytes:
    """A valid plan followed by whitespace padding past the limit: valid JSON as a whole."""
    return json.dumps(plan_body()).encode() + b" " * (limit + 1024)


def chunks(data: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


OVERSIZED_WRITES = [
    ("POST", "/api/v1/care-plans", "application/json"),
    ("PATCH", "{plan}", "application/json"),
    ("POST", "/fhir/CarePlan", FHIR_JSON),
    ("PUT", "/fhir/CarePlan/{id}", FHIR_JSON),
    ("PATCH", "/fhir/CarePlan/{id}", PATCH_JSON),
    ("POST", "/fhir", FHIR_JSON),
    ("POST", "/fhir/CarePlan/_search", "application/x-www-form-urlencoded"),
]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path", "media_type"), OVERSIZED_WRITES, ids=str)
def test_bodies_over_the_limit_are_413_whatever_the_framing(
    client: Client,
    live: Server,
    database: Database,
    plan: Json,
    method: str,
    path: str,
    media_type: str,
    framing: str,
) -> None:
    before = stored(database)
    url = path.replace("{plan}", plan_url(plan)).replace("{id}", plan["id"])
    data = oversized(live.settings.max_body_bytes)
    body: Any = data if framing == "content-length" else chunks(data)
    response = client.request(method, url, data=body, headers={"Content-Type": media_type})
    if framing == "chunked":
        assert response.request.headers.get("Transfer-Encoding") == "chunked"
    not_a_server_error(response)
    assert response.status_code == 413, response.text[:300]
    assert stored(database) == before


# --- 7. media-type parameters ----------------------------------------------------------------

ACCEPTED = [
    f"{FHIR_JSON}; charset=utf-8",
    f"{FHIR_JSON}; fhirVersion=4.0",
    f"{FHIR_JSON};fhirVersion=4.0;charset=UTF-8",
    "application/json; charset=utf-8",
]
READS = ["/fhir/metadata", "/fhir/CarePlan/{id}", "/fhir/CarePlan?_count=1", "/fhir/_history"]


@pytest.mark.parametrize("accept", ACCEPTED)
@pytest.mark.parametrize("path", READS)
def test_accept_with_parameters_of_fhir_r4_is_honoured(
    client: Client, plan: Json, path: str, accept: str
) -> None:
    response = client.get(path.replace("{id}", plan["id"]), headers={"Accept": accept})
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith(FHIR_JSON)


@pytest.mark.parametrize(
    "accept", [f"{FHIR_JSON}; fhirVersion=3.0", f"{FHIR_JSON}; fhirVersion=5.0"]
)
@pytest.mark.parametrize("path", READS)
def test_accept_of_another_fhir_version_is_406(
    client: Client, plan: Json, path: str, accept: str
) -> None:
    response = client.get(path.replace("{id}", plan["id"]), headers={"Accept": accept})
    assert response.status_code == 406, response.text[:300]
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (f"{FHIR_JSON}; charset=utf-8", 201),
        (f"{FHIR_JSON}; fhirVersion=4.0", 201),
        (f"{FHIR_JSON}; fhirVersion=3.0", 415),
    ],
)
def test_content_type_parameters_are_honoured(
    client: Client, database: Database, plan: Json, content_type: str, status: int
) -> None:
    before = stored(database)
    body = {**episode(client, plan), "identifier": [{"system": "urn:ct", "value": content_type}]}
    response = fhir_write(
        client, "POST", "/fhir/CarePlan", json.dumps(body), **{"Content-Type": content_type}
    )
    assert response.status_code == status, response.text[:300]
    if status >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"
        assert stored(database) == before
