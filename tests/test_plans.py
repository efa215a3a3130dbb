"""Care plans through HTTP: the template, the rules, listing, versions, deletion."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

PLANS = "/api/v1/care-plans"


def test_minimal_plan_is_created_from_the_template(client: Client) -> None:
    response = client.post(
        PLANS,
        json={
            "patient": "Patient/123",
            "problem_areas": ["grief"],
            "planned_sessions": 12,
            "start_date": "2026-01-05",
        },
    )
    assert response.status_code == 201
    plan = response.json()
    assert response.headers["ETag"] == f'"{plan["version"]}"'
    assert response.headers["Location"] == f"{PLANS}/{plan['id']}"
    assert plan["status"] == "active"
    assert plan["variant"] == "standard"
    assert plan["session_frequency"] == "weekly"
    assert plan["expected_end_date"] == "2026-03-23"  # 11 weeks after the first session
    assert [
        (p["code"], p["start_session"], p["end_session"], p["status"]) for p in plan["phases"]
    ] == [
        ("initial", 1, 3, "not-started"),
        ("middle", 4, 9, "not-started"),
        ("termination", 10, 12, "not-started"),
    ]
    assert [(c["sequence"], c["planned_sessions"]) for c in plan["contract_history"]] == [(1, 12)]
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    assert [(g["kind"], g["problem_area"], g["priority"]) for g in goals] == [
        ("problem-area", "grief", "high-priority"),
        ("problem-area", "grief", "high-priority"),
        ("symptom", None, "high-priority"),
    ]
    symptom = goals[2]
    assert symptom["target"] == {
        "measure": "44261-6",
        "comparator": "<",
        "value": 5,
        "due_date": "2026-03-23",
    }
    assert goals[0]["description"] == "Facilitate the mourning process."


def test_variant_sets_the_default_contract(client: Client) -> None:
    brief = client.create_plan(variant="brief", planned_sessions=None)
    assert brief["planned_sessions"] == 8
    maintenance = client.create_plan(variant="maintenance", planned_sessions=None)
    assert (maintenance["planned_sessions"], maintenance["session_frequency"]) == (12, "monthly")
    assert [p["code"] for p in maintenance["phases"]] == ["maintenance"]


def test_two_problem_areas_give_both_areas_goals_with_the_secondary_at_medium_priority(
    client: Client,
) -> None:
    plan = client.create_plan(
        problem_areas=["role-dispute", "role-transition"], dispute_stage="impasse"
    )
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    areas = [(g["problem_area"], g["priority"]) for g in goals if g["kind"] == "problem-area"]
    assert (
        areas
        == [("role-dispute", "high-priority")] * 3 + [("role-transition", "medium-priority")] * 3
    )
    assert plan["dispute_stage"] == "impasse"


def test_no_default_goals_when_the_caller_asks_for_none(client: Client) -> None:
    plan = client.create_plan(default_goals=False)
    assert client.get(plan_url(plan, "goals")).json()["total"] == 0


def test_a_full_plan_keeps_every_field(client: Client) -> None:
    body = {
        "patient": "https://ehr.example.org/fhir/Patient/p-9",
        "problem_areas": ["role-transition"],
        "planned_sessions": 16,
        "session_frequency": "weekly",
        "start_date": "2026-02-02",
        "end_date": "2026-06-01",
        "condition": "Condition/mdd-1",
        "therapist": "PractitionerRole/42",
        "formulation": "Low mood since retirement; lost structure and colleagues.",
        "relapse_prevention": {
            "warning_signs": ["Staying in bed past 10"],
            "actions": ["Call the walking group"],
            "contacts": [
                {"name": "Daughter", "relationship": "daughter", "telecom": "+44 20 7946 0000"}
            ],
        },
        "notes": [
            {
                "text": "Prefers morning sessions",
                "author": "dr.rivera",
                "time": "2026-02-02T09:00:00+00:00",
            }
        ],
        "identifiers": [{"system": "urn:oid:1.2.3", "value": "IPT-1"}],
    }
    created = client.post(PLANS, json=body).json()
    read = client.get(f"{PLANS}/{created['id']}").json()
    for name, value in body.items():
        assert read[name] == value, name
    assert read["expected_end_date"] == "2026-06-01"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"problem_areas": ["grief", "role-dispute", "role-transition"]}, "problem_areas"),
        ({"problem_areas": []}, "problem_areas"),
        ({"problem_areas": ["grief", "grief"]}, "problem_areas.1"),
        ({"problem_areas": ["sadness"]}, "problem_areas.0"),
        ({"problem_areas": ["grief", "interpersonal-deficits"]}, "problem_areas"),
        ({"dispute_stage": "impasse"}, "dispute_stage"),
        ({"planned_sessions": 60}, "planned_sessions"),
        ({"planned_sessions": 5}, "planned_sessions"),
        ({"status": "completed"}, "status"),
        ({"status": "finished"}, "status"),
        ({"variant": "online"}, "variant"),
        ({"session_frequency": "daily"}, "session_frequency"),
        ({"patient": "123"}, "patient"),
        ({"patient": "Practitioner/1"}, "patient"),
        ({"therapist": "Patient/1"}, "therapist"),
        ({"condition": "not a reference"}, "condition"),
        ({"end_date": "2026-01-01"}, "end_date"),
        ({"start_date": "05/01/2026"}, "start_date"),
        (
            {"identifiers": [{"system": "urn:x", "value": "1"}, {"system": "urn:x", "value": "1"}]},
            "identifiers.1",
        ),
        ({"notes": [{"text": "x", "time": "yesterday"}]}, "notes.0.time"),
        (
            {"relapse_prevention": {"contacts": [{"relationship": "friend"}]}},
            "relapse_prevention.contacts.0.name",
        ),
        ({"colour": "blue"}, "colour"),
        ({"patient": None}, "patient"),
    ],
)
def test_invalid_plan_is_refused_naming_the_field_and_nothing_is_stored(
    client: Client, database: Database, change: dict[str, Any], field: str
) -> None:
    body = {
        "patient": "Patient/123",
        "problem_areas": ["grief"],
        "start_date": "2026-01-05",
        **change,
    }
    response = client.post(PLANS, json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert count_rows(database, "care_plans") == 0
    assert count_rows(database, "goals") == 0


def test_missing_required_fields_are_all_named(client: Client) -> None:
    response = client.post(PLANS, json={})
    assert response.status_code == 422
    assert set(problem_fields(response)) == {"patient", "problem_areas", "start_date"}


def test_body_that_is_not_json_is_refused(client: Client, database: Database) -> None:
    wrong_type = client.post(
        PLANS, data="patient=Patient/1", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.headers["Content-Type"].startswith("application/problem+json")
    broken = client.post(PLANS, data="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert broken.json()["status"] == 400
    assert count_rows(database, "care_plans") == 0


def test_body_over_the_size_limit_is_refused_with_413(client: Client, database: Database) -> None:
    huge = {
        "patient": "Patient/1",
        "problem_areas": ["grief"],
        "start_date": "2026-01-05",
        "formulation": "x" * 70_000,
    }
    response = client.post(PLANS, json=huge)
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert count_rows(database, "care_plans") == 0


def test_identifier_of_another_plan_is_a_conflict(client: Client, database: Database) -> None:
    identifier = {"system": "urn:oid:1.2.3", "value": "IPT-7"}
    first = client.create_plan(identifiers=[identifier])
    again = client.post(
        PLANS,
        json={
            "patient": "Patient/9",
            "problem_areas": ["grief"],
            "start_date": "2026-01-05",
            "identifiers": [identifier],
        },
    )
    assert again.status_code == 409
    # The identifier is named, not the plan that holds it: that may be another patient's.
    assert "urn:oid:1.2.3|IPT-7" in again.json()["detail"]
    assert first["id"] not in again.text
    assert count_rows(database, "care_plans") == 1
    other = client.create_plan(patient="Patient/9")
    taken = client.patch(f"{PLANS}/{other['id']}", json={"identifiers": [identifier]})
    assert taken.status_code == 409
    assert client.get(f"{PLANS}/{other['id']}").json()["identifiers"] == []


def test_read_unknown_plan_is_404_with_problem_details(client: Client) -> None:
    response = client.get(f"{PLANS}/no-such-plan")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:ipt-careplans:problem:not-found"


def test_if_none_match_with_the_current_version_answers_304(client: Client, plan: dict) -> None:
    current = client.get(plan_url(plan), headers={"If-None-Match": f'"{plan["version"]}"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == f'"{plan["version"]}"'
    stale = client.get(plan_url(plan), headers={"If-None-Match": '"999"'})
    assert stale.status_code == 200


def test_patch_changes_only_the_fields_sent_and_records_who(client: Client, plan: dict) -> None:
    response = client.patch(
        plan_url(plan),
        json={"formulation": "Grief after her father died.", "therapist": "Practitioner/42"},
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.status_code == 200
    changed = response.json()
    assert changed["formulation"] == "Grief after her father died."
    assert changed["therapist"] == "Practitioner/42"
    assert changed["problem_areas"] == ["grief"]
    assert changed["version"] == plan["version"] + 1
    assert response.headers["ETag"] == f'"{changed["version"]}"'
    assert changed["updated_by"] == "dr.rivera"
    assert changed["created_by"] == client.client_id
    cleared = client.patch(plan_url(plan), json={"therapist": None}).json()
    assert cleared["therapist"] is None


def test_patch_with_nothing_new_keeps_the_version(client: Client, plan: dict) -> None:
    response = client.patch(plan_url(plan), json={"problem_areas": ["grief"]})
    assert response.status_code == 200
    assert response.json()["version"] == plan["version"]


def test_stale_if_match_is_refused_with_412_and_changes_nothing(client: Client, plan: dict) -> None:
    client.patch(plan_url(plan), json={"formulation": "first"})
    stale = client.patch(
        plan_url(plan), json={"formulation": "second"}, headers={"If-Match": f'"{plan["version"]}"'}
    )
    assert stale.status_code == 412
    assert stale.headers["ETag"] == f'"{plan["version"] + 1}"'
    assert client.get(plan_url(plan)).json()["formulation"] == "first"
    fresh = client.patch(
        plan_url(plan),
        json={"formulation": "second"},
        headers={"If-Match": f'W/"{plan["version"] + 1}"'},
    )
    assert fresh.status_code == 200


def test_malformed_if_match_is_a_bad_request(client: Client, plan: dict) -> None:
    response = client.patch(plan_url(plan), json={"formulation": "x"}, headers={"If-Match": "v1"})
    assert response.status_code == 400
    assert client.get(plan_url(plan)).json()["formulation"] is None


def test_renegotiating_the_contract_keeps_the_old_one(client: Client, plan: dict) -> None:
    response = client.patch(
        plan_url(plan),
        json={
            "planned_sessions": 16,
            "session_frequency": "weekly",
            "contract_change_reason": "slow progress",
        },
    )
    assert response.status_code == 200
    changed = response.json()
    assert [
        (c["sequence"], c["planned_sessions"], c["reason"]) for c in changed["contract_history"]
    ] == [
        (1, 12, None),
        (2, 16, "slow progress"),
    ]
    assert [(p["code"], p["start_session"], p["end_session"]) for p in changed["phases"]] == [
        ("initial", 1, 3),
        ("middle", 4, 13),
        ("termination", 14, 16),
    ]


def plan_change_fields(client: Client, plan: dict) -> list[list[str]]:
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    return [c["fields"] for c in changes if c["entity"] == "care_plan" and c["action"] == "update"]


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        ({"planned_sessions": 16}, ["planned_sessions"]),
        ({"session_frequency": "fortnightly"}, ["session_frequency"]),
        (
            {"planned_sessions": 14, "session_frequency": "fortnightly"},
            ["planned_sessions", "session_frequency"],
        ),
        (
            {"planned_sessions": 16, "session_frequency": "weekly", "therapist": None},
            ["planned_sessions"],
        ),
        (
            {"planned_sessions": 16, "formulation": "Grief after her father's death."},
            ["planned_sessions", "formulation"],
        ),
    ],
)
def test_the_change_log_lists_only_the_fields_that_changed(
    client: Client, plan: dict, change: dict[str, Any], logged: list[str]
) -> None:
    assert client.patch(plan_url(plan), json=change).status_code == 200
    assert [sorted(fields) for fields in plan_change_fields(client, plan)] == [sorted(logged)]


def test_a_change_to_the_values_already_held_logs_nothing(client: Client, plan: dict) -> None:
    same = {"planned_sessions": 12, "session_frequency": "weekly", "problem_areas": ["grief"]}
    response = client.patch(plan_url(plan), json=same)
    assert response.status_code == 200
    assert response.json()["version"] == plan["version"]
    assert plan_change_fields(client, plan) == []


def test_contract_change_reason_without_a_contract_change_is_refused(
    client: Client, plan: dict
) -> None:
    response = client.patch(plan_url(plan), json={"contract_change_reason": "why not"})
    assert response.status_code == 422
    assert problem_fields(response) == ["contract_change_reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"patient": "Patient/999"}, "patient"),
        ({"variant": "maintenance"}, "variant"),
        ({"status": "bogus"}, "status"),
        ({"problem_areas": ["grief", "role-dispute", "role-transition"]}, "problem_areas"),
        ({"planned_sessions": 100}, "planned_sessions"),
        ({"end_date": "2025-12-31"}, "end_date"),
        ({"id": "other"}, "id"),
        ({"version": 7}, "version"),
    ],
)
def test_invalid_patch_changes_nothing(
    client: Client, database: Database, plan: dict, change: dict[str, Any], field: str
) -> None:
    changes_before = count_rows(database, "plan_changes")
    response = client.patch(plan_url(plan), json=change)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert client.get(plan_url(plan)).json() == plan | {"links": plan["links"]}
    assert count_rows(database, "plan_changes") == changes_before


def test_illegal_status_change_is_refused(client: Client, plan: dict) -> None:
    assert (
        client.patch(
            plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
        ).status_code
        == 200
    )
    back = client.patch(plan_url(plan), json={"status": "active"})
    assert back.status_code == 422
    assert problem_fields(back) == ["status"]
    assert "completed" in back.json()["errors"][0]["message"]


def test_completed_plan_accepts_only_note_changes(client: Client, plan: dict) -> None:
    client.patch(plan_url(plan), json={"status": "completed", "open_goals": "resolve"})
    refused = client.patch(
        plan_url(plan),
        json={"formulation": "rewritten", "notes": [{"text": "follow-up in 3 months"}]},
    )
    assert refused.status_code == 422
    assert problem_fields(refused) == ["formulation"]
    notes = client.patch(plan_url(plan), json={"notes": [{"text": "follow-up in 3 months"}]})
    assert notes.status_code == 200
    assert notes.json()["notes"] == [{"text": "follow-up in 3 months"}]
    assert client.patch(plan_url(plan), json={"status": "entered-in-error"}).status_code == 200
    final = client.patch(plan_url(plan), json={"status": "completed", "open_goals": "resolve"})
    assert final.status_code == 422


def test_completing_a_plan_completes_its_phase_in_progress(client: Client, plan: dict) -> None:
    client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    completed = client.patch(
        plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
    ).json()
    assert [p["status"] for p in completed["phases"]] == ["completed", "not-started", "not-started"]


def test_activating_a_draft_plan_activates_its_proposed_goals(client: Client) -> None:
    draft = client.create_plan(status="draft")
    goals = client.get(plan_url(draft, "goals")).json()["items"]
    assert {g["lifecycle_status"] for g in goals} == {"proposed"}
    client.patch(plan_url(draft), json={"status": "active"})
    goals = client.get(plan_url(draft, "goals")).json()["items"]
    assert {(g["lifecycle_status"], g["achievement_status"]) for g in goals} == {
        ("active", "in-progress")
    }


def test_dropping_a_problem_area_with_open_goals_is_refused(client: Client) -> None:
    plan = client.create_plan(problem_areas=["grief", "role-transition"])
    refused = client.patch(plan_url(plan), json={"problem_areas": ["grief"]})
    assert refused.status_code == 422
    assert problem_fields(refused) == ["problem_areas"]
    for goal in client.get(plan_url(plan, "goals")).json()["items"]:
        if goal["problem_area"] == "role-transition":
            client.patch(
                plan_url(plan, "goals", goal["id"]), json={"lifecycle_status": "cancelled"}
            )
    assert client.patch(plan_url(plan), json={"problem_areas": ["grief"]}).status_code == 200


def test_dispute_stage_goes_with_the_dispute(client: Client) -> None:
    plan = client.create_plan(
        problem_areas=["role-dispute"], dispute_stage="renegotiation", default_goals=False
    )
    changed = client.patch(plan_url(plan), json={"problem_areas": ["grief"]}).json()
    assert changed["dispute_stage"] is None


def test_delete_keeps_the_plan_stored_but_answers_410(
    client: Client, database: Database, plan: dict
) -> None:
    stale = client.delete(plan_url(plan), headers={"If-Match": '"99"'})
    assert stale.status_code == 412
    response = client.delete(plan_url(plan), headers={"If-Match": f'"{plan["version"]}"'})
    assert response.status_code == 204
    assert client.get(plan_url(plan)).status_code == 410
    assert client.get(plan_url(plan, "goals")).status_code == 410
    assert client.patch(plan_url(plan), json={"notes": []}).status_code == 410
    assert client.get(PLANS, params={"patient": "Patient/123"}).json()["total"] == 0
    assert count_rows(database, "care_plans") == 1


def test_list_filters_by_every_criterion(client: Client) -> None:
    grief = client.create_plan(patient="Patient/1", identifiers=[{"system": "urn:c", "value": "A"}])
    dispute = client.create_plan(
        patient="Patient/1", problem_areas=["role-dispute", "role-transition"], status="draft"
    )
    brief = client.create_plan(patient="Patient/2", variant="brief", planned_sessions=8)

    def ids(**params: Any) -> list[str]:
        response = client.get(PLANS, params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["items"]]

    assert ids(patient="Patient/1") == [grief["id"], dispute["id"]]
    assert ids(status="draft") == [dispute["id"]]
    assert ids(status=["draft", "active"], patient="Patient/1") == [grief["id"], dispute["id"]]
    assert ids(problem_area="role-transition") == [dispute["id"]]
    assert ids(variant="brief") == [brief["id"]]
    assert ids(identifier="urn:c|A") == [grief["id"]]
    assert ids(identifier="A") == [grief["id"]]
    assert ids(identifier="urn:other|A") == []
    assert ids(updated_since=brief["updated_at"]) == [brief["id"]]
    client.patch(plan_url(grief), json={"formulation": "changed"})
    assert ids(updated_since=brief["updated_at"]) == [grief["id"], brief["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "finished"}, "status.0"),
        ({"updated_since": "2026-01-01T00:00:00"}, "updated_since"),
        ({"page_size": 500}, "page_size"),
        ({"page": 0}, "page"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_list_query_is_refused(client: Client, params: dict[str, Any], field: str) -> None:
    response = client.get(PLANS, params=params)
    assert response.status_code == 422
    assert field in problem_fields(response)
    assert response.json()["errors"][0]["location"] == "query"


def test_list_pages_have_a_total_and_links(client: Client) -> None:
    created = [client.create_plan(patient="Patient/5", default_goals=False)["id"] for _ in range(5)]
    first = client.get(PLANS, params={"patient": "Patient/5", "page_size": 2}).json()
    assert first["total"] == 5
    assert first["links"]["prev"] is None
    seen = [p["id"] for p in first["items"]]
    link = first["links"]["next"]
    while link:
        page = client.get(link).json()
        seen += [p["id"] for p in page["items"]]
        link = page["links"]["next"]
    assert seen == created
    assert "patient=Patient%2F5" in first["links"]["last"]
    assert first["links"]["last"].endswith("page=3&page_size=2")


def test_change_log_records_every_change_with_its_author(client: Client, plan: dict) -> None:
    client.patch(plan_url(plan), json={"formulation": "x"}, headers={"X-Actor": "dr.rivera"})
    client.post(
        plan_url(plan, "sessions"),
        json={"number": 1, "date": "2026-01-05", "status": "attended"},
        headers={"X-Actor": "nurse.kim"},
    )
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    created = [c for c in changes if c["plan_version"] == 1]
    assert {c["entity"] for c in created} == {"care_plan", "phase", "goal"}
    formulation = [c for c in changes if c["fields"] == ["formulation"]]
    assert [(c["entity"], c["actor"], c["plan_version"]) for c in formulation] == [
        ("care_plan", "dr.rivera", 2)
    ]
    session = [c for c in changes if c["entity"] == "session"]
    assert [(c["action"], c["actor"], c["plan_version"]) for c in session] == [
        ("create", "nurse.kim", 3)
    ]
    assert any(c["entity"] == "phase" and c["plan_version"] == 3 for c in changes)


def test_invalid_actor_header_is_a_bad_request(client: Client, database: Database) -> None:
    response = client.post(
        PLANS,
        json={"patient": "Patient/1", "problem_areas": ["grief"], "start_date": "2026-01-05"},
        headers={"X-Actor": "<script>"},
    )
    assert response.status_code == 400
    assert count_rows(database, "care_plans") == 0


def test_unknown_route_and_method_answer_problem_details(client: Client, plan: dict) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    wrong = client.request("PUT", plan_url(plan), json={})
    assert wrong.status_code == 405
    assert "PATCH" in wrong.headers["Allow"]


def test_deleting_a_plan_releases_its_identifiers(client: Client) -> None:
    identifier = {"system": "urn:oid:1.2.3", "value": "IPT-9"}
    first = client.create_plan(identifiers=[identifier])
    assert client.delete(plan_url(first)).status_code == 204
    second = client.create_plan(identifiers=[identifier])
    found = client.get(PLANS, params={"identifier": "urn:oid:1.2.3|IPT-9"}).json()["items"]
    assert [p["id"] for p in found] == [second["id"]]
