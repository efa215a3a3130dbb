"""The exact searchset Bundles of the frequent searches: entries served as stored, search
modes, links and totals on every page; searches inside a transaction and per compartment."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from conftest import Client, Server, token_for
from test_fhir_bundle import post_bundle, transaction
from test_fhir_read import assert_valid

from service.db import Database


def get_bundle(client: Client, resource_type: str, params: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    bundle = response.json()
    assert_valid(bundle)
    return dict(bundle)


def read(client: Client, resource_type: str, resource_id: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{resource_type}/{resource_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_entries_are_stored_resources(
    client: Client, bundle: dict[str, Any], modes: list[str]
) -> None:
    """Each entry: its full URL, the resource exactly as a read serves it, its mode."""
    assert [e["search"] for e in bundle["entry"]] == [{"mode": m} for m in modes]
    for entry in bundle["entry"]:
        assert set(entry) == {"fullUrl", "resource", "search"}
        resource = entry["resource"]
        kind, resource_id = resource["resourceType"], resource["id"]
        assert entry["fullUrl"] == f"{client.base_url}/fhir/{kind}/{resource_id}"
        assert resource == read(client, kind, resource_id)


def test_active_plans_of_a_patient_with_their_goals(client: Client) -> None:
    first = client.create_plan(patient="Patient/shape")
    second = client.create_plan(patient="Patient/shape", start_date="2026-02-02")
    client.create_plan(patient="Patient/shape", status="draft")
    client.create_plan(patient="Patient/elsewhere")
    params = {"patient": "Patient/shape", "status": "active", "_include": "CarePlan:goal"}
    bundle = get_bundle(client, "CarePlan", params)

    assert list(bundle) == ["resourceType", "type", "total", "link", "entry"]
    assert bundle["link"] == [
        {
            "relation": "self",
            "url": f"{client.base_url}/fhir/CarePlan?patient=Patient%2Fshape&status=active"
            "&_include=CarePlan%3Agoal",
        }
    ]
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    modes = ["match"] * len(matches) + ["include"] * len(included)
    assert_entries_are_stored_resources(client, bundle, modes)
    assert bundle["total"] == len(matches)
    match_ids = [r["id"] for r in matches]
    assert match_ids == sorted(match_ids)
    assert {first["id"], second["id"]} <= set(match_ids)
    assert all(r["subject"]["reference"] == "Patient/shape" for r in matches)
    assert all(r["status"] == "active" for r in matches)
    referenced = {g["reference"] for r in matches for g in r.get("goal", [])}
    assert len(referenced) >= 2
    assert sorted(f"Goal/{r['id']}" for r in included) == sorted(referenced)


def test_active_goals_of_a_patient_page_by_page(client: Client) -> None:
    client.create_plan(patient="Patient/goals")
    client.create_plan(patient="Patient/goals", start_date="2026-02-02")
    client.create_plan(patient="Patient/not-these")
    params = {"patient": "Patient/goals", "lifecycle-status": "active"}
    everything = get_bundle(client, "Goal", {**params, "_count": "200"})
    all_ids = [e["resource"]["id"] for e in everything["entry"]]
    assert len(all_ids) >= 5
    assert all_ids == sorted(all_ids)
    assert everything["total"] == len(all_ids)
    assert_entries_are_stored_resources(client, everything, ["match"] * len(all_ids))
    for entry in everything["entry"]:
        assert entry["resource"]["subject"]["reference"] == "Patient/goals"
        assert entry["resource"]["lifecycleStatus"] == "active"

    bundle = get_bundle(client, "Goal", {**params, "_count": "2"})
    base = f"{client.base_url}/fhir/Goal?patient=Patient%2Fgoals&lifecycle-status=active&_count=2"
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert bundle["total"] == len(all_ids)
        page_ids = [e["resource"]["id"] for e in bundle["entry"]]
        assert_entries_are_stored_resources(client, bundle, ["match"] * len(page_ids))
        if pages == 1:
            assert links["self"] == base
            assert "previous" not in links
        else:
            assert links["self"].startswith(base + "&_cursor=")
            back = get_bundle(client, "Goal", dict(parse_qsl(urlsplit(links["previous"]).query)))
            assert [e["resource"]["id"] for e in back["entry"]] == seen[-2:]
        seen += page_ids
        if "next" not in links:
            break
        assert links["next"].startswith(base + "&_cursor=")
        bundle = client.http.get(links["next"]).json()
    assert seen == all_ids
    assert pages == (len(all_ids) + 1) // 2


def test_dates_approximately(client: Client) -> None:
    client.create_plan(patient="Patient/ap")
    # The template goals are due on 2026-03-23; "ap" takes at least a day either side.
    near = get_bundle(client, "Goal", {"patient": "Patient/ap", "target-date": "ap2026-03-22"})
    assert len(near["entry"]) == 3
    far = get_bundle(client, "Goal", {"patient": "Patient/ap", "target-date": "ap2020-01-01"})
    assert "entry" not in far
    assert far["total"] == 0


def test_several_ids_and_the_goals_of_each(client: Client) -> None:
    plans = [client.create_plan(patient=f"Patient/ids{n}")["id"] for n in range(3)]
    bundle = get_bundle(client, "CarePlan", {"_id": ",".join(plans), "_include": "CarePlan:goal"})
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [r["id"] for r in matches] == sorted(plans)
    goals = {g["reference"] for r in matches for g in r["goal"]}
    assert sorted(f"Goal/{r['id']}" for r in included) == sorted(goals)
    assert len(included) == len(goals) >= 3 * 3


def test_a_search_in_a_transaction(client: Client) -> None:
    plan = client.create_plan(
        patient="Patient/tx", identifiers=[{"system": "urn:tx", "value": "1"}]
    )
    episode = read(client, "CarePlan", plan["id"])
    body = {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}
    body["identifier"] = [{"system": "urn:tx", "value": "2"}]
    response = post_bundle(
        client,
        transaction(
            {"resource": body, "request": {"method": "POST", "url": "CarePlan"}},
            {
                "request": {
                    "method": "GET",
                    "url": "CarePlan?identifier=urn:tx|1&_include=CarePlan:goal",
                }
            },
        ),
    )
    assert response.status_code == 200, response.text
    created, searched = response.json()["entry"]
    assert created["response"]["status"] == "201 Created"
    assert searched["response"]["status"] == "200 OK"
    searchset = searched["resource"]
    assert searchset["total"] == 1
    assert searchset["entry"][0]["resource"] == episode
    included = [e["resource"]["id"] for e in searchset["entry"][1:]]
    assert sorted(f"Goal/{i}" for i in included) == sorted(g["reference"] for g in episode["goal"])


def test_a_patient_token_searches_its_compartment_only(
    live: Server, database: Database, client: Client
) -> None:
    own = client.create_plan(patient="Patient/mine")
    client.create_plan(patient="Patient/theirs")
    token = token_for(live, database, ["patient/*.rs"], patient="Patient/mine")
    patient = Client(live.url, token)
    goals = get_bundle(patient, "Goal", {"lifecycle-status": "active"})
    assert goals["total"] >= 3
    assert {e["resource"]["subject"]["reference"] for e in goals["entry"]} == {"Patient/mine"}
    plans = get_bundle(
        patient, "CarePlan", {"status": "active", "_include": "CarePlan:goal", "_count": "200"}
    )
    assert own["id"] in [e["resource"]["id"] for e in plans["entry"]]
    subjects = {e["resource"]["subject"]["reference"] for e in plans["entry"]}
    assert subjects == {"Patient/mine"}
    other = get_bundle(patient, "Goal", {"patient": "Patient/theirs"})
    assert other["total"] == 0
    assert "entry" not in other
    assert json.dumps(other["link"]).count("Patient%2Ftheirs") == 1


def test_searches_alike_but_for_their_values_find_each_their_own(client: Client) -> None:
    plans = {p: client.create_plan(patient=f"Patient/{p}")["id"] for p in ("alike1", "alike2")}
    for patient, plan_id in plans.items():
        bundle = get_bundle(
            client, "CarePlan", {"patient": f"Patient/{patient}", "category": "episode"}
        )
        assert [e["resource"]["id"] for e in bundle["entry"]] == [plan_id]


def test_token_system_forms_are_told_apart(client: Client) -> None:
    plan = client.create_plan(patient="Patient/systems")
    episode = {"patient": "Patient/systems", "category": "episode"}
    forms = {
        "active": [plan["id"]],
        "http://hl7.org/fhir/request-status|active": [plan["id"]],
        "|active": [],  # the status has a system
        "urn:other|active": [],
        "http://hl7.org/fhir/request-status|": [plan["id"]],
    }
    for status, expected in forms.items():
        bundle = get_bundle(client, "CarePlan", {**episode, "status": status})
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == expected, status


def test_an_escaped_comma_is_part_of_the_value(client: Client) -> None:
    plan = client.create_plan(
        patient="Patient/comma", identifiers=[{"system": "urn:comma", "value": "A,B"}]
    )
    found = get_bundle(client, "CarePlan", {"identifier": "urn:comma|A\\,B"})
    assert [e["resource"]["id"] for e in found["entry"]] == [plan["id"]]
    either = get_bundle(client, "CarePlan", {"identifier": "urn:comma|A,urn:comma|B"})
    assert "entry" not in either


def test_an_empty_total_is_refused(client: Client) -> None:
    response = client.get("/fhir/Goal", params={"patient": "Patient/x", "_total": ""})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_long_list_of_ids(client: Client) -> None:
    plans = [client.create_plan(patient="Patient/long")["id"] for _ in range(2)]
    unknown = [f"unknown-{n}" for n in range(600)]
    response = client.post(
        "/fhir/CarePlan/_search", data={"_id": ",".join([*unknown, *plans]), "_count": "5"}
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == sorted(plans)
    assert bundle["total"] == 2
