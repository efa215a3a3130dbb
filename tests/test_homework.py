"""Homework through HTTP: defaults, the rules of a task, its status, versions, deletion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

TASK = {
    "kind": "reconnect",
    "description": "Call your sister and suggest a walk.",
    "assigned_on": "2026-01-05",
    "due_on": "2026-01-12",
}


def today() -> date:
    return datetime.now(UTC).date()


def attend_first_session(client: Client, plan: dict[str, Any]) -> None:
    """Recording session 1 as attended makes the initial phase active."""
    response = client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    assert response.status_code == 201, response.text


def assign(client: Client, plan: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Assign a task in the initial phase unless ``fields`` say otherwise (None drops one)."""
    body = {k: v for k, v in {"phase": "initial", **TASK, **fields}.items() if v is not None}
    response = client.post(plan_url(plan, "homework"), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def read(client: Client, plan: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    response = client.get(plan_url(plan, "homework", task["id"]))
    assert response.status_code == 200, response.text
    return dict(response.json())


def change(
    client: Client, plan: dict[str, Any], task: dict[str, Any], **fields: Any
) -> requests.Response:
    return client.patch(plan_url(plan, "homework", task["id"]), json=fields)


def assert_refused(response: requests.Response, status: int, *fields: str) -> None:
    """A problem+json refusal with this status, naming exactly these fields (if any given)."""
    assert response.status_code == status, response.text
    named = problem_fields(response)
    if fields:
        assert sorted(set(named)) == sorted(fields), response.text


def state(client: Client, database: Database, plan: dict[str, Any]) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the homework, the rows, the plan."""
    listed = client.get(plan_url(plan, "homework"), params={"page_size": 100}).json()["items"]
    stored = (count_rows(database, "homework"), count_rows(database, "plan_changes"))
    return listed, stored, client.get(plan_url(plan)).json()["version"]


# --- assigning ------------------------------------------------------------------------------


def test_homework_defaults_to_the_active_phase_today_and_assigned(
    client: Client, database: Database, plan: dict
) -> None:
    attend_first_session(client, plan)
    before = today()
    response = client.post(
        plan_url(plan, "homework"),
        json={"kind": "observe-interaction", "description": "Notice who you talk to."},
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == plan_url(plan, "homework", task["id"])
    assert task["phase"] == "initial"
    assert task["assigned_on"] in {before.isoformat(), today().isoformat()}
    assert task["status"] == "assigned"
    assert (task["goal_id"], task["due_on"], task["patient_report"]) == (None, None, None)
    assert (task["plan_id"], task["version"], task["created_by"]) == (plan["id"], 1, "dr.rivera")
    assert read(client, plan, task) == task
    assert count_rows(database, "homework") == 1


def test_homework_joins_the_phase_in_progress(client: Client, plan: dict) -> None:
    attend_first_session(client, plan)
    client.post(
        plan_url(plan, "sessions"), json={"number": 4, "date": "2026-01-26", "status": "attended"}
    )
    task = assign(client, plan, phase=None)
    assert task["phase"] == "middle"
    named = assign(client, plan, phase="termination")
    assert named["phase"] == "termination"


def test_homework_without_an_active_phase_must_name_its_phase(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "homework"), json=TASK)
    assert_refused(response, 422, "phase")
    assert state(client, database, plan) == before
    assert assign(client, plan, phase="initial")["phase"] == "initial"


def test_due_date_before_the_assigned_date_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    early = client.post(
        plan_url(plan, "homework"), json={**TASK, "phase": "initial", "due_on": "2026-01-04"}
    )
    assert_refused(early, 422, "due_on")
    assert "2026-01-05" in early.json()["errors"][0]["message"]
    body = {"kind": "reconnect", "description": "x", "phase": "initial", "due_on": "2026-01-12"}
    before_today = client.post(plan_url(plan, "homework"), json=body)  # assigned today
    assert_refused(before_today, 422, "due_on")
    assert state(client, database, plan) == before
    due = (today() + timedelta(days=7)).isoformat()
    assert assign(client, plan, assigned_on=None, due_on=due)["due_on"] == due


def test_homework_may_serve_a_goal_of_its_plan(client: Client, plan: dict) -> None:
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    task = assign(client, plan, goal_id=goal["id"])
    assert task["goal_id"] == goal["id"]


def test_homework_for_a_goal_of_another_plan_or_a_deleted_goal_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    other = client.create_plan(patient="Patient/9")
    foreign = client.get(plan_url(other, "goals")).json()["items"][0]
    deleted = client.get(plan_url(plan, "goals")).json()["items"][0]
    assert client.delete(plan_url(plan, "goals", deleted["id"])).status_code == 204
    before = state(client, database, plan)
    for goal_id in (foreign["id"], deleted["id"], "no-such-goal"):
        response = client.post(
            plan_url(plan, "homework"), json={**TASK, "phase": "initial", "goal_id": goal_id}
        )
        assert_refused(response, 422, "goal_id")
    assert state(client, database, plan) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "meditate"}, "kind"),
        ({"kind": None}, "kind"),
        ({"description": ""}, "description"),
        ({"description": "   "}, "description"),
        ({"status": "started"}, "status"),
        ({"phase": "maintenance"}, "phase"),
        ({"phase": "first"}, "phase"),
        ({"phase": None}, "phase"),
        ({"assigned_on": "5 January"}, "assigned_on"),
        ({"patient_report": ""}, "patient_report"),
        ({"goal_id": 7}, "goal_id"),
        ({"colour": "blue"}, "colour"),
        ({"id": "mine"}, "id"),
        ({"version": 2}, "version"),
    ],
)
def test_invalid_homework_is_refused_naming_the_field_and_nothing_is_stored(
    client: Client, database: Database, plan: dict, fields: dict[str, Any], field: str
) -> None:
    attend_first_session(client, plan)
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "homework"), json={**TASK, **fields})
    assert_refused(response, 422, field)
    assert state(client, database, plan) == before


def test_homework_without_kind_or_description_is_refused_naming_both(
    client: Client, database: Database, plan: dict
) -> None:
    before = state(client, database, plan)
    response = client.post(plan_url(plan, "homework"), json={"phase": "initial"})
    assert_refused(response, 422, "description", "kind")
    assert state(client, database, plan) == before


def test_homework_of_an_unknown_plan_is_not_found(client: Client, database: Database) -> None:
    missing = {"id": "no-such-plan"}
    assert_refused(client.get(plan_url(missing, "homework")), 404)
    assert_refused(client.post(plan_url(missing, "homework"), json=TASK), 404)
    assert count_rows(database, "homework") == 0


# --- status -----------------------------------------------------------------------------------


def test_status_moves_from_assigned_through_in_progress_to_completed(
    client: Client, plan: dict
) -> None:
    task = assign(client, plan)
    started = change(client, plan, task, status="in-progress")
    assert started.status_code == 200, started.text
    assert (started.json()["status"], started.headers["ETag"]) == ("in-progress", '"2"')
    done = change(client, plan, task, status="completed", patient_report="We walked on Saturday.")
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["version"]) == ("completed", 3)
    assert done.json()["patient_report"] == "We walked on Saturday."
    assert read(client, plan, task) == done.json()


@pytest.mark.parametrize("final", ["completed", "not-done", "cancelled"])
def test_assigned_homework_may_finish_directly(client: Client, plan: dict, final: str) -> None:
    task = assign(client, plan)
    response = change(client, plan, task, status=final)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == final


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        (["completed"], "assigned"),
        (["completed"], "in-progress"),
        (["in-progress"], "assigned"),
        (["in-progress", "not-done"], "completed"),
        (["cancelled"], "assigned"),
    ],
)
def test_illegal_status_change_is_refused_and_changes_nothing(
    client: Client, database: Database, plan: dict, path: list[str], illegal: str
) -> None:
    task = assign(client, plan)
    for status in path:
        assert change(client, plan, task, status=status).status_code == 200
    before = state(client, database, plan)
    response = change(client, plan, task, status=illegal)
    assert_refused(response, 422, "status")
    assert path[-1] in response.json()["errors"][0]["message"]
    assert state(client, database, plan) == before


def test_after_completion_only_the_patient_report_can_change(
    client: Client, database: Database, plan: dict
) -> None:
    task = assign(client, plan)
    done = change(client, plan, task, status="completed").json()
    before = state(client, database, plan)
    for fields, field in [
        ({"description": "Call your brother instead."}, "description"),
        ({"due_on": "2026-01-20"}, "due_on"),
        ({"status": "assigned", "patient_report": "late"}, "status"),
        ({"kind": "other"}, "kind"),
    ]:
        assert_refused(change(client, plan, task, **fields), 422, field)
    assert state(client, database, plan) == before
    same = change(client, plan, task, status="completed", description=task["description"])
    assert same.status_code == 200
    assert same.json() == done
    report = change(client, plan, task, patient_report="It felt awkward, then good.")
    assert report.status_code == 200, report.text
    assert report.json()["patient_report"] == "It felt awkward, then good."
    assert report.json()["version"] == done["version"] + 1


# --- changing -----------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_sent(client: Client, plan: dict) -> None:
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    task = assign(client, plan)
    response = change(client, plan, task, goal_id=goal["id"], due_on="2026-01-19")
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["goal_id"], changed["due_on"], changed["version"]) == (
        goal["id"],
        "2026-01-19",
        2,
    )
    moved = {"goal_id", "due_on", "version", "updated_at"}
    assert {k: v for k, v in changed.items() if k not in moved} == {
        k: v for k, v in task.items() if k not in moved
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"due_on": "2026-01-01"}, "due_on"),
        ({"assigned_on": "2026-01-13"}, "due_on"),
        ({"goal_id": "no-such-goal"}, "goal_id"),
        ({"phase": "maintenance"}, "phase"),
        ({"description": ""}, "description"),
        ({"status": "paused"}, "status"),
        ({"plan_id": "another"}, "plan_id"),
    ],
)
def test_refused_patch_changes_nothing(
    client: Client, database: Database, plan: dict, fields: dict[str, Any], field: str
) -> None:
    task = assign(client, plan)
    before = state(client, database, plan)
    assert_refused(change(client, plan, task, **fields), 422, field)
    assert state(client, database, plan) == before


def test_patch_to_a_goal_of_another_plan_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    other = client.create_plan(patient="Patient/9")
    foreign = client.get(plan_url(other, "goals")).json()["items"][0]
    task = assign(client, plan)
    before = state(client, database, plan)
    assert_refused(change(client, plan, task, goal_id=foreign["id"]), 422, "goal_id")
    assert state(client, database, plan) == before


def test_patch_with_a_stale_if_match_is_refused_with_412_and_changes_nothing(
    client: Client, database: Database, plan: dict
) -> None:
    task = assign(client, plan)
    url = plan_url(plan, "homework", task["id"])
    assert client.patch(url, json={"status": "in-progress"}).status_code == 200
    before = state(client, database, plan)
    stale = client.patch(url, json={"status": "completed"}, headers={"If-Match": '"1"'})
    assert_refused(stale, 412)
    assert stale.headers["ETag"] == '"2"'
    assert state(client, database, plan) == before
    fresh = client.patch(url, json={"status": "completed"}, headers={"If-Match": '"2"'})
    assert fresh.status_code == 200
    assert fresh.json()["status"] == "completed"


def test_if_none_match_with_the_current_etag_answers_304(client: Client, plan: dict) -> None:
    task = assign(client, plan)
    url = plan_url(plan, "homework", task["id"])
    current = client.get(url, headers={"If-None-Match": '"1"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == '"1"'
    change(client, plan, task, status="in-progress")
    stale = client.get(url, headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    assert stale.json()["status"] == "in-progress"


def test_homework_of_another_plan_is_not_found_under_this_plan(
    client: Client, database: Database, plan: dict
) -> None:
    other = client.create_plan(patient="Patient/9")
    foreign = assign(client, other)
    url = plan_url(plan, "homework", foreign["id"])
    before = state(client, database, other)
    assert_refused(client.get(url), 404)
    assert_refused(client.patch(url, json={"status": "cancelled"}), 404)
    assert_refused(client.delete(url), 404)
    assert state(client, database, other) == before
    assert read(client, other, foreign) == foreign


def test_closed_plan_refuses_new_and_changed_homework(
    client: Client, database: Database, plan: dict
) -> None:
    task = assign(client, plan)
    assert (
        client.patch(
            plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
        ).status_code
        == 200
    )
    before = state(client, database, plan)
    assert_refused(client.post(plan_url(plan, "homework"), json={**TASK, "phase": "initial"}), 422)
    assert_refused(change(client, plan, task, status="completed"), 422)
    assert_refused(client.delete(plan_url(plan, "homework", task["id"])), 422)
    assert state(client, database, plan) == before


# --- deleting ---------------------------------------------------------------------------------


def test_deleted_homework_answers_410_but_stays_stored(
    client: Client, database: Database, plan: dict
) -> None:
    task = assign(client, plan)
    url = plan_url(plan, "homework", task["id"])
    stale = client.delete(url, headers={"If-Match": '"7"'})
    assert_refused(stale, 412)
    assert client.get(url).status_code == 200
    response = client.delete(url, headers={"If-Match": '"1"'})
    assert response.status_code == 204
    assert_refused(client.get(url), 410)
    assert_refused(client.patch(url, json={"patient_report": "done"}), 410)
    assert_refused(client.delete(url), 410)
    assert client.get(plan_url(plan, "homework")).json()["total"] == 0
    assert count_rows(database, "homework") == 1


def test_deleted_homework_no_longer_holds_its_goal(client: Client, plan: dict) -> None:
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    task = assign(client, plan, goal_id=goal["id"])
    assert_refused(client.delete(plan_url(plan, "goals", goal["id"])), 409)
    assert client.delete(plan_url(plan, "homework", task["id"])).status_code == 204
    assert client.delete(plan_url(plan, "goals", goal["id"])).status_code == 204


# --- listing ----------------------------------------------------------------------------------


def test_homework_list_is_paginated_in_the_order_assigned(client: Client, plan: dict) -> None:
    ids = [assign(client, plan, description=f"task {n}")["id"] for n in range(5)]
    first = client.get(plan_url(plan, "homework"), params={"page_size": 2})
    assert first.status_code == 200
    page = first.json()
    assert (page["total"], page["page"], page["page_size"]) == (5, 1, 2)
    assert page["links"]["prev"] is None
    assert page["links"]["next"].endswith("page=2&page_size=2")
    assert page["links"]["last"].endswith("page=3&page_size=2")
    seen, link = [t["id"] for t in page["items"]], page["links"]["next"]
    while link:
        page = client.get(link).json()
        seen += [t["id"] for t in page["items"]]
        link = page["links"]["next"]
    assert seen == ids
    assert (page["page"], len(page["items"])) == (3, 1)
    beyond = client.get(plan_url(plan, "homework"), params={"page": 4, "page_size": 2}).json()
    assert (beyond["items"], beyond["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page": 0}, "page"), ({"page_size": 101}, "page_size"), ({"sort": "due_on"}, "sort")],
)
def test_invalid_list_query_is_refused(
    client: Client, plan: dict, params: dict[str, Any], field: str
) -> None:
    response = client.get(plan_url(plan, "homework"), params=params)
    assert_refused(response, 422, field)
    assert response.json()["errors"][0]["location"] == "query"


def test_homework_cannot_be_assigned_before_the_plan_starts(client: Client, plan: dict) -> None:
    response = client.post(
        plan_url(plan, "homework"),
        json={
            "kind": "reflect-on-conversation",
            "description": "Think back on the argument",
            "phase": "initial",
            "assigned_on": "2025-12-01",
        },
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["assigned_on"]
