"""One gate in front of every route: a body's size whatever its framing, its nesting depth,
its numbers, the text it carries, the text of every parameter, and the media types asked
for. Each class is tried on every route that takes a body (read from the OpenAPI
document, so a new route is tried too), and a refused request stores nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import Client, Server, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.body import printable
from service.db import Database
from service.models import Base

FHIR_JSON = "application/fhir+json"
PATCH_JSON = "application/json-patch+json"
Json = dict[str, Any]
# Tables a refused request must leave as they were (the audit trail records the refusal).
_NOT_DATA = {
    "audit_events",
    "audit_journal",
    "api_clients",
    "signing_keys",
    "revoked_tokens",
    "rate_counters",
}
DEEP = "[" * 1000 + "]" * 1000
LIMIT_DEPTH = 100


# --- helpers ------------------------------------------------------------------------------


def stored(database: Database) -> dict[str, int]:
    """Row counts of every table of patient data."""
    counts = {}
    with database.reading() as session:
        for table in Base.metadata.sorted_tables:
            if table.name not in _NOT_DATA:
                counts[table.name] = session.scalar(select(func.count()).select_from(table))
    return counts


def healthy(client: Client) -> None:
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def seeded(client: Client) -> Json:
    """A plan with a goal, a homework and a session: every path parameter has a value."""
    plan = client.create_plan()
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    session = client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    assert session.status_code == 201, session.text
    homework = client.post(
        plan_url(plan, "homework"),
        json={"kind": "reconnect", "description": "Call a friend.", "assigned_on": "2026-01-05"},
    )
    assert homework.status_code == 201, homework.text
    return {
        "plan_id": plan["id"],
        "goal_id": goals[0]["id"],
        "homework_id": homework.json()["id"],
        "number": "1",
        "phase": "initial",
        "resource_type": "CarePlan",
        "resource_id": plan["id"],
    }


def body_routes(client: Client, values: Json) -> Iterator[tuple[str, str, str]]:
    """(method, path, media type) of every operation of the OpenAPI document with a JSON
    body, its path parameters filled in, plus the Bundle endpoint."""
    document = client.get("/openapi.json").json()
    seen = set()
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            media = next((m for m in body["content"] if "json" in m), None)
            if media is None:
                continue
            path = template
            for name, value in values.items():
                path = path.replace("{" + name + "}", value)
            seen.add((method.upper(), path))
            yield method.upper(), path, media
    if ("POST", "/fhir") not in seen:
        yield "POST", "/fhir", FHIR_JSON


def send(client: Client, method: str, path: str, media: str, data: Any, **headers: str) -> Any:
    return client.request(method, path, data=data, headers={"Content-Type": media, **headers})


def refused(response: requests.Response, status: int, path: str) -> Json:
    """The error body, in the route's format, with the expected status."""
    assert response.status_code == status, (path, response.status_code, response.text[:300])
    if path.startswith("/fhir"):
        assert response.headers["Content-Type"].startswith(FHIR_JSON)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        return dict(outcome)
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    return dict(problem)


def named(error: Json) -> list[str]:
    """The fields (native) or FHIRPath expressions (FHIR) an error names."""
    if error.get("resourceType") == "OperationOutcome":
        return [e for issue in error["issue"] for e in issue.get("expression", [])]
    return [e["field"] for e in error.get("errors", [])]


def message(error: Json) -> str:
    if error.get("resourceType") == "OperationOutcome":
        return " ".join(i.get("diagnostics", "") for i in error["issue"])
    return str(error["detail"])


# --- class 1: nesting depth -----------------------------------------------------------------


def test_deep_bodies_are_refused_on_every_body_route(
    client: Client, seeded: Json, database: Database
) -> None:
    routes = list(body_routes(client, seeded))
    assert len(routes) >= 13, routes
    before = stored(database)
    for method, path, media in routes:
        error = refused(send(client, method, path, media, DEEP), 400, path)
        assert "nested 1000 levels" in message(error), error
        healthy(client)
    assert stored(database) == before


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("depth", "status"), [(LIMIT_DEPTH, 422), (LIMIT_DEPTH + 1, 400)])
def test_the_depth_limit_is_exact(client: Client, depth: int, status: int) -> None:
    """Inside the limit the body reaches validation (an unknown field); beyond it, not."""
    body = {"patient": "Patient/1", "unexpected": nested(depth - 1)}
    response = client.post("/api/v1/care-plans", json=body)
    assert response.status_code == status, response.text


