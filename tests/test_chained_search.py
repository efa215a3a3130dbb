"""Chained search (``part-of.status``, ``goal.lifecycle-status``) and ``_has``, and every
kind of parameter the server cannot apply: refused under ``Prefer: handling=strict``,
otherwise left out of the search and of its self link alike."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import Client, Server, token_for
from test_fhir_read import assert_valid

from service.db import Database

STRICT = {"Prefer": "handling=strict"}
REQUEST_STATUS = "http://hl7.org/fhir/request-status"


@pytest.fixture
def plans(client: Client) -> dict[str, dict[str, Any]]:
    """An active plan (active goals) with an identifier, a draft plan (proposed goals) of
    the same patient, and another patient's active plan."""
    return {
        "active": client.create_plan(
            patient="Patient/c1", identifiers=[{"system": "urn:c", "value": "A"}]
        ),
        "draft": client.create_plan(patient="Patient/c1", status="draft"),
        "other": client.create_plan(patient="Patient/c2"),
    }


def fetch(client: Client, resource_type: str, params: Any = None, **kwargs: Any) -> Any:
    response = client.get(f"/fhir/{resource_type}", params=params, **kwargs)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert_valid(bundle)
    return bundle


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return sorted(
        e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
    )


def all_of(client: Client, resource_type: str) -> dict[str, dict[str, Any]]:
    bundle = fetch(client, resource_type, {"_count": 200})
    return {e["resource"]["id"]: e["resource"] for e in bundle.get("entry", [])}


def refs(resource: dict[str, Any], element: str) -> list[str]:
    return [r["reference"].split("/")[-1] for r in resource.get(element, []) if "reference" in r]


def self_params(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    url = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --- chains ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("part-of.status", "active"),
        ("part-of.status", "draft"),
        ("part-of.status", f"{REQUEST_STATUS}|draft"),
        ("part-of:CarePlan.status", "active"),
        ("part-of.status:not", "active"),
        ("part-of.identifier", "urn:c|A"),
        ("part-of:CarePlan.identifier", "A"),
        ("part-of.patient", "Patient/c2"),
        ("part-of.date", "ge2026-01-01"),
        ("part-of._id", "__episode__"),
    ],
)
def test_part_of_chains_find_the_phases_of_matching_episodes(
    client: Client, plans: dict[str, Any], name: str, value: str
) -> None:
    careplans = all_of(client, "CarePlan")
    episode = plans["active"]["id"]
    value = value.replace("__episode__", episode)
    # The episodes the inner parameter finds, searched directly.
    inner = name.split(".", 1)[1]
    episodes = set(match_ids(fetch(client, "CarePlan", {inner: value, "_count": 200})))
    assert episodes
    bundle = fetch(client, "CarePlan", {name: value, "_count": 200})
    want = sorted(i for i, r in careplans.items() if set(refs(r, "partOf")) & episodes)
    assert want
    assert match_ids(bundle) == want
    assert (name, value) in self_params(bundle)
    strict = fetch(client, "CarePlan", {name: value, "_count": 200}, headers=STRICT)
    assert match_ids(strict) == want


@pytest.mark.parametrize("status", ["active", "proposed", "completed"])
def test_goal_chain_finds_plans_by_their_goals_status(
    client: Client, plans: dict[str, Any], status: str
) -> None:
    careplans = all_of(client, "CarePlan")
    goals = all_of(client, "Goal")
    with_status = {i for i, g in goals.items() if g["lifecycleStatus"] == status}
    bundle = fetch(client, "CarePlan", {"goal.lifecycle-status": status, "_count": 200})
    want = sorted(i for i, r in careplans.items() if set(refs(r, "goal")) & with_status)
    assert match_ids(bundle) == want
    assert bool(want) == (status != "completed")


