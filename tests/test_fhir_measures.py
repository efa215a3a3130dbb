"""Measurement-based care in FHIR: the Questionnaires of the rating scales, and the
QuestionnaireResponse, total Observation and safety Flag each plan publishes.

Administrations are recorded through the service layer (service/administrations.py), as the
native routes would; everything is read back over HTTP and checked by two validators.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any
from urllib.parse import quote

import pytest
from conftest import Client, token_for
from test_fhir_read import assert_valid, fhir_get, outcome_code

from fhir_mappings import terminology
from service import administrations
from service.db import Database
from service.instruments import GAD7, PHQ9, Instrument

ACTOR = "clinician-1"
PHQ9_URL = terminology.questionnaire(PHQ9)
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def answers(instrument: Instrument, *scores: int, difficulty: int | None = None) -> dict[str, int]:
    given = {item.link_id: score for item, score in zip(instrument.items, scores, strict=True)}
    if difficulty is not None and instrument.difficulty is not None:
        given[instrument.difficulty.link_id] = difficulty
    return given


def record(database: Database, plan: dict[str, Any], **data: Any) -> str:
    data.setdefault("instrument", "phq-9")
    data.setdefault("administered_on", date(2026, 1, 12))
    return administrations.record_administration(database, plan["id"], data, ACTOR).id


def symptom_goal(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    found = client.get(
        "/fhir/Goal", params={"patient": plan["patient"], "category": "symptom"}
    ).json()
    [goal] = [e["resource"] for e in found["entry"]]
    assert goal["target"][0]["measure"]["coding"][0]["code"] == PHQ9.total_code
    return dict(goal)


# --- Questionnaires ---------------------------------------------------------------------


@pytest.mark.parametrize("instrument", [PHQ9, GAD7], ids=lambda i: i.key)
def test_the_questionnaire_of_each_scale_is_served_without_a_token(
    anonymous: Client, instrument: Instrument
) -> None:
    response = fhir_get(anonymous, f"Questionnaire/{instrument.key}")
    assert response.status_code == 200
    questionnaire = response.json()
    assert questionnaire["url"] == terminology.questionnaire(instrument)
    assert questionnaire["code"][0] == {
        "system": "http://loinc.org",
        "code": instrument.panel_code,
        "display": instrument.title,
    }
    items = {item["linkId"]: item for item in questionnaire["item"]}
    for declared in instrument.items:
        item = items[declared.link_id]
        assert item["type"] == "choice"
        assert item["code"][0]["code"] == declared.code
        scores = {
            option["valueCoding"]["code"]: option["valueCoding"]["extension"][0]["valueDecimal"]
            for option in item["answerOption"]
        }
        assert scores == {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}
        ordinal = item["answerOption"][0]["valueCoding"]["extension"][0]["url"]
        assert ordinal == "http://hl7.org/fhir/StructureDefinition/ordinalValue"
    difficulty = items[f"{instrument.key}-difficulty"]
    assert difficulty["code"][0]["code"] == "69722-7"
    assert [o["valueCoding"]["code"] for o in difficulty["answerOption"]] == [
        "LA6572-7",
        "LA6573-5",
        "LA6575-0",
        "LA6574-3",
    ]
    assert all("extension" not in o["valueCoding"] for o in difficulty["answerOption"])
    total = items[f"{instrument.key}-total"]
    assert (total["type"], total["readOnly"], total["code"][0]["code"]) == (
        "integer",
        True,
        instrument.total_code,
    )


def test_questionnaires_are_found_by_url_and_listed_in_the_capability_statement(
    anonymous: Client,
) -> None:
    found = fhir_get(anonymous, "Questionnaire", params={"url": PHQ9_URL}).json()
    assert found["type"] == "searchset"
    assert [e["resource"]["id"] for e in found["entry"]] == ["phq-9"]
    versioned = fhir_get(anonymous, "Questionnaire", params={"url": f"{PHQ9_URL}|1.0.0"}).json()
    assert versioned["total"] == 1
    assert fhir_get(anonymous, "Questionnaire", params={"url": PHQ9_URL + "x"}).json()["total"] == 0
    assert fhir_get(anonymous, "Questionnaire").json()["total"] == 2
    # The same search as a form: the URL's and the form's parameters together.
    posted = anonymous.post(
        "/fhir/Questionnaire/_search", params={"_count": "10"}, data={"url": f"{PHQ9_URL}|1.0.0"}
    )
    assert posted.status_code == 200, posted.text
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == ["phq-9"]
    assert posted.json()["link"][0]["url"].endswith(
        "/fhir/Questionnaire?url=" + quote(f"{PHQ9_URL}|1.0.0", safe="")
    )
    strict = anonymous.get(
        "/fhir/Questionnaire", params={"title": "x"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert outcome_code(strict) == "invalid"
    statement = anonymous.get("/fhir/metadata").json()
    kept = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {"read", "search-type"} <= {i["code"] for i in kept["Questionnaire"]["interaction"]}
    reads = {"read", "vread", "history-instance", "history-type", "search-type"}
    writes = {"create", "update", "patch", "delete"}
    for resource_type in ("QuestionnaireResponse", "Observation", "Flag"):
        interactions = {i["code"] for i in kept[resource_type]["interaction"]}
        assert interactions == (reads if resource_type == "Flag" else reads | writes)
        assert kept[resource_type]["supportedProfile"]


# --- QuestionnaireResponse and Observation -------------------------------------------------


def test_an_administration_publishes_its_answers_and_its_total(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    given = answers(PHQ9, 2, 2, 1, 1, 1, 1, 1, 1, 0, difficulty=1)
    administration = record(database, plan, answers=given, session_number=None)

    response = fhir_get(client, f"QuestionnaireResponse/{administration}")
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"1"'
    qr = response.json()
    assert qr["questionnaire"] == PHQ9_URL
    assert qr["status"] == "completed"
    assert qr["subject"] == {"reference": plan["patient"]}
    assert qr["source"] == {"reference": plan["patient"]}
    assert qr["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert qr["authored"] == "2026-01-12"
    assert qr["meta"]["profile"] == [terminology.RESPONSE_PROFILE]
    by_link = {item["linkId"]: item["answer"][0] for item in qr["item"]}
    assert by_link["phq-9-1"]["valueCoding"]["code"] == "LA6570-1"
    assert by_link["phq-9-9"]["valueCoding"]["code"] == "LA6568-5"
    assert by_link["phq-9-difficulty"]["valueCoding"]["code"] == "LA6573-5"
    assert by_link["phq-9-total"] == {"valueInteger": 10}
    assert "PHQ-9 answers" in qr["text"]["div"]

    observation = fhir_get(client, f"Observation/{administration}").json()
    assert observation["status"] == "final"
    assert observation["code"]["coding"][0]["code"] == "44261-6"
    assert observation["category"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "survey",
        "display": "Survey",
    }
    assert observation["valueQuantity"]["value"] == 10
    assert observation["effectiveDateTime"] == "2026-01-12"
    assert observation["interpretation"][0]["coding"][0]["code"] == "moderate"
    assert (
        observation["interpretation"][0]["coding"][0]["system"]
        == terminology.local("ipt-phq-9-severity").url
    )
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{administration}"}]
    components = {
        c["code"]["coding"][0]["code"]: c["valueCodeableConcept"]["coding"][0]["code"]
        for c in observation["component"]
    }
    assert components["44250-9"] == "LA6570-1"
    assert components["69722-7"] == "LA6573-5"
    assert len(components) == 10


def test_an_answer_given_by_a_clinician_names_no_source(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    administration = record(
        database, plan, instrument="gad-7", answers=answers(GAD7, *[3] * 7), answered_by="clinician"
    )
    qr = fhir_get(client, f"QuestionnaireResponse/{administration}").json()
    assert "source" not in qr
    assert {"url": terminology.EXT_ANSWERED_BY, "valueCode": "clinician"} in qr["extension"]
    assert qr["questionnaire"] == terminology.questionnaire(GAD7)
    observation = fhir_get(client, f"Observation/{administration}").json()
    assert observation["code"]["coding"][0]["code"] == "70274-6"
    assert observation["interpretation"][0]["text"] == "Severe"


def test_a_total_only_administration_has_no_items_and_says_so(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    administration = record(database, plan, total=17)
    qr = fhir_get(client, f"QuestionnaireResponse/{administration}").json()
    assert "item" not in qr
    assert {"url": terminology.EXT_SCORE_SOURCE, "valueCode": "total-only"} in qr["extension"]
    observation = fhir_get(client, f"Observation/{administration}").json()
    assert "component" not in observation
    assert observation["valueQuantity"]["value"] == 17
    assert observation["interpretation"][0]["coding"][0]["code"] == "moderately-severe"
    assert observation["note"][0]["text"] == "Total imported without the item answers."


def test_a_changed_administration_is_amended_and_a_deleted_one_is_gone(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    administration = record(database, plan, answers=answers(PHQ9, *[1] * 9))
    administrations.update_administration(
        database, plan["id"], administration, {"answers": answers(PHQ9, *[0] * 9)}, ACTOR
    )
    observation = fhir_get(client, f"Observation/{administration}")
    assert observation.headers["ETag"] == 'W/"2"'
    assert observation.json()["status"] == "amended"
    assert observation.json()["valueQuantity"]["value"] == 0
    first = fhir_get(client, f"Observation/{administration}/_history/1").json()
    assert (first["status"], first["valueQuantity"]["value"]) == ("final", 9)
    history = fhir_get(client, f"Observation/{administration}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']

    administrations.delete_administration(database, plan["id"], administration, ACTOR)
    for resource_type in ("QuestionnaireResponse", "Observation"):
        gone = client.get(f"/fhir/{resource_type}/{administration}")
        assert gone.status_code == 410
        assert outcome_code(gone) == "deleted"
    types = fhir_get(client, "Observation/_history").json()
    assert types["entry"][0]["request"]["method"] == "DELETE"
    found = fhir_get(client, "Observation", params={"patient": plan["patient"]}).json()
    assert found["total"] == 0


# --- the symptom goal's outcome ------------------------------------------------------------


def test_the_symptom_goal_points_at_the_latest_total(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    assert "outcomeReference" not in symptom_goal(client, plan)
    baseline = record(database, plan, total=20, administered_on=date(2026, 1, 12))
    assert symptom_goal(client, plan)["outcomeReference"] == [
        {"reference": f"Observation/{baseline}"}
    ]
    later = record(database, plan, total=9, administered_on=date(2026, 2, 9))
    # Recorded after the later one, but taken before it: not the latest.
    record(database, plan, total=15, administered_on=date(2026, 1, 26))
    goal = symptom_goal(client, plan)
    assert goal["outcomeReference"] == [{"reference": f"Observation/{later}"}]
    assert goal["achievementStatus"]["coding"][0]["code"] == "improving"
    administrations.delete_administration(database, plan["id"], later, ACTOR)
    goal = symptom_goal(client, plan)
    assert goal["outcomeReference"][0]["reference"] != f"Observation/{later}"
    # A GAD-7 score is not the PHQ-9 goal's outcome.
    record(database, plan, instrument="gad-7", total=3, administered_on=date(2026, 3, 2))
    assert symptom_goal(client, plan)["outcomeReference"] == goal["outcomeReference"]


def test_a_goal_written_back_keeps_following_the_latest_total(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    first = record(database, plan, total=20, administered_on=date(2026, 1, 12))
    goal = symptom_goal(client, plan)
    assert goal["outcomeReference"] == [{"reference": f"Observation/{first}"}]
    written = client.request(
        "PUT", f"/fhir/Goal/{goal['id']}", data=json.dumps(goal), headers=FHIR_JSON
    )
    assert written.status_code == 200, written.text
    assert written.json()["outcomeReference"] == goal["outcomeReference"]
    later = record(database, plan, total=12, administered_on=date(2026, 2, 2))
    assert symptom_goal(client, plan)["outcomeReference"] == [{"reference": f"Observation/{later}"}]


# --- safety signals ------------------------------------------------------------------------


def test_a_safety_signal_is_an_active_flag_until_acknowledged(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    administration = record(database, plan, answers=answers(PHQ9, 1, 1, 1, 1, 1, 1, 1, 1, 2))
    [signal] = administrations.list_signals(database, plan["id"])
    flag = fhir_get(client, f"Flag/{signal.id}").json()
    assert flag["status"] == "active"
    assert flag["code"]["text"] == (
        "Thoughts of self-harm or of being better off dead (PHQ-9 item 9)"
    )
    assert flag["code"]["coding"][0]["system"] == terminology.local("ipt-safety-signal").url
    assert flag["category"][0]["coding"][0]["code"] == "clinical"
    assert flag["period"] == {"start": "2026-01-12"}
    assert {
        "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
        "valueReference": {"reference": f"Observation/{administration}"},
    } in flag["extension"]
    active = fhir_get(client, "Flag", params={"patient": plan["patient"], "status": "active"})
    assert [e["resource"]["id"] for e in active.json()["entry"]] == [signal.id]

    administrations.acknowledge_signal(
        database, plan["id"], signal.id, "Risk assessed; safety plan reviewed", ACTOR
    )
    flag = fhir_get(client, f"Flag/{signal.id}").json()
    assert flag["status"] == "inactive"
    assert flag["period"]["end"].startswith(str(date.today().year))
    by_url = {e["url"]: e for e in flag["extension"]}
    acknowledgement = by_url[terminology.EXT_ACKNOWLEDGEMENT]
    parts = {part["url"]: part for part in acknowledgement["extension"]}
    assert parts["by"]["valueString"] == ACTOR
    assert parts["action"]["valueString"] == "Risk assessed; safety plan reviewed"
    assert "Risk assessed" in flag["text"]["div"]
    active = fhir_get(client, "Flag", params={"patient": plan["patient"], "status": "active"})
    assert active.json()["total"] == 0
    assert fhir_get(client, "Flag", params={"status": "inactive"}).json()["total"] == 1
    # The signal outlives its administration.
    administrations.delete_administration(database, plan["id"], administration, ACTOR)
    assert fhir_get(client, f"Flag/{signal.id}").status_code == 200


# --- search --------------------------------------------------------------------------------


def test_the_course_of_totals_is_searched_in_date_order_with_the_responses(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    taken = [(date(2026, 2, 9), 12), (date(2026, 1, 12), 21), (date(2026, 1, 26), 16)]
    ids = {when: record(database, plan, total=total, administered_on=when) for when, total in taken}
    other = client.create_plan(patient="Patient/other")
    record(database, other, total=5)
    course = fhir_get(
        client,
        "Observation",
        params={
            "patient": plan["patient"],
            "code": "http://loinc.org|44261-6",
            "_sort": "date",
            "_include": "Observation:derived-from",
        },
    ).json()
    matches = [e["resource"] for e in course["entry"] if e["search"]["mode"] == "match"]
    assert [o["valueQuantity"]["value"] for o in matches] == [21, 16, 12]
    included = {e["resource"]["id"] for e in course["entry"] if e["search"]["mode"] == "include"}
    assert included == set(ids.values())
    newest_first = fhir_get(
        client, "Observation", params={"patient": plan["patient"], "_sort": "-date"}
    ).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in newest_first["entry"]] == [12, 16, 21]

    def found(resource_type: str, **params: str) -> set[str]:
        bundle = fhir_get(client, resource_type, params=params).json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    first = ids[date(2026, 1, 12)]
    assert found("Observation", date="2026-01-12", subject=plan["patient"]) == {first}
    assert found("Observation", date="ge2026-01-26", patient=plan["patient"]) == {
        ids[date(2026, 1, 26)],
        ids[date(2026, 2, 9)],
    }
    assert found("Observation", **{"based-on": f"CarePlan/{plan['id']}"}) == set(ids.values())
    assert found("Observation", category="survey", status="final") >= set(ids.values())
    assert found("Observation", **{"derived-from": f"QuestionnaireResponse/{first}"}) == {first}
    assert found("QuestionnaireResponse", questionnaire=PHQ9_URL, subject=plan["patient"]) == set(
        ids.values()
    )
    assert found("QuestionnaireResponse", authored="lt2026-01-20", patient=plan["patient"]) == {
        first
    }
    assert found("QuestionnaireResponse", _id=first, status="completed") == {first}
    revincluded = fhir_get(
        client,
        "CarePlan",
        params={"_id": plan["id"], "_revinclude": "Observation:based-on"},
    ).json()
    assert {
        e["resource"]["id"] for e in revincluded["entry"] if e["search"]["mode"] == "include"
    } == set(ids.values())
    responses = fhir_get(
        client,
        "QuestionnaireResponse",
        params={"_id": first, "_revinclude": "Observation:derived-from"},
    ).json()
    assert [e["resource"]["resourceType"] for e in responses["entry"]] == [
        "QuestionnaireResponse",
        "Observation",
    ]


# --- access --------------------------------------------------------------------------------


def test_a_patient_bound_token_sees_only_its_patients_scores(
    live: Any, database: Database, client: Client, plan: dict[str, Any]
) -> None:
    own = record(database, plan, answers=answers(PHQ9, *[1] * 8, 1))
    other_plan = client.create_plan(patient="Patient/other")
    other = record(database, other_plan, answers=answers(PHQ9, *[1] * 8, 1))
    token = token_for(live, database, ["patient/*.rs"], patient=plan["patient"])
    bound = Client(live.url, token)
    for resource_type in ("QuestionnaireResponse", "Observation"):
        assert bound.get(f"/fhir/{resource_type}/{own}").status_code == 200
        hidden = bound.get(f"/fhir/{resource_type}/{other}")
        assert hidden.status_code == 404
        assert f"{resource_type}/{other} does not exist" in json.dumps(hidden.json())
        listed = bound.get(f"/fhir/{resource_type}").json()
        assert {e["resource"]["id"] for e in listed["entry"]} == {own}
    flags = bound.get("/fhir/Flag").json()
    assert [e["resource"]["subject"]["reference"] for e in flags["entry"]] == [plan["patient"]]


def test_a_flag_takes_no_writes(client: Client, database: Database, plan: dict[str, Any]) -> None:
    record(database, plan, answers=answers(PHQ9, *[1] * 9))
    [signal] = administrations.list_signals(database, plan["id"])
    flag = client.get(f"/fhir/Flag/{signal.id}").json()
    refused = [
        client.post("/fhir/Flag", data=json.dumps(flag), headers=FHIR_JSON),
        client.request("PUT", f"/fhir/Flag/{signal.id}", data=json.dumps(flag), headers=FHIR_JSON),
        client.delete(f"/fhir/Flag/{signal.id}"),
    ]
    for response in refused:
        assert response.status_code == 405, response.text
        assert outcome_code(response) == "not-supported"
        assert "safety-signals" in response.json()["issue"][0]["diagnostics"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "POST", "url": "Flag"}, "resource": {"resourceType": "Flag"}},
            {"request": {"method": "GET", "url": f"Flag/{signal.id}"}},
        ],
    }
    answered = client.post("/fhir", data=json.dumps(bundle), headers=FHIR_JSON)
    assert answered.status_code == 200, answered.text
    statuses = [e["response"]["status"] for e in answered.json()["entry"]]
    assert statuses[0].startswith("405") and statuses[1].startswith("200")
    assert fhir_get(client, f"Flag/{signal.id}").headers["ETag"] == 'W/"1"'
    assert_valid(answered.json())


# --- writes --------------------------------------------------------------------------------


def written_response(
    patient: str, authored: str, scores: list[int], **extra: Any
) -> dict[str, Any]:
    """A PHQ-9 QuestionnaireResponse as an EHR writes it: answers by LOINC answer code."""
    codes = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
    items = [
        {
            "linkId": item.link_id,
            "answer": [{"valueCoding": {"system": "http://loinc.org", "code": codes[score]}}],
        }
        for item, score in zip(PHQ9.items, scores, strict=True)
    ]
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": PHQ9_URL,
        "status": "completed",
        "subject": {"reference": patient},
        "authored": authored,
        "item": items,
        **extra,
    }


def written_total(patient: str, when: str, total: int, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        "valueInteger": total,
        **extra,
    }


def post(client: Client, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        f"/fhir/{body['resourceType']}", data=json.dumps(body), headers={**FHIR_JSON, **headers}
    )


def test_an_ehr_writes_answers_that_join_the_patients_plan_of_that_date(
    client: Client, plan: dict[str, Any]
) -> None:
    created = post(client, written_response(plan["patient"], "2026-01-19T10:30:00+01:00", [2] * 9))
    assert created.status_code == 201, created.text
    qr = created.json()
    assert_valid(qr)
    assert created.headers["Location"].endswith(f"/QuestionnaireResponse/{qr['id']}/_history/1")
    assert qr["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert qr["authored"] == "2026-01-19"
    by_link = {i["linkId"]: i["answer"][0] for i in qr["item"]}
    assert by_link["phq-9-total"] == {"valueInteger": 18}
    observation = fhir_get(client, f"Observation/{qr['id']}").json()
    assert observation["valueQuantity"]["value"] == 18
    # Answers given by their score (valueInteger) or an ordinalValue read alike.
    body = written_response(plan["patient"], "2026-01-26", [0] * 9)
    body["item"][0]["answer"] = [{"valueInteger": 3}]
    body["item"][1]["answer"] = [
        {
            "valueCoding": {
                "system": "urn:ehr:answers",
                "code": "nearly",
                "extension": [{"url": terminology.ORDINAL_VALUE, "valueDecimal": 3}],
            }
        }
    ]
    second = post(client, body)
    assert second.status_code == 201, second.text
    assert (
        fhir_get(client, f"Observation/{second.json()['id']}").json()["valueQuantity"]["value"] == 6
    )
    course = fhir_get(
        client, "Observation", params={"patient": plan["patient"], "_sort": "date"}
    ).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in course["entry"]] == [18, 6]
    goal = symptom_goal(client, plan)
    assert goal["outcomeReference"] == [{"reference": f"Observation/{second.json()['id']}"}]


def test_a_written_total_is_a_total_only_administration(
    client: Client, plan: dict[str, Any]
) -> None:
    created = post(
        client, written_total(plan["patient"], "2026-01-12", 14, note=[{"text": "From the GP"}])
    )
    assert created.status_code == 201, created.text
    observation = created.json()
    assert_valid(observation)
    assert {"url": terminology.EXT_SCORE_SOURCE, "valueCode": "total-only"} in observation[
        "extension"
    ]
    assert {"text": "From the GP"} in observation["note"]
    assert observation["interpretation"][0]["coding"][0]["code"] == "moderate"
    qr = fhir_get(client, f"QuestionnaireResponse/{observation['id']}").json()
    assert "item" not in qr


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"authored": "2025-06-01"}, "QuestionnaireResponse.basedOn", "no care plan"),
        ({"subject": {"reference": "Patient/nobody"}}, "QuestionnaireResponse.basedOn", "no care"),
        ({"basedOn": [{"reference": "CarePlan/unknown"}]}, "QuestionnaireResponse.basedOn", ""),
        ({"questionnaire": "http://example.org/Questionnaire/x"}, "questionnaire", "not one of"),
        ({"status": "in-progress"}, "QuestionnaireResponse.status", "completed"),
    ],
)
def test_a_response_that_fits_no_plan_or_scale_is_refused_naming_why(
    client: Client, plan: dict[str, Any], change: dict[str, Any], path: str, words: str
) -> None:
    body = {**written_response(plan["patient"], "2026-01-19", [1] * 9), **change}
    refused = post(client, body)
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert path in json.dumps(refused.json())
    assert words in issue["diagnostics"]
    assert fhir_get(client, "QuestionnaireResponse").json()["total"] == 0


def test_a_wrong_answer_is_refused_with_its_path(client: Client, plan: dict[str, Any]) -> None:
    body = written_response(plan["patient"], "2026-01-19", [1] * 9)
    body["item"][3]["answer"] = [{"valueCoding": {"system": "http://loinc.org", "code": "LA1-1"}}]
    refused = post(client, body)
    assert refused.status_code == 422
    assert "QuestionnaireResponse.item[3].answer[0]" in json.dumps(refused.json())
    body = written_response(plan["patient"], "2026-01-19", [1] * 9)
    del body["item"][8]
    missing = post(client, body)
    assert missing.status_code == 422
    assert "phq-9-9" in missing.json()["issue"][0]["diagnostics"]


def test_a_response_is_updated_with_if_match_and_deleted(
    client: Client, plan: dict[str, Any]
) -> None:
    qr = post(client, written_response(plan["patient"], "2026-01-19", [1] * 9)).json()
    changed = {**qr, "item": written_response(plan["patient"], "", [0] * 9)["item"]}
    stale = client.request(
        "PUT",
        f"/fhir/QuestionnaireResponse/{qr['id']}",
        data=json.dumps(changed),
        headers={**FHIR_JSON, "If-Match": 'W/"7"'},
    )
    assert stale.status_code == 412
    updated = client.request(
        "PUT",
        f"/fhir/QuestionnaireResponse/{qr['id']}",
        data=json.dumps(changed),
        headers={**FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert updated.status_code == 200, updated.text
    assert updated.headers["ETag"] == 'W/"2"'
    assert updated.json()["status"] == "amended"
    observation = fhir_get(client, f"Observation/{qr['id']}").json()
    assert (observation["status"], observation["valueQuantity"]["value"]) == ("amended", 0)
    # Read and written back unchanged: no new version.
    same = client.request(
        "PUT",
        f"/fhir/Observation/{qr['id']}",
        data=json.dumps(observation),
        headers=FHIR_JSON,
    )
    assert same.status_code == 200, same.text
    assert same.headers["ETag"] == 'W/"2"'
    assert client.delete(f"/fhir/Observation/{qr['id']}").status_code == 204
    assert client.get(f"/fhir/QuestionnaireResponse/{qr['id']}").status_code == 410


def test_conditional_create_by_identifier_and_a_transaction(
    client: Client, plan: dict[str, Any]
) -> None:
    identifier = {"system": "urn:ehr:forms", "value": "form-77"}
    body = written_response(plan["patient"], "2026-01-19", [1] * 9, identifier=identifier)
    first = post(client, body, **{"If-None-Exist": "identifier=urn:ehr:forms|form-77"})
    assert first.status_code == 201, first.text
    assert first.json()["identifier"] == identifier
    again = post(client, body, **{"If-None-Exist": "identifier=urn:ehr:forms|form-77"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b7b0000-0000-4000-8000-000000000001",
                "resource": written_response(plan["patient"], "2026-01-26", [2] * 9),
                "request": {"method": "POST", "url": "QuestionnaireResponse"},
            },
            {
                "resource": written_total(plan["patient"], "2026-02-02", 9),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answered = client.post("/fhir", data=json.dumps(transaction), headers=FHIR_JSON)
    assert answered.status_code == 200, answered.text
    assert [e["response"]["status"][:3] for e in answered.json()["entry"]] == ["201", "201"]
    totals = fhir_get(
        client, "Observation", params={"patient": plan["patient"], "_sort": "date"}
    ).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in totals["entry"]] == [9, 18, 9]


def test_a_transaction_records_a_plan_and_its_first_score_together(client: Client) -> None:
    plan = client.create_plan(patient="Patient/tx")
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    new_plan = {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}
    new_plan["subject"] = {"reference": "Patient/tx2"}
    score = written_response("Patient/tx2", "2026-01-19", [1] * 9)
    score["basedOn"] = [{"reference": "urn:uuid:9b7b0000-0000-4000-8000-000000000002"}]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": score,
                "request": {"method": "POST", "url": "QuestionnaireResponse"},
            },
            {
                "fullUrl": "urn:uuid:9b7b0000-0000-4000-8000-000000000002",
                "resource": new_plan,
                "request": {"method": "POST", "url": "CarePlan"},
            },
        ],
    }
    answered = client.post("/fhir", data=json.dumps(transaction), headers=FHIR_JSON)
    assert answered.status_code == 200, answered.text
    qr_location, plan_location = (e["response"]["location"] for e in answered.json()["entry"])

    def reference(location: str) -> str:
        return "/".join(location.split("/_history")[0].split("/")[-2:])

    assert reference(qr_location).startswith("QuestionnaireResponse/")
    qr = fhir_get(client, reference(qr_location)).json()
    assert qr["basedOn"] == [{"reference": reference(plan_location)}]
    assert qr["subject"] == {"reference": "Patient/tx2"}


def test_a_total_only_score_is_patched(client: Client, plan: dict[str, Any]) -> None:
    observation = post(client, written_total(plan["patient"], "2026-01-12", 14)).json()
    patched = client.patch(
        f"/fhir/Observation/{observation['id']}",
        data=json.dumps([{"op": "replace", "path": "/valueQuantity/value", "value": 4}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["valueQuantity"]["value"] == 4
    assert patched.json()["interpretation"][0]["coding"][0]["code"] == "none"
    too_high = client.patch(
        f"/fhir/Observation/{observation['id']}",
        data=json.dumps([{"op": "replace", "path": "/valueQuantity/value", "value": 28}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert too_high.status_code == 422
    assert "Observation.value[x]" in json.dumps(too_high.json())


def test_parallel_conditional_creates_record_one_administration(
    client: Client, database: Database, plan: dict[str, Any]
) -> None:
    identifier = {"system": "urn:ehr:forms", "value": "form-parallel"}
    body = written_response(plan["patient"], "2026-01-19", [2] * 9, identifier=identifier)
    condition = {"If-None-Exist": "identifier=urn:ehr:forms|form-parallel"}
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: post(client, body, **condition), range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [201], [a.text for a in answers if a.status_code >= 300]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(administrations.list_administrations(database, plan["id"])) == 1
