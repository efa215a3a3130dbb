"""The conformance resources: valid FHIR R4, generated from the domain's code lists, and
consistent with each other."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import fhirkit
import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_mappings import conformance, terminology
from service import codes

RESOURCES = conformance.all_resources()
CODE_SYSTEMS = conformance.code_systems()
VALUE_SETS = conformance.value_sets()
STRUCTURE_DEFINITIONS = conformance.structure_definitions()
QUESTIONNAIRES = conformance.questionnaires()
EXTENSION_DEFINITIONS = [sd for sd in STRUCTURE_DEFINITIONS if sd["type"] == "Extension"]
PROFILES = [sd for sd in STRUCTURE_DEFINITIONS if sd["type"] != "Extension"]
EXTENSION_URLS = {value for name, value in vars(terminology).items() if name.startswith("EXT_")}
UNBOUND_CODE_ELEMENTS: set[tuple[str, str]] = set()


def key(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def elements(sd: dict[str, Any]) -> list[dict[str, Any]]:
    return list(sd["differential"]["element"])


def by_url(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["url"]: r for r in resources}


@pytest.mark.parametrize("resource", RESOURCES, ids=key)
def test_resource_is_valid_fhir(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    errors = [
        f"{issue.path}: {issue.message}"
        for issue in fhirkit.validate(resource)
        if issue.severity == "error"
    ]
    assert errors == []


def test_resources_are_the_same_on_every_call() -> None:
    # Key order counts too: the resources are served byte for byte.
    first = json.dumps(conformance.all_resources())
    assert json.dumps(conformance.all_resources()) == first
    assert [*CODE_SYSTEMS, *VALUE_SETS, *STRUCTURE_DEFINITIONS, *QUESTIONNAIRES] == RESOURCES


def test_ids_are_unique_per_type_and_match_the_url() -> None:
    counts = Counter(key(r) for r in RESOURCES)
    assert [k for k, n in counts.items() if n > 1] == []
    for resource in RESOURCES:
        assert resource["url"] == (
            f"{terminology.CANONICAL_BASE}/{resource['resourceType']}/{resource['id']}"
        )


def test_canonical_urls_start_with_the_base() -> None:
    for resource in RESOURCES:
        assert resource["url"].startswith(terminology.CANONICAL_BASE + "/")
    for system in CODE_SYSTEMS:
        assert system["valueSet"].startswith(terminology.CANONICAL_BASE + "/")


def test_common_metadata() -> None:
    for resource in RESOURCES:
        assert resource["status"] == "active"
        assert resource["version"] == "1.0.0"
        assert resource["publisher"] == "ipt-careplans"
        assert re.fullmatch(r"[A-Z][A-Za-z0-9_]*", resource["name"]), resource["name"]
        assert resource["title"]
        assert resource["description"]


def test_one_code_system_per_local_code_list_with_all_its_codes() -> None:
    assert [cs["id"] for cs in CODE_SYSTEMS] == list(terminology.LOCAL_CODE_SYSTEMS)
    for cs in CODE_SYSTEMS:
        system = terminology.local(cs["id"])
        assert cs["url"] == system.url
        assert [c["code"] for c in cs["concept"]] == codes.values(system.enum)
        assert cs["count"] == len(cs["concept"])
        assert (cs["content"], cs["caseSensitive"]) == ("complete", True)
        assert all(c["display"] for c in cs["concept"])


def test_session_status_code_system_has_every_session_status() -> None:
    cs = conformance.find("CodeSystem", "ipt-session-status")
    assert cs is not None
    assert [c["code"] for c in cs["concept"]] == codes.values(codes.SessionStatus)


def test_displays_come_from_the_domain_or_the_code() -> None:
    def displays(name: str) -> dict[str, str]:
        cs = conformance.find("CodeSystem", name)
        assert cs is not None
        return {c["code"]: c["display"] for c in cs["concept"]}

    assert displays("ipt-problem-area") == {
        area.value: text for area, text in codes.PROBLEM_AREA_DISPLAY.items()
    }
    assert displays("ipt-phase") == {
        phase.value: text for phase, text in codes.PHASE_DISPLAY.items()
    }
    assert displays("ipt-session-technique")["role-play"] == "Role play"
    assert displays("ipt-session-frequency")["twice-weekly"] == "Twice weekly"


def test_one_value_set_per_code_system_including_all_its_codes() -> None:
    assert [vs["id"] for vs in VALUE_SETS] == list(terminology.LOCAL_CODE_SYSTEMS)
    for vs in VALUE_SETS:
        system = terminology.local(vs["id"])
        assert vs["url"] == system.value_set_url
        assert vs["compose"]["include"] == [{"system": system.url}]
    for cs in CODE_SYSTEMS:
        assert cs["valueSet"] in by_url(VALUE_SETS)


def test_every_extension_url_has_exactly_one_structure_definition() -> None:
    urls = Counter(sd["url"] for sd in EXTENSION_DEFINITIONS)
    assert set(urls) == EXTENSION_URLS
    assert set(urls.values()) == {1}


def test_extension_definitions() -> None:
    contexts = {
        terminology.EXT_VARIANT: "CarePlan",
        terminology.EXT_SESSION_RANGE: "CarePlan",
        terminology.EXT_SESSION_NUMBER: "CarePlan.activity.detail",
        terminology.EXT_SESSION_TECHNIQUE: "CarePlan.activity.detail",
        terminology.EXT_GOAL_EPISODE: "Goal",
        terminology.EXT_GOAL_PHASE: "Goal",
        terminology.EXT_ANSWERED_BY: "QuestionnaireResponse Observation",
        terminology.EXT_SCORE_SOURCE: "QuestionnaireResponse Observation",
        terminology.EXT_ACKNOWLEDGEMENT: "Flag",
    }
    for sd in EXTENSION_DEFINITIONS:
        assert sd["kind"] == "complex-type"
        assert sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Extension"
        assert (sd["derivation"], sd["abstract"], sd["fhirVersion"]) == (
            "constraint",
            False,
            terminology.FHIR_VERSION,
        )
        assert sd["context"]
        assert all(context["type"] == "element" for context in sd["context"])
        if sd["url"] in contexts:
            expressions = " ".join(context["expression"] for context in sd["context"])
            assert expressions == contexts[sd["url"]]
        by_id = {e["id"]: e for e in elements(sd)}
        assert by_id["Extension.url"]["fixedUri"] == sd["url"]
        assert "Extension.value[x]" in by_id


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        (
            terminology.EXT_CONTRACT,
            ["sequence", "plannedSessions", "frequency", "reason", "agreed", "agreedBy"],
        ),
        (terminology.EXT_PROBLEM_AREA, ["area", "rank", "disputeStage"]),
        (terminology.EXT_RELAPSE_PREVENTION, ["warningSign", "action", "contact"]),
        (terminology.EXT_SESSION_RANGE, ["first", "last"]),
        (terminology.EXT_ACKNOWLEDGEMENT, ["at", "by", "action"]),
    ],
)
def test_complex_extensions_slice_their_sub_extensions(url: str, parts: list[str]) -> None:
    sd = by_url(EXTENSION_DEFINITIONS)[url]
    by_id = {e["id"]: e for e in elements(sd)}
    assert by_id["Extension.value[x]"]["max"] == "0"
    assert by_id["Extension.extension"]["slicing"]["discriminator"] == [
        {"type": "value", "path": "url"}
    ]
    slices = [
        e["sliceName"]
        for e in elements(sd)
        if e["path"] == "Extension.extension" and "sliceName" in e
    ]
    assert slices == parts
    for part in parts:
        assert by_id[f"Extension.extension:{part}.url"]["fixedUri"] == part


def test_relapse_prevention_contact_is_itself_complex() -> None:
    sd = by_url(EXTENSION_DEFINITIONS)[terminology.EXT_RELAPSE_PREVENTION]
    by_id = {e["id"]: e for e in elements(sd)}
    for part in ("name", "relationship", "telecom"):
        element_id = f"Extension.extension:contact.extension:{part}"
        assert by_id[element_id]["path"] == "Extension.extension.extension"
        assert by_id[f"{element_id}.value[x]"]["type"] == [{"code": "string"}]
    assert by_id["Extension.extension:contact.value[x]"]["max"] == "0"


def test_code_valued_elements_bind_to_existing_value_sets() -> None:
    value_set_urls = set(by_url(VALUE_SETS))
    for sd in STRUCTURE_DEFINITIONS:
        for element in elements(sd):
            if "binding" in element:
                assert element["binding"]["strength"] == "required"
                assert element["binding"]["valueSet"] in value_set_urls, element["id"]
            types = {t["code"] for t in element.get("type", [])}
            coded = types & {"code", "Coding", "CodeableConcept"}
            if coded and (sd["url"], element["id"]) not in UNBOUND_CODE_ELEMENTS:
                assert "binding" in element, f"{sd['id']} {element['id']}"


@pytest.mark.parametrize(
    ("url", "value_set"),
    [
        (terminology.EXT_VARIANT, "ipt-variant"),
        (terminology.EXT_SESSION_FREQUENCY, "ipt-session-frequency"),
        (terminology.EXT_SESSION_TECHNIQUE, "ipt-session-technique"),
        (terminology.EXT_GOAL_PHASE, "ipt-phase"),
    ],
)
def test_code_valued_extensions_bind_to_their_local_value_set(url: str, value_set: str) -> None:
    by_id = {e["id"]: e for e in elements(by_url(EXTENSION_DEFINITIONS)[url])}
    binding = by_id["Extension.value[x]"]["binding"]
    assert binding == {"strength": "required", "valueSet": terminology.value_set(value_set)}


def test_element_ids_follow_the_path_and_slice_names() -> None:
    for sd in STRUCTURE_DEFINITIONS:
        ids = [e["id"] for e in elements(sd)]
        assert len(ids) == len(set(ids)), sd["id"]
        assert ids[0] == sd["type"]
        for element in elements(sd):
            steps = element["id"].split(".")
            assert ".".join(step.split(":")[0] for step in steps) == element["path"]
            last = steps[-1].split(":")
            assert element.get("sliceName") == (last[1] if len(last) == 2 else None)
            assert element["path"].split(".")[0] == sd["type"]


def test_profiles() -> None:
    assert {p["url"]: p["type"] for p in PROFILES} == {
        terminology.EPISODE_PROFILE: "CarePlan",
        terminology.PHASE_PROFILE: "CarePlan",
        terminology.GOAL_PROFILE: "Goal",
        terminology.RESPONSE_PROFILE: "QuestionnaireResponse",
        terminology.SCORE_PROFILE: "Observation",
        terminology.SAFETY_FLAG_PROFILE: "Flag",
    }
    for profile in PROFILES:
        assert profile["kind"] == "resource"
        assert profile["derivation"] == "constraint"
        assert profile["baseDefinition"] == (
            f"http://hl7.org/fhir/StructureDefinition/{profile['type']}"
        )
        by_id = {e["id"]: e for e in elements(profile)}
        assert by_id[f"{profile['type']}.subject"]["min"] == 1
        if profile["type"] in ("CarePlan", "Goal"):
            assert by_id[f"{profile['type']}.category"]["min"] == 1
            assert by_id[f"{profile['type']}.category:kind"]["min"] == 1
        if profile["type"] == "CarePlan":
            assert by_id["CarePlan.intent"]["fixedCode"] == "plan"
            kind = by_id["CarePlan.category:kind"]["patternCodeableConcept"]["coding"]
            assert [c["system"] for c in kind] == [terminology.local("ipt-careplan-kind").url]


def test_profiles_reference_only_defined_extensions() -> None:
    defined = set(by_url(EXTENSION_DEFINITIONS))
    used: set[str] = set()
    for profile in PROFILES:
        for element in elements(profile):
            for element_type in element.get("type", []):
                if element_type["code"] == "Extension":
                    assert element["path"].endswith(".extension")
                    used.update(element_type["profile"])
    assert used <= defined
    assert used == EXTENSION_URLS


def test_goal_requires_its_episode() -> None:
    goal = by_url(PROFILES)[terminology.GOAL_PROFILE]
    by_id = {e["id"]: e for e in elements(goal)}
    episode = by_id["Goal.extension:goalEpisode"]
    assert (episode["min"], episode["max"]) == (1, "1")
    assert episode["type"] == [{"code": "Extension", "profile": [terminology.EXT_GOAL_EPISODE]}]


def test_find() -> None:
    for resource in RESOURCES:
        assert conformance.find(resource["resourceType"], resource["id"]) == resource
    assert conformance.find("CodeSystem", "no-such-system") is None
    assert conformance.find("ValueSet", "ipt-goal-episode") is None


def test_changing_a_result_does_not_change_the_next() -> None:
    first = json.dumps(conformance.all_resources())
    for resource in conformance.all_resources():
        for element in resource.get("differential", {}).get("element", []):
            for value in element.values():
                if isinstance(value, dict | list):
                    value.clear()
    assert json.dumps(conformance.all_resources()) == first


def test_find_returns_a_copy() -> None:
    found = conformance.find("CodeSystem", "ipt-variant")
    assert found is not None
    found["concept"].clear()
    again = conformance.find("CodeSystem", "ipt-variant")
    assert again is not None
    assert [c["code"] for c in again["concept"]] == codes.values(codes.Variant)
