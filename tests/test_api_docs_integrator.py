"""The docs page and the OpenAPI document serve a new integrator: the token endpoint and the
scopes each operation needs are documented and match what the service enforces, "Try it out"
fills in no filter, every error status has its own example matching what the service
answers, FHIR types are listed, and a browser at / lands on the docs page."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest
from conftest import ROOT, Client, Server, registered_client, token_for

from api.auth import endpoints as auth_endpoints
from api.fhir.resources import CONFORMANCE_TYPES, PLAN_TYPES, WRITABLE_TYPES
from service.db import Database

METHODS = ("get", "put", "post", "patch", "delete")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _spec() -> dict[str, Any]:
    return dict(json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8")))


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _parameters(spec: dict[str, Any], path: str, operation: dict[str, Any]) -> list[Any]:
    return [*spec["paths"][path].get("parameters", []), *operation.get("parameters", [])]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> Any:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# --- 1. the token endpoint and the security scheme --------------------------------------


def test_the_token_endpoint_is_documented_with_its_form_answers_and_errors() -> None:
    spec = _spec()
    token = spec["paths"]["/auth/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]
    schema = _resolve(spec, form["schema"])
    assert schema["properties"]["grant_type"]["enum"] == ["client_credentials"]
    assert {"grant_type", "scope"} <= set(schema["required"])
    assert schema["properties"]["client_assertion_type"]["enum"] == [auth_endpoints.JWT_BEARER]
    assert "client_assertion" in schema["properties"]
    assert "Basic" in token["description"]
    answer = _resolve(spec, token["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["required"]) == {"access_token", "token_type", "expires_in", "scope"}
    for status in ("400", "401", "429", "503"):
        content = token["responses"][status]["content"]["application/json"]
        assert content["examples"], status
        for example in content["examples"].values():
            assert set(example["value"]) == {"error", "error_description"}
    assert "WWW-Authenticate" in token["responses"]["401"]["headers"]
    assert "Retry-After" in token["responses"]["429"]["headers"]


def test_the_documented_token_answers_are_what_the_endpoint_answers(
    anonymous: Client, database: Database
) -> None:
    spec = _spec()
    token = spec["paths"]["/auth/token"]["post"]
    client_id, secret = registered_client(database, "docs", ["system/CarePlan.rs"])
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    ok = anonymous.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/CarePlan.rs"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert ok.status_code == 200, ok.text
    documented = token["responses"]["200"]["content"]["application/json"]["example"]
    assert set(ok.json()) == set(documented)
    cases = {
        "missing_scope": ({"grant_type": "client_credentials"}, f"{client_id}:{secret}"),
        "wrong_grant": ({"grant_type": "password", "scope": "x"}, f"{client_id}:{secret}"),
        "scope_not_granted": (
            {"grant_type": "client_credentials", "scope": "system/Goal.cruds"},
            f"{client_id}:{secret}",
        ),
        "wrong_secret": (
            {"grant_type": "client_credentials", "scope": "system/CarePlan.rs"},
            f"{client_id}:not-the-secret",
        ),
    }
    for name, (data, credentials) in cases.items():
        status = "401" if name == "wrong_secret" else "400"
        example = token["responses"][status]["content"]["application/json"]["examples"][name]
        encoded = base64.b64encode(credentials.encode()).decode()
        answer = anonymous.post(
            "/auth/token", data=data, headers={"Authorization": f"Basic {encoded}"}
        )
        assert answer.status_code == int(status), (name, answer.text)
        assert answer.json() == example["value"], name


def test_the_oauth2_scheme_fetches_tokens_at_the_token_endpoint_with_smart_scopes() -> None:
    spec = _spec()
    scheme = spec["components"]["securitySchemes"]["smart"]
    flow = scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/auth/token"
    assert set(auth_endpoints.SCOPES_SUPPORTED) <= set(flow["scopes"])
    for path, _method, operation in _operations(spec):
        for requirement in operation.get("security", []):
            for scope in requirement.get("smart", []):
                assert scope in flow["scopes"], (path, scope)


def _example_path(path: str) -> str:
    values = {"resource_type": "CarePlan", "phase": "initial", "number": "1"}
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "unknown-1"), path)


def _documented_scopes(operation: dict[str, Any]) -> list[str]:
    return [s for r in operation.get("security", []) for s in r.get("smart", [])]


def test_each_operation_names_the_scope_the_service_enforces(
    live: Server, database: Database
) -> None:
    """A token with just the documented scope gets past the access check (whatever the
    route then answers for an unknown id or an empty body); one with the same resource's
    other letters is refused with 403."""
    spec = _spec()
    checked = 0
    for path, method, operation in _operations(spec):
        needed = _documented_scopes(operation)
        if path == "/auth/token":
            continue
        # The CapabilityStatement and the subscription topics' definitions are public.
        public_fhir = ("/fhir/metadata", "/fhir/Basic", "/fhir/Basic/{resource_id}")
        if not (path.startswith("/api/") or path.startswith("/fhir")) or path in public_fhir:
            assert operation.get("security") == [], (method, path)
            continue
        assert operation["security"][0] == {"bearer": []}, (method, path)
        requirements = [r["smart"] for r in operation["security"] if r.get("smart")]
        if len(requirements) == 1 and len(requirements[0]) > 1:
            # Every scope of the requirement is needed: without any one of them, 403.
            url = _example_path(path)
            every = Client(live.url, token_for(live, database, requirements[0]))
            assert every.request(method.upper(), url).status_code != 403, (method, path)
            for missing in requirements[0]:
                rest = [scope for scope in requirements[0] if scope != missing]
                short = Client(live.url, token_for(live, database, rest))
                answer = short.request(method.upper(), url)
                assert answer.status_code == 403, (method, path, missing, answer.text)
            checked += 1
            continue
        if len(needed) != 1 and "{resource_type}" not in path:
            continue  # a Bundle or the system history: each part is checked itself
        scope = needed[0]
        resource, letter = scope.removeprefix("system/").split(".")
        others = "".join(x for x in "cruds" if x != letter)
        url = _example_path(path)
        kwargs: dict[str, Any] = {}
        if method in ("post", "put", "patch"):
            kwargs["json"] = {}
        allowed = Client(live.url, token_for(live, database, [scope]))
        answer = allowed.request(method.upper(), url, **kwargs)
        assert answer.status_code != 403, (method, path, scope, answer.text)
        refused = Client(live.url, token_for(live, database, [f"system/{resource}.{others}"]))
        answer = refused.request(method.upper(), url, **kwargs)
        assert answer.status_code == 403, (method, path, scope, answer.text)
        checked += 1
    assert checked >= 30


# --- 2. nothing is filled in as a filter -------------------------------------------------


def _filled_in(parameter: dict[str, Any]) -> Any:
    """The value Swagger UI puts in a parameter's field on "Try it out" (None: nothing)."""
    schema = parameter.get("schema", {})
    for holder, key in (
        (parameter, "example"),
        (schema, "example"),
        (schema, "default"),
        (parameter, "default"),
    ):
        if key in holder:
            return holder[key]
    for holder in (parameter, schema):
        if holder.get("examples"):
            return holder["examples"]
    return None


