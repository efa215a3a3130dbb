"""Transactions sent again, conditional creates and updates, and conditional references.

When a conditional create or update matches, every reference to the entry's fullUrl
resolves to the resource it matched (FHIR R4 http.html#trules); a conditional reference
(``CarePlan?identifier=system|value``) is resolved when the transaction runs.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import Client, Server, token_for
from test_fhir_bundle import EPISODE_URN, GOAL_URN, new_episode, new_goal, post_bundle, transaction
from test_fhir_read import assert_valid

from service.db import Database

SYSTEM = "urn:example:episodes"
EPISODE_EXTENSION = "ipt-goal-episode"


def total(client: Client, path: str) -> int:
    response = client.get(path, params={"_summary": "count"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def stored(client: Client) -> tuple[int, int]:
    """How many CarePlans (episodes and phases) and Goals are stored."""
    return total(client, "/fhir/CarePlan"), total(client, "/fhir/Goal")


def episode_of(goal: dict[str, Any]) -> str:
    return next(
        e["valueReference"]["reference"]
        for e in goal["extension"]
        if e["url"].endswith(EPISODE_EXTENSION)
    )


def identified(resource: dict[str, Any], value: str) -> dict[str, Any]:
    return {**resource, "identifier": [{"system": SYSTEM, "value": value}]}


def episode_entry(client: Client, plan: dict, value: str, **request: str) -> dict[str, Any]:
    return {
        "fullUrl": EPISODE_URN,
        "resource": identified(new_episode(client, plan), value),
        "request": {"method": "POST", "url": "CarePlan", **request},
    }


def goal_entry(client: Client, plan: dict, reference: str, value: str | None = None) -> dict:
    goal = new_goal(client, plan, reference)
    request: dict[str, str] = {"method": "POST", "url": "Goal"}
    if value is not None:
        goal = identified(goal, value)
        request["ifNoneExist"] = f"identifier={SYSTEM}|{value}"
    return {"fullUrl": GOAL_URN, "resource": goal, "request": request}


@pytest.mark.parametrize("goal_is_conditional", [True, False], ids=["conditional", "plain"])
def test_a_transaction_sent_twice_points_at_what_its_conditions_matched(
    client: Client, plan: dict, goal_is_conditional: bool
) -> None:
    bundle = transaction(
        goal_entry(client, plan, EPISODE_URN, "G-1" if goal_is_conditional else None),
        episode_entry(client, plan, "E-1", ifNoneExist=f"identifier={SYSTEM}|E-1"),
    )
    first = post_bundle(client, bundle)
    assert first.status_code == 200, first.text
    first_goal, first_episode = first.json()["entry"]
    assert [first_goal["response"]["status"], first_episode["response"]["status"]] == [
        "201 Created",
        "201 Created",
    ]
    after_first = stored(client)

    second = post_bundle(client, bundle)
    assert second.status_code == 200, second.text
    assert_valid(second.json())
    goal, episode = second.json()["entry"]
    episode_id = first_episode["resource"]["id"]
    assert episode["response"]["status"] == "200 OK"
    assert episode["resource"]["id"] == episode_id
    assert episode["response"]["location"].startswith(f"CarePlan/{episode_id}/_history/")
    assert episode_of(goal["resource"]) == f"CarePlan/{episode_id}"
    if goal_is_conditional:
        # Nothing new: the same ids, nothing duplicated.
        assert goal["response"]["status"] == "200 OK"
        assert goal["resource"]["id"] == first_goal["resource"]["id"]
        assert stored(client) == after_first
    else:
        # The unconditional goal is created again, under the episode the condition found.
        assert goal["response"]["status"] == "201 Created"
        assert stored(client) == (after_first[0], after_first[1] + 1)
    found = client.get("/fhir/CarePlan", params={"identifier": f"{SYSTEM}|E-1"}).json()
    assert found["total"] == 1


def test_parallel_transactions_with_conditions_store_one_of_each(
    client: Client, plan: dict, admin_token: str
) -> None:
    bundle = transaction(
        goal_entry(client, plan, EPISODE_URN, "G-par"),
        episode_entry(client, plan, "E-par", ifNoneExist=f"identifier={SYSTEM}|E-par"),
    )
    before = stored(client)
    answers: list[Any] = []

    def send() -> None:
        answers.append(post_bundle(Client(client.base_url, admin_token), bundle))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    episodes = {a.json()["entry"][1]["resource"]["id"] for a in answers}
    goals = {a.json()["entry"][0]["resource"]["id"] for a in answers}
    assert len(episodes) == len(goals) == 1
    assert {episode_of(a.json()["entry"][0]["resource"]) for a in answers} == {
        f"CarePlan/{episodes.pop()}"
    }
    # One episode (with its phases) and one goal more, however many were sent.
    episode_count, goal_count = stored(client)
    assert goal_count == before[1] + 1
    assert total(client, f"/fhir/CarePlan?identifier={SYSTEM}|E-par") == 1
    assert episode_count > before[0]
    # Sent again afterwards, in parallel: nothing changes.
    answers.clear()
    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 3
    assert {e["response"]["status"] for a in answers for e in a.json()["entry"]} == {"200 OK"}
    assert stored(client) == (episode_count, goal_count)


def test_a_conditional_reference_finds_a_stored_episode(client: Client, plan: dict) -> None:
    created = post_bundle(client, transaction(episode_entry(client, plan, "E-stored")))
    assert created.status_code == 200, created.text
    episode_id = created.json()["entry"][0]["resource"]["id"]
    response = post_bundle(
        client, transaction(goal_entry(client, plan, f"CarePlan?identifier={SYSTEM}|E-stored"))
    )
    assert response.status_code == 200, response.text
    [goal] = response.json()["entry"]
    assert goal["response"]["status"] == "201 Created"
    assert episode_of(goal["resource"]) == f"CarePlan/{episode_id}"
    episode = client.get(f"/fhir/CarePlan/{episode_id}").json()
    assert {"reference": f"Goal/{goal['resource']['id']}"} in episode["goal"]


def test_a_conditional_reference_finds_an_episode_of_the_same_bundle(
    client: Client, plan: dict
) -> None:
    bundle = transaction(
        goal_entry(client, plan, f"CarePlan?identifier={SYSTEM}|E-same"),
        {**episode_entry(client, plan, "E-same"), "fullUrl": None},
    )
    del bundle["entry"][1]["fullUrl"]
    response = post_bundle(client, bundle)
    assert response.status_code == 200, response.text
    goal, episode = response.json()["entry"]
    assert episode["response"]["status"] == "201 Created"
    assert episode_of(goal["resource"]) == f"CarePlan/{episode['resource']['id']}"
    stored_goal = client.get(f"/fhir/Goal/{goal['resource']['id']}").json()
    assert episode_of(stored_goal) == f"CarePlan/{episode['resource']['id']}"


@pytest.mark.parametrize(
    ("reference", "status", "code"),
    [
        # Every episode and phase of the patient: several matches.
        ("CarePlan?subject=Patient/123", 412, "multiple-matches"),
        (f"CarePlan?identifier={SYSTEM}|nobody", 422, "not-found"),
        ("CarePlan?no-such-parameter=1", 400, "invalid"),
        ("CarePlan?", 400, "invalid"),
        ("Patient?identifier=urn:mrn|1", 422, "not-found"),
    ],
)
def test_a_conditional_reference_that_finds_not_one_fails_the_transaction(
    client: Client, plan: dict, reference: str, status: int, code: str
) -> None:
    client.create_plan()  # a second episode of Patient/123
    before = stored(client)
    goal = goal_entry(client, plan, reference)
    index = next(
        i for i, e in enumerate(goal["resource"]["extension"]) if e["url"].endswith("goal-episode")
    )
    response = post_bundle(client, transaction(episode_entry(client, plan, "E-x"), goal))
    assert response.status_code == status, response.text
    outcome = response.json()
    assert_valid(outcome)
    [issue] = outcome["issue"]
    assert issue["code"] == code
    assert issue["expression"] == [
        f"Bundle.entry[1].resource.extension[{index}].valueReference.reference"
    ]
    assert "entry 1" in issue["diagnostics"]
    assert stored(client) == before


def test_multiple_if_none_exist_matches_fail_the_transaction(client: Client, plan: dict) -> None:
    client.create_plan()
    before = stored(client)
    entry = episode_entry(client, plan, "E-new", ifNoneExist="subject=Patient/123")
    response = post_bundle(client, transaction(entry, goal_entry(client, plan, EPISODE_URN)))
    assert response.status_code == 412, response.text
    [issue] = response.json()["issue"]
    assert issue["expression"] == ["Bundle.entry[0].request.ifNoneExist"]
    assert stored(client) == before


def test_a_conditional_update_in_a_transaction_creates_then_updates(
    client: Client, plan: dict
) -> None:
    def bundle(description: str) -> dict[str, Any]:
        episode = identified(new_episode(client, plan), "E-put") | {"description": description}
        return transaction(
            {
                "fullUrl": EPISODE_URN,
                "resource": episode,
                "request": {"method": "PUT", "url": f"CarePlan?identifier={SYSTEM}|E-put"},
            },
            goal_entry(client, plan, EPISODE_URN, "G-put"),
        )

    first = post_bundle(client, bundle("first"))
    assert first.status_code == 200, first.text
    episode, goal = first.json()["entry"]
    assert [episode["response"]["status"], goal["response"]["status"]] == [
        "201 Created",
        "201 Created",
    ]
    episode_id = episode["resource"]["id"]
    assert episode_of(goal["resource"]) == f"CarePlan/{episode_id}"
    after_first = stored(client)

    second = post_bundle(client, bundle("second"))
    assert second.status_code == 200, second.text
    episode, goal = second.json()["entry"]
    assert episode["response"]["status"] == "200 OK"
    assert episode["resource"]["id"] == episode_id
    assert episode["resource"]["description"] == "second"
    assert goal["response"]["status"] == "200 OK"
    assert episode_of(goal["resource"]) == f"CarePlan/{episode_id}"
    assert stored(client) == after_first


def test_a_conditional_update_whose_body_names_another_id_is_refused(
    client: Client, plan: dict
) -> None:
    created = post_bundle(client, transaction(episode_entry(client, plan, "E-id")))
    assert created.status_code == 200, created.text
    episode = identified(new_episode(client, plan), "E-id") | {"id": "someone-else"}
    response = post_bundle(
        client,
        transaction(
            {
                "resource": episode,
                "request": {"method": "PUT", "url": f"CarePlan?identifier={SYSTEM}|E-id"},
            }
        ),
    )
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.id"]


def test_a_fullurl_used_twice_is_refused(client: Client, plan: dict) -> None:
    before = stored(client)
    goal = goal_entry(client, plan, f"CarePlan/{plan['id']}")
    response = post_bundle(client, transaction(goal, goal))
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].fullUrl"]
    assert stored(client) == before


def test_a_conditional_read_in_a_bundle(client: Client, plan: dict) -> None:
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    version = episode["meta"]["versionId"]
    response = post_bundle(
        client,
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "request": {
                        "method": "GET",
                        "url": f"CarePlan/{plan['id']}",
                        "ifNoneMatch": f'W/"{version}"',
                    }
                },
                {
                    "request": {
                        "method": "GET",
                        "url": f"CarePlan/{plan['id']}",
                        "ifNoneMatch": 'W/"999"',
                    }
                },
                {
                    "request": {
                        "method": "GET",
                        "url": f"CarePlan/{plan['id']}",
                        "ifModifiedSince": "2999-01-01T00:00:00Z",
                    }
                },
                {
                    "request": {
                        "method": "GET",
                        "url": f"CarePlan/{plan['id']}",
                        "ifModifiedSince": "2000-01-01T00:00:00Z",
                    }
                },
            ],
        },
    )
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["304 Not Modified", "200 OK", "304 Not Modified", "200 OK"]
    assert "resource" not in response.json()["entry"][0]


def test_resolving_a_conditional_reference_needs_the_right_to_search(
    client: Client, plan: dict, live: Server, database: Database
) -> None:
    created = post_bundle(client, transaction(episode_entry(client, plan, "E-scope")))
    assert created.status_code == 200, created.text
    before = stored(client)
    goal = goal_entry(client, plan, f"CarePlan?identifier={SYSTEM}|E-scope")
    writer = Client(live.url, token_for(live, database, ["system/Goal.cruds"]))
    response = post_bundle(writer, transaction(goal))
    assert response.status_code == 403, response.text
    assert "entry 0" in response.json()["issue"][0]["diagnostics"]
    assert stored(client) == before
    # A conditional create is looked for only once the create is allowed.
    reader = Client(live.url, token_for(live, database, ["system/CarePlan.rs"]))
    again = post_bundle(
        reader,
        transaction(
            episode_entry(client, plan, "E-scope", ifNoneExist=f"identifier={SYSTEM}|E-scope")
        ),
    )
    assert again.status_code == 403, again.text
    assert stored(client) == before


def test_a_conditional_update_in_a_batch(client: Client, plan: dict) -> None:
    episode = identified(new_episode(client, plan), "E-batch")
    entry = {
        "resource": episode,
        "request": {"method": "PUT", "url": f"CarePlan?identifier={SYSTEM}|E-batch"},
    }
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    first = post_bundle(client, batch)
    assert first.status_code == 200, first.text
    [created] = first.json()["entry"]
    assert created["response"]["status"] == "201 Created"
    after_first = stored(client)
    entry["resource"] = episode | {"description": "changed"}
    second = post_bundle(client, batch)
    [updated] = second.json()["entry"]
    assert updated["response"]["status"] == "200 OK"
    assert updated["resource"]["id"] == created["resource"]["id"]
    assert updated["resource"]["description"] == "changed"
    assert stored(client) == after_first
