"""Goals through HTTP: the template goals, the rules of a goal, versions, deletion."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

SYMPTOM_GOAL = {
    "kind": "symptom",
    "description": "Response: PHQ-9 total at most 7 by session 8.",
    "priority": "high-priority",
    "target": {"measure": "44261-6", "comparator": "<=", "value": 7, "due_date": "2026-02-23"},
}
AREA_GOAL = {"kind": "problem-area", "problem_area": "grief", "description": "Revisit the loss."}


def goals_of(client: Client, plan: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get(plan_url(plan, "goals"), params={"page_size": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def add_goal(client: Client, plan: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post(plan_url(plan, "goals"), json={**SYMPTOM_GOAL, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def read_goal(client: Client, plan: dict[str, Any], goal: dict[str, Any]) -> dict[str, Any]:
    response = client.get(plan_url(plan, "goals", goal["id"]))
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_refused(response: requests.Response, status: int, *fields: str) -> None:
    """A problem+json refusal with this status, naming exactly these fields (if any given)."""
    assert response.status_code == status, response.text
    named = problem_fields(response)
    if fields:
        assert sorted(set(named)) == sorted(fields), response.text


def state(client: Client, database: Database, plan: dict[str, Any]) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the goals, the rows, the plan."""
    stored = (count_rows(database, "goals"), count_rows(database, "plan_changes"))
    return goals_of(client, plan), stored, client.get(plan_url(plan)).json()["version"]


# --- the template -----------------------------------------------------------------------------


def test_grief_plan_gets_two_grief_goals_and_a_phq9_symptom_goal(
    client: Client, plan: dict
) -> None:
    goals = goals_of(client, plan)
    assert [(g["kind"], g["problem_area"]) for g in goals] == [
        ("problem-area", "grief"),
        ("problem-area", "grief"),
        ("symptom", None),
    ]
    assert [g["description"] for g in goals[:2]] == [
        "Facilitate the mourning process.",
        "Help the patient re-establish interests and relationships that can partly "
        "substitute for what was lost.",
    ]
    symptom = goals[2]
    assert symptom["target"] == {
        "measure": "44261-6",
        "comparator": "<",
        "value": 5,
        "due_date": "2026-03-23",
    }
    assert symptom["phase"] is None
    assert {g["phase"] for g in goals[:2]} == {"middle"}
    assert {(g["lifecycle_status"], g["achievement_status"]) for g in goals} == {
        ("active", "in-progress")
    }
    assert {(g["start_date"], g["plan_id"], g["version"]) for g in goals} == {
        ("2026-01-05", plan["id"], 1)
    }


@pytest.mark.parametrize(
    ("area", "area_goals"),
    [("grief", 2), ("role-dispute", 3), ("role-transition", 3), ("interpersonal-deficits", 2)],
)
def test_each_problem_area_gets_its_canonical_goals_and_the_symptom_goal(
    client: Client, area: str, area_goals: int
) -> None:
    plan = client.create_plan(problem_areas=[area])
    goals = goals_of(client, plan)
    assert [g["problem_area"] for g in goals] == [area] * area_goals + [None]
    assert [g["kind"] for g in goals][-1] == "symptom"
    assert {g["priority"] for g in goals} == {"high-priority"}


