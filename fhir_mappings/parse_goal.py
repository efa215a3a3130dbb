"""Reading a Goal back into the data ``add_goal``/``update_goal`` accept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.parse_common import (
    Problems,
    check_local_code,
    codings,
    concept_code,
    indexed,
    owned_category,
    read_date,
    read_local_code,
    read_notes,
    read_reference,
    reference_id,
    to_decimal,
    value,
)
from fhir_mappings.parse_extras import keep_written, start_extras
from fhir_mappings.render import GOAL_CATEGORY_CODE, SCORE_UNIT

OWNED = {
    "resourceType",
    "id",
    "meta",
    "text",
    "extension",
    "lifecycleStatus",
    "achievementStatus",
    "category",
    "priority",
    "description",
    "subject",
    "startDate",
    "target",
    "note",
}
_G = "Goal"
# The elements read into the domain and kept as written (see verbatim.py); extensions and
# categories are kept by their own rules.
_WRITTEN = (
    "lifecycleStatus",
    "achievementStatus",
    "priority",
    "description",
    "subject",
    "startDate",
    "target",
    "note",
)
# The detail of a target the domain cannot hold: it keeps a score (a Quantity).
_OTHER_DETAILS = (
    "detailRange",
    "detailCodeableConcept",
    "detailString",
    "detailBoolean",
    "detailInteger",
    "detailRatio",
)


def _extensions(
    problems: Problems, resource: Mapping[str, Any], data: dict[str, Any], extras: dict[str, Any]
) -> str | None:
    """Read the goal's extensions into ``data``; return the episode's id."""
    plan_id = None
    unknown, known = [], []
    seen: set[str] = set()
    data["phase"] = None
    for path, ext in indexed(resource.get("extension"), f"{_G}.extension"):
        url = ext.get("url")
        if url in (t.EXT_GOAL_EPISODE, t.EXT_GOAL_PHASE):
            if url in seen:
                problems.add(path, f"{url} is given more than once")
                continue
            seen.add(url)
        if url == t.EXT_GOAL_EPISODE:
            target = read_reference(
                problems,
                f"{path}.valueReference",
                value(problems, path, ext, "Reference"),
                ("CarePlan",),
                relative=True,
            )
            plan_id = reference_id(target)
        elif url == t.EXT_GOAL_PHASE:
            code = value(problems, path, ext, "Code")
            data["phase"] = check_local_code(problems, f"{path}.valueCode", code, "ipt-phase")
        else:
            unknown.append(ext)
            continue
        known.append(ext)
    if known:
        extras.setdefault("written", {})["extension"] = known
    if t.EXT_GOAL_EPISODE not in seen:
        problems.add(
            f"{_G}.extension",
            f"the goal's care plan is required: an {t.EXT_GOAL_EPISODE} extension "
            "with valueReference CarePlan/<id>",
        )
    if unknown:
        extras["extension"] = unknown
    return plan_id


def _owns(coding: Mapping[str, Any]) -> bool:
    system = coding.get("system")
    return system in (t.local("ipt-goal-kind").url, t.local("ipt-problem-area").url) or (
        (system, coding.get("code")) == (t.GOAL_CATEGORY, GOAL_CATEGORY_CODE)
    )


def _categories(
    problems: Problems, resource: Mapping[str, Any], data: dict[str, Any], extras: dict[str, Any]
) -> None:
    found: dict[str, list[str | None]] = {"kind": [], "problem_area": []}
    names = {"ipt-goal-kind": "kind", "ipt-problem-area": "problem_area"}
    other, own = [], []
    for path, concept in indexed(resource.get("category"), f"{_G}.category"):
        if not owned_category(concept, _owns):
            other.append(concept)
            continue
        own.append(concept)
        for coding_path, coding in codings(concept, path):
            for system_name, key in names.items():
                if coding.get("system") == t.local(system_name).url:
                    found[key].append(read_local_code(problems, coding_path, coding, system_name))
    for key, what in (("kind", "goal kind"), ("problem_area", "problem area")):
        if len(found[key]) > 1:
            problems.add(f"{_G}.category", f"a goal has one {what}")
        data[key] = found[key][0] if found[key] else None
    if not found["kind"]:
        problems.add(
            f"{_G}.category",
            f"the goal's kind is required: a category coding from {t.local('ipt-goal-kind').url}",
        )
    if other:
        extras["category"] = other
    if own:
        extras.setdefault("written", {})["category"] = own


def _target(problems: Problems, resource: Mapping[str, Any]) -> dict[str, Any] | None:
    targets = resource.get("target") or []
    if not targets:
        return None
    if len(targets) > 1:
        problems.add(f"{_G}.target[1]", "the service keeps one target per goal")
    path = f"{_G}.target[0]"
    target = targets[0]
    for name in _OTHER_DETAILS:
        if name in target:
            problems.add(f"{path}.{name}", "the service keeps a target as a score (detailQuantity)")
    result: dict[str, Any] = {
        "measure": concept_code(
            problems, f"{path}.measure", target.get("measure"), t.LOINC, "the scale's LOINC code"
        ),
        "comparator": None,
        "value": None,
        "due_date": read_date(problems, f"{path}.dueDate", target.get("dueDate"), end=True),
    }
    if "dueDuration" in target:
        problems.add(f"{path}.dueDuration", "the service keeps a target's due date, not a duration")
    quantity = target.get("detailQuantity")
    if quantity is not None:
        quantity_path = f"{path}.detailQuantity"
        for key, expected in (("system", t.UCUM), ("code", SCORE_UNIT)):
            if quantity.get(key) not in (None, expected):
                problems.add(f"{quantity_path}.{key}", f"a score's {key} is {expected}")
        result["comparator"] = quantity.get("comparator")
        if quantity.get("value") is not None:
            result["value"] = to_decimal(quantity["value"])
    return result


def read_goal(
    resource: Mapping[str, Any], *, whole: bool = True
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(episode id, goal data, extras) of a structurally valid Goal; see parse.py."""
    problems = Problems()
    extras = start_extras(problems, resource, OWNED, t.GOAL_PROFILE, whole=whole)
    data: dict[str, Any] = {}
    if "startCodeableConcept" in resource:
        # The domain dates every goal (from the plan's start when none is given).
        problems.add(f"{_G}.startCodeableConcept", "the service keeps a goal's start as a date")
        extras.pop("startCodeableConcept")
    plan_id = _extensions(problems, resource, data, extras)
    _categories(problems, resource, data, extras)
    description = resource.get("description") or {}
    # The goal is kept as a text: its own, else what its first coding displays.
    displays = [c.get("display") for c in description.get("coding") or [] if c.get("display")]
    data["description"] = description.get("text") or next(iter(displays), None)
    if data["description"] is None:
        problems.add(
            f"{_G}.description.text",
            "the goal is kept as a text: give a text (or a coding with a display)",
        )
    data["lifecycle_status"] = resource.get("lifecycleStatus")
    data["achievement_status"] = concept_code(
        problems,
        f"{_G}.achievementStatus",
        resource.get("achievementStatus"),
        t.GOAL_ACHIEVEMENT,
        "goal achievement",
    )
    data["priority"] = concept_code(
        problems, f"{_G}.priority", resource.get("priority"), t.GOAL_PRIORITY, "goal priority"
    )
    data["patient"] = read_reference(
        problems, f"{_G}.subject", resource.get("subject"), ("Patient",)
    )
    keep_written(extras, resource, _WRITTEN)
    data["start_date"] = read_date(problems, f"{_G}.startDate", resource.get("startDate"))
    data["target"] = _target(problems, resource)
    data["notes"] = read_notes(problems, f"{_G}.note", resource.get("note"))
    problems.raise_if_any()
    return str(plan_id), data, extras
