"""FHIR writes over HTTP: create, update, JSON Patch, delete, conditional writes, Prefer.

Every resource the server answers with is checked by two FHIR R4 validators.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
import requests
from conftest import Client, plan_url
from test_concurrency import run_together
from test_fhir_read import assert_valid, outcome_code

from fhir_mappings import terminology as t

FHIR_JSON = "application/fhir+json"
PATCH_JSON = "application/json-patch+json"
Json = dict[str, Any]

CLINIC_TAG = {"system": "https://clinic.example.org/tags", "code": "reviewed"}
RESTRICTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "code": "R",
    "display": "restricted",
}
CLINIC_EXTENSION = {
    "url": "https://clinic.example.org/fhir/StructureDefinition/referral-source",
    "valueString": "GP referral",
}
CLINIC_NARRATIVE = {
    "status": "additional",
    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>IPT for grief, agreed with GP.</p></div>',
}
MRN_IDENTIFIER = {
    "use": "official",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
    "system": "https://clinic.example.org/care-plans",
    "value": "CP-2026-0042",
}


# --- helpers ------------------------------------------------------------------------------


def send(client: Client, method: str, path: str, body: Any, **headers: str) -> requests.Response:
    """A FHIR write; ``body`` is a resource, or a string sent as it is."""
    data = body if isinstance(body, str) else json.dumps(body)
    return client.request(method, path, data=data, headers={"Content-Type": FHIR_JSON, **headers})


def send_patch(
    client: Client, path: str, operations: list[Json], **headers: str
) -> requests.Response:
    return client.patch(
        path, data=json.dumps(operations), headers={"Content-Type": PATCH_JSON, **headers}
    )


def returned(response: requests.Response, status: int) -> Json:
    """The resource a write answered with: the expected status and valid FHIR R4."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"
    body = response.json()
    assert_valid(body)
    return dict(body)


def read(client: Client, reference: str) -> Json:
    return returned(client.get(f"/fhir/{reference}"), 200)


def content(resource: Json) -> Json:
    """A resource without what changes with each version (meta.versionId, lastUpdated)."""
    result = copy.deepcopy(resource)
    meta = result.get("meta", {})
    for key in ("versionId", "lastUpdated"):
        meta.pop(key, None)
    return result


def unprocessable(response: requests.Response) -> list[str]:
    """The FHIRPath expressions a 422 OperationOutcome names."""
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert_valid(outcome)
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def diagnostics(response: requests.Response) -> str:
    return " ".join(i.get("diagnostics", "") for i in response.json()["issue"])


def phase_ids(plan: Json) -> dict[str, str]:
    return {p["code"]: p["id"] for p in plan["phases"]}


def goal_ids(client: Client, plan: Json) -> list[str]:
    return [g["id"] for g in client.get(plan_url(plan, "goals")).json()["items"]]


def symptom_goal_id(client: Client, plan: Json) -> str:
    items = client.get(plan_url(plan, "goals")).json()["items"]
    return str(next(g["id"] for g in items if g["kind"] == "symptom"))


def new_episode(client: Client, plan: Json, **changes: Any) -> Json:
    """An episode body a client would POST: a read one without its server-owned parts."""
    episode = read(client, f"CarePlan/{plan['id']}")
    body = {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}
    return {**body, **changes}


def new_goal(client: Client, plan: Json, **changes: Any) -> Json:
    """A Goal body a client would POST for ``plan``: a read one without its server parts."""
    goal = read(client, f"Goal/{goal_ids(client, plan)[0]}")
    body = {k: v for k, v in goal.items() if k not in ("id", "meta", "text", "target")}
    body["description"] = {"text": "Return to the Tuesday choir within six weeks."}
    return {**body, **changes}


def with_identifier(resource: Json, system: str, value: str) -> Json:
    return {**resource, "identifier": [{"system": system, "value": value}]}


def search_ids(client: Client, resource_type: str, **params: str) -> list[str]:
    bundle = returned(client.get(f"/fhir/{resource_type}", params=params), 200)
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def version_id(resource: Json) -> str:
    return str(resource["meta"]["versionId"])


def session_activity(number: int, day: str, status: str = "scheduled") -> Json:
    """A new session activity (no id) as a client writes it."""
    return {
        "detail": {
            "extension": [{"url": t.EXT_SESSION_NUMBER, "valuePositiveInt": number}],
            "kind": "Appointment",
            "code": {"coding": [{"system": t.SNOMED, "code": t.IPT_SNOMED_CODE}]},
            "status": status,
            "scheduledPeriod": {"start": day, "end": day},
        }
    }


def homework_activity(patient: str, description: str) -> Json:
    """A new homework activity (no id) as a client writes it."""
    return {
        "detail": {
            "kind": "Task",
            "code": {"coding": [{"system": t.local("ipt-homework-kind").url, "code": "reconnect"}]},
            "status": "not-started",
            "scheduledPeriod": {"start": "2026-01-05", "end": "2026-01-12"},
            "performer": [{"reference": patient}],
            "description": description,
        }
    }


def activity_ids(phase: Json) -> list[str]:
    return [a["id"] for a in phase.get("activity", [])]


def sessions_of(client: Client, plan: Json) -> dict[int, Json]:
    items = client.get(plan_url(plan, "sessions")).json()["items"]
    return {s["number"]: s for s in items}


# --- round trips ----------------------------------------------------------------------------


