"""Reading an episode CarePlan back into the data ``create_plan``/``update_plan`` accept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.parse_common import (
    Problems,
    check_local_code,
    codings,
    indexed,
    owned_category,
    read_date,
    read_local_code,
    read_notes,
    read_reference,
    read_references,
    sub_extensions,
    unknown_part,
    value,
)
from fhir_mappings.parse_extras import (
    keep_written,
    read_goal_references,
    start_extras,
)
from fhir_mappings.render import CAREPLAN_CATEGORY_CODE, CONTACT_PARTS
from service import codes
from service.codes import ProblemArea

# Elements the episode mapping owns. ``goal`` lists the plan's goals (the Goals that name
# it); a written list is checked against it. A client's ``created`` is kept verbatim.
OWNED = {
    "resourceType",
    "id",
    "meta",
    "text",
    "extension",
    "identifier",
    "status",
    "intent",
    "category",
    "description",
    "subject",
    "period",
    "author",
    "addresses",
    "goal",
    "note",
    "activity",
}
# The elements read into the domain and kept as written (see verbatim.py); identifiers,
# extensions and categories are kept by their own rules.
_WRITTEN = ("status", "intent", "description", "subject", "period", "author", "addresses", "note")
RANKS = tuple(codes.values(codes.ProblemAreaRank))
_SIMPLE = {
    t.EXT_VARIANT: ("variant", "Code", "ipt-variant"),
    t.EXT_PLANNED_SESSIONS: ("planned_sessions", "PositiveInt", None),
    t.EXT_SESSION_FREQUENCY: ("session_frequency", "Code", "ipt-session-frequency"),
}
_P = "CarePlan"


def _problem_area(
    problems: Problems, path: str, extension: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """(area, rank, dispute stage) of one ipt-problem-area extension."""
    area = rank = stage = None
    named = False
    for sub_path, url, sub in sub_extensions(problems, path, extension):
        if url == "area":
            named = True
            coding = value(problems, sub_path, sub, "Coding")
            area = read_local_code(problems, f"{sub_path}.valueCoding", coding, "ipt-problem-area")
        elif url == "rank":
            rank = value(problems, sub_path, sub, "Code")
            if rank is not None and rank not in RANKS:
                problems.add(f"{sub_path}.valueCode", f"rank is primary or secondary, not {rank!r}")
        elif url == "disputeStage":
            coding = value(problems, sub_path, sub, "Coding")
            stage = read_local_code(
                problems, f"{sub_path}.valueCoding", coding, "ipt-dispute-stage"
            )
        else:
            unknown_part(problems, sub_path, url)
    if not named:
        problems.add(path, "the problem area extension names no area")
    return area, rank, stage


def _problem_areas(
    problems: Problems, found: list[tuple[str, Mapping[str, Any]]]
) -> tuple[list[str], str | None]:
    """The areas, primary first, and the dispute stage."""
    if not found:
        problems.add(
            f"{_P}.extension",
            f"at least one problem area ({t.EXT_PROBLEM_AREA}) is required",
        )
    read = [(path, *_problem_area(problems, path, ext)) for path, ext in found]
    primaries = [path for path, _, rank, _ in read if rank == "primary"]
    if len(primaries) > 1:
        problems.add(primaries[1], "only one problem area is primary")
    elif not primaries and any(rank for _, _, rank, _ in read):
        problems.add(read[0][0], "one problem area must be ranked primary")
    ordered = sorted(read, key=lambda r: r[2] != "primary") if primaries else read
    stages = [(path, area, stage) for path, area, _, stage in read if stage is not None]
    for path, area, _stage in stages:
        if area is not None and area != ProblemArea.ROLE_DISPUTE:
            problems.add(path, "a dispute stage belongs on the role-dispute problem area")
    if len(stages) > 1:
        problems.add(stages[1][0], "a plan has one dispute stage")
    areas = [area for _, area, _, _ in ordered if area is not None]
    return areas, stages[0][2] if stages else None


def _relapse_prevention(
    problems: Problems, path: str, extension: Mapping[str, Any]
) -> dict[str, Any]:
    plan: dict[str, Any] = {"warning_signs": [], "actions": [], "contacts": []}
    for sub_path, url, sub in sub_extensions(problems, path, extension):
        if url == "warningSign":
            plan["warning_signs"].append(value(problems, sub_path, sub, "String"))
        elif url == "action":
            plan["actions"].append(value(problems, sub_path, sub, "String"))
        elif url == "contact":
            contact: dict[str, Any] = {}
            for part_path, part_url, part in sub_extensions(problems, sub_path, sub):
                if part_url in contact:
                    problems.add(part_path, f"a contact has one {part_url}")
                elif part_url in CONTACT_PARTS:
                    contact[part_url] = value(problems, part_path, part, "String")
                else:
                    unknown_part(problems, part_path, part_url)
            if "name" not in contact:
                problems.add(sub_path, "a contact needs its name")
            plan["contacts"].append(contact)
        else:
            unknown_part(problems, sub_path, url)
    return plan


def _extensions(
    problems: Problems, resource: Mapping[str, Any], data: dict[str, Any], extras: dict[str, Any]
) -> None:
    unknown, known = [], []
    areas: list[tuple[str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    for path, ext in indexed(resource.get("extension"), f"{_P}.extension"):
        url = ext.get("url")
        if url in _SIMPLE or url == t.EXT_RELAPSE_PREVENTION:
            if url in seen:
                problems.add(path, f"{url} is given more than once")
                continue
            seen.add(url)
        if url in _SIMPLE:
            key, kind, system = _SIMPLE[url]
            found = value(problems, path, ext, kind)
            if system is not None and found is not None:
                found = check_local_code(problems, f"{path}.value{kind}", found, system)
            if found is not None:
                data[key] = found
        elif url == t.EXT_PROBLEM_AREA:
            areas.append((path, ext))
        elif url == t.EXT_RELAPSE_PREVENTION:
            data["relapse_prevention"] = _relapse_prevention(problems, path, ext)
        elif url == t.EXT_CONTRACT:
            # The contract history is the server's record, as meta.versionId is: what a
            # client sends of it is replaced by the record (docs/fhir-mapping.md).
            continue
        else:
            unknown.append(ext)
            continue
        known.append(ext)
    data["problem_areas"], data["dispute_stage"] = _problem_areas(problems, areas)
    if unknown:
        extras["extension"] = unknown
    if known:
        extras.setdefault("written", {})["extension"] = known


_OWN_CATEGORIES = {
    (t.US_CORE_CAREPLAN_CATEGORY, CAREPLAN_CATEGORY_CODE),
    (t.SNOMED, t.IPT_SNOMED_CODE),
}


def _owns(coding: Mapping[str, Any]) -> bool:
    system = coding.get("system")
    return system in (t.local("ipt-careplan-kind").url, t.local("ipt-phase").url) or (
        (system, coding.get("code")) in _OWN_CATEGORIES
    )


def _categories(problems: Problems, resource: Mapping[str, Any], extras: dict[str, Any]) -> None:
    other, own = [], []
    for path, concept in indexed(resource.get("category"), f"{_P}.category"):
        if not owned_category(concept, _owns):
            other.append(concept)
            continue
        own.append(concept)
        for coding_path, coding in codings(concept, path):
            system, code = coding.get("system"), coding.get("code")
            if system == t.local("ipt-careplan-kind").url and code != t.CarePlanKind.EPISODE:
                problems.add(
                    f"{coding_path}.code", f"this is read as an episode CarePlan, not {code!r}"
                )
            elif system == t.local("ipt-phase").url:
                problems.add(coding_path, "an episode CarePlan belongs to no single phase")
    if other:
        extras["category"] = other
    if own:
        extras.setdefault("written", {})["category"] = own


def _identifiers(
    problems: Problems, resource: Mapping[str, Any], extras: dict[str, Any]
) -> list[dict[str, str]]:
    """The identifiers as (system, value); one without a system has the empty system, so
    that it is unique among those without one, as identifiers are within a system."""
    result = []
    entries = resource.get("identifier") or []
    for path, identifier in indexed(entries, f"{_P}.identifier"):
        if identifier.get("value") is None:
            problems.add(
                f"{path}.value", "an identifier names the plan by its value: it is required"
            )
        result.append({"system": identifier.get("system") or "", "value": identifier.get("value")})
    if any(set(identifier) - {"system", "value"} for identifier in entries):
        extras["identifier"] = entries
    return result


def read_episode(
    resource: Mapping[str, Any], *, whole: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plan data, extras) of a structurally valid episode CarePlan; see parse.py."""
    problems = Problems()
    extras = start_extras(problems, resource, OWNED, t.EPISODE_PROFILE, whole=whole)
    data: dict[str, Any] = {}
    status = resource.get("status")
    if status == "unknown":
        problems.add(f"{_P}.status", "a care plan's status is always known; 'unknown' is refused")
    data["status"] = status
    if resource.get("intent") != "plan":
        problems.add(f"{_P}.intent", f"an IPT care plan is a plan, not {resource.get('intent')!r}")
    _extensions(problems, resource, data, extras)
    _categories(problems, resource, extras)
    data["patient"] = read_reference(
        problems, f"{_P}.subject", resource.get("subject"), ("Patient",)
    )
    period = resource.get("period") or {}
    if period.get("start") is None:
        problems.add(f"{_P}.period.start", "the start date of the plan is required")
    data["start_date"] = read_date(problems, f"{_P}.period.start", period.get("start"))
    data["end_date"] = read_date(problems, f"{_P}.period.end", period.get("end"), end=True)
    data["condition"] = read_references(
        problems,
        f"{_P}.addresses",
        resource.get("addresses"),
        ("Condition",),
        "the plan addresses one condition (its depression) only",
        optional_literal=True,
    )
    data["therapist"] = read_reference(
        problems,
        f"{_P}.author",
        resource.get("author"),
        ("Practitioner", "PractitionerRole"),
        optional_literal=True,
    )
    keep_written(extras, resource, _WRITTEN)
    read_goal_references(problems, extras, resource)
    data["formulation"] = resource.get("description")
    data.setdefault("relapse_prevention", None)
    data["notes"] = read_notes(problems, f"{_P}.note", resource.get("note"))
    data["identifiers"] = _identifiers(problems, resource, extras)
    if resource.get("activity"):
        problems.add(
            f"{_P}.activity",
            "an episode has no activities: sessions and homework belong to its phase CarePlans",
        )
    problems.raise_if_any()
    return data, extras