def test_plan_created_without_default_goals_has_no_goals(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(default_goals=False)
    listed = client.get(plan_url(plan, "goals")).json()
    assert (listed["items"], listed["total"]) == ([], 0)
    assert count_rows(database, "goals") == 0


def test_draft_plan_goals_are_proposed_until_the_plan_is_activated(client: Client) -> None:
    draft = client.create_plan(status="draft")
    added = add_goal(client, draft)
    goals = goals_of(client, draft)
    assert len(goals) == 4
    assert {g["lifecycle_status"] for g in goals} == {"proposed"}
    assert client.patch(plan_url(draft), json={"status": "active"}).status_code == 200
    goals = goals_of(client, draft)
    assert {g["lifecycle_status"] for g in goals} == {"active"}
    activated = read_goal(client, draft, added)
    assert activated["version"] == added["version"] + 1


def test_goal_added_to_a_plan_on_hold_is_active(client: Client, plan: dict) -> None:
    assert client.patch(plan_url(plan), json={"status": "on-hold"}).status_code == 200
    goal = add_goal(client, plan)
    assert goal["lifecycle_status"] == "active"


# --- adding goals -----------------------------------------------------------------------------


def test_symptom_goal_with_a_target_is_added_with_defaults(
    client: Client, database: Database, plan: dict
) -> None:
    changes_before = count_rows(database, "plan_changes")
    response = client.post(
        plan_url(plan, "goals"), json=SYMPTOM_GOAL, headers={"X-Actor": "dr.rivera"}
    )
    assert response.status_code == 201, response.text
    goal = response.json()
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == plan_url(plan, "goals", goal["id"])
    assert goal["target"] == SYMPTOM_GOAL["target"]
    assert goal["kind"] == "symptom"
    assert goal["problem_area"] is None
    assert goal["lifecycle_status"] == "active"
    assert goal["start_date"] == plan["start_date"]
    assert goal["notes"] == []
    assert (goal["version"], goal["created_by"]) == (1, "dr.rivera")
    assert goal["updated_by"] == "dr.rivera"
    assert read_goal(client, plan, goal) == goal
    assert [g["id"] for g in goals_of(client, plan)][-1] == goal["id"]
    assert count_rows(database, "plan_changes") == changes_before + 1
    assert client.get(plan_url(plan)).json()["version"] == plan["version"] + 1


def test_problem_area_goal_for_an_area_of_the_plan_is_added(client: Client) -> None:
    plan = client.create_plan(
        problem_areas=["role-dispute", "role-transition"], dispute_stage="impasse"
    )
    goal = add_goal(
        client,
        plan,
        kind="problem-area",
        problem_area="role-transition",
        description="Take up one activity of the new role each week.",
        target=None,
        phase="middle",
        notes=[{"text": "agreed in session 3", "author": "dr.rivera"}],
    )
    assert (goal["problem_area"], goal["phase"], goal["target"]) == (
        "role-transition",
        "middle",
        None,
    )
    assert goal["notes"] == [{"text": "agreed in session 3", "author": "dr.rivera"}]


def test_target_value_may_use_the_whole_scale_to_three_decimals(client: Client, plan: dict) -> None:
    bdi = add_goal(client, plan, target={"measure": "89209-1", "comparator": "<", "value": 63})
    assert bdi["target"]["value"] == 63
    gad = add_goal(client, plan, target={"measure": "70274-6", "comparator": ">=", "value": 0})
    assert gad["target"]["value"] == 0
    fine = add_goal(client, plan, target={"measure": "44261-6", "comparator": "<", "value": 4.125})
    assert fine["target"]["value"] == 4.125
    assert read_goal(client, plan, fine)["target"]["value"] == 4.125


def test_goal_for_a_problem_area_outside_the_plan_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(
        plan_url(plan, "goals"), json={**AREA_GOAL, "problem_area": "role-dispute"}
    )
    assert_refused(response, 422, "problem_area")
    assert "role-dispute" in response.json()["errors"][0]["message"]
    assert state(client, database, plan) == before


def test_symptom_goal_with_a_problem_area_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "goals"), json={**SYMPTOM_GOAL, "problem_area": "grief"})
    assert_refused(response, 422, "problem_area")
    assert state(client, database, plan) == before