def test_no_query_parameter_is_filled_in_on_try_it_out() -> None:
    spec = _spec()
    checked = 0
    for path, method, operation in _operations(spec):
        for parameter in _parameters(spec, path, operation):
            if parameter["in"] != "query":
                continue
            checked += 1
            where = f"{method.upper()} {path} ?{parameter['name']}"
            assert _filled_in(parameter) is None, where
            assert {"example", "examples", "default"}.isdisjoint(parameter), where
            assert {"example", "examples", "default"}.isdisjoint(parameter["schema"]), where
    assert checked >= 20
    identifier = next(
        p
        for p in spec["paths"]["/api/v1/care-plans"]["get"]["parameters"]
        if p["name"] == "identifier"
    )
    assert "Example: `" in identifier["description"]


def test_executing_the_list_as_the_docs_page_fills_it_lists_the_plans(client: Client) -> None:
    plan = client.create_plan()
    spec = _spec()
    operation = spec["paths"]["/api/v1/care-plans"]["get"]
    filled = {
        p["name"]: _filled_in(p)
        for p in _parameters(spec, "/api/v1/care-plans", operation)
        if p["in"] == "query" and _filled_in(p) is not None
    }
    listed = client.get("/api/v1/care-plans", params=filled)
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [plan["id"]]