# --- class 2: text the database cannot store ------------------------------------------------

UNSTORABLE = [
    "\ud800",
    "before\udfffafter",
    "a\x00b",
    "\udbff",
    "bell\x07",
    "a\x1fb",
    "\x0b",
    "back\bspace",
    "form\x0cfeed",
]


def native_cases(values: Json) -> list[tuple[str, str, Json, str]]:
    """(method, path, body, field) with the text in a free-text field of every kind."""
    plan = f"/api/v1/care-plans/{values['plan_id']}"
    base = {"patient": "Patient/9", "problem_areas": ["grief"], "start_date": "2026-01-05"}
    return [
        ("POST", "/api/v1/care-plans", {**base, "formulation": "{}"}, "formulation"),
        ("POST", "/api/v1/care-plans", {**base, "notes": [{"text": "{}"}]}, "notes.0.text"),
        (
            "POST",
            "/api/v1/care-plans",
            {**base, "identifiers": [{"system": "https://c.example", "value": "{}"}]},
            "identifiers.0.value",
        ),
        ("PATCH", plan, {"formulation": "{}"}, "formulation"),
        (
            "POST",
            f"{plan}/homework",
            {"kind": "reconnect", "description": "{}", "assigned_on": "2026-01-05"},
            "description",
        ),
        (
            "POST",
            f"{plan}/sessions",
            {"number": 2, "date": "2026-01-12", "status": "attended", "note": "{}"},
            "note",
        ),
        ("PATCH", f"{plan}/goals/{values['goal_id']}", {"description": "{}"}, "description"),
        ("PATCH", f"{plan}/phases/initial", {"description": "{}"}, "description"),
        ("POST", "/api/v1/care-plans", {**base, "{}": 1}, "{}"),
    ]


def _fill(body: Any, text: str) -> Any:
    if isinstance(body, dict):
        return {_fill(k, text): _fill(v, text) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, text) for v in body]
    return text if body == "{}" else body


@pytest.mark.parametrize("text", UNSTORABLE)
def test_native_text_that_cannot_be_stored_is_refused_naming_the_field(
    client: Client, seeded: Json, database: Database, text: str
) -> None:
    before = stored(database)
    for method, path, body, field in native_cases(seeded):
        data = json.dumps(_fill(body, text))
        error = refused(send(client, method, path, "application/json", data), 422, path)
        assert named(error) == [printable(_fill(field, text))], error
    assert stored(database) == before
    healthy(client)


@pytest.mark.parametrize("text", UNSTORABLE)
def test_fhir_text_that_cannot_be_stored_is_refused_naming_the_element(
    client: Client, seeded: Json, database: Database, text: str
) -> None:
    episode = client.get(f"/fhir/CarePlan/{seeded['plan_id']}").json()
    goal = client.get(f"/fhir/Goal/{seeded['goal_id']}").json()
    cases = [
        (
            "PUT",
            f"/fhir/CarePlan/{episode['id']}",
            {**episode, "description": text},
            "CarePlan.description",
        ),
        ("POST", "/fhir/CarePlan", {**episode, "note": [{"text": text}]}, "CarePlan.note[0].text"),
        (
            "PUT",
            f"/fhir/Goal/{goal['id']}",
            {**goal, "description": {"text": text}},
            "Goal.description.text",
        ),
        (
            "POST",
            "/fhir",
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": f"CarePlan?identifier={text}"}}],
            },
            "Bundle.entry[0].request.url",
        ),
    ]
    before = stored(database)
    for method, path, body, element in cases:
        error = refused(send(client, method, path, FHIR_JSON, json.dumps(body)), 422, path)
        assert named(error) == [element], error
    patch = [{"op": "add", "path": "/description", "value": text}]
    path = f"/fhir/CarePlan/{episode['id']}"
    error = refused(send(client, "PATCH", path, PATCH_JSON, json.dumps(patch)), 422, path)
    assert named(error) == ["$this[0].value"], error
    assert stored(database) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/care-plans?patient=Patient/1%00",
        "/api/v1/care-plans?status%00=active",
        "/api/v1/care-plans/abc%00def",
        "/api/v1/care-plans/abc%00/goals",
        "/fhir/CarePlan?identifier=a%00b",
        "/fhir/CarePlan/abc%00",
        "/fhir/Goal/abc%00/_history",
        "/fhir/_history?_since=2026%00",
        "/fhir/AuditEvent?patient=Patient/1%00",
    ],
)
def test_parameters_with_a_nul_are_refused_naming_the_parameter(client: Client, path: str) -> None:
    error = refused(client.get(path), 400, path)
    assert named(error), error
    assert "NUL" in message(error)