@pytest.mark.parametrize(
    ("resource_type", "name", "value", "source", "element"),
    [
        ("CarePlan", "_has:CarePlan:part-of:status", "draft", "CarePlan", "partOf"),
        ("CarePlan", "_has:CarePlan:part-of:patient", "Patient/c2", "CarePlan", "partOf"),
        ("CarePlan", "_has:CarePlan:part-of:_lastUpdated", "ge2000", "CarePlan", "partOf"),
        ("Goal", "_has:CarePlan:goal:status", "draft", "CarePlan", "goal"),
        ("Goal", "_has:CarePlan:goal:patient", "Patient/c2", "CarePlan", "goal"),
        ("Goal", "_has:CarePlan:goal:status:not", "draft", "CarePlan", "goal"),
    ],
)
def test_has_finds_what_matching_resources_point_to(
    client: Client,
    plans: dict[str, Any],
    resource_type: str,
    name: str,
    value: str,
    source: str,
    element: str,
) -> None:
    sources = all_of(client, source)
    inner = name.split(":", 3)[3]
    matching_sources = match_ids(fetch(client, source, {inner: value, "_count": 200}))
    want = sorted({t for i in matching_sources for t in refs(sources[i], element)})
    assert want
    bundle = fetch(client, resource_type, {name: value, "_count": 200})
    assert match_ids(bundle) == want
    assert (name, value) in self_params(bundle)


def test_chains_compose_with_other_clauses_paging_total_and_include(
    client: Client, plans: dict[str, Any]
) -> None:
    params = {
        "patient": "Patient/c1",
        "part-of.status": "active,draft",
        "_count": 2,
        "_include": "CarePlan:part-of",
        "_sort": "-_lastUpdated",
    }
    first = fetch(client, "CarePlan", params)
    careplans = all_of(client, "CarePlan")
    episodes = {plans["active"]["id"], plans["draft"]["id"]}
    want = {i for i, r in careplans.items() if set(refs(r, "partOf")) & episodes}
    assert first["total"] == len(want) > 2
    seen: list[str] = []
    included: set[str] = set()
    bundle = first
    while True:
        seen += [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
        included |= {
            e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"
        }
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        assert "part-of.status=active%2Cdraft" in following[0]
        response = client.http.get(following[0], timeout=30)
        assert response.status_code == 200, response.text
        bundle = response.json()
    assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))
    assert included == episodes
    counted = fetch(client, "CarePlan", {**params, "_summary": "count"})
    assert counted["total"] == len(want)


def test_a_deleted_episode_is_no_longer_found_through_a_chain(
    client: Client, plans: dict[str, Any]
) -> None:
    phases = match_ids(fetch(client, "CarePlan", {"part-of.identifier": "urn:c|A"}))
    assert phases
    response = client.delete(f"/api/v1/care-plans/{plans['active']['id']}")
    assert response.status_code == 204, response.text
    assert match_ids(fetch(client, "CarePlan", {"part-of.identifier": "urn:c|A"})) == []


def test_chains_stay_within_the_callers_compartment_and_scopes(
    live: Server, database: Database, client: Client, plans: dict[str, Any]
) -> None:
    bound = Client(live.url, token_for(live, database, ["patient/*.rs"], patient="Patient/c2"))
    found = fetch(bound, "CarePlan", {"part-of.status": "active", "_count": 200})
    own = all_of(bound, "CarePlan")
    assert match_ids(found) and set(match_ids(found)) <= set(own)
    # The episode with this identifier is another patient's: its goals are not found.
    of_identified = {"_has:CarePlan:goal:identifier": "urn:c|A"}
    assert match_ids(fetch(client, "Goal", of_identified))
    assert match_ids(fetch(bound, "Goal", of_identified)) == []
    careplans_only = Client(live.url, token_for(live, database, ["system/CarePlan.rs"]))
    assert careplans_only.get("/fhir/CarePlan", params={"part-of.status": "active"}).ok
    forbidden = careplans_only.get("/fhir/CarePlan", params={"goal.lifecycle-status": "active"})
    assert forbidden.status_code == 403
    goals_only = Client(live.url, token_for(live, database, ["system/Goal.rs"]))
    assert goals_only.get("/fhir/Goal", params={"lifecycle-status": "active"}).ok
    reverse = goals_only.get("/fhir/Goal", params={"_has:CarePlan:goal:status": "active"})
    assert reverse.status_code == 403


# --- what cannot be applied -------------------------------------------------------------------