# --- 3. an example per error status ------------------------------------------------------


def _error_examples(spec: dict[str, Any]) -> list[tuple[str, str, str, str, Any]]:
    found = []
    for path, method, operation in _operations(spec):
        for code, response in operation["responses"].items():
            if not (code == "default" or code[0] in "45"):
                continue
            for media_type, content in _resolve(spec, response).get("content", {}).items():
                values = [content["example"]] if "example" in content else []
                values += [_resolve(spec, e)["value"] for e in content.get("examples", {}).values()]
                assert values, f"{method.upper()} {path} {code} {media_type} has no example"
                for value in values:
                    found.append((path, method, code, media_type, value))
    return found


def test_every_error_response_has_an_example_of_its_own_status() -> None:
    spec = _spec()
    statuses: set[str] = set()
    details: dict[str, set[str]] = {}
    for path, method, code, media_type, value in _error_examples(spec):
        where = f"{method.upper()} {path} {code}"
        if media_type == "application/fhir+json":
            assert value["resourceType"] == "OperationOutcome", where
            details.setdefault(code, set()).add(value["issue"][0]["diagnostics"])
        elif path == "/auth/token":
            assert value["error"], where
        else:
            assert media_type == "application/problem+json", where
            expected = 500 if code == "default" else int(code)
            assert value["status"] == expected, where
            details.setdefault(code, set()).add(value["detail"])
        statuses.add(code)
    assert {"400", "401", "403", "404", "409", "410", "412", "413", "415", "422"} <= statuses
    # No two statuses share a text: the examples are not one example repeated.
    texts = [text for code, texts in details.items() if code != "403" for text in texts]
    assert len(texts) == len(set(texts)), details


def test_the_problem_examples_are_what_the_service_answers(
    client: Client, anonymous: Client, live: Server, database: Database
) -> None:
    spec = _spec()
    examples = {
        (path, method, code): value
        for path, method, code, media_type, value in _error_examples(spec)
        if media_type == "application/problem+json"
    }
    plan = client.create_plan()
    plan_path = "/api/v1/care-plans/{plan_id}"

    def same(answer: Any, example: dict[str, Any], *fields: str) -> None:
        body = answer.json()
        for field in ("type", "title", "status", *fields):
            assert body[field] == example[field], (field, body, example)

    unauthenticated = anonymous.get("/api/v1/care-plans")
    same(unauthenticated, examples[("/api/v1/care-plans", "get", "401")], "detail")
    goals_only = Client(live.url, token_for(live, database, ["system/Goal.cruds"]))
    same(
        goals_only.get("/api/v1/care-plans"),
        examples[("/api/v1/care-plans", "get", "403")],
        "detail",
    )
    same(
        client.get(f"/api/v1/care-plans/{uuid.uuid4()}"),
        examples[(plan_path, "get", "404")],
    )
    same(
        client.patch(
            f"/api/v1/care-plans/{plan['id']}",
            json={"formulation": "x"},
            headers={"If-Match": '"99"'},
        ),
        examples[(plan_path, "patch", "412")],
    )
    same(
        client.post("/api/v1/care-plans", data="x", headers={"Content-Type": "text/plain"}),
        examples[("/api/v1/care-plans", "post", "415")],
        "detail",
    )
    same(
        client.post(
            "/api/v1/care-plans",
            data="{",
            headers={"Content-Type": "application/json"},
        ),
        examples[("/api/v1/care-plans", "post", "400")],
        "detail",
    )
    invalid = client.post(
        "/api/v1/care-plans",
        json={
            "patient": "Patient/1",
            "problem_areas": ["grief", "role-dispute", "worry"],
            "planned_sessions": 12,
            "start_date": "2026-01-05",
        },
    )
    same(invalid, examples[("/api/v1/care-plans", "post", "422")])
    assert client.delete(f"/api/v1/care-plans/{plan['id']}").status_code == 204
    same(client.get(f"/api/v1/care-plans/{plan['id']}"), examples[(plan_path, "get", "410")])