def test_form_parameters_with_a_nul_are_refused(client: Client, anonymous: Client) -> None:
    search = client.post(
        "/fhir/CarePlan/_search",
        data="identifier=a%00b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert named(refused(search, 400, "/fhir/CarePlan/_search")) == ["identifier"]
    token = anonymous.post(
        "/auth/token",
        data="grant_type=client_credentials&client_id=a%00&client_secret=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 400, token.text


@pytest.mark.parametrize("actor", ["dr.\x85rivera", "dr\trivera", "x" * 256, ""])
def test_an_actor_the_service_cannot_record_is_refused(client: Client, actor: str) -> None:
    response = client.post(
        "/api/v1/care-plans",
        json={"patient": "Patient/1", "problem_areas": ["grief"], "start_date": "2026-01-05"},
        headers={"X-Actor": actor.encode("latin-1")},  # type: ignore[dict-item]
    )
    assert response.status_code == 400, response.text


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 41, "-" + "9" * 50]
)
def test_numbers_no_column_holds_are_refused(
    client: Client, seeded: Json, database: Database, number: str
) -> None:
    before = stored(database)
    for method, path, media in body_routes(client, seeded):
        data = '{"resourceType": "CarePlan", "value": ' + number + "}"
        if media == PATCH_JSON:
            data = '[{"op": "add", "path": "/x", "value": ' + number + "}]"
        error = refused(send(client, method, path, media, data), 400, path)
        assert "number" in message(error) or "JSON" in message(error), error
    assert stored(database) == before


def test_a_fhir_integer_beyond_32_bits_is_refused_naming_it(
    client: Client, seeded: Json, database: Database
) -> None:
    episode = client.get(f"/fhir/CarePlan/{seeded['plan_id']}").json()
    extensions = [
        {**e, "valuePositiveInt": 2**31} if "valuePositiveInt" in e else e
        for e in episode["extension"]
    ]
    index = next(i for i, e in enumerate(extensions) if "valuePositiveInt" in e)
    before = stored(database)
    path = f"/fhir/CarePlan/{episode['id']}"
    response = send(
        client, "PUT", path, FHIR_JSON, json.dumps({**episode, "extension": extensions})
    )
    error = refused(response, 422, path)
    assert f"CarePlan.extension[{index}].valuePositiveInt" in named(error), error
    assert stored(database) == before


# --- class 6: size, whatever the framing ----------------------------------------------------


def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_body_over_the_limit_is_413_whatever_its_framing(
    client: Client, live: Server, seeded: Json, database: Database
) -> None:
    limit = live.settings.max_body_bytes
    plan = {"patient": "Patient/7", "problem_areas": ["grief"], "start_date": "2026-01-05"}
    # A valid plan followed by padding past the limit: never stored.
    padded = (json.dumps(plan) + " " * (limit + 1000)).encode()
    before = stored(database)
    for method, path, media in [*body_routes(client, seeded), ("POST", "/auth/token", "")]:
        for framing in ("length", "chunked"):
            data: Any = padded if framing == "length" else chunks(padded)
            response = send(client, method, path, media or "application/json", data)
            if path == "/auth/token":
                assert response.status_code == 413, response.text
                continue
            refused(response, 413, path)
        healthy(client)
    assert stored(database) == before


def test_a_chunked_body_within_the_limit_is_read_whole(client: Client, database: Database) -> None:
    plan = {"patient": "Patient/8", "problem_areas": ["grief"], "start_date": "2026-01-05"}
    data = json.dumps(plan).encode() + b" " * 20_000
    response = send(client, "POST", "/api/v1/care-plans", "application/json", chunks(data, 1000))
    assert response.status_code == 201, response.text
    assert response.json()["patient"] == "Patient/8"