def test_problem_area_goal_without_its_area_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "goals"), json={**AREA_GOAL, "problem_area": None})
    assert_refused(response, 422, "problem_area")
    assert state(client, database, plan) == before


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"measure": "12345-6", "comparator": "<", "value": 5}, "target.measure"),
        ({"measure": "44261-6", "comparator": "<", "value": 28}, "target.value"),
        ({"measure": "44261-6", "comparator": ">", "value": -1}, "target.value"),
        ({"measure": "70274-6", "comparator": "<", "value": 22}, "target.value"),
        ({"measure": "44261-6", "comparator": "<", "value": "NaN"}, "target.value"),
        ({"measure": "44261-6", "comparator": "<", "value": "Infinity"}, "target.value"),
        ({"measure": "44261-6", "comparator": "<", "value": "4.9999"}, "target.value"),
        ({"measure": "44261-6", "comparator": ">", "value": 1e-9}, "target.value"),
        ({"measure": "44261-6", "comparator": "<", "value": "five"}, "target.value"),
        ({"measure": "44261-6", "comparator": "<", "value": True}, "target.value"),
        ({"measure": "44261-6", "comparator": "<"}, "target.value"),
        ({"comparator": "<", "value": 5}, "target.measure"),
        ({"measure": "44261-6", "comparator": "~", "value": 5}, "target.comparator"),
        ({"due_date": "2026-01-04"}, "target.due_date"),
        ({"due_date": "next month"}, "target.due_date"),
        ({"unit": "points"}, "target.unit"),
    ],
)
def test_invalid_target_is_refused_naming_its_field(
    client: Client, database: Database, plan: dict, target: dict[str, Any], field: str
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "goals"), json={**SYMPTOM_GOAL, "target": target})
    assert_refused(response, 422, field)
    assert state(client, database, plan) == before


def test_due_date_is_checked_against_the_goals_own_start_date(client: Client, plan: dict) -> None:
    late_start = {**SYMPTOM_GOAL, "start_date": "2026-03-01"}
    response = client.post(plan_url(plan, "goals"), json=late_start)
    assert_refused(response, 422, "target.due_date")
    assert "2026-03-01" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "behaviour"}, "kind"),
        ({"problem_area": "loneliness"}, "problem_area"),
        ({"lifecycle_status": "done"}, "lifecycle_status"),
        ({"achievement_status": "great"}, "achievement_status"),
        ({"priority": "urgent"}, "priority"),
        ({"phase": "final"}, "phase"),
        ({"phase": "maintenance"}, "phase"),
        ({"start_date": "2026-13-01"}, "start_date"),
        ({"notes": [{"text": "x", "time": "yesterday"}]}, "notes.0.time"),
        ({"notes": [{"text": "x", "by": "me"}]}, "notes.0.by"),
        ({"description": ""}, "description"),
        ({"colour": "blue"}, "colour"),
        ({"id": "my-own-id"}, "id"),
        ({"version": 3}, "version"),
    ],
)
def test_invalid_goal_is_refused_naming_the_field_and_nothing_is_stored(
    client: Client, database: Database, plan: dict, change: dict[str, Any], field: str
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "goals"), json={**SYMPTOM_GOAL, **change})
    assert_refused(response, 422, field)
    assert state(client, database, plan) == before


def test_goal_without_kind_or_description_is_refused_naming_both(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "goals"), json={"priority": "low-priority"})
    assert_refused(response, 422, "description", "kind")
    assert state(client, database, plan) == before


def test_every_broken_rule_of_a_goal_is_named_at_once(client: Client, plan: dict) -> None:
    response = client.post(
        plan_url(plan, "goals"),
        json={
            **AREA_GOAL,
            "problem_area": "role-dispute",
            "target": {"measure": "44261-6", "value": 99, "due_date": "2025-01-01"},
        },
    )
    assert_refused(response, 422, "problem_area", "target.value", "target.due_date")


def test_phase_must_be_a_phase_of_the_plan(client: Client) -> None:
    maintenance = client.create_plan(variant="maintenance", planned_sessions=None)
    response = client.post(plan_url(maintenance, "goals"), json={**SYMPTOM_GOAL, "phase": "middle"})
    assert_refused(response, 422, "phase")
    assert add_goal(client, maintenance, phase="maintenance")["phase"] == "maintenance"


def test_goals_of_an_unknown_or_deleted_plan_are_not_found_or_gone(
    client: Client, database: Database, plan: dict
) -> None:
    missing = {"id": "no-such-plan"}
    assert_refused(client.get(plan_url(missing, "goals")), 404)
    assert_refused(client.post(plan_url(missing, "goals"), json=SYMPTOM_GOAL), 404)
    goal = goals_of(client, plan)[0]
    assert client.delete(plan_url(plan)).status_code == 204
    goals_before = count_rows(database, "goals")
    assert_refused(client.post(plan_url(plan, "goals"), json=SYMPTOM_GOAL), 410)
    assert_refused(client.get(plan_url(plan, "goals", goal["id"])), 410)
    assert_refused(client.patch(plan_url(plan, "goals", goal["id"]), json={"notes": []}), 410)
    assert count_rows(database, "goals") == goals_before


