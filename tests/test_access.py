"""Every data route against: no token, a bad signature, an expired token, a wrong audience, a
missing scope, the right scope alone, and another patient's compartment."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import requests
from conftest import Client, Server, token_for
from cryptography.hazmat.primitives.asymmetric import ec

from api.auth import keys
from service.db import Database

FHIR = {"Content-Type": "application/fhir+json"}
OWN_PATIENT = "Patient/123"


@dataclass
class World:
    """A plan of Patient/123 with a goal, a session and homework, and its FHIR ids."""

    plan: dict[str, Any]
    goal: str
    homework: str
    episode: dict[str, Any]


@pytest.fixture
def world(client: Client) -> World:
    plan = client.create_plan(patient=OWN_PATIENT)
    base = f"/api/v1/care-plans/{plan['id']}"
    client.post(f"{base}/sessions", json={"number": 1, "date": "2026-01-05", "status": "attended"})
    homework = client.post(f"{base}/homework", json={"kind": "reconnect", "description": "Call"})
    goal = client.get(f"{base}/goals").json()["items"][0]["id"]
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    return World(plan, goal, homework.json()["id"], episode)


Call = Callable[[Client, World], requests.Response]


def _plan(w: World, *parts: str) -> str:
    return "/".join([f"/api/v1/care-plans/{w.plan['id']}", *parts])


def _episode_body(w: World) -> str:
    return json.dumps({**w.episode, "description": "changed"})


def _new_episode(w: World) -> str:
    body = {k: v for k, v in w.episode.items() if k not in ("id", "meta", "goal", "text")}
    return json.dumps(body)


# (name, resource, interaction, call)
ROUTES: list[tuple[str, str, str, Call]] = [
    ("list plans", "CarePlan", "s", lambda c, w: c.get("/api/v1/care-plans")),
    (
        "create plan",
        "CarePlan",
        "c",
        lambda c, w: c.post(
            "/api/v1/care-plans",
            json={"patient": OWN_PATIENT, "problem_areas": ["grief"], "start_date": "2026-01-05"},
        ),
    ),
    ("read plan", "CarePlan", "r", lambda c, w: c.get(_plan(w))),
    ("change plan", "CarePlan", "u", lambda c, w: c.patch(_plan(w), json={"formulation": "x"})),
    ("delete plan", "CarePlan", "d", lambda c, w: c.delete(_plan(w))),
    ("plan changes", "CarePlan", "r", lambda c, w: c.get(_plan(w, "changes"))),
    ("list phases", "CarePlan", "r", lambda c, w: c.get(_plan(w, "phases"))),
    ("read phase", "CarePlan", "r", lambda c, w: c.get(_plan(w, "phases", "initial"))),
    (
        "change phase",
        "CarePlan",
        "u",
        lambda c, w: c.patch(_plan(w, "phases", "initial"), json={"description": "x"}),
    ),
    ("list goals", "Goal", "s", lambda c, w: c.get(_plan(w, "goals"))),
    (
        "add goal",
        "Goal",
        "c",
        lambda c, w: c.post(_plan(w, "goals"), json={"kind": "symptom", "description": "x"}),
    ),
    ("read goal", "Goal", "r", lambda c, w: c.get(_plan(w, "goals", w.goal))),
    (
        "change goal",
        "Goal",
        "u",
        lambda c, w: c.patch(_plan(w, "goals", w.goal), json={"priority": "low-priority"}),
    ),
    ("delete goal", "Goal", "d", lambda c, w: c.delete(_plan(w, "goals", w.goal))),
    ("list homework", "CarePlan", "r", lambda c, w: c.get(_plan(w, "homework"))),
    (
        "assign homework",
        "CarePlan",
        "u",
        lambda c, w: c.post(_plan(w, "homework"), json={"kind": "other", "description": "x"}),
    ),
    ("read homework", "CarePlan", "r", lambda c, w: c.get(_plan(w, "homework", w.homework))),
    (
        "change homework",
        "CarePlan",
        "u",
        lambda c, w: c.patch(_plan(w, "homework", w.homework), json={"status": "in-progress"}),
    ),
    ("delete homework", "CarePlan", "u", lambda c, w: c.delete(_plan(w, "homework", w.homework))),
    ("list sessions", "CarePlan", "r", lambda c, w: c.get(_plan(w, "sessions"))),
    (
        "record session",
        "CarePlan",
        "u",
        lambda c, w: c.post(_plan(w, "sessions"), json={"number": 2, "date": "2026-01-12"}),
    ),
    ("read session", "CarePlan", "r", lambda c, w: c.get(_plan(w, "sessions", "1"))),
    (
        "change session",
        "CarePlan",
        "u",
        lambda c, w: c.patch(_plan(w, "sessions", "1"), json={"note": "x"}),
    ),
    ("delete session", "CarePlan", "u", lambda c, w: c.delete(_plan(w, "sessions", "1"))),
    ("fhir read", "CarePlan", "r", lambda c, w: c.get(f"/fhir/CarePlan/{w.plan['id']}")),
    (
        "fhir vread",
        "CarePlan",
        "r",
        lambda c, w: c.get(f"/fhir/CarePlan/{w.plan['id']}/_history/1"),
    ),
    (
        "fhir instance history",
        "CarePlan",
        "r",
        lambda c, w: c.get(f"/fhir/CarePlan/{w.plan['id']}/_history"),
    ),
    ("fhir type history", "Goal", "s", lambda c, w: c.get("/fhir/Goal/_history")),
    ("fhir search", "CarePlan", "s", lambda c, w: c.get("/fhir/CarePlan?patient=Patient/123")),
    (
        "fhir post search",
        "Goal",
        "s",
        lambda c, w: c.post("/fhir/Goal/_search", data={"patient": "Patient/123"}),
    ),
    ("fhir goal read", "Goal", "r", lambda c, w: c.get(f"/fhir/Goal/{w.goal}")),
    (
        "fhir create",
        "CarePlan",
        "c",
        lambda c, w: c.post("/fhir/CarePlan", data=_new_episode(w), headers=FHIR),
    ),
    (
        "fhir update",
        "CarePlan",
        "u",
        lambda c, w: c.request(
            "PUT", f"/fhir/CarePlan/{w.plan['id']}", data=_episode_body(w), headers=FHIR
        ),
    ),
    (
        "fhir patch",
        "CarePlan",
        "u",
        lambda c, w: c.patch(
            f"/fhir/CarePlan/{w.plan['id']}",
            data='[{"op":"add","path":"/description","value":"x"}]',
            headers={"Content-Type": "application/json-patch+json"},
        ),
    ),
    ("fhir delete goal", "Goal", "d", lambda c, w: c.delete(f"/fhir/Goal/{w.goal}")),
]
ROUTE_IDS = [name for name, *_ in ROUTES]
SEARCHES = {"list plans", "fhir type history", "fhir search", "fhir post search"}


def _sign(live: Server, **claims: Any) -> str:
    key = keys.key_for(live.app)
    now = int(time.time())
    body = {
        "iss": live.settings.public_base_url,
        "aud": live.settings.token_audience,
        "sub": "someone",
        "client_id": "someone",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "system/*.cruds",
        **claims,
    }
    return jwt.encode(body, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})


def _bad_signature(live: Server) -> str:
    key = keys.key_for(live.app)
    other = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    return jwt.encode(
        {
            "iss": live.settings.public_base_url,
            "aud": live.settings.token_audience,
            "sub": "x",
            "exp": now + 300,
            "scope": "system/*.cruds",
        },
        other,
        algorithm="ES256",
        headers={"kid": key.kid},
    )


BAD_TOKENS: dict[str, Callable[[Server], str]] = {
    "bad signature": _bad_signature,
    "expired": lambda live: _sign(
        live, exp=int(time.time()) - 120, iat=int(time.time()) - 500, nbf=int(time.time()) - 500
    ),
    "wrong audience": lambda live: _sign(live, aud="https://elsewhere.example/fhir"),
    "not a token": lambda live: "not-a-jwt",
}


@pytest.mark.parametrize(("name", "resource", "interaction", "call"), ROUTES, ids=ROUTE_IDS)
def test_no_token_is_401_with_a_challenge(
    anonymous: Client, world: World, name: str, resource: str, interaction: str, call: Call
) -> None:
    response = call(anonymous, world)
    assert response.status_code == 401, (name, response.text)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize(("name", "resource", "interaction", "call"), ROUTES, ids=ROUTE_IDS)
def test_an_invalid_token_is_401_saying_why(
    live: Server, world: World, kind: str, name: str, resource: str, interaction: str, call: Call
) -> None:
    response = call(_raw_client(live, BAD_TOKENS[kind](live)), world)
    assert response.status_code == 401, (name, kind, response.text)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def _raw_client(live: Server, token: str) -> Client:
    client = Client(live.url)
    client.http.headers["Authorization"] = f"Bearer {token}"
    return client


def _all_but(resource: str, interaction: str) -> list[str]:
    """Every scope except the one interaction on the one resource."""
    scopes = []
    for other in ("CarePlan", "Goal"):
        letters = "cruds" if other != resource else "cruds".replace(interaction, "")
        scopes.append(f"system/{other}.{letters}")
    return scopes


@pytest.mark.parametrize(("name", "resource", "interaction", "call"), ROUTES, ids=ROUTE_IDS)
def test_a_missing_scope_is_403_naming_it(
    live: Server,
    database: Database,
    world: World,
    name: str,
    resource: str,
    interaction: str,
    call: Call,
) -> None:
    token = token_for(live, database, _all_but(resource, interaction))
    response = call(Client(live.url, token), world)
    assert response.status_code == 403, (name, response.text)
    assert f"{resource}.{interaction}" in response.text


@pytest.mark.parametrize(("name", "resource", "interaction", "call"), ROUTES, ids=ROUTE_IDS)
def test_the_needed_scope_alone_is_enough(
    live: Server,
    database: Database,
    world: World,
    name: str,
    resource: str,
    interaction: str,
    call: Call,
) -> None:
    token = token_for(live, database, [f"user/{resource}.{interaction}"])
    response = call(Client(live.url, token), world)
    assert response.status_code < 300, (name, response.text)


@pytest.mark.parametrize(("name", "resource", "interaction", "call"), ROUTES, ids=ROUTE_IDS)
def test_another_patients_token_neither_sees_nor_changes_the_plan(
    live: Server,
    database: Database,
    world: World,
    name: str,
    resource: str,
    interaction: str,
    call: Call,
) -> None:
    token = token_for(live, database, ["patient/*.cruds"], patient="Patient/999")
    before = Client(live.url, token_for(live, database, ["system/*.cruds"]))
    versions = before.get(f"/fhir/CarePlan/{world.plan['id']}/_history").json()["entry"]
    response = call(Client(live.url, token), world)
    if name in SEARCHES:
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        found = body.get("items", body.get("entry", []))
        assert found == [], name
    elif name in ("create plan", "fhir create"):
        # A new record for another patient: refused.
        assert response.status_code == 403, (name, response.text)
    else:
        # The plan, or anything in it, is not there for this token.
        assert response.status_code == 404, (name, response.text)
    after = before.get(f"/fhir/CarePlan/{world.plan['id']}/_history").json()["entry"]
    assert len(after) == len(versions), name


def test_a_patient_token_sees_its_own_plans_only(
    live: Server, database: Database, world: World, client: Client
) -> None:
    other = client.create_plan(patient="Patient/999")
    token = token_for(live, database, ["patient/*.rs"], patient="Patient/999")
    own = Client(live.url, token)
    assert [p["id"] for p in own.get("/api/v1/care-plans").json()["items"]] == [other["id"]]
    episodes = own.get("/fhir/CarePlan", params={"category": "episode"}).json()
    assert [e["resource"]["id"] for e in episodes["entry"]] == [other["id"]]
    history = own.get("/fhir/_history").json()
    assert {e["resource"]["subject"]["reference"] for e in history["entry"]} == {"Patient/999"}
    assert own.get(f"/api/v1/care-plans/{other['id']}").status_code == 200


def test_patient_scopes_without_a_patient_are_refused(live: Server, database: Database) -> None:
    token = token_for(live, database, ["patient/*.rs"])
    response = Client(live.url, token).get("/fhir/CarePlan")
    assert response.status_code == 403


def test_public_routes_need_no_token(anonymous: Client) -> None:
    for path in (
        "/healthz",
        "/fhir/metadata",
        "/fhir/CodeSystem/ipt-problem-area",
        "/.well-known/smart-configuration",
        "/openapi.json",
        "/docs",
    ):
        assert anonymous.get(path).status_code == 200, path


def test_bundle_entries_are_authorised_one_by_one(
    live: Server, database: Database, world: World
) -> None:
    token = token_for(live, database, ["system/CarePlan.rs"])
    response = Client(live.url, token).post(
        "/fhir",
        data=json.dumps(
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"CarePlan/{world.plan['id']}"}},
                    {"request": {"method": "DELETE", "url": f"CarePlan/{world.plan['id']}"}},
                ],
            }
        ),
        headers=FHIR,
    )
    assert response.status_code == 200
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK", "403"]


def test_system_history_leaves_out_types_the_token_cannot_list(
    live: Server, database: Database, world: World
) -> None:
    token = token_for(live, database, ["system/Goal.rs"])
    history = Client(live.url, token).get("/fhir/_history").json()
    assert {e["resource"]["resourceType"] for e in history["entry"]} == {"Goal"}
    none = Client(live.url, token_for(live, database, ["system/CarePlan.r"])).get("/fhir/_history")
    assert none.status_code == 403


def test_capability_statement_declares_smart_on_fhir(anonymous: Client, live: Server) -> None:
    security = anonymous.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]["extension"]
    assert uris == [{"url": "token", "valueUri": live.settings.token_endpoint}]


def test_every_data_route_has_an_access_rule(live: Server) -> None:
    """A new route without a rule would be refused; this names it before anyone is."""
    from api.auth import policy

    missing = []
    for rule in live.app.url_map.iter_rules():
        path = rule.rule
        if not (path.startswith("/api/") or path.startswith("/fhir")):
            continue
        example = path
        for name in rule.arguments:
            example = example.replace(f"<{name}>", "x").replace(f"<int:{name}>", "1")
            example = example.replace(f"<path:{name}>", "x")
        example = example.replace("/x", "/CarePlan", 1) if "<resource_type>" in path else example
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            with live.app.test_request_context(example, method=method):
                if policy.is_public():
                    continue
                try:
                    policy.required()
                except policy.NoRule:
                    missing.append(f"{method} {path}")
    assert missing == []