UNSUPPORTED = [
    ("CarePlan", "colour", "blue"),
    ("CarePlan", "_tag", "x"),
    ("CarePlan", "status:exact", "active"),
    ("CarePlan", "status:text", "active"),
    ("CarePlan", "date:not", "2026"),
    ("CarePlan", "_id:not", "x"),
    ("CarePlan", "_lastUpdated:missing", "true"),
    ("CarePlan", "patient:identifier", "urn:x|1"),
    ("CarePlan", "subject:Group", "1"),
    ("CarePlan", "part-of:Goal", "1"),
    ("CarePlan", "instantiates-canonical:CarePlan", "x"),
    ("CarePlan", "part-of.colour", "x"),
    ("CarePlan", "part-of:Goal.status", "active"),
    ("CarePlan", "part-of.part-of.status", "active"),
    ("CarePlan", "part-of._has:CarePlan:part-of:status", "active"),
    ("CarePlan", "part-of.status:exact", "active"),
    ("CarePlan", "patient.name", "Smith"),
    ("CarePlan", "condition.code", "x"),
    ("CarePlan", "status.code", "x"),
    ("CarePlan", "colour.status", "x"),
    ("CarePlan", "_has:Goal:patient:lifecycle-status", "active"),
    ("CarePlan", "_has:CarePlan:part-of", "active"),
    ("CarePlan", "_has:CarePlan:goal:status", "active"),
    ("CarePlan", "_has:CarePlan:part-of:colour", "x"),
    ("CarePlan", "_has:CarePlan:part-of:_has:CarePlan:part-of:status", "active"),
    ("Goal", "colour", "blue"),
    ("Goal", "lifecycle-status:below", "active"),
    ("Goal", "patient.name", "x"),
    ("Goal", "_has:Goal:patient:status", "active"),
    ("Goal", "_has:CarePlan:goal:colour", "x"),
]


@pytest.mark.parametrize(("resource_type", "name", "value"), UNSUPPORTED)
def test_a_parameter_that_cannot_be_applied_is_refused_when_strict(
    client: Client, plans: dict[str, Any], resource_type: str, name: str, value: str
) -> None:
    response = client.get(
        f"/fhir/{resource_type}", params={name: value, "category": "episode"}, headers=STRICT
    )
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert_valid(outcome)
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["expression"] == [name]


@pytest.mark.parametrize(("resource_type", "name", "value"), UNSUPPORTED)
def test_a_parameter_that_cannot_be_applied_is_ignored_and_left_out_of_the_self_link(
    client: Client, plans: dict[str, Any], resource_type: str, name: str, value: str
) -> None:
    plain = fetch(client, resource_type, {"patient": "Patient/c1", "_count": 200})
    bundle = fetch(
        client, resource_type, [("patient", "Patient/c1"), (name, value), ("_count", "200")]
    )
    assert match_ids(bundle) == match_ids(plain)
    assert bundle["total"] == plain["total"]
    assert self_params(bundle) == self_params(plain)
    assert name not in [n for n, _ in self_params(bundle)]


@pytest.mark.parametrize(
    ("resource_type", "name", "value"),
    [
        ("CarePlan", "part-of.date", "not-a-date"),
        ("CarePlan", "part-of.status:missing", "maybe"),
        ("CarePlan", "goal.target-date", "ge9999-13-01"),
        ("CarePlan", "_has:CarePlan:part-of:date", "2026-02-30"),
        ("Goal", "_has:CarePlan:goal:status:missing", "yes"),
        ("CarePlan", "part-of.part-of", ""),
    ],
)
@pytest.mark.parametrize("headers", [{}, STRICT])
def test_a_chain_with_a_value_that_cannot_be_read_is_a_400_naming_it(
    client: Client, resource_type: str, name: str, value: str, headers: dict[str, str]
) -> None:
    response = client.get(f"/fhir/{resource_type}", params={name: value}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [name]


def test_the_capability_statement_declares_the_chains(client: Client) -> None:
    statement = client.get("/fhir/metadata").json()
    assert_valid(statement)
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    careplan = {p["name"]: p for p in resources["CarePlan"]["searchParam"]}
    assert "part-of.status" in careplan["part-of"]["documentation"]
    assert "goal.lifecycle-status" in careplan["goal"]["documentation"]
    assert "_has:CarePlan:part-of" in careplan["_has"]["documentation"]
    goal = {p["name"]: p for p in resources["Goal"]["searchParam"]}
    assert "_has:CarePlan:goal" in goal["_has"]["documentation"]
    assert "chain" not in careplan["patient"]["documentation"].lower()
