"""FHIR search over CarePlans and Goals: parameters, modifiers, includes, paging, shaping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Client, plan_url
from test_fhir_read import assert_valid, outcome_code

IPT_KIND = "https://ipt-careplans.org/fhir/CodeSystem/ipt-careplan-kind"


def search(client: Client, resource_type: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    assert_valid(bundle)
    return dict(bundle)


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


@pytest.fixture
def two_patients(client: Client) -> dict[str, dict[str, Any]]:
    first = client.create_plan(
        patient="Patient/p1", identifiers=[{"system": "urn:c", "value": "A"}]
    )
    draft = client.create_plan(
        patient="Patient/p1",
        status="draft",
        start_date="2026-03-02",
        problem_areas=["role-dispute"],
        default_goals=False,
    )
    other = client.create_plan(patient="Patient/p2", condition="Condition/c9")
    return {"first": first, "draft": draft, "other": other}


def test_episodes_of_a_patient_by_category(client: Client, two_patients: dict) -> None:
    bundle = search(client, "CarePlan", patient="Patient/p1", category=f"{IPT_KIND}|episode")
    assert sorted(ids(bundle)) == sorted([two_patients["first"]["id"], two_patients["draft"]["id"]])
    assert bundle["total"] == 2
    by_id = search(client, "CarePlan", patient="p1", category="episode")
    assert sorted(ids(by_id)) == sorted(ids(bundle))
    absolute = search(
        client, "CarePlan", subject="https://ehr.example.org/fhir/Patient/p1", category="episode"
    )
    assert sorted(ids(absolute)) == sorted(ids(bundle))


def test_token_forms_or_and_not(client: Client, two_patients: dict) -> None:
    episodes = {"category": "episode"}
    active = search(client, "CarePlan", status="active", **episodes)
    assert sorted(ids(active)) == sorted([two_patients["first"]["id"], two_patients["other"]["id"]])
    either = search(client, "CarePlan", status="draft,active", **episodes)
    assert len(ids(either)) == 3
    system = search(
        client, "CarePlan", status="http://hl7.org/fhir/request-status|draft", **episodes
    )
    assert ids(system) == [two_patients["draft"]["id"]]
    assert ids(search(client, "CarePlan", status="urn:other|draft", **episodes)) == []
    negated = client.get(
        "/fhir/CarePlan", params=[("status:not", "active"), ("category", "episode")]
    )
    assert [e["resource"]["id"] for e in negated.json()["entry"]] == [two_patients["draft"]["id"]]
    identifier = search(client, "CarePlan", identifier="urn:c|A")
    assert ids(identifier) == [two_patients["first"]["id"]]


def test_repeated_parameters_are_and(client: Client, two_patients: dict) -> None:
    params = [
        ("patient", "Patient/p1"),
        ("status", "draft,active"),
        ("status", "active"),
        ("category", "episode"),
    ]
    bundle = client.get("/fhir/CarePlan", params=params).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [two_patients["first"]["id"]]


def test_missing_modifier(client: Client, two_patients: dict) -> None:
    with_condition = search(client, "CarePlan", **{"condition:missing": "false"})
    assert ids(with_condition) == [two_patients["other"]["id"]]
    without = search(client, "CarePlan", **{"condition:missing": "true", "category": "episode"})
    assert two_patients["other"]["id"] not in ids(without)
    assert len(ids(without)) == 2


def test_date_prefixes(client: Client, two_patients: dict) -> None:
    episodes = {"category": "episode"}
    # The plans have no end date: their periods are open and reach past any date.
    assert len(ids(search(client, "CarePlan", date="ge2026-03-01", **episodes))) == 3
    early = search(client, "CarePlan", date="lt2026-03-01", **episodes)
    assert sorted(ids(early)) == sorted([two_patients["first"]["id"], two_patients["other"]["id"]])
    assert ids(search(client, "CarePlan", date="sa2026-03-01", **episodes)) == [
        two_patients["draft"]["id"]
    ]
    goals = search(client, "Goal", patient="Patient/p1", **{"target-date": "eq2026-03-23"})
    assert len(ids(goals)) == 3


def test_part_of_and_revinclude_of_phases(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    phases = search(client, "CarePlan", **{"part-of": f"CarePlan/{first['id']}"})
    assert sorted(ids(phases)) == sorted(p["id"] for p in first["phases"])
    bundle = search(client, "CarePlan", _id=first["id"], _revinclude="CarePlan:part-of")
    assert ids(bundle) == [first["id"]]
    assert sorted(ids(bundle, "include")) == sorted(p["id"] for p in first["phases"])


def test_include_goals_of_active_plans(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    bundle = search(
        client,
        "CarePlan",
        patient="Patient/p1",
        status="active",
        category="episode",
        _include="CarePlan:goal",
    )
    goals = client.get(plan_url(first, "goals")).json()["items"]
    assert ids(bundle) == [first["id"]]
    assert sorted(ids(bundle, "include")) == sorted(g["id"] for g in goals)
    assert bundle["total"] == 1


def test_include_iterate_follows_includes_of_included(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    phase_id = first["phases"][1]["id"]
    once = client.get(
        "/fhir/CarePlan",
        params=[("_id", phase_id), ("_include", "CarePlan:part-of"), ("_include", "CarePlan:goal")],
    ).json()
    # Without :iterate, goals are included from the matches only (the middle phase's).
    middle_goals = {
        r["resource"]["id"]
        for r in once["entry"]
        if r["search"]["mode"] == "include" and r["resource"]["resourceType"] == "Goal"
    }
    iterated = client.get(
        "/fhir/CarePlan",
        params=[
            ("_id", phase_id),
            ("_include", "CarePlan:part-of"),
            ("_include:iterate", "CarePlan:goal"),
        ],
    ).json()
    included = [e["resource"] for e in iterated["entry"] if e["search"]["mode"] == "include"]
    assert first["id"] in [r["id"] for r in included]
    assert {r["resourceType"] for r in included} == {"CarePlan", "Goal"}
    all_goals = {r["id"] for r in included if r["resourceType"] == "Goal"}
    assert middle_goals < all_goals  # the episode's symptom goal came through the episode


def test_goal_parameters(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    goal = client.get(plan_url(first, "goals")).json()["items"][0]
    client.patch(
        plan_url(first, "goals", goal["id"]),
        json={"lifecycle_status": "completed", "achievement_status": "achieved"},
    )
    completed = search(client, "Goal", patient="Patient/p1", **{"lifecycle-status": "completed"})
    assert ids(completed) == [goal["id"]]
    achieved = search(client, "Goal", **{"achievement-status": "achieved"})
    assert ids(achieved) == [goal["id"]]
    behavioral = search(client, "Goal", category="behavioral", patient="Patient/p2")
    assert len(ids(behavioral)) == 3
    started = search(client, "Goal", **{"start-date": "2026-01-05", "patient": "Patient/p1"})
    assert len(ids(started)) == 3


def test_activity_code_and_date(client: Client, plan: dict) -> None:
    client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    client.post(
        plan_url(plan, "homework"),
        json={"kind": "reconnect", "description": "Call Ana", "assigned_on": "2026-01-05"},
    )
    initial = plan["phases"][0]["id"]
    by_code = search(client, "CarePlan", **{"activity-code": "http://snomed.info/sct|443730003"})
    assert ids(by_code) == [initial]
    by_homework = search(client, "CarePlan", **{"activity-code": "reconnect"})
    assert ids(by_homework) == [initial]
    by_date = search(client, "CarePlan", **{"activity-date": "2026-01-05"})
    assert ids(by_date) == [initial]
    assert ids(search(client, "CarePlan", **{"activity-date": "2026-02"})) == []


def test_last_updated_and_id(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    assert ids(search(client, "CarePlan", _id=first["id"])) == [first["id"]]
    later = search(client, "CarePlan", _lastUpdated=f"gt{two_patients['other']['updated_at']}")
    assert ids(later) == []
    client.patch(plan_url(first), json={"formulation": "later"})
    changed = search(client, "CarePlan", _lastUpdated=f"gt{two_patients['other']['updated_at']}")
    assert ids(changed) == [first["id"]]


def test_paging_neither_skips_nor_repeats_while_others_write(client: Client) -> None:
    created = [
        client.create_plan(patient="Patient/pp", default_goals=False)["id"] for _ in range(7)
    ]
    first_page = search(client, "CarePlan", patient="Patient/pp", category="episode", _count=3)
    seen = ids(first_page)
    assert first_page["total"] == 7
    # Changes between pages: an update of a seen plan and a new plan.
    client.patch(plan_url({"id": seen[0]}), json={"formulation": "changed meanwhile"})
    newcomer = client.create_plan(patient="Patient/pp", default_goals=False)["id"]
    link = next(lk["url"] for lk in first_page["link"] if lk["relation"] == "next")
    pages = [first_page]
    while link:
        page = client.http.get(link).json()
        pages.append(page)
        seen += ids(page)
        link = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    assert len(seen) == len(set(seen))
    assert set(created) <= set(seen)
    assert newcomer in seen  # ids are time-ordered: the newcomer sorts after every earlier page
    back = next(lk["url"] for lk in pages[2]["link"] if lk["relation"] == "previous")
    assert ids(client.http.get(back).json()) == ids(pages[1])
    assert all("category=episode" in lk["url"] for p in pages for lk in p["link"])


def test_sort_by_date_descending(client: Client, two_patients: dict) -> None:
    bundle = search(client, "CarePlan", category="episode", _sort="-date")
    assert ids(bundle)[0] == two_patients["draft"]["id"]
    ascending = search(client, "CarePlan", category="episode", _sort="date")
    assert ids(ascending)[-1] == two_patients["draft"]["id"]


def test_summary_count_and_total_none(client: Client, two_patients: dict) -> None:
    counted = search(client, "CarePlan", category="episode", _summary="count")
    assert counted["total"] == 3
    assert "entry" not in counted
    no_total = search(client, "CarePlan", category="episode", _total="none")
    assert "total" not in no_total


def test_summary_and_elements_reduce_resources_and_stay_in_links(
    client: Client, two_patients: dict
) -> None:
    summary = search(client, "CarePlan", _id=two_patients["first"]["id"], _summary="true")
    resource = summary["entry"][0]["resource"]
    assert "text" not in resource
    assert "goal" not in resource
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"
    elements = search(client, "CarePlan", category="episode", _elements="status", _count=1)
    resource = elements["entry"][0]["resource"]
    assert set(resource) <= {"resourceType", "id", "meta", "status", "intent", "subject"}
    next_link = next(lk["url"] for lk in elements["link"] if lk["relation"] == "next")
    assert "_elements=status" in next_link


def test_post_search_takes_a_form_body(client: Client, two_patients: dict) -> None:
    response = client.post(
        "/fhir/CarePlan/_search", data={"patient": "Patient/p2", "category": "episode"}
    )
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [two_patients["other"]["id"]]


def test_unknown_parameters_lenient_by_default_strict_on_request(
    client: Client, two_patients: dict
) -> None:
    lenient = search(client, "CarePlan", category="episode", colour="blue")
    assert len(ids(lenient)) == 3
    assert "colour" not in lenient["link"][0]["url"]
    strict = client.get(
        "/fhir/CarePlan", params={"colour": "blue"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert outcome_code(strict) == "invalid"


@pytest.mark.parametrize(
    "params",
    [
        {"date": "not-a-date"},
        {"_sort": "title"},
        {"_count": "lots"},
        {"_include": "Goal:patient"},
        {"_summary": "everything"},
        {"_cursor": "bogus"},
        {"condition:missing": "maybe"},
    ],
)
def test_bad_search_requests_are_refused(client: Client, params: dict[str, str]) -> None:
    response = client.get("/fhir/CarePlan", params=params)
    assert response.status_code == 400, response.text
    assert outcome_code(response) == "invalid"


def test_deleted_resources_are_not_found(client: Client, two_patients: dict) -> None:
    client.delete(plan_url(two_patients["other"]))
    assert ids(search(client, "CarePlan", patient="Patient/p2")) == []
    assert ids(search(client, "Goal", patient="Patient/p2")) == []


def test_goal_condition_and_instantiates_canonical(client: Client, two_patients: dict) -> None:
    first = two_patients["first"]
    goal_id = client.get(plan_url(first, "goals")).json()["items"][0]["id"]
    assert ids(search(client, "CarePlan", goal=f"Goal/{goal_id}", category="episode")) == [
        first["id"]
    ]
    assert ids(search(client, "CarePlan", goal=goal_id, category="episode")) == [first["id"]]
    assert ids(search(client, "CarePlan", condition="Condition/c9")) == [
        two_patients["other"]["id"]
    ]
    episode = client.get(f"/fhir/CarePlan/{first['id']}").json()
    canonical = "https://ipt-careplans.org/fhir/PlanDefinition/ipt-standard"
    written = client.request(
        "PUT",
        f"/fhir/CarePlan/{first['id']}",
        data=json.dumps({**episode, "instantiatesCanonical": [canonical]}),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert written.status_code == 200, written.text
    found = search(client, "CarePlan", **{"instantiates-canonical": canonical})
    assert ids(found) == [first["id"]]


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated", "date", "-date", "-_id"])
def test_every_sort_pages_through_all_matches_once(client: Client, sort: str) -> None:
    created = [
        client.create_plan(
            patient="Patient/sort", start_date=f"2026-0{n + 1}-01", default_goals=False
        )["id"]
        for n in range(5)
    ]
    client.patch(plan_url({"id": created[2]}), json={"formulation": "touched"})
    seen: list[str] = []
    url: str | None = None
    bundle = search(
        client, "CarePlan", patient="Patient/sort", category="episode", _sort=sort, _count=2
    )
    while True:
        seen += ids(bundle)
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
        if url is None:
            break
        bundle = client.http.get(url).json()
    assert sorted(seen) == sorted(created)
    if sort == "date":
        assert seen == created
    if sort == "-date":
        assert seen == created[::-1]
    if sort == "-_lastUpdated":
        assert seen[0] == created[2]
    if sort == "-_id":
        assert seen == sorted(created, reverse=True)