def test_episode_put_keeps_every_element_the_domain_does_not_model(
    client: Client, plan: Json
) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    episode["meta"]["tag"] = [CLINIC_TAG]
    episode["meta"]["security"] = [RESTRICTED]
    episode["extension"].append(CLINIC_EXTENSION)
    episode["contributor"] = [{"reference": "Practitioner/77", "display": "Dr. Okafor"}]
    episode["text"] = CLINIC_NARRATIVE
    episode["identifier"] = [MRN_IDENTIFIER]

    response = send(client, "PUT", f"/fhir/CarePlan/{plan['id']}", episode, **{"If-Match": 'W/"1"'})

    updated = returned(response, 200)
    assert version_id(updated) == "2"
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Location"].endswith(f"/fhir/CarePlan/{plan['id']}/_history/2")
    assert content(updated) == content(episode)
    stored = read(client, f"CarePlan/{plan['id']}")
    assert content(stored) == content(episode)
    assert stored == updated
    # The domain keeps the identifier's system and value; the rest is kept beside it.
    assert client.get(plan_url(plan)).json()["identifiers"] == [
        {"system": MRN_IDENTIFIER["system"], "value": MRN_IDENTIFIER["value"]}
    ]


def test_goal_put_keeps_every_element_the_domain_does_not_model(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]
    goal = read(client, f"Goal/{goal_id}")
    goal["meta"]["tag"] = [CLINIC_TAG]
    goal["meta"]["security"] = [RESTRICTED]
    goal["extension"].append(CLINIC_EXTENSION)
    goal["expressedBy"] = {"reference": "Patient/123", "display": "the patient"}
    goal["text"] = CLINIC_NARRATIVE
    goal["identifier"] = [MRN_IDENTIFIER]

    response = send(client, "PUT", f"/fhir/Goal/{goal_id}", goal, **{"If-Match": 'W/"1"'})

    updated = returned(response, 200)
    assert version_id(updated) == "2"
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Location"].endswith(f"/fhir/Goal/{goal_id}/_history/2")
    assert content(updated) == content(goal)
    stored = read(client, f"Goal/{goal_id}")
    assert content(stored) == content(goal)
    assert stored == updated


def test_phase_put_with_sessions_and_homework_round_trips(client: Client, plan: Json) -> None:
    for number, status in ((1, "attended"), (2, "scheduled")):
        response = client.post(
            plan_url(plan, "sessions"),
            json={
                "number": number,
                "date": f"2026-01-{5 + 7 * (number - 1):02d}",
                "status": status,
                "phq9_total": 17 if status == "attended" else None,
                "techniques": ["nondirective-exploration"] if status == "attended" else [],
                "note": "Told the story of her mother's illness." if number == 1 else None,
            },
        )
        assert response.status_code == 201, response.text
    goal_id = goal_ids(client, plan)[0]
    response = client.post(
        plan_url(plan, "homework"),
        json={
            "phase": "initial",
            "goal_id": goal_id,
            "kind": "reconnect",
            "description": "Call her sister once this week.",
            "assigned_on": "2026-01-05",
            "due_on": "2026-01-12",
        },
    )
    assert response.status_code == 201, response.text
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    phase = read(client, reference)
    assert [a["detail"]["kind"] for a in phase["activity"]] == ["Appointment"] * 2 + ["Task"]
    version = int(version_id(phase))
    native_before = client.get(plan_url(plan)).json()
    sessions_before = sessions_of(client, plan)
    episode_before = read(client, f"CarePlan/{plan['id']}")
    phase["meta"]["tag"] = [CLINIC_TAG]
    phase["extension"].append(CLINIC_EXTENSION)
    phase["contributor"] = [{"reference": "Practitioner/77"}]
    phase["text"] = CLINIC_NARRATIVE
    phase["description"] = "Grief inventory and interpersonal inventory."

    response = send(client, "PUT", f"/fhir/{reference}", phase, **{"If-Match": f'W/"{version}"'})

    updated = returned(response, 200)
    assert version_id(updated) == str(version + 1)
    assert response.headers["ETag"] == f'W/"{version + 1}"'
    assert content(read(client, reference)) == content(phase)
    # The sessions and homework were matched by activity id: none was rewritten.
    assert activity_ids(updated) == activity_ids(phase)
    assert sessions_of(client, plan) == sessions_before
    assert read(client, f"CarePlan/{plan['id']}") == episode_before
    native_after = client.get(plan_url(plan)).json()
    assert native_after["version"] == native_before["version"] + 1
    [initial] = [p for p in native_after["phases"] if p["code"] == "initial"]
    assert initial["description"] == "Grief inventory and interpersonal inventory."


# --- both APIs see every change --------------------------------------------------------------


