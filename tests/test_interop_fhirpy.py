"""The FHIR interface driven by a third-party client library, fhirpy (PyPI), as an EHR
integration written in Python would drive it: CRUD of an episode and a Goal, paging with
the library's own iteration, conditional create and a transaction sent twice.

Everything goes through fhirpy's public API. Two things are expressed the way fhirpy
allows: a conditional create's ``If-None-Exist`` is an extra header of a second client
(fhirpy's own ``get_or_create`` puts the condition in the POST's query string, which FHIR R4
does not define), and a transaction is posted by a client rooted above ``/fhir`` (fhirpy
posts to the base as ``{base}/``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Client
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "episode.json"
EPISODE_URN = "urn:uuid:0a6d3c1e-8d2b-4f7a-9c3e-5b1d2f4a6e8c"
GOAL_URN = "urn:uuid:7e2f4b6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"


@pytest.fixture(autouse=True)
def server_keeps_answering(client: Client) -> Iterator[None]:
    yield
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def fhir(client: Client) -> SyncFHIRClient:
    return SyncFHIRClient(f"{client.base_url}/fhir", authorization=bearer(client))


def bearer(client: Client) -> str:
    return str(client.http.headers["Authorization"])


def episode_body(value: str, patient: str = "Patient/456") -> dict[str, Any]:
    body = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    body["identifier"] = [{"system": SYSTEM, "value": value}]
    body["subject"] = {"reference": patient}
    return dict(body)


def goal_body(client: Client, episode_reference: str) -> dict[str, Any]:
    """A Goal of the example's problem area (role transition) as the server writes them,
    pointed at ``episode_reference``: read from a plan made for it, server parts dropped."""
    plan = client.create_plan(problem_areas=["role-transition"])
    goals = client.get("/fhir/Goal", params={"patient": "Patient/123", "_count": 1}).json()
    assert goals["entry"], goals
    goal = copy.deepcopy(goals["entry"][0]["resource"])
    for key in ("id", "meta", "text"):
        goal.pop(key, None)
    goal["subject"] = {"reference": "Patient/456"}
    for extension in goal["extension"]:
        if extension["url"].endswith("ipt-goal-episode"):
            extension["valueReference"] = {"reference": episode_reference}
    client.delete(f"/api/v1/care-plans/{plan['id']}")
    return dict(goal)


def test_crud_of_an_episode_and_its_goal(fhir: SyncFHIRClient, client: Client) -> None:
    episode = fhir.resource("CarePlan", **episode_body("CRUD-1"))
    episode.save()
    assert episode.id
    assert episode["meta"]["versionId"] == "1"

    read = fhir.reference("CarePlan", episode.id).to_resource()
    assert read["identifier"] == [{"system": SYSTEM, "value": "CRUD-1"}]
    assert read["status"] == "active"

    goal = fhir.resource("Goal", **goal_body(client, f"CarePlan/{episode.id}"))
    goal.save()
    assert goal.id
    episode.refresh()
    assert {"reference": f"Goal/{goal.id}"} in episode["goal"]

    version = int(episode["meta"]["versionId"])
    episode["description"] = "Agreed with the patient at intake."
    episode.save()
    assert episode["meta"]["versionId"] == str(version + 1)
    assert fhir.reference("CarePlan", episode.id).to_resource()["description"] == (
        "Agreed with the patient at intake."
    )

    goal["lifecycleStatus"] = "on-hold"
    goal.save()
    assert fhir.reference("Goal", goal.id).to_resource()["lifecycleStatus"] == "on-hold"

    goal.delete()
    with pytest.raises(ResourceNotFound):
        fhir.reference("Goal", goal.id).to_resource()
    episode.refresh()
    assert {"reference": f"Goal/{goal.id}"} not in episode.get("goal", [])

    episode.delete()
    with pytest.raises(ResourceNotFound):
        fhir.reference("CarePlan", episode.id).to_resource()


def test_paging_with_the_clients_own_iteration(fhir: SyncFHIRClient) -> None:
    created = set()
    for n in range(7):
        episode = fhir.resource("CarePlan", **episode_body(f"PAGE-{n}", patient="Patient/777"))
        episode.save()
        created.add(episode.id)
    search = fhir.resources("CarePlan").search(patient="Patient/777", category="episode")
    # fhirpy follows the Bundle's `next` links itself, two resources per page.
    seen = [resource.id for resource in search.limit(2)]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == created
    assert search.count() == 7
    assert {r.id for r in search.limit(3).fetch_all()} == created


def test_conditional_create_makes_one_resource(fhir: SyncFHIRClient, client: Client) -> None:
    conditional = SyncFHIRClient(
        f"{client.base_url}/fhir",
        authorization=bearer(client),
        extra_headers={"If-None-Exist": f"identifier={SYSTEM}|COND-1"},
    )
    first = conditional.resource("CarePlan", **episode_body("COND-1"))
    first.save()
    second = conditional.resource("CarePlan", **episode_body("COND-1"))
    second.save()
    assert second.id == first.id
    found = fhir.resources("CarePlan").search(identifier=f"{SYSTEM}|COND-1").fetch_all()
    assert [r.id for r in found] == [first.id]


def test_a_transaction_sent_twice_points_at_the_same_resources(
    fhir: SyncFHIRClient, client: Client
) -> None:
    # fhirpy posts a Bundle to the base as `{url}/`.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": EPISODE_URN,
                "resource": episode_body("TX-1"),
                "request": {
                    "method": "POST",
                    "url": "CarePlan",
                    "ifNoneExist": f"identifier={SYSTEM}|TX-1",
                },
            },
            {
                "fullUrl": GOAL_URN,
                "resource": {
                    **goal_body(client, EPISODE_URN),
                    "identifier": [{"system": SYSTEM, "value": "TX-GOAL-1"}],
                },
                "request": {
                    "method": "POST",
                    "url": "Goal",
                    "ifNoneExist": f"identifier={SYSTEM}|TX-GOAL-1",
                },
            },
        ],
    }
    first = fhir.execute("", method="post", data=copy.deepcopy(bundle))
    assert first["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in first["entry"]] == ["201", "201"]
    second = fhir.execute("", method="post", data=copy.deepcopy(bundle))
    assert [e["response"]["status"][:3] for e in second["entry"]] == ["200", "200"]
    locations = [
        [e["response"]["location"].split("/_history")[0] for e in result["entry"]]
        for result in (first, second)
    ]
    assert locations[0] == locations[1]
    episodes = fhir.resources("CarePlan").search(identifier=f"{SYSTEM}|TX-1").fetch_all()
    goals = fhir.resources("Goal").search(identifier=f"{SYSTEM}|TX-GOAL-1").fetch_all()
    assert len(episodes) == 1
    assert len(goals) == 1
    assert f"Goal/{goals[0].id}" in [ref.reference for ref in episodes[0]["goal"]]

    # A new Goal in the re-sent transaction: its reference to the episode's fullUrl resolves
    # to the episode the condition matched (FHIR transaction rules), not to a new id.
    again = copy.deepcopy(bundle)
    again["entry"][1]["resource"]["identifier"] = [{"system": SYSTEM, "value": "TX-GOAL-2"}]
    again["entry"][1]["request"]["ifNoneExist"] = f"identifier={SYSTEM}|TX-GOAL-2"
    third = fhir.execute("", method="post", data=again)
    assert [e["response"]["status"][:3] for e in third["entry"]] == ["200", "201"]
    new_goal = fhir.resources("Goal").search(identifier=f"{SYSTEM}|TX-GOAL-2").fetch_all()
    assert len(new_goal) == 1
    episode_reference = next(
        e["valueReference"].reference
        for e in new_goal[0]["extension"]
        if e["url"].endswith("ipt-goal-episode")
    )
    assert episode_reference == f"CarePlan/{episodes[0].id}"
    assert fhir.resources("CarePlan").search(identifier=f"{SYSTEM}|TX-1").count() == 1