# --- reading and changing -----------------------------------------------------------------------


def test_if_none_match_with_the_current_etag_answers_304(client: Client, plan: dict) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    current = client.get(url, headers={"If-None-Match": '"1"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == '"1"'
    assert current.content == b""
    client.patch(url, json={"priority": "low-priority"})
    stale = client.get(url, headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    assert stale.headers["ETag"] == '"2"'
    assert stale.json()["priority"] == "low-priority"


def test_patch_changes_only_the_fields_sent_and_bumps_version_and_etag(
    client: Client, plan: dict
) -> None:
    goal = add_goal(client, plan, notes=[{"text": "first"}])
    response = client.patch(
        plan_url(plan, "goals", goal["id"]),
        json={"achievement_status": "improving", "priority": "medium-priority"},
        headers={"X-Actor": "nurse.kim"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert response.headers["ETag"] == '"2"'
    assert changed["version"] == 2
    assert (changed["achievement_status"], changed["priority"]) == ("improving", "medium-priority")
    assert changed["updated_by"] == "nurse.kim"
    # A clinician's status stands until the next score of the goal's measure.
    assert (goal["achievement_source"], changed["achievement_source"]) == ("rules", "clinician")
    unchanged_fields = {
        "achievement_status",
        "achievement_source",
        "priority",
        "version",
        "updated_at",
        "updated_by",
    }
    assert {k: v for k, v in changed.items() if k not in unchanged_fields} == {
        k: v for k, v in goal.items() if k not in unchanged_fields
    }
    assert read_goal(client, plan, goal) == changed


def test_patch_replaces_the_target_as_a_whole(client: Client, plan: dict) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    bdi = {"measure": "89209-1", "comparator": "<", "value": 14}
    response = client.patch(url, json={"target": bdi})
    assert response.status_code == 200, response.text
    assert response.json()["target"] == {
        "measure": "89209-1",
        "comparator": "<",
        "value": 14,
        "due_date": None,
    }
    cleared = client.patch(url, json={"target": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["target"] is None
    assert cleared.json()["version"] == 3


def test_patch_that_changes_nothing_keeps_the_version(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    changes_before = count_rows(database, "plan_changes")
    response = client.patch(
        plan_url(plan, "goals", goal["id"]),
        json={"priority": goal["priority"], "target": goal["target"]},
    )
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"1"'
    assert response.json() == goal
    assert count_rows(database, "plan_changes") == changes_before


def test_goal_change_is_logged_with_its_fields_and_author(client: Client, plan: dict) -> None:
    goal = add_goal(client, plan)
    client.patch(
        plan_url(plan, "goals", goal["id"]),
        json={"lifecycle_status": "completed", "achievement_status": "achieved"},
        headers={"X-Actor": "dr.rivera"},
    )
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    mine = [c for c in changes if c["entity_id"] == goal["id"]]
    assert [(c["action"], c["fields"], c["actor"]) for c in mine] == [
        ("create", [], client.client_id),
        # The status is now the clinician's (achievement_source), not the rules'.
        ("update", ["achievement_manual", "achievement_status", "lifecycle_status"], "dr.rivera"),
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "symptom"}, "problem_area"),
        ({"problem_area": "role-dispute"}, "problem_area"),
        ({"problem_area": None}, "problem_area"),
        ({"target": {"measure": "44261-6", "comparator": "<", "value": 30}}, "target.value"),
        ({"start_date": "2026-04-01"}, "target.due_date"),
        ({"lifecycle_status": None}, "lifecycle_status"),
        ({"lifecycle_status": "finished"}, "lifecycle_status"),
        ({"description": ""}, "description"),
        ({"phase": "maintenance"}, "phase"),
        ({"plan_id": "another"}, "plan_id"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_refused_patch_changes_nothing(
    client: Client, database: Database, plan: dict, change: dict[str, Any], field: str
) -> None:
    goal = goals_of(client, plan)[0]  # the first grief goal, due 2026-03-23
    before = state(client, database, plan)
    response = client.patch(plan_url(plan, "goals", goal["id"]), json=change)
    assert_refused(response, 422, field)
    assert state(client, database, plan) == before


def test_patch_with_a_stale_if_match_is_refused_with_412_and_changes_nothing(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    assert client.patch(url, json={"description": "first"}).status_code == 200
    before = state(client, database, plan)
    stale = client.patch(url, json={"description": "second"}, headers={"If-Match": '"1"'})
    assert_refused(stale, 412)
    assert stale.headers["ETag"] == '"2"'
    assert state(client, database, plan) == before
    assert read_goal(client, plan, goal)["description"] == "first"
    fresh = client.patch(url, json={"description": "second"}, headers={"If-Match": 'W/"2"'})
    assert fresh.status_code == 200
    assert fresh.json()["description"] == "second"


def test_malformed_if_match_is_a_bad_request(client: Client, plan: dict) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    response = client.patch(url, json={"description": "x"}, headers={"If-Match": "version 1"})
    assert_refused(response, 400)
    assert read_goal(client, plan, goal) == goal


def test_goal_entered_in_error_can_no_longer_change(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    voided = client.patch(url, json={"lifecycle_status": "entered-in-error"})
    assert voided.status_code == 200, voided.text
    before = state(client, database, plan)
    for change, field in [
        ({"description": "rewritten"}, "description"),
        ({"lifecycle_status": "active"}, "lifecycle_status"),
        ({"notes": [{"text": "late note"}]}, "notes"),
        ({"target": None}, "target.measure"),
    ]:
        assert_refused(client.patch(url, json=change), 422, field)
    assert state(client, database, plan) == before
    same = client.patch(url, json={"description": goal["description"]})
    assert same.status_code == 200
    assert same.json() == voided.json()


def test_goal_of_another_plan_is_not_found_under_this_plan(
    client: Client, database: Database, plan: dict
) -> None:
    other = client.create_plan(patient="Patient/9")
    foreign = goals_of(client, other)[0]
    url = plan_url(plan, "goals", foreign["id"])
    before = state(client, database, other)
    assert_refused(client.get(url), 404)
    assert_refused(client.patch(url, json={"description": "hijacked"}), 404)
    assert_refused(client.delete(url), 404)
    assert state(client, database, other) == before
    assert_refused(client.get(plan_url(plan, "goals", "no-such-goal")), 404)


# --- deleting ---------------------------------------------------------------------------------


def test_deleted_goal_answers_410_but_stays_stored(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    stored = count_rows(database, "goals")
    response = client.delete(url, headers={"If-Match": '"1"'})
    assert response.status_code == 204
    assert response.content == b""
    assert_refused(client.get(url), 410)
    assert_refused(client.patch(url, json={"description": "again"}), 410)
    assert_refused(client.delete(url), 410)
    assert goal["id"] not in [g["id"] for g in goals_of(client, plan)]
    assert count_rows(database, "goals") == stored
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    assert [c["action"] for c in changes if c["entity_id"] == goal["id"]] == ["create", "delete"]


def test_delete_with_a_stale_if_match_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    client.patch(url, json={"priority": "low-priority"})
    before = state(client, database, plan)
    stale = client.delete(url, headers={"If-Match": '"1"'})
    assert_refused(stale, 412)
    assert stale.headers["ETag"] == '"2"'
    assert state(client, database, plan) == before


def test_goal_served_by_homework_cannot_be_deleted(
    client: Client, database: Database, plan: dict
) -> None:
    goal = add_goal(client, plan)
    url = plan_url(plan, "goals", goal["id"])
    homework = client.post(
        plan_url(plan, "homework"),
        json={
            "kind": "reconnect",
            "description": "Call your sister.",
            "phase": "initial",
            "goal_id": goal["id"],
        },
    ).json()
    before = state(client, database, plan)
    refused = client.delete(url)
    assert_refused(refused, 409)
    assert homework["id"] in refused.json()["detail"]
    assert state(client, database, plan) == before
    moved = client.patch(plan_url(plan, "homework", homework["id"]), json={"goal_id": None})
    assert moved.status_code == 200, moved.text
    assert client.delete(url).status_code == 204
    assert_refused(client.get(url), 410)


# --- closed plans -----------------------------------------------------------------------------


def test_closed_plan_refuses_new_goals_but_lets_goal_notes_change(
    client: Client, database: Database, plan: dict
) -> None:
    goal = goals_of(client, plan)[0]
    url = plan_url(plan, "goals", goal["id"])
    assert (
        client.patch(
            plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
        ).status_code
        == 200
    )
    before = state(client, database, plan)
    assert_refused(client.post(plan_url(plan, "goals"), json=SYMPTOM_GOAL), 422)
    assert_refused(client.patch(url, json={"achievement_status": "achieved"}), 422)
    assert_refused(
        client.patch(url, json={"notes": [{"text": "x"}], "description": "changed"}), 422
    )
    assert_refused(client.delete(url), 422)
    assert state(client, database, plan) == before
    notes = [{"text": "Mourning largely complete at the last session."}]
    # Completing the plan completed the goal (version 2).
    response = client.patch(url, json={"notes": notes}, headers={"If-Match": '"2"'})
    assert response.status_code == 200, response.text
    assert (response.json()["notes"], response.json()["version"]) == (notes, 3)
    assert read_goal(client, plan, goal)["notes"] == notes


def test_closed_plan_accepts_notes_sent_with_unchanged_fields(client: Client, plan: dict) -> None:
    goal = goals_of(client, plan)[0]
    assert (
        client.patch(
            plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
        ).status_code
        == 200
    )
    notes = [{"text": "Reviewed at discharge."}]
    response = client.patch(
        plan_url(plan, "goals", goal["id"]),
        json={"notes": notes, "description": goal["description"], "priority": goal["priority"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["notes"] == notes


def test_goal_list_is_paginated(client: Client, plan: dict) -> None:
    ids = [g["id"] for g in goals_of(client, plan)]
    ids += [add_goal(client, plan, description=f"goal {n}")["id"] for n in range(2)]
    first = client.get(plan_url(plan, "goals"), params={"page_size": 2}).json()
    assert (first["total"], first["page"], first["page_size"]) == (5, 1, 2)
    assert first["links"]["prev"] is None
    assert first["links"]["last"].endswith("page=3&page_size=2")
    seen, link = [g["id"] for g in first["items"]], first["links"]["next"]
    while link:
        page = client.get(link).json()
        seen += [g["id"] for g in page["items"]]
        link = page["links"]["next"]
    assert seen == ids
    beyond = client.get(plan_url(plan, "goals"), params={"page": 9, "page_size": 2}).json()
    assert (beyond["items"], beyond["total"]) == ([], 5)
    assert_refused(client.get(plan_url(plan, "goals"), params={"page_size": 0}), 422, "page_size")


def test_finished_goal_of_a_dropped_problem_area_still_takes_notes(client: Client) -> None:
    plan = client.create_plan(problem_areas=["grief", "role-transition"])
    transition = [g for g in goals_of(client, plan) if g["problem_area"] == "role-transition"]
    for goal in transition:
        cancelled = client.patch(
            plan_url(plan, "goals", goal["id"]), json={"lifecycle_status": "cancelled"}
        )
        assert cancelled.status_code == 200, cancelled.text
    assert client.patch(plan_url(plan), json={"problem_areas": ["grief"]}).status_code == 200
    url = plan_url(plan, "goals", transition[0]["id"])
    notes = [{"text": "Area dropped: the retirement went well."}]
    response = client.patch(url, json={"notes": notes})
    assert response.status_code == 200, response.text
    assert response.json()["notes"] == notes
    reopened = client.patch(url, json={"lifecycle_status": "active"})
    assert_refused(reopened, 422, "problem_area")
    assert read_goal(client, plan, transition[0])["lifecycle_status"] == "cancelled"