# --- class 7: media-type parameters ---------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/fhir+json; charset=utf-8", 200),
        ("application/fhir+json; fhirVersion=4.0", 200),
        ("application/fhir+json;fhirVersion=4.0.1;charset=UTF-8", 200),
        ('application/fhir+json; fhirVersion="4.0"', 200),
        ("application/json; charset=utf-8", 200),
        ("application/fhir+json; fhirVersion=3.0, application/json;q=0.5", 200),
        ("text/html, */*;q=0.1", 200),
        ("application/fhir+json; fhirVersion=3.0", 406),
        ("application/fhir+json; fhirVersion=5.0", 406),
        ("application/fhir+json; charset=iso-8859-1", 406),
        ("application/fhir+json;q=0", 406),
        ("application/fhir+xml", 406),
        ("text/html", 406),
    ],
)
def test_accept_parameters_are_read_as_fhir_defines_them(
    client: Client, seeded: Json, accept: str, status: int
) -> None:
    for path in (
        "/fhir/metadata",
        f"/fhir/CarePlan/{seeded['plan_id']}",
        "/fhir/Goal?_count=1",
        "/fhir/_history?_count=1",
    ):
        response = client.get(path, headers={"Accept": accept})
        assert response.status_code == status, (path, response.text[:200])
        assert response.headers["Content-Type"].startswith(FHIR_JSON)
        if status == 406:
            assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/fhir+json; charset=utf-8", 201),
        ("application/fhir+json; fhirVersion=4.0", 201),
        ("application/json; fhirVersion=4.0; charset=UTF-8", 201),
        ("application/fhir+json; fhirVersion=3.0", 415),
        ("application/fhir+json; charset=latin-1", 415),
    ],
)
def test_content_type_parameters_are_read_as_fhir_defines_them(
    client: Client, seeded: Json, database: Database, content_type: str, status: int
) -> None:
    episode = client.get(f"/fhir/CarePlan/{seeded['plan_id']}").json()
    body = {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}
    body["identifier"] = [{"system": "https://c.example/ipt", "value": content_type}]
    before = stored(database)
    response = send(client, "POST", "/fhir/CarePlan", content_type, json.dumps(body))
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json()["resourceType"] == "OperationOutcome"
        assert stored(database) == before


def test_a_native_body_in_another_charset_is_refused(client: Client) -> None:
    response = send(client, "POST", "/api/v1/care-plans", "application/json; charset=latin-1", "{}")
    refused(response, 415, "/api/v1/care-plans")


# --- class 5: wrong JSON types for FHIR elements, before anything reads them ----------------

WRONG = ["Patient/x", ["Patient/x"], 12, True, {"reference": 12}, {"reference": ["Patient/1"]}]


def _single_resource_cases(episode: Json, goal: Json) -> Iterator[tuple[str, Json, str]]:
    for value in WRONG:
        yield "CarePlan", {**episode, "subject": value}, "CarePlan.subject"
        yield "Goal", {**goal, "subject": value}, "Goal.subject"
    for value in [{"coding": []}, {"text": "x"}, "episode", 3]:
        yield "CarePlan", {**episode, "category": value}, "CarePlan.category"
        yield "Goal", {**goal, "category": value}, "Goal.category"
    for value in ["active", [{"x": 1}], 7]:
        yield "CarePlan", {**episode, "period": value}, "CarePlan.period"
        yield "Goal", {**goal, "description": value}, "Goal.description"
    yield "CarePlan", {**episode, "extension": {"url": "x"}}, "CarePlan.extension"
    yield "Goal", {**goal, "target": "soon"}, "Goal.target"


def test_wrong_json_types_are_refused_naming_the_element(
    client: Client, seeded: Json, database: Database
) -> None:
    episode = client.get(f"/fhir/CarePlan/{seeded['plan_id']}").json()
    goal = client.get(f"/fhir/Goal/{seeded['goal_id']}").json()
    before = stored(database)
    for resource_type, body, element in _single_resource_cases(episode, goal):
        for method, path in (
            ("PUT", f"/fhir/{resource_type}/{body['id']}"),
            ("POST", f"/fhir/{resource_type}"),
        ):
            response = send(client, method, path, FHIR_JSON, json.dumps(body))
            error = refused(response, 422, path)
            assert any(e.startswith(element) for e in named(error)), (element, error)
    assert stored(database) == before
    healthy(client)


