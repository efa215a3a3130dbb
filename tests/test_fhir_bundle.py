"""Batch and transaction Bundles at POST /fhir."""

from __future__ import annotations

import json
from typing import Any

from conftest import Client, count_rows, plan_url
from test_fhir_read import assert_valid, outcome_code

from service.db import Database

EPISODE_URN = "urn:uuid:5b1e6f8a-3c2d-4e1f-9a8b-7c6d5e4f3a2b"
GOAL_URN = "urn:uuid:9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def post_bundle(client: Client, bundle: dict[str, Any]) -> Any:
    return client.post(
        "/fhir", data=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
    )


def new_episode(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    """An episode CarePlan body a client would send: read one, drop server-owned parts."""
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    return {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}


def new_goal(client: Client, plan: dict[str, Any], episode_reference: str) -> dict[str, Any]:
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    goal = client.get(f"/fhir/Goal/{goal_id}").json()
    body = {k: v for k, v in goal.items() if k not in ("id", "meta", "text")}
    for extension in body["extension"]:
        if extension["url"].endswith("ipt-goal-episode"):
            extension["valueReference"] = {"reference": episode_reference}
    return body


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_transaction_creates_an_episode_and_its_goal_with_rewritten_references(
    client: Client, plan: dict
) -> None:
    bundle = transaction(
        {
            "fullUrl": GOAL_URN,
            "resource": new_goal(client, plan, EPISODE_URN),
            "request": {"method": "POST", "url": "Goal"},
        },
        {
            "fullUrl": EPISODE_URN,
            "resource": new_episode(client, plan),
            "request": {"method": "POST", "url": "CarePlan"},
        },
    )
    response = post_bundle(client, bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert_valid(result)
    assert result["type"] == "transaction-response"
    goal_entry, episode_entry = result["entry"]
    assert goal_entry["response"]["status"] == "201 Created"
    assert episode_entry["response"]["location"].startswith("CarePlan/")
    episode_id = episode_entry["resource"]["id"]
    reference = next(
        e["valueReference"]["reference"]
        for e in goal_entry["resource"]["extension"]
        if e["url"].endswith("ipt-goal-episode")
    )
    assert reference == f"CarePlan/{episode_id}"
    native_goals = client.get(f"/api/v1/care-plans/{episode_id}/goals").json()["items"]
    assert [g["id"] for g in native_goals] == [goal_entry["resource"]["id"]]
    episode = client.get(f"/fhir/CarePlan/{episode_id}").json()
    assert episode["goal"] == [{"reference": f"Goal/{goal_entry['resource']['id']}"}]


def test_a_failing_entry_rolls_the_whole_transaction_back(
    client: Client, database: Database, plan: dict
) -> None:
    plans_before = count_rows(database, "care_plans")
    versions_before = count_rows(database, "resource_versions")
    broken = new_goal(client, plan, EPISODE_URN)
    broken["lifecycleStatus"] = "bogus"
    response = post_bundle(
        client,
        transaction(
            {
                "fullUrl": EPISODE_URN,
                "resource": new_episode(client, plan),
                "request": {"method": "POST", "url": "CarePlan"},
            },
            {"fullUrl": GOAL_URN, "resource": broken, "request": {"method": "POST", "url": "Goal"}},
        ),
    )
    assert response.status_code == 422
    assert outcome_code(response) == "processing"
    assert "entry 1" in response.json()["issue"][0]["diagnostics"]
    assert count_rows(database, "care_plans") == plans_before
    assert count_rows(database, "resource_versions") == versions_before


def test_transaction_with_a_stale_if_match_changes_nothing(client: Client, plan: dict) -> None:
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    changed = {**episode, "description": "from the transaction"}
    response = post_bundle(
        client,
        transaction(
            {
                "resource": changed,
                "request": {"method": "PUT", "url": f"CarePlan/{plan['id']}", "ifMatch": 'W/"9"'},
            },
        ),
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert "description" not in client.get(f"/fhir/CarePlan/{plan['id']}").json()


def test_batch_reports_each_entry_on_its_own(client: Client, plan: dict) -> None:
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    updated = {**episode, "description": "from the batch"}
    response = post_bundle(
        client,
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": updated,
                    "request": {"method": "PUT", "url": f"CarePlan/{plan['id']}"},
                },
                {"request": {"method": "GET", "url": "CarePlan/does-not-exist"}},
                {"request": {"method": "GET", "url": f"CarePlan?_id={plan['id']}"}},
                {"request": {"method": "DELETE", "url": f"CarePlan/{plan['phases'][0]['id']}"}},
            ],
        },
    )
    assert response.status_code == 200
    result = response.json()
    assert_valid(result)
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["200 OK", "404", "200 OK", "422"]
    assert result["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert result["entry"][2]["resource"]["total"] == 1
    assert client.get(f"/fhir/CarePlan/{plan['id']}").json()["description"] == "from the batch"


def test_conditional_create_in_a_transaction(client: Client, plan: dict) -> None:
    body = new_episode(client, plan) | {"identifier": [{"system": "urn:c", "value": "T1"}]}
    entry = {
        "resource": body,
        "request": {"method": "POST", "url": "CarePlan", "ifNoneExist": "identifier=urn:c|T1"},
    }
    first = post_bundle(client, transaction(entry)).json()
    second = post_bundle(client, transaction(entry)).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert second["entry"][0]["resource"]["id"] == first["entry"][0]["resource"]["id"]


def test_reads_in_a_transaction_see_its_writes(client: Client, plan: dict) -> None:
    """FHIR runs a transaction's GET entries after its writes: they see what it wrote."""
    goal = new_goal(client, plan, f"CarePlan/{plan['id']}")
    goal["identifier"] = [{"system": "urn:t", "value": "G-in-bundle"}]
    episode_before = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    response = post_bundle(
        client,
        transaction(
            {"request": {"method": "GET", "url": "Goal?identifier=urn:t|G-in-bundle"}},
            {"request": {"method": "GET", "url": f"CarePlan/{plan['id']}"}},
            {"fullUrl": GOAL_URN, "resource": goal, "request": {"method": "POST", "url": "Goal"}},
        ),
    )
    assert response.status_code == 200, response.text
    found, episode, created = response.json()["entry"]
    assert created["response"]["status"] == "201 Created"
    goal_id = created["resource"]["id"]
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [goal_id]
    assert found["resource"]["total"] == 1
    assert f"Goal/{goal_id}" in [g["reference"] for g in episode["resource"]["goal"]]
    assert episode["resource"]["meta"]["versionId"] != episode_before["meta"]["versionId"]
    # Published once: the stored episode is the version the Bundle showed.
    now = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    assert now["meta"]["versionId"] == episode["resource"]["meta"]["versionId"]
    history = client.get(f"/fhir/Goal/{goal_id}/_history").json()
    assert len(history["entry"]) == 1


def test_bad_bundles_are_refused(client: Client) -> None:
    not_a_bundle = post_bundle(client, {"resourceType": "CarePlan"})
    assert not_a_bundle.status_code == 400
    assert outcome_code(not_a_bundle) == "invalid"
    wrong_type = post_bundle(client, {"resourceType": "Bundle", "type": "collection"})
    assert wrong_type.status_code == 400
    unknown_url = post_bundle(
        client, transaction({"request": {"method": "GET", "url": "Patient/1"}})
    )
    assert unknown_url.status_code == 400
