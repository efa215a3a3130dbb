"""The FHIR view of the plans: read, vread, history, conditional reads, formats, metadata."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import fhirkit
import pytest
import requests
from conftest import Client, plan_url
from fhir.resources.R4B import get_fhir_model_class

from fhir_mappings import terminology
from fhir_mappings.parse import validate_structure

FHIR_JSON = "application/fhir+json"


def assert_valid(resource: dict[str, Any]) -> None:
    """Valid FHIR R4 for two independent validators, with codes from the required value
    sets; a Bundle's resources too."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    errors = [i for i in fhirkit.validate(resource) if i.severity == "error"]
    assert errors == [], [(i.path, i.message) for i in errors]
    if resource["resourceType"] in ("CarePlan", "Goal"):
        validate_structure(resource, resource["resourceType"])
    for entry in resource.get("entry", []) if resource["resourceType"] == "Bundle" else []:
        if "resource" in entry:
            assert_valid(entry["resource"])


def fhir_get(client: Client, path: str, **kwargs: Any) -> requests.Response:
    response = client.get(f"/fhir/{path}", **kwargs)
    if response.status_code == 200:
        assert response.headers["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"
        assert_valid(response.json())
    return response


def outcome_code(response: requests.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert_valid(body)
    return str(body["issue"][0]["code"])


def phases_of(plan: dict[str, Any]) -> dict[str, str]:
    return {p["code"]: p["id"] for p in plan["phases"]}


def test_a_new_plan_is_readable_as_episode_phase_and_goal_resources(
    client: Client, plan: dict
) -> None:
    episode = fhir_get(client, f"CarePlan/{plan['id']}")
    assert episode.status_code == 200
    assert episode.headers["ETag"] == 'W/"1"'
    assert episode.headers["Last-Modified"].endswith("GMT")
    body = episode.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["profile"] == [terminology.EPISODE_PROFILE]
    assert body["subject"] == {"reference": "Patient/123"}
    assert body["text"]["status"] == "generated"
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    assert sorted(g["reference"] for g in body["goal"]) == sorted(f"Goal/{g['id']}" for g in goals)
    for phase_id in phases_of(plan).values():
        phase = fhir_get(client, f"CarePlan/{phase_id}").json()
        assert phase["partOf"] == [{"reference": f"CarePlan/{plan['id']}"}]
        assert phase["meta"]["profile"] == [terminology.PHASE_PROFILE]
    for goal in goals:
        resource = fhir_get(client, f"Goal/{goal['id']}").json()
        assert resource["description"]["text"] == goal["description"]


def test_native_changes_appear_in_fhir_at_once_and_only_where_content_changed(
    client: Client, plan: dict
) -> None:
    client.patch(plan_url(plan), json={"formulation": "Grief after her father's death."})
    episode = fhir_get(client, f"CarePlan/{plan['id']}").json()
    assert episode["meta"]["versionId"] == "2"
    assert episode["description"] == "Grief after her father's death."
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    client.patch(plan_url(plan, "goals", goal["id"]), json={"achievement_status": "improving"})
    assert fhir_get(client, f"Goal/{goal['id']}").json()["meta"]["versionId"] == "2"
    assert fhir_get(client, f"CarePlan/{plan['id']}").json()["meta"]["versionId"] == "2"
    client.post(
        plan_url(plan, "sessions"),
        json={"number": 1, "date": "2026-01-05", "status": "attended", "phq9_total": 16},
    )
    initial = fhir_get(client, f"CarePlan/{phases_of(plan)['initial']}").json()
    assert initial["status"] == "active"
    assert initial["meta"]["versionId"] == "2"
    [activity] = initial["activity"]
    assert activity["detail"]["kind"] == "Appointment"
    assert activity["detail"]["status"] == "completed"


def test_every_version_stays_readable(client: Client, plan: dict) -> None:
    client.patch(plan_url(plan), json={"formulation": "second"})
    first = fhir_get(client, f"CarePlan/{plan['id']}/_history/1")
    assert first.status_code == 200
    assert "description" not in first.json()
    assert first.headers["ETag"] == 'W/"1"'
    second = fhir_get(client, f"CarePlan/{plan['id']}/_history/2").json()
    assert second["description"] == "second"
    missing = client.get(f"/fhir/CarePlan/{plan['id']}/_history/3")
    assert missing.status_code == 404
    assert outcome_code(missing) == "not-found"


def test_conditional_read_answers_304(client: Client, plan: dict) -> None:
    path = f"/fhir/CarePlan/{plan['id']}"
    current = client.get(path, headers={"If-None-Match": 'W/"1"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == 'W/"1"'
    assert client.get(path, headers={"If-None-Match": 'W/"7"'}).status_code == 200
    later = format_datetime(datetime.now(UTC) + timedelta(minutes=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert client.get(path, headers={"If-Modified-Since": later}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": earlier}).status_code == 200


def test_deleted_plan_answers_410_and_its_history_keeps_every_version(
    client: Client, plan: dict
) -> None:
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    client.delete(plan_url(plan))
    for path in (
        f"CarePlan/{plan['id']}",
        f"CarePlan/{phases_of(plan)['middle']}",
        f"Goal/{goal_id}",
    ):
        gone = client.get(f"/fhir/{path}")
        assert gone.status_code == 410, path
        assert outcome_code(gone) == "deleted"
    assert fhir_get(client, f"CarePlan/{plan['id']}/_history/1").status_code == 200
    assert client.get(f"/fhir/CarePlan/{plan['id']}/_history/2").status_code == 410
    history = fhir_get(client, f"CarePlan/{plan['id']}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert [e["response"]["status"] for e in history["entry"]] == ["204", "201"]
    assert "resource" not in history["entry"][0]


def test_unknown_resources_and_types_answer_operation_outcomes(client: Client) -> None:
    missing = client.get("/fhir/CarePlan/does-not-exist")
    assert missing.status_code == 404
    assert outcome_code(missing) == "not-found"
    unsupported = client.get("/fhir/Patient/1")
    assert unsupported.status_code == 404
    assert outcome_code(unsupported) == "not-supported"


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"_format": "xml"}, {}), ({}, {"Accept": "application/fhir+xml"})],
)
def test_formats_other_than_json_are_not_acceptable(
    client: Client, plan: dict, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = client.get(f"/fhir/CarePlan/{plan['id']}", params=params, headers=headers)
    assert response.status_code == 406
    assert outcome_code(response) == "not-supported"


@pytest.mark.parametrize("fmt", ["json", "application/fhir+json", "application/json"])
def test_json_formats_are_accepted(client: Client, plan: dict, fmt: str) -> None:
    response = client.get(f"/fhir/CarePlan/{plan['id']}", params={"_format": fmt})
    assert response.status_code == 200


def test_pretty_printing_on_request(client: Client, plan: dict) -> None:
    compact = client.get(f"/fhir/CarePlan/{plan['id']}")
    pretty = client.get(f"/fhir/CarePlan/{plan['id']}", params={"_pretty": "true"})
    assert "\n" not in compact.text
    assert "\n  " in pretty.text
    assert pretty.json() == compact.json()


def test_history_entries_are_complete_for_create_update_and_delete(
    client: Client, plan: dict
) -> None:
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    first = fhir_get(client, f"Goal/{goal_id}").json()
    assert client.patch(plan_url(plan, "goals", goal_id), json={"priority": "low-priority"}).ok
    second = fhir_get(client, f"Goal/{goal_id}").json()
    assert client.delete(plan_url(plan, "goals", goal_id)).status_code == 204
    history = fhir_get(client, f"Goal/{goal_id}/_history").json()
    base = client.base_url + "/fhir"
    deleted, updated, created = history["entry"]
    assert set(deleted) == {"fullUrl", "request", "response"}
    assert deleted["fullUrl"] == f"{base}/Goal/{goal_id}"
    assert deleted["request"] == {"method": "DELETE", "url": f"Goal/{goal_id}"}
    assert deleted["response"]["status"] == "204"
    assert deleted["response"]["etag"] == 'W/"3"'
    assert updated == {
        "fullUrl": f"{base}/Goal/{goal_id}",
        "request": {"method": "PUT", "url": f"Goal/{goal_id}"},
        "response": {
            "status": "200",
            "etag": 'W/"2"',
            "lastModified": second["meta"]["lastUpdated"],
        },
        "resource": second,
    }
    assert created == {
        "fullUrl": f"{base}/Goal/{goal_id}",
        "request": {"method": "POST", "url": "Goal"},
        "response": {
            "status": "201",
            "etag": 'W/"1"',
            "lastModified": first["meta"]["lastUpdated"],
        },
        "resource": first,
    }


def test_history_pages_newest_first_without_skipping_or_repeating(client: Client) -> None:
    plans = [client.create_plan(patient=f"Patient/{n}", default_goals=False) for n in range(3)]
    for created in plans:
        client.patch(plan_url(created), json={"formulation": "changed"})
    seen: list[tuple[str, str]] = []
    url: str | None = "/fhir/CarePlan/_history?_count=4"
    pages = 0
    while url:
        bundle = client.get(url.replace(client.base_url, "")).json()
        assert bundle["type"] == "history"
        assert_valid(bundle)
        seen += [(e["fullUrl"].rsplit("/", 1)[-1], e["response"]["etag"]) for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        pages += 1
        if url and pages == 1:
            # A write between pages neither shifts nor repeats what is still to come.
            client.patch(plan_url(plans[0]), json={"formulation": "meanwhile"})
    expected_versions = 3 * 4 + 3 * 1  # 3 episodes x2 + 3x3 phases + 3 episode updates
    assert len(seen) == expected_versions
    assert len(set(seen)) == len(seen)
    assert pages == 4


def test_history_since_and_at(client: Client, plan: dict) -> None:
    before_change = datetime.now(UTC)
    client.patch(plan_url(plan), json={"formulation": "later"})
    since = client.get("/fhir/_history", params={"_since": before_change.isoformat()}).json()
    assert [e["fullUrl"].rsplit("/", 1)[-1] for e in since["entry"]] == [plan["id"]]
    assert any("_since=" in link["url"] for link in since["link"])
    at = client.get(
        f"/fhir/CarePlan/{plan['id']}/_history", params={"_at": before_change.isoformat()}
    ).json()
    assert [e["response"]["etag"] for e in at["entry"]] == ['W/"1"']


@pytest.mark.parametrize(
    "params",
    [
        {"_since": "yesterday"},
        {"_since": "2026-01-01T00:00:00"},
        {"_count": "0"},
        {"_count": "many"},
    ],
)
def test_bad_history_parameters_are_refused(client: Client, params: dict[str, str]) -> None:
    response = client.get("/fhir/_history", params=params)
    assert response.status_code == 400
    assert outcome_code(response) == "invalid"


def test_capability_statement_is_true_to_what_is_served(client: Client) -> None:
    response = fhir_get(client, "metadata")
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    assert "application/fhir+json" in statement["format"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {i["code"] for i in resources["CarePlan"]["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "history-type",
        "search-type",
        "create",
        "update",
        "patch",
        "delete",
    }
    params = {p["name"]: p["type"] for p in resources["CarePlan"]["searchParam"]}
    assert params["patient"] == "reference"
    assert params["activity-date"] == "date"
    assert resources["CarePlan"]["searchInclude"] == ["CarePlan:goal", "CarePlan:part-of"]
    assert terminology.GOAL_PROFILE in resources["Goal"]["supportedProfile"]
    for resource_type in ("CodeSystem", "ValueSet", "StructureDefinition", "Questionnaire"):
        assert resources[resource_type]["interaction"] == [
            {"code": "read"},
            {"code": "search-type"},
        ]
        assert {p["name"] for p in resources[resource_type]["searchParam"]} >= {"url", "_id"}


def test_conformance_resources_are_served(client: Client) -> None:
    code_system = fhir_get(client, "CodeSystem/ipt-problem-area").json()
    assert [c["code"] for c in code_system["concept"]] == [
        "grief",
        "role-dispute",
        "role-transition",
        "interpersonal-deficits",
    ]
    profile = fhir_get(client, "StructureDefinition/ipt-episode-careplan").json()
    assert profile["url"] == terminology.EPISODE_PROFILE
    assert client.get("/fhir/ValueSet/nothing").status_code == 404


def test_stored_json_is_served_as_stored(client: Client, plan: dict) -> None:
    response = client.get(f"/fhir/CarePlan/{plan['id']}")
    assert json.loads(response.text)["id"] == plan["id"]
    assert response.text == client.get(f"/fhir/CarePlan/{plan['id']}/_history/1").text
