"""For a token confined to one patient, another patient's record is indistinguishable from
one that does not exist: on every route, conditional interactions and Bundle entries
included, the answer for another patient's id or identifier is the answer for an id or
identifier nobody holds (same status, same body apart from the id and the request id).

Without this, refusals chain: a clinic identifier gives a plan id, a plan id gives its
patient, and so who is in IPT treatment.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from conftest import Client, Server, token_for

from service import administrations
from service.db import Database
from service.instruments import PHQ9

OWN = "Patient/123"
OTHER = "Patient/999"
SYSTEM = "urn:clinic:cases"
FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}
# Scope sets of tokens confined to OWN: patient scopes alone, wide system scopes, v1 syntax.
CONFINED = [
    ("patient/*.cruds",),
    ("system/*.cruds", "patient/*.cruds"),
    ("patient/*.*", "user/*.*"),
]


@dataclass
class World:
    own_plan: str
    own_episode: dict[str, Any]
    own_goal: dict[str, Any]
    other_plan: str
    other_goal: str
    other_homework: str
    other_identifier: str
    other_score: str  # a PHQ-9 administration: its QuestionnaireResponse and Observation
    other_flag: str  # the safety signal it raised


@pytest.fixture
def world(client: Client, database: Database) -> World:
    own = client.create_plan(patient=OWN)
    other = client.create_plan(patient=OTHER, identifiers=[{"system": SYSTEM, "value": "case-999"}])
    other_base = f"/api/v1/care-plans/{other['id']}"
    session = {"number": 1, "date": "2026-01-05", "status": "attended"}
    assert client.post(f"{other_base}/sessions", json=session).status_code == 201
    homework = client.post(
        f"{other_base}/homework", json={"kind": "reconnect", "description": "Call"}
    ).json()["id"]
    own_goal_id = client.get(f"/api/v1/care-plans/{own['id']}/goals").json()["items"][0]["id"]
    score = administrations.record_administration(
        database,
        other["id"],
        {"instrument": "phq-9", "session_number": 1, "answers": dict.fromkeys(PHQ9_ITEMS, 2)},
        "clinician",
    )
    [signal] = administrations.list_signals(database, other["id"])
    return World(
        own_plan=own["id"],
        own_episode=client.get(f"/fhir/CarePlan/{own['id']}").json(),
        own_goal=client.get(f"/fhir/Goal/{own_goal_id}").json(),
        other_plan=other["id"],
        other_goal=client.get(f"{other_base}/goals").json()["items"][0]["id"],
        other_homework=homework,
        other_identifier="case-999",
        other_score=score.id,
        other_flag=signal.id,
    )


PHQ9_ITEMS = [item.link_id for item in PHQ9.items]


# A route called with the id (or identifier value) it addresses: (name, kind, call).
# ``kind`` is which record the value stands for: plan, goal, homework or identifier.
Call = Callable[[Client, World, str], requests.Response]


def _bundle(kind: str, *entries: dict[str, Any]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)})


def _episode_as(w: World, plan_id: str) -> str:
    return json.dumps({**w.own_episode, "id": plan_id, "description": "changed"})


def _goal_for(w: World, plan_id: str) -> dict[str, Any]:
    body = {k: v for k, v in w.own_goal.items() if k not in ("id", "meta", "text")}
    return dict(json.loads(json.dumps(body).replace(w.own_plan, plan_id)))


def _new_episode(identifier: str) -> dict[str, Any]:
    return {"system": SYSTEM, "value": identifier}


def _episode_with(w: World, identifier: str) -> dict[str, Any]:
    body = {k: v for k, v in w.own_episode.items() if k not in ("id", "meta", "goal", "text")}
    return {**body, "identifier": [_new_episode(identifier)]}


def _goal_by_identifier(w: World, identifier: str) -> dict[str, Any]:
    goal = _goal_for(w, "PLACEHOLDER")
    text = json.dumps(goal).replace(
        "CarePlan/PLACEHOLDER", f"CarePlan?identifier={SYSTEM}|{identifier}"
    )
    return dict(json.loads(text))


ROUTES: list[tuple[str, str, Call]] = [
    ("fhir read", "plan", lambda c, w, i: c.get(f"/fhir/CarePlan/{i}")),
    ("fhir vread", "plan", lambda c, w, i: c.get(f"/fhir/CarePlan/{i}/_history/1")),
    ("fhir instance history", "plan", lambda c, w, i: c.get(f"/fhir/CarePlan/{i}/_history")),
    ("fhir goal read", "goal", lambda c, w, i: c.get(f"/fhir/Goal/{i}")),
    ("fhir observation read", "score", lambda c, w, i: c.get(f"/fhir/Observation/{i}")),
    (
        "fhir response vread",
        "score",
        lambda c, w, i: c.get(f"/fhir/QuestionnaireResponse/{i}/_history/1"),
    ),
    ("fhir flag history", "flag", lambda c, w, i: c.get(f"/fhir/Flag/{i}/_history")),
    ("fhir observation delete", "score", lambda c, w, i: c.delete(f"/fhir/Observation/{i}")),
    (
        "fhir observations derived from",
        "score",
        lambda c, w, i: c.get(
            "/fhir/Observation", params={"derived-from": f"QuestionnaireResponse/{i}"}
        ),
    ),
    (
        "fhir update",
        "plan",
        lambda c, w, i: c.request(
            "PUT", f"/fhir/CarePlan/{i}", data=_episode_as(w, i), headers=FHIR
        ),
    ),
    (
        "fhir patch",
        "plan",
        lambda c, w, i: c.patch(
            f"/fhir/CarePlan/{i}",
            data='[{"op":"add","path":"/description","value":"x"}]',
            headers=PATCH,
        ),
    ),
    ("fhir delete", "goal", lambda c, w, i: c.delete(f"/fhir/Goal/{i}")),
    (
        "fhir goal for the plan",
        "plan",
        lambda c, w, i: c.post("/fhir/Goal", data=json.dumps(_goal_for(w, i)), headers=FHIR),
    ),
    (
        "conditional create",
        "identifier",
        lambda c, w, i: c.post(
            "/fhir/CarePlan",
            data=json.dumps(_episode_with(w, i)),
            headers={**FHIR, "If-None-Exist": f"identifier={SYSTEM}|{i}"},
        ),
    ),
    (
        "conditional update",
        "identifier",
        lambda c, w, i: c.request(
            "PUT",
            f"/fhir/CarePlan?identifier={SYSTEM}|{i}",
            data=json.dumps(_episode_with(w, i)),
            headers=FHIR,
        ),
    ),
    (
        "search by identifier",
        "identifier",
        lambda c, w, i: c.get("/fhir/CarePlan", params={"identifier": f"{SYSTEM}|{i}"}),
    ),
    (
        "goal with a conditional reference",
        "identifier",
        lambda c, w, i: c.post(
            "/fhir",
            data=_bundle(
                "transaction",
                {
                    "resource": _goal_by_identifier(w, i),
                    "request": {"method": "POST", "url": "Goal"},
                },
            ),
            headers=FHIR,
        ),
    ),
    (
        "batch entries",
        "plan",
        lambda c, w, i: c.post(
            "/fhir",
            data=_bundle(
                "batch",
                {"request": {"method": "GET", "url": f"CarePlan/{i}"}},
                {"request": {"method": "DELETE", "url": f"CarePlan/{i}"}},
                {
                    "resource": json.loads(_episode_as(w, i)),
                    "request": {"method": "PUT", "url": f"CarePlan/{i}"},
                },
                {
                    "resource": _goal_for(w, i),
                    "request": {"method": "POST", "url": "Goal"},
                },
            ),
            headers=FHIR,
        ),
    ),
    (
        "transaction conditional create",
        "identifier",
        lambda c, w, i: c.post(
            "/fhir",
            data=_bundle(
                "transaction",
                {
                    "resource": _episode_with(w, i),
                    "request": {
                        "method": "POST",
                        "url": "CarePlan",
                        "ifNoneExist": f"identifier={SYSTEM}|{i}",
                    },
                },
            ),
            headers=FHIR,
        ),
    ),
    ("native plan", "plan", lambda c, w, i: c.get(f"/api/v1/care-plans/{i}")),
    (
        "native change",
        "plan",
        lambda c, w, i: c.patch(f"/api/v1/care-plans/{i}", json={"formulation": "x"}),
    ),
    ("native delete", "plan", lambda c, w, i: c.delete(f"/api/v1/care-plans/{i}")),
    ("native changes", "plan", lambda c, w, i: c.get(f"/api/v1/care-plans/{i}/changes")),
    ("native phase", "plan", lambda c, w, i: c.get(f"/api/v1/care-plans/{i}/phases/initial")),
    ("native sessions", "plan", lambda c, w, i: c.get(f"/api/v1/care-plans/{i}/sessions")),
    (
        "native goal add",
        "plan",
        lambda c, w, i: c.post(
            f"/api/v1/care-plans/{i}/goals", json={"kind": "symptom", "description": "x"}
        ),
    ),
    (
        "native goal",
        "goal",
        lambda c, w, i: c.get(f"/api/v1/care-plans/{w.own_plan}/goals/{i}"),
    ),
    (
        "native homework",
        "homework",
        lambda c, w, i: c.get(f"/api/v1/care-plans/{w.own_plan}/homework/{i}"),
    ),
    (
        "native plan with the identifier",
        "identifier",
        lambda c, w, i: c.post(
            "/api/v1/care-plans",
            json={
                "patient": OWN,
                "problem_areas": ["grief"],
                "start_date": "2026-01-05",
                "identifiers": [_new_episode(i)],
            },
        ),
    ),
    (
        "native plans by identifier",
        "identifier",
        lambda c, w, i: c.get("/api/v1/care-plans", params={"identifier": f"{SYSTEM}|{i}"}),
    ),
]


def _held(w: World, kind: str) -> str:
    return {
        "plan": w.other_plan,
        "goal": w.other_goal,
        "homework": w.other_homework,
        "identifier": w.other_identifier,
        "score": w.other_score,
        "flag": w.other_flag,
    }[kind]


def _normalised(response: requests.Response, value: str) -> tuple[int, Any]:
    """Status and body, with the addressed value and the per-request parts masked."""
    text = response.text.replace(value, "<value>")
    try:
        body = json.loads(text)
    except ValueError:
        return response.status_code, text
    return response.status_code, _masked(body)


def _masked(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: _masked(v)
            for k, v in body.items()
            # Per request: its id; per write: new ids, times and versions (compared by status).
            if k not in ("request_id", "id", "lastUpdated", "lastModified", "etag", "location")
        }
    if isinstance(body, list):
        return [_masked(item) for item in body]
    return body


def _versions(client: Client) -> int:
    history = client.get("/fhir/_history", params={"_count": "500"}).json()
    return len(history.get("entry", []))


@pytest.mark.parametrize("scopes", CONFINED, ids=[" ".join(s) for s in CONFINED])
@pytest.mark.parametrize(("name", "kind", "call"), ROUTES, ids=[r[0] for r in ROUTES])
def test_another_patients_record_answers_as_one_that_does_not_exist(
    live: Server,
    database: Database,
    client: Client,
    world: World,
    scopes: tuple[str, ...],
    name: str,
    kind: str,
    call: Call,
) -> None:
    caller = Client(live.url, token_for(live, database, list(scopes), patient=OWN))
    held = _held(world, kind)
    versions = _versions(client)
    for_held = call(caller, world, held)
    # Nothing of the other patient's was changed or created by it.
    assert _versions(client) == versions, (name, for_held.text)
    absent = ("case-" if kind == "identifier" else "") + uuid.uuid4().hex
    for_absent = call(caller, world, absent)
    assert _normalised(for_held, held) == _normalised(for_absent, absent), name
    # The answer never names the other patient, nor the plan an identifier leads to.
    assert OTHER not in for_held.text, name
    if kind == "identifier":
        assert world.other_plan not in for_held.text, name
