"""Closing a plan: it is not completed around goals still open; the request says what
becomes of them, natively (open_goals) or, on FHIR, by finishing the Goals first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

OPEN = ("proposed", "planned", "accepted", "active", "on-hold")


def goals_of(client: Client, plan: dict) -> list[dict[str, Any]]:
    return list(client.get(plan_url(plan, "goals")).json()["items"])


def symptom_goal(goals: list[dict[str, Any]]) -> dict[str, Any]:
    return next(g for g in goals if g["kind"] == "symptom")


def attend_with(client: Client, plan: dict, number: int, total: int) -> None:
    body = {
        "number": number,
        "date": f"2026-01-{5 + 7 * (number - 1):02d}",
        "status": "attended",
        "phq9_total": total,
    }
    assert client.post(plan_url(plan, "sessions"), json=body).status_code == 201


def test_completing_with_open_goals_is_refused_naming_each_and_changes_nothing(
    client: Client, database: Database, plan: dict
) -> None:
    goals = goals_of(client, plan)
    changes = count_rows(database, "plan_changes")
    response = client.patch(plan_url(plan), json={"status": "completed"})
    assert response.status_code == 422
    assert sorted(problem_fields(response)) == sorted(f"open_goals.{g['id']}" for g in goals)
    for goal in goals:
        assert any(goal["id"] in e["message"] for e in response.json()["errors"])
    assert client.get(plan_url(plan)).json()["status"] == "active"
    assert goals_of(client, plan) == goals
    assert count_rows(database, "plan_changes") == changes


def test_a_plan_whose_goals_are_finished_completes_without_open_goals(
    client: Client, plan: dict
) -> None:
    for goal in goals_of(client, plan):
        response = client.patch(
            plan_url(plan, "goals", goal["id"]),
            json={"lifecycle_status": "completed", "achievement_status": "achieved"},
        )
        assert response.status_code == 200, response.text
    assert client.patch(plan_url(plan), json={"status": "completed"}).status_code == 200


@pytest.mark.parametrize(
    ("totals", "achievement"),
    [
        ([18, 12, 4], "achieved"),
        ([18, 4, 3], "achieved"),  # sustaining: still achieved once the plan is done
        ([18, 12, 9], "not-achieved"),
        ([], "not-achieved"),
    ],
)
def test_resolve_completes_symptom_goals_from_their_last_score_and_the_others_not_achieved(
    client: Client, plan: dict, totals: list[int], achievement: str
) -> None:
    for number, total in enumerate(totals, start=1):
        attend_with(client, plan, number, total)
    response = client.patch(plan_url(plan), json={"status": "completed", "open_goals": "resolve"})
    assert response.status_code == 200, response.text
    goals = goals_of(client, plan)
    assert {g["lifecycle_status"] for g in goals} == {"completed"}
    assert symptom_goal(goals)["achievement_status"] == achievement
    others = [g["achievement_status"] for g in goals if g["kind"] != "symptom"]
    assert others and set(others) == {"not-achieved"}


def test_per_goal_outcomes_close_each_goal_as_the_clinician_says(
    client: Client, plan: dict
) -> None:
    goals = goals_of(client, plan)
    area = [g for g in goals if g["kind"] == "problem-area"]
    outcomes: dict[str, Any] = {g["id"]: "resolve" for g in goals}
    outcomes[area[0]["id"]] = {"lifecycle_status": "completed", "achievement_status": "achieved"}
    outcomes[area[1]["id"]] = {"lifecycle_status": "cancelled"}
    response = client.patch(
        plan_url(plan),
        json={"status": "completed", "open_goals": outcomes},
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.status_code == 200, response.text
    by_id = {g["id"]: g for g in goals_of(client, plan)}
    first, second = by_id[area[0]["id"]], by_id[area[1]["id"]]
    assert (first["lifecycle_status"], first["achievement_status"]) == ("completed", "achieved")
    assert first["achievement_source"] == "clinician"
    assert second["lifecycle_status"] == "cancelled"
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    closing = [c for c in changes if c["plan_version"] == response.json()["version"]]
    assert {c["entity_id"] for c in closing if c["entity"] == "goal"} == set(by_id)
    assert all(c["actor"] == "dr.rivera" for c in closing)


@pytest.mark.parametrize(
    ("open_goals", "field"),
    [
        ("close", "open_goals"),
        (["resolve"], "open_goals"),
        ({"no-such-goal": "resolve"}, "open_goals.no-such-goal"),
        ("OMIT_ONE", "open_goals.{first}"),
        ({"{first}": {"lifecycle_status": "active"}}, "open_goals.{first}.lifecycle_status"),
        ({"{first}": {"achievement_status": "great"}}, "open_goals.{first}.achievement_status"),
        ({"{first}": {"lifecycle_status": "completed", "why": 1}}, "open_goals.{first}"),
        ({"{first}": 3}, "open_goals.{first}"),
    ],
)
def test_bad_open_goals_are_refused_naming_the_goal_and_change_nothing(
    client: Client, database: Database, plan: dict, open_goals: Any, field: str
) -> None:
    goals = goals_of(client, plan)
    first = goals[0]["id"]
    if open_goals == "OMIT_ONE":
        open_goals = {g["id"]: "resolve" for g in goals[1:]}
    else:
        open_goals = json.loads(json.dumps(open_goals).replace("{first}", first))
    before = count_rows(database, "plan_changes")
    response = client.patch(plan_url(plan), json={"status": "completed", "open_goals": open_goals})
    assert response.status_code == 422, response.text
    assert field.replace("{first}", first) in problem_fields(response)
    assert client.get(plan_url(plan)).json()["status"] == "active"
    assert goals_of(client, plan) == goals
    assert count_rows(database, "plan_changes") == before


def test_open_goals_belong_to_a_completion_only(client: Client, plan: dict) -> None:
    response = client.patch(plan_url(plan), json={"status": "on-hold", "open_goals": "resolve"})
    assert response.status_code == 422
    assert problem_fields(response) == ["open_goals"]


def test_a_plan_on_hold_is_completed_the_same_way(client: Client, plan: dict) -> None:
    assert client.patch(plan_url(plan), json={"status": "on-hold"}).status_code == 200
    assert client.patch(plan_url(plan), json={"status": "completed"}).status_code == 422
    done = client.patch(plan_url(plan), json={"status": "completed", "open_goals": "resolve"})
    assert done.status_code == 200


def test_fhir_completion_with_open_goals_is_refused_naming_them(client: Client, plan: dict) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    episode["status"] = "completed"
    response = client.request(
        "PUT", f"/fhir/CarePlan/{plan['id']}", data=json.dumps(episode), headers=headers
    )
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issues = outcome["issue"]
    goals = goals_of(client, plan)
    assert len(issues) == len(goals)
    for goal in goals:
        assert any(goal["id"] in i["diagnostics"] for i in issues), issues
    assert {i["expression"][0] for i in issues} == {"CarePlan.status"}
    assert client.get(plan_url(plan)).json()["status"] == "active"
    # Finished through FHIR first, the Goals let the plan complete.
    for goal in goals:
        resource = client.get(f"/fhir/Goal/{goal['id']}").json()
        resource["lifecycleStatus"] = "cancelled"
        put = client.request(
            "PUT", f"/fhir/Goal/{goal['id']}", data=json.dumps(resource), headers=headers
        )
        assert put.status_code == 200, put.text
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    episode["status"] = "completed"
    done = client.request(
        "PUT", f"/fhir/CarePlan/{plan['id']}", data=json.dumps(episode), headers=headers
    )
    assert done.status_code == 200, done.text
    assert client.get(plan_url(plan)).json()["status"] == "completed"