def test_the_outcome_examples_carry_the_issue_codes_the_fhir_interface_answers(
    client: Client, anonymous: Client, live: Server, database: Database
) -> None:
    spec = _spec()
    examples = {
        (path, method, code): value
        for path, method, code, media_type, value in _error_examples(spec)
        if media_type == "application/fhir+json"
    }
    read = "/fhir/{resource_type}/{resource_id}"
    answers = {
        "401": anonymous.get("/fhir/CarePlan/x"),
        "404": client.get("/fhir/CarePlan/unknown-1"),
        "406": client.get("/fhir/CarePlan/x", headers={"Accept": "text/csv"}),
    }
    for code, answer in answers.items():
        assert answer.status_code == int(code), answer.text
        expected = examples[(read, "get", code)]["issue"][0]["code"]
        assert answer.json()["issue"][0]["code"] == expected, code
    goals_only = Client(live.url, token_for(live, database, ["system/Goal.cruds"]))
    refused = goals_only.get("/fhir/CarePlan/x")
    assert refused.status_code == 403
    assert refused.json()["issue"][0] == examples[(read, "get", "403")]["issue"][0]


# --- 4. FHIR resource types ---------------------------------------------------------------


def test_fhir_resource_type_lists_the_served_types(client: Client) -> None:
    spec = _spec()
    checked = 0
    for path, method, operation in _operations(spec):
        if "{resource_type}" not in path:
            continue
        assert "parameters" not in spec["paths"][path] or all(
            p["name"] != "resource_type" for p in spec["paths"][path]["parameters"]
        )
        (parameter,) = [p for p in operation["parameters"] if p["name"] == "resource_type"]
        writes = method in ("put", "patch", "delete") or (
            method == "post" and "_search" not in path
        )
        served = list(WRITABLE_TYPES if writes else PLAN_TYPES)
        if (path, method) in (
            ("/fhir/{resource_type}/{resource_id}", "get"),
            ("/fhir/{resource_type}", "get"),
        ):
            served += list(CONFORMANCE_TYPES)
        assert parameter["schema"]["enum"] == served, (method, path)
        checked += 1
    assert checked >= 10
    for resource_type in PLAN_TYPES:
        answer = client.get(f"/fhir/{resource_type}")
        assert answer.status_code == 200, answer.text
    refused = client.get("/fhir/Patient")
    assert refused.status_code == 404
    assert "does not serve Patient" in refused.json()["issue"][0]["diagnostics"]


# --- 5. the index -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept", [BROWSER_ACCEPT, "text/html", "text/html, application/json;q=0.5"]
)
def test_a_browser_at_the_root_is_sent_to_the_docs_page(anonymous: Client, accept: str) -> None:
    answer = anonymous.get("/", headers={"Accept": accept}, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/docs")
    assert "Accept" in answer.headers["Vary"]
    page = anonymous.get("/", headers={"Accept": accept})
    assert page.url.endswith("/docs")
    assert "swagger-ui" in page.text


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", "application/json, text/html", "application/fhir+json"],
)
def test_api_clients_at_the_root_get_the_json_index(anonymous: Client, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    if accept is None:
        anonymous.http.headers.pop("Accept", None)
    answer = anonymous.get("/", headers=headers, allow_redirects=False)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["docs"] == "/docs"
    assert "Accept" in answer.headers["Vary"]