@pytest.mark.parametrize(
    ("operations", "status"),
    [
        ([{"op": "replace", "path": "/subject", "value": "Patient/x"}], 422),
        ([{"op": "replace", "path": "/subject", "value": [1]}], 422),
        ([{"op": "add", "path": "/category", "value": {"text": "x"}}], 422),
        ([{"op": "replace", "path": "/status", "value": {"code": "active"}}], 422),
        ([{"op": "add", "path": "/subject/reference/x", "value": 1}], 422),
        ([{"op": "remove", "path": "/subject"}], 422),
        ({"op": "remove", "path": "/subject"}, 422),
        (["remove /subject"], 422),
        ([{"op": "add", "path": 3, "value": 1}], 422),
        ([{"path": "/status", "value": "active"}], 422),
        ([{"op": "move", "from": "/subject", "path": "/subject/reference"}], 422),
        ([{"op": "replace", "path": "/id", "value": 5}], 422),
    ],
)
def test_patches_that_make_wrong_shapes_are_refused(
    client: Client, seeded: Json, database: Database, operations: Any, status: int
) -> None:
    before = stored(database)
    path = f"/fhir/CarePlan/{seeded['plan_id']}"
    response = send(client, "PATCH", path, PATCH_JSON, json.dumps(operations))
    error = refused(response, status, path)
    assert named(error) or message(error), error
    assert stored(database) == before


# --- small ones: no Content-Type without a body; where a JSON syntax error is ----------------


def test_responses_without_a_body_have_no_content_type(client: Client, seeded: Json) -> None:
    goal = f"/fhir/Goal/{seeded['goal_id']}"
    body = client.get(goal).json()
    minimal = send(client, "PUT", goal, FHIR_JSON, json.dumps(body), Prefer="return=minimal")
    assert minimal.status_code == 200 and minimal.content == b""
    assert "Content-Type" not in minimal.headers
    deleted = client.delete(goal)
    assert deleted.status_code == 204 and deleted.content == b""
    assert "Content-Type" not in deleted.headers


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/api/v1/care-plans", "application/json"),
        ("/fhir/CarePlan", FHIR_JSON),
        ("/fhir", FHIR_JSON),
    ],
)
def test_a_json_syntax_error_names_its_line_and_column(
    client: Client, path: str, media: str
) -> None:
    response = send(
        client, "POST", path, media, '{\n  "resourceType": "CarePlan",\n  "status" 1\n}'
    )
    assert "line 3, column 12" in message(refused(response, 400, path))


# --- any JSON at all: never a server error ------------------------------------------------

_HOSTILE_TEXT = st.sampled_from(
    ["\ud800", "\x00", "Patient/1", "", "CarePlan", "Goal", "9" * 30, "0001-01-01T00:00:00+14:00"]
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | _HOSTILE_TEXT,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | _HOSTILE_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)
_FHIR_KEYS = st.sampled_from(
    [
        "subject",
        "category",
        "status",
        "intent",
        "period",
        "goal",
        "extension",
        "identifier",
        "description",
        "target",
        "lifecycleStatus",
        "note",
        "partOf",
        "activity",
        "contained",
    ]
)


@pytest.mark.slow
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_json_in_any_element_of_any_body_is_never_a_server_error(
    client: Client, seeded: Json, data: st.DataObject
) -> None:
    routes = list(body_routes(client, seeded))
    method, path, media = data.draw(st.sampled_from(routes))
    if media == PATCH_JSON:
        body: Any = data.draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "op": st.sampled_from(["add", "replace"]),
                        "path": _FHIR_KEYS.map(lambda k: "/" + k),
                        "value": _JSON,
                    }
                ),
                max_size=3,
            )
        )
    elif path.startswith("/fhir"):
        resource_type = "Goal" if "Goal" in path else "CarePlan"
        if path == "/fhir":
            resource_type = "Bundle"
        body = {"resourceType": resource_type, **data.draw(st.dictionaries(_FHIR_KEYS, _JSON))}
    else:
        body = data.draw(st.dictionaries(st.text(max_size=12) | _HOSTILE_TEXT, _JSON, max_size=5))
    response = send(client, method, path, media, json.dumps(body))
    assert response.status_code < 500, (method, path, body, response.text[:300])