def test_fhir_writes_show_up_in_the_native_api_at_once(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    episode["description"] = "Complicated grief after her mother's death in March."
    returned(send(client, "PUT", f"/fhir/CarePlan/{plan['id']}", episode), 200)
    assert client.get(plan_url(plan)).json()["formulation"] == episode["description"]

    goal_id = goal_ids(client, plan)[0]
    goal = read(client, f"Goal/{goal_id}")
    goal["achievementStatus"] = {
        "coding": [{"system": t.GOAL_ACHIEVEMENT, "code": "improving", "display": "Improving"}]
    }
    goal["description"] = {"text": "Mourn her mother and rejoin her choir."}
    returned(send(client, "PUT", f"/fhir/Goal/{goal_id}", goal), 200)
    native_goal = client.get(plan_url(plan, "goals", goal_id)).json()
    assert native_goal["achievement_status"] == "improving"
    assert native_goal["description"] == "Mourn her mother and rejoin her choir."

    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    phase = read(client, reference)
    phase["activity"] = [session_activity(1, "2026-01-05")]
    written = returned(send(client, "PUT", f"/fhir/{reference}", phase), 200)
    session = sessions_of(client, plan)[1]
    assert session["date"] == "2026-01-05"
    assert session["status"] == "scheduled"
    assert activity_ids(written) == [f"session-{session['id']}"]


def test_native_changes_show_up_in_fhir_at_once(client: Client, plan: Json) -> None:
    response = client.patch(plan_url(plan), json={"formulation": "Grief, not depression alone."})
    assert response.status_code == 200, response.text
    episode = read(client, f"CarePlan/{plan['id']}")
    assert episode["description"] == "Grief, not depression alone."
    assert version_id(episode) == "2"
    goal_id = goal_ids(client, plan)[0]
    client.patch(plan_url(plan, "goals", goal_id), json={"lifecycle_status": "on-hold"})
    assert read(client, f"Goal/{goal_id}")["lifecycleStatus"] == "on-hold"


def test_native_change_keeps_what_a_fhir_client_wrote(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    episode["meta"]["tag"] = [CLINIC_TAG]
    episode["extension"].append(CLINIC_EXTENSION)
    returned(send(client, "PUT", f"/fhir/CarePlan/{plan['id']}", episode), 200)
    client.patch(plan_url(plan), json={"therapist": "Practitioner/9"})
    after = read(client, f"CarePlan/{plan['id']}")
    assert after["author"] == {"reference": "Practitioner/9"}
    assert after["meta"]["tag"] == [CLINIC_TAG]
    assert after["extension"][-1] == CLINIC_EXTENSION
    assert version_id(after) == "3"


# --- create ----------------------------------------------------------------------------------


def test_post_creates_an_episode_with_its_phases_and_no_template_goals(
    client: Client, plan: Json
) -> None:
    body = new_episode(client, plan, id="chosen-by-client", subject={"reference": "Patient/456"})

    response = send(client, "POST", "/fhir/CarePlan", body)

    created = returned(response, 201)
    new_id = created["id"]
    assert new_id not in (plan["id"], "chosen-by-client")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/CarePlan/{new_id}/_history/1")
    assert version_id(created) == "1"
    assert created["subject"] == {"reference": "Patient/456"}
    assert "goal" not in created
    native = client.get(f"/api/v1/care-plans/{new_id}").json()
    assert native["patient"] == "Patient/456"
    assert client.get(f"/api/v1/care-plans/{new_id}/goals").json()["items"] == []
    phases = search_ids(client, "CarePlan", **{"part-of": f"CarePlan/{new_id}"})
    assert sorted(phases) == sorted(p["id"] for p in native["phases"])
    assert len(phases) == 3
    for phase_id in phases:
        assert read(client, f"CarePlan/{phase_id}")["partOf"] == [
            {"reference": f"CarePlan/{new_id}"}
        ]


def test_post_of_a_phase_is_refused(client: Client, plan: Json) -> None:
    phase = read(client, f"CarePlan/{phase_ids(plan)['middle']}")
    body = {k: v for k, v in phase.items() if k not in ("id", "meta", "text")}
    plans_before = client.get("/api/v1/care-plans").json()["total"]

    response = send(client, "POST", "/fhir/CarePlan", body)

    assert "CarePlan.category" in unprocessable(response)
    assert client.get("/api/v1/care-plans").json()["total"] == plans_before


def test_post_goal_adds_it_to_its_episode(client: Client, plan: Json) -> None:
    response = send(client, "POST", "/fhir/Goal", new_goal(client, plan))

    created = returned(response, 201)
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Goal/{created['id']}/_history/1")
    assert created["id"] in goal_ids(client, plan)
    native = client.get(plan_url(plan, "goals", created["id"])).json()
    assert native["description"] == "Return to the Tuesday choir within six weeks."
    episode = read(client, f"CarePlan/{plan['id']}")
    assert {"reference": f"Goal/{created['id']}"} in episode["goal"]


def test_goal_writes_keep_every_identifier_and_contract_of_the_episode(client: Client) -> None:
    """A goal write re-renders its episode from the plan it locked: all of the plan's
    identifiers and treatment contracts (loaded with its row, several of each) are kept."""
    plan = client.create_plan(
        identifiers=[
            {"system": "https://clinic.example.org/care-plans", "value": "CP-1"},
            {"system": "https://clinic.example.org/referrals", "value": "R-7"},
            {"system": "urn:example:ehr", "value": "E-3"},
        ]
    )
    for sessions, reason in ((14, "slow progress"), (16, "a second loss")):
        renegotiated = client.patch(
            plan_url(plan),
            json={"planned_sessions": sessions, "contract_change_reason": reason},
        )
        assert renegotiated.status_code == 200, renegotiated.text
    before = read(client, f"CarePlan/{plan['id']}")

    created = returned(send(client, "POST", "/fhir/Goal", new_goal(client, plan)), 201)
    changed = {**created, "description": {"text": "Sing at the spring concert."}}
    response = send(client, "PUT", f"/fhir/Goal/{created['id']}", changed, **{"If-Match": 'W/"1"'})
    returned(response, 200)

    episode = read(client, f"CarePlan/{plan['id']}")
    assert [i["value"] for i in episode["identifier"]] == ["CP-1", "R-7", "E-3"]
    assert len(episode["identifier"]) == len(before["identifier"])

    def contracts(resource: Json) -> list[Json]:
        return [e for e in resource["extension"] if e["url"] == t.EXT_CONTRACT]

    assert len(contracts(episode)) == 3
    assert contracts(episode) == contracts(before)
    assert {"reference": f"Goal/{created['id']}"} in episode["goal"]
    assert "Sing at the spring concert." in episode["text"]["div"]


def test_post_goal_without_its_episode_extension_is_refused(client: Client, plan: Json) -> None:
    body = new_goal(client, plan)
    body["extension"] = [e for e in body["extension"] if e["url"] != t.EXT_GOAL_EPISODE]
    if not body["extension"]:
        del body["extension"]
    before = goal_ids(client, plan)

    response = send(client, "POST", "/fhir/Goal", body)

    assert "Goal.extension" in unprocessable(response)
    assert t.EXT_GOAL_EPISODE in diagnostics(response)
    assert goal_ids(client, plan) == before


# --- update: create-on-update and malformed requests ----------------------------------------


def test_put_with_a_new_id_creates_the_episode_then_updates_it(client: Client, plan: Json) -> None:
    body = new_episode(client, plan, id="ipt-ep-1", subject={"reference": "Patient/456"})

    first = send(client, "PUT", "/fhir/CarePlan/ipt-ep-1", body)

    created = returned(first, 201)
    assert created["id"] == "ipt-ep-1"
    assert first.headers["ETag"] == 'W/"1"'
    assert first.headers["Location"].endswith("/fhir/CarePlan/ipt-ep-1/_history/1")
    assert client.get("/api/v1/care-plans/ipt-ep-1").json()["patient"] == "Patient/456"

    second = send(client, "PUT", "/fhir/CarePlan/ipt-ep-1", {**body, "description": "Grief."})

    updated = returned(second, 200)
    assert second.headers["ETag"] == 'W/"2"'
    assert updated["description"] == "Grief."
    assert client.get("/api/v1/care-plans/ipt-ep-1").json()["formulation"] == "Grief."


def test_put_with_another_id_in_the_body_is_a_bad_request(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    episode["description"] = "changed"

    response = send(client, "PUT", "/fhir/CarePlan/some-other-id", episode)

    assert response.status_code == 400
    assert outcome_code(response) == "invalid"
    assert client.get("/fhir/CarePlan/some-other-id").status_code == 404
    assert "description" not in read(client, f"CarePlan/{plan['id']}")


def test_put_with_an_id_that_is_not_a_fhir_id_creates_nothing(client: Client, plan: Json) -> None:
    body = new_episode(client, plan, id="ipt_ep_1")
    response = send(client, "PUT", "/fhir/CarePlan/ipt_ep_1", body)
    assert unprocessable(response) == ["CarePlan.id"]
    assert client.get("/api/v1/care-plans").json()["total"] == 1


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{}", "text/plain", 415, "not-supported"),
        ("{}", "application/xml", 415, "not-supported"),
        ('{"resourceType": "CarePlan", ', FHIR_JSON, 400, "structure"),
        ("not json", "application/json", 400, "structure"),
    ],
)
def test_put_bodies_that_are_not_fhir_json_are_refused(
    client: Client, plan: Json, data: str, content_type: str, status: int, code: str
) -> None:
    response = client.request(
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        data=data,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert outcome_code(response) == code
    assert version_id(read(client, f"CarePlan/{plan['id']}")) == "1"


def test_a_body_of_another_resource_type_is_a_bad_request(client: Client, plan: Json) -> None:
    goal = read(client, f"Goal/{goal_ids(client, plan)[0]}")
    goal["id"] = plan["id"]
    put = send(client, "PUT", f"/fhir/CarePlan/{plan['id']}", goal)
    assert put.status_code == 400, put.text
    assert outcome_code(put) == "invalid"
    post = send(client, "POST", "/fhir/Goal", new_episode(client, plan))
    assert post.status_code == 400, post.text
    assert outcome_code(post) == "invalid"
    assert version_id(read(client, f"CarePlan/{plan['id']}")) == "1"
    assert len(goal_ids(client, plan)) == 3


def test_post_bodies_that_are_not_fhir_json_are_refused(client: Client, plan: Json) -> None:
    body = json.dumps(new_episode(client, plan))
    wrong_type = client.post("/fhir/CarePlan", data=body, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert outcome_code(wrong_type) == "not-supported"
    malformed = send(client, "POST", "/fhir/CarePlan", body[:-1])
    assert malformed.status_code == 400
    assert outcome_code(malformed) == "structure"
    assert "line 1, column" in malformed.json()["issue"][0]["diagnostics"]
    assert client.get("/api/v1/care-plans").json()["total"] == 1


# --- versioning --------------------------------------------------------------------------------


def test_stale_if_match_changes_nothing(client: Client, plan: Json) -> None:
    client.patch(plan_url(plan), json={"formulation": "second version"})
    reference = f"CarePlan/{plan['id']}"
    before = read(client, reference)
    assert version_id(before) == "2"
    stale = {"If-Match": 'W/"1"'}
    changed = {**before, "description": "stale writer"}

    put = send(client, "PUT", f"/fhir/{reference}", changed, **stale)
    patch = send_patch(
        client,
        f"/fhir/{reference}",
        [{"op": "replace", "path": "/description", "value": "x"}],
        **stale,
    )
    delete = client.delete(f"/fhir/{reference}", headers=stale)

    for response in (put, patch, delete):
        assert response.status_code == 412, response.text
        assert outcome_code(response) == "conflict"
    assert read(client, reference) == before
    assert client.get(plan_url(plan)).json()["formulation"] == "second version"


def test_stale_if_match_on_a_goal_changes_nothing(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]
    client.patch(plan_url(plan, "goals", goal_id), json={"achievement_status": "improving"})
    before = read(client, f"Goal/{goal_id}")
    response = send(
        client,
        "PUT",
        f"/fhir/Goal/{goal_id}",
        {**before, "lifecycleStatus": "completed"},
        **{"If-Match": 'W/"1"'},
    )
    assert response.status_code == 412, response.text
    assert read(client, f"Goal/{goal_id}") == before


@pytest.mark.parametrize("header", ["1", 'W/"one"', "W/1", '"1", "2"'])
def test_malformed_if_match_is_a_bad_request(client: Client, plan: Json, header: str) -> None:
    reference = f"CarePlan/{plan['id']}"
    episode = read(client, reference)
    put = send(
        client, "PUT", f"/fhir/{reference}", {**episode, "description": "x"}, **{"If-Match": header}
    )
    assert put.status_code == 400, put.text
    assert outcome_code(put) == "invalid"
    patch = send_patch(
        client,
        f"/fhir/{reference}",
        [{"op": "add", "path": "/description", "value": "x"}],
        **{"If-Match": header},
    )
    assert patch.status_code == 400, patch.text
    assert outcome_code(patch) == "invalid"
    delete = client.delete(f"/fhir/{reference}", headers={"If-Match": header})
    assert delete.status_code == 400, delete.text
    assert outcome_code(delete) == "invalid"
    assert read(client, reference) == episode


def test_matching_if_match_is_accepted_strong_or_weak(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{plan['id']}"
    episode = read(client, reference)
    weak = send(
        client,
        "PUT",
        f"/fhir/{reference}",
        {**episode, "description": "a"},
        **{"If-Match": 'W/"1"'},
    )
    assert returned(weak, 200)["description"] == "a"
    strong = send(
        client, "PUT", f"/fhir/{reference}", {**episode, "description": "b"}, **{"If-Match": '"2"'}
    )
    assert returned(strong, 200)["description"] == "b"
    assert strong.headers["ETag"] == 'W/"3"'


def test_an_update_that_changes_nothing_makes_no_new_version(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{plan['id']}"
    episode = read(client, reference)
    response = send(client, "PUT", f"/fhir/{reference}", episode)
    assert returned(response, 200) == episode
    assert response.headers["ETag"] == 'W/"1"'


# --- invalid writes -------------------------------------------------------------------------


def problem_area(code: str, rank: str) -> Json:
    return {
        "url": t.EXT_PROBLEM_AREA,
        "extension": [
            {
                "url": "area",
                "valueCoding": {"system": t.local("ipt-problem-area").url, "code": code},
            },
            {"url": "rank", "valueCode": rank},
        ],
    }


def _bogus_status(episode: Json) -> None:
    episode["status"] = "bogus"


def _order_intent(episode: Json) -> None:
    episode["intent"] = "order"


def _three_problem_areas(episode: Json) -> None:
    episode["extension"] += [
        problem_area("role-transition", "secondary"),
        problem_area("interpersonal-deficits", "secondary"),
    ]


def _another_patient(episode: Json) -> None:
    episode["subject"] = {"reference": "Patient/999"}


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (_bogus_status, "CarePlan.status"),
        (_order_intent, "CarePlan.intent"),
        (_three_problem_areas, f"CarePlan.extension('{t.EXT_PROBLEM_AREA}')"),
        (_another_patient, "CarePlan.subject"),
    ],
)
def test_invalid_episode_updates_are_refused_and_change_nothing(
    client: Client, plan: Json, change: Any, expression: str
) -> None:
    reference = f"CarePlan/{plan['id']}"
    before = read(client, reference)
    episode = copy.deepcopy(before)
    change(episode)
    episode["description"] = "must not be stored"

    response = send(client, "PUT", f"/fhir/{reference}", episode)

    assert expression in unprocessable(response)
    assert read(client, reference) == before
    native = client.get(plan_url(plan)).json()
    assert native["formulation"] is None
    assert native["version"] == 1


def test_goal_target_outside_the_phq9_range_is_refused(client: Client, plan: Json) -> None:
    goal_id = symptom_goal_id(client, plan)
    before = read(client, f"Goal/{goal_id}")
    goal = copy.deepcopy(before)
    goal["target"][0]["detailQuantity"]["value"] = 28
    goal["description"] = {"text": "must not be stored"}

    response = send(client, "PUT", f"/fhir/Goal/{goal_id}", goal)

    assert "Goal.target" in unprocessable(response)
    assert read(client, f"Goal/{goal_id}") == before
    assert client.get(plan_url(plan, "goals", goal_id)).json()["target"]["value"] == 5


def test_new_goal_with_a_target_outside_the_phq9_range_is_not_created(
    client: Client, plan: Json
) -> None:
    symptom = read(client, f"Goal/{symptom_goal_id(client, plan)}")
    target = copy.deepcopy(symptom["target"])
    target[0]["detailQuantity"]["value"] = -1
    response = send(client, "POST", "/fhir/Goal", new_goal(client, plan, target=target))
    assert "Goal.target" in unprocessable(response)
    assert len(goal_ids(client, plan)) == 3


def test_session_beyond_the_contract_is_refused(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{phase_ids(plan)['termination']}"
    before = read(client, reference)
    phase = copy.deepcopy(before)
    phase["activity"] = [session_activity(12, "2026-03-23"), session_activity(13, "2026-03-30")]

    response = send(client, "PUT", f"/fhir/{reference}", phase)

    assert f"CarePlan.activity[1].detail.extension('{t.EXT_SESSION_NUMBER}')" in unprocessable(
        response
    )
    assert read(client, reference) == before
    assert sessions_of(client, plan) == {}


def test_phase_moved_to_another_patient_is_refused(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    before = read(client, reference)
    response = send(
        client, "PUT", f"/fhir/{reference}", {**before, "subject": {"reference": "Patient/999"}}
    )
    assert "CarePlan.subject" in unprocessable(response)
    assert read(client, reference) == before


def test_goal_moved_to_another_patient_is_refused(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]
    before = read(client, f"Goal/{goal_id}")
    response = send(
        client, "PUT", f"/fhir/Goal/{goal_id}", {**before, "subject": {"reference": "Patient/999"}}
    )
    assert "Goal.subject" in unprocessable(response)
    assert read(client, f"Goal/{goal_id}") == before


# --- phase activities ----------------------------------------------------------------------


def test_phase_put_adds_changes_and_removes_sessions_and_homework(
    client: Client, plan: Json
) -> None:
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    path = f"/fhir/{reference}"
    phase = read(client, reference)

    # Add two sessions.
    phase["activity"] = [session_activity(1, "2026-01-05"), session_activity(2, "2026-01-12")]
    added = returned(send(client, "PUT", path, phase), 200)
    sessions = sessions_of(client, plan)
    assert activity_ids(added) == [f"session-{sessions[1]['id']}", f"session-{sessions[2]['id']}"]
    assert [s["status"] for s in sessions.values()] == ["scheduled", "scheduled"]

    # Session 1 took place: change its status through its activity.
    first = added["activity"][0]
    first["detail"]["status"] = "completed"
    first["detail"]["statusReason"] = {
        "coding": [{"system": t.local("ipt-session-status").url, "code": "attended"}]
    }
    first["detail"]["extension"].append({"url": t.EXT_PHQ9_TOTAL, "valueInteger": 16})
    first["progress"] = [{"text": "Reviewed the death of her mother."}]
    attended = returned(send(client, "PUT", path, added), 200)
    assert activity_ids(attended) == activity_ids(added)
    assert attended["activity"][0]["detail"]["status"] == "completed"
    session = client.get(plan_url(plan, "sessions", 1)).json()
    assert (session["status"], session["phq9_total"], session["note"]) == (
        "attended",
        16,
        "Reviewed the death of her mother.",
    )
    assert attended["status"] == "active"

    # Remove session 2: it is deleted.
    attended["activity"] = attended["activity"][:1]
    removed = returned(send(client, "PUT", path, attended), 200)
    assert activity_ids(removed) == activity_ids(added)[:1]
    assert client.get(plan_url(plan, "sessions", 2)).status_code == 410
    assert list(sessions_of(client, plan)) == [1]

    # Add homework: it gets a homework- id next to the session's.
    session_ids = activity_ids(removed)
    removed["activity"].append(homework_activity("Patient/123", "Call her sister."))
    with_homework = returned(send(client, "PUT", path, removed), 200)
    [task] = client.get(plan_url(plan, "homework")).json()["items"]
    assert task["phase"] == "initial"
    assert task["description"] == "Call her sister."
    assert activity_ids(with_homework) == [*session_ids, f"homework-{task['id']}"]

    # The ids stay the same in every later version.
    with_homework["description"] = "Interpersonal inventory."
    later = returned(send(client, "PUT", path, with_homework), 200)
    assert activity_ids(later) == activity_ids(with_homework)
    assert int(version_id(later)) == int(version_id(with_homework)) + 1
    history = returned(client.get(f"{path}/_history"), 200)
    assert len(history["entry"]) == int(version_id(later))


def test_removing_homework_activity_deletes_the_homework(client: Client, plan: Json) -> None:
    response = client.post(
        plan_url(plan, "homework"),
        json={"phase": "initial", "kind": "reconnect", "description": "Call her sister."},
    )
    assert response.status_code == 201, response.text
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    phase = read(client, reference)
    assert activity_ids(phase) == [f"homework-{response.json()['id']}"]
    del phase["activity"]
    returned(send(client, "PUT", f"/fhir/{reference}", phase), 200)
    assert client.get(plan_url(plan, "homework")).json()["items"] == []


def test_an_activity_id_of_another_phase_is_refused(client: Client, plan: Json) -> None:
    client.post(plan_url(plan, "sessions"), json={"number": 4, "date": "2026-01-26"})
    [activity] = read(client, f"CarePlan/{phase_ids(plan)['middle']}")["activity"]
    activity["detail"]["extension"][0] = {"url": t.EXT_SESSION_NUMBER, "valuePositiveInt": 2}
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    before = read(client, reference)

    response = send(client, "PUT", f"/fhir/{reference}", {**before, "activity": [activity]})

    assert unprocessable(response) == ["CarePlan.activity[0].id"]
    assert read(client, reference) == before
    assert list(sessions_of(client, plan)) == [4]


# --- JSON Patch -----------------------------------------------------------------------------


def test_json_patch_replaces_an_element(client: Client, plan: Json) -> None:
    path = f"/fhir/CarePlan/{plan['id']}"
    operations = [{"op": "add", "path": "/description", "value": "Grief after a loss."}]

    response = send_patch(client, path, operations, **{"If-Match": 'W/"1"'})

    patched = returned(response, 200)
    assert patched["description"] == "Grief after a loss."
    assert version_id(patched) == "2"
    assert response.headers["ETag"] == 'W/"2"'
    replaced = send_patch(
        client, path, [{"op": "replace", "path": "/description", "value": "Grief."}]
    )
    assert returned(replaced, 200)["description"] == "Grief."
    assert replaced.headers["ETag"] == 'W/"3"'
    assert client.get(plan_url(plan)).json()["formulation"] == "Grief."


def test_json_patch_of_a_goal(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]
    before = read(client, f"Goal/{goal_id}")
    after = copy.deepcopy(before)
    after["lifecycleStatus"] = "on-hold"
    operations = jsonpatch.make_patch(content(before), content(after)).patch
    patched = returned(send_patch(client, f"/fhir/Goal/{goal_id}", operations), 200)
    assert patched["lifecycleStatus"] == "on-hold"
    assert client.get(plan_url(plan, "goals", goal_id)).json()["lifecycle_status"] == "on-hold"


@pytest.mark.parametrize(
    ("operations", "expression"),
    [
        ([{"op": "replace", "path": "/status", "value": "bogus"}], "CarePlan.status"),
        ([{"op": "replace", "path": "/nothing/here", "value": "x"}], "CarePlan"),
        ([{"op": "remove", "path": "/period"}], "CarePlan.period.start"),
        ([{"op": "test", "path": "/status", "value": "draft"}], "CarePlan"),
        ([{"op": "replace", "path": "/id", "value": "another"}], "CarePlan"),
    ],
)
def test_json_patch_that_breaks_the_resource_is_refused(
    client: Client, plan: Json, operations: list[Json], expression: str
) -> None:
    reference = f"CarePlan/{plan['id']}"
    before = read(client, reference)
    response = send_patch(client, f"/fhir/{reference}", operations)
    assert expression in unprocessable(response)
    assert read(client, reference) == before


@pytest.mark.parametrize("content_type", [FHIR_JSON, "application/json", "text/plain"])
def test_json_patch_needs_its_media_type(client: Client, plan: Json, content_type: str) -> None:
    reference = f"CarePlan/{plan['id']}"
    response = client.patch(
        f"/fhir/{reference}",
        data=json.dumps([{"op": "add", "path": "/description", "value": "x"}]),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 415, response.text
    assert outcome_code(response) == "not-supported"
    assert "description" not in read(client, reference)


def test_json_patch_of_a_missing_resource_is_not_found(client: Client) -> None:
    response = send_patch(
        client, "/fhir/CarePlan/nothing", [{"op": "add", "path": "/description", "value": "x"}]
    )
    assert response.status_code == 404
    assert outcome_code(response) == "not-found"


# --- delete -----------------------------------------------------------------------------------


def test_delete_goal(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]

    response = client.delete(f"/fhir/Goal/{goal_id}", headers={"If-Match": 'W/"1"'})

    assert response.status_code == 204, response.text
    assert response.content == b""
    gone = client.get(f"/fhir/Goal/{goal_id}")
    assert gone.status_code == 410
    assert outcome_code(gone) == "deleted"
    assert client.get(plan_url(plan, "goals", goal_id)).status_code == 410
    assert goal_id not in goal_ids(client, plan)
    episode = read(client, f"CarePlan/{plan['id']}")
    assert {"reference": f"Goal/{goal_id}"} not in episode["goal"]
    assert client.delete(f"/fhir/Goal/{goal_id}").status_code == 204
    never = client.delete("/fhir/Goal/never-was")
    assert never.status_code == 404
    assert outcome_code(never) == "not-found"


def test_a_deleted_goal_cannot_be_updated(client: Client, plan: Json) -> None:
    goal_id = goal_ids(client, plan)[0]
    goal = read(client, f"Goal/{goal_id}")
    assert client.delete(f"/fhir/Goal/{goal_id}").status_code == 204
    response = send(client, "PUT", f"/fhir/Goal/{goal_id}", goal)
    assert response.status_code == 410, response.text
    assert outcome_code(response) == "deleted"
    assert client.get(f"/fhir/Goal/{goal_id}").status_code == 410


def test_delete_of_a_phase_is_refused(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{phase_ids(plan)['middle']}"
    before = read(client, reference)
    response = client.delete(f"/fhir/{reference}")
    assert response.status_code == 422, response.text
    assert outcome_code(response) == "business-rule"
    assert read(client, reference) == before


def test_delete_episode_deletes_its_phases_and_goals(client: Client, plan: Json) -> None:
    goals = goal_ids(client, plan)

    response = client.delete(f"/fhir/CarePlan/{plan['id']}", headers={"If-Match": 'W/"1"'})

    assert response.status_code == 204, response.text
    references = [f"CarePlan/{plan['id']}"]
    references += [f"CarePlan/{p}" for p in phase_ids(plan).values()]
    references += [f"Goal/{g}" for g in goals]
    for reference in references:
        gone = client.get(f"/fhir/{reference}")
        assert gone.status_code == 410, reference
        assert outcome_code(gone) == "deleted"
    assert client.get(plan_url(plan)).status_code == 410
    history = returned(client.get(f"/fhir/CarePlan/{plan['id']}/_history"), 200)
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert history["entry"][0]["response"]["etag"] == 'W/"2"'
    assert search_ids(client, "CarePlan", patient="Patient/123") == []


# --- conditional create and update -------------------------------------------------------------


def test_conditional_create_makes_one_episode(client: Client, plan: Json) -> None:
    body = with_identifier(new_episode(client, plan), "urn:x", "A")
    header = {"If-None-Exist": "identifier=urn:x|A"}

    first = send(client, "POST", "/fhir/CarePlan", body, **header)
    created = returned(first, 201)
    second = send(client, "POST", "/fhir/CarePlan", {**body, "description": "x"}, **header)
    existing = returned(second, 200)

    assert existing == created
    assert "description" not in existing
    assert second.headers["ETag"] == 'W/"1"'
    assert search_ids(client, "CarePlan", identifier="urn:x|A") == [created["id"]]


def test_parallel_conditional_creates_make_one_episode(client: Client, plan: Json) -> None:
    body = json.dumps(with_identifier(new_episode(client, plan), "urn:x", "A"))
    header = {"If-None-Exist": "identifier=urn:x|A"}

    responses = run_together(
        *[(lambda: send(client, "POST", "/fhir/CarePlan", body, **header)) for _ in range(20)]
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    ids = {returned(r, r.status_code)["id"] for r in responses}
    assert len(ids) == 1
    assert search_ids(client, "CarePlan", identifier="urn:x|A") == list(ids)
    assert client.get("/api/v1/care-plans").json()["total"] == 2


def test_conditional_create_makes_one_goal(client: Client, plan: Json) -> None:
    body = with_identifier(new_goal(client, plan), "urn:x", "A")
    header = {"If-None-Exist": "identifier=urn:x|A"}

    first = returned(send(client, "POST", "/fhir/Goal", body, **header), 201)
    second = returned(send(client, "POST", "/fhir/Goal", body, **header), 200)

    assert second["id"] == first["id"]
    assert first["identifier"] == [{"system": "urn:x", "value": "A"}]
    assert search_ids(client, "Goal", identifier="urn:x|A") == [first["id"]]


def test_parallel_conditional_creates_make_one_goal(client: Client, plan: Json) -> None:
    body = json.dumps(with_identifier(new_goal(client, plan), "urn:x", "A"))
    header = {"If-None-Exist": "identifier=urn:x|A"}

    responses = run_together(
        *[(lambda: send(client, "POST", "/fhir/Goal", body, **header)) for _ in range(20)]
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    ids = {returned(r, r.status_code)["id"] for r in responses}
    assert len(ids) == 1
    assert search_ids(client, "Goal", identifier="urn:x|A") == list(ids)
    assert len(goal_ids(client, plan)) == 4


def test_conditional_create_matching_several_is_refused(client: Client, plan: Json) -> None:
    for value in ("1", "2"):
        body = with_identifier(new_goal(client, plan), "urn:x", value)
        returned(send(client, "POST", "/fhir/Goal", body), 201)
    body = with_identifier(new_goal(client, plan), "urn:x", "3")
    response = send(client, "POST", "/fhir/Goal", body, **{"If-None-Exist": "identifier=urn:x|"})
    assert response.status_code == 412, response.text
    assert outcome_code(response) == "conflict"
    assert len(goal_ids(client, plan)) == 5


def test_conditional_create_with_unknown_criteria_is_a_bad_request(
    client: Client, plan: Json
) -> None:
    body = new_episode(client, plan)
    response = send(client, "POST", "/fhir/CarePlan", body, **{"If-None-Exist": "colour=red"})
    assert response.status_code == 400, response.text
    assert outcome_code(response) == "invalid"
    assert client.get("/api/v1/care-plans").json()["total"] == 1


def test_conditional_update_creates_then_updates(client: Client, plan: Json) -> None:
    body = with_identifier(new_episode(client, plan), "urn:x", "B")

    first = send(client, "PUT", "/fhir/CarePlan?identifier=urn:x|B", body)
    created = returned(first, 201)
    assert first.headers["ETag"] == 'W/"1"'
    second = send(
        client, "PUT", "/fhir/CarePlan?identifier=urn:x|B", {**body, "description": "Grief."}
    )
    updated = returned(second, 200)

    assert updated["id"] == created["id"]
    assert updated["description"] == "Grief."
    assert second.headers["ETag"] == 'W/"2"'
    assert search_ids(client, "CarePlan", identifier="urn:x|B") == [created["id"]]
    assert client.get("/api/v1/care-plans").json()["total"] == 2


def test_conditional_update_with_another_id_in_the_body_is_refused(
    client: Client, plan: Json
) -> None:
    body = with_identifier(new_episode(client, plan), "urn:x", "B")
    created = returned(send(client, "PUT", "/fhir/CarePlan?identifier=urn:x|B", body), 201)
    response = send(client, "PUT", "/fhir/CarePlan?identifier=urn:x|B", {**body, "id": plan["id"]})
    assert response.status_code == 400, response.text
    assert outcome_code(response) == "invalid"
    assert read(client, f"CarePlan/{created['id']}") == created


# --- Prefer ---------------------------------------------------------------------------------


def test_prefer_return_minimal(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    response = send(
        client,
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        {**episode, "description": "minimal"},
        Prefer="return=minimal",
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Location"].endswith(f"/fhir/CarePlan/{plan['id']}/_history/2")
    created = send(client, "POST", "/fhir/Goal", new_goal(client, plan), Prefer="return=minimal")
    assert created.status_code == 201
    assert created.content == b""
    assert created.headers["ETag"] == 'W/"1"'
    goal_id = created.headers["Location"].split("/Goal/")[1].split("/")[0]
    assert goal_id in goal_ids(client, plan)


def test_prefer_return_operation_outcome(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    response = send(
        client,
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        {**episode, "description": "outcome"},
        Prefer="return=OperationOutcome",
    )
    assert response.status_code == 200
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert_valid(outcome)
    assert outcome["issue"][0]["severity"] == "information"
    assert plan["id"] in outcome["issue"][0]["diagnostics"]
    assert response.headers["ETag"] == 'W/"2"'
    assert read(client, f"CarePlan/{plan['id']}")["description"] == "outcome"
    created = send(
        client,
        "POST",
        "/fhir/CarePlan",
        new_episode(client, plan),
        Prefer="return=OperationOutcome",
    )
    assert created.status_code == 201
    assert outcome_code(created) == "informational"
    new_id = created.headers["Location"].split("/CarePlan/")[1].split("/")[0]
    assert new_id in created.json()["issue"][0]["diagnostics"]
    assert version_id(read(client, f"CarePlan/{new_id}")) == "1"


def test_prefer_return_representation_is_the_default(client: Client, plan: Json) -> None:
    episode = read(client, f"CarePlan/{plan['id']}")
    response = send(
        client,
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        {**episode, "description": "full"},
        Prefer="return=representation",
    )
    assert returned(response, 200) == read(client, f"CarePlan/{plan['id']}")
