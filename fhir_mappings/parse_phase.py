"""Reading a phase CarePlan back into phase data and its session and homework entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.parse_common import (
    Problems,
    codings,
    indexed,
    owned_category,
    read_date,
    read_local_code,
    read_progress,
    read_reference,
    read_references,
    reference_id,
    sub_extensions,
    unknown_part,
    value,
)
from fhir_mappings.parse_extras import keep_written, read_goal_references, start_extras
from fhir_mappings.render import (
    CAREPLAN_CATEGORY_CODE,
    HOMEWORK_ACTIVITY_PREFIX,
    HOMEWORK_STATUS,
    PHASE_STATUS,
    SESSION_ACTIVITY_PREFIX,
    SESSION_STATUS,
)

# ``goal`` lists the goals of the phase (those whose phase it is); a written list is
# checked against it.
OWNED = {
    "resourceType",
    "id",
    "meta",
    "text",
    "extension",
    "status",
    "intent",
    "category",
    "description",
    "subject",
    "partOf",
    "period",
    "goal",
    "activity",
}
_C = "CarePlan"
PHASE_STATUS_FROM_FHIR = {fhir: str(domain) for domain, fhir in PHASE_STATUS.items()}
SESSION_STATUS_FROM_FHIR = {fhir: str(domain) for domain, fhir in SESSION_STATUS.items()}
HOMEWORK_STATUS_FROM_FHIR = {fhir: str(domain) for domain, fhir in HOMEWORK_STATUS.items()}
# The elements read into the domain and kept as written (see verbatim.py); extensions and
# categories are kept by their own rules, activities one by one.
_WRITTEN = ("status", "intent", "description", "subject", "partOf", "period", "activity")


def _session_range(
    problems: Problems, resource: Mapping[str, Any], data: dict[str, Any], extras: dict[str, Any]
) -> None:
    unknown, known = [], []
    for path, ext in indexed(resource.get("extension"), f"{_C}.extension"):
        if ext.get("url") != t.EXT_SESSION_RANGE:
            unknown.append(ext)
            continue
        known.append(ext)
        if "start_session" in data:
            problems.add(path, f"{t.EXT_SESSION_RANGE} is given more than once")
            continue
        parts = {"first": "start_session", "last": "end_session"}
        for sub_path, url, sub in sub_extensions(problems, path, ext):
            if url in parts:
                data[parts.pop(url)] = value(problems, sub_path, sub, "PositiveInt")
            else:
                unknown_part(problems, sub_path, url)
        for name in parts:
            problems.add(path, f"the session range needs its {name} session")
    if unknown:
        extras["extension"] = unknown
    if known:
        extras.setdefault("written", {})["extension"] = known


def _owns(coding: Mapping[str, Any]) -> bool:
    system = coding.get("system")
    return system in (t.local("ipt-careplan-kind").url, t.local("ipt-phase").url) or (
        (system, coding.get("code")) == (t.US_CORE_CAREPLAN_CATEGORY, CAREPLAN_CATEGORY_CODE)
    )


def _categories(
    problems: Problems, resource: Mapping[str, Any], data: dict[str, Any], extras: dict[str, Any]
) -> None:
    other, own = [], []
    for path, concept in indexed(resource.get("category"), f"{_C}.category"):
        if not owned_category(concept, _owns):
            other.append(concept)
            continue
        own.append(concept)
        for coding_path, coding in codings(concept, path):
            system, code = coding.get("system"), coding.get("code")
            if system == t.local("ipt-careplan-kind").url and code != t.CarePlanKind.PHASE:
                problems.add(
                    f"{coding_path}.code", f"this is read as a phase CarePlan, not {code!r}"
                )
            elif system == t.local("ipt-phase").url:
                if "code" in data:
                    problems.add(coding_path, "a phase CarePlan is of one phase")
                data["code"] = read_local_code(problems, coding_path, coding, "ipt-phase")
    if other:
        extras["category"] = other
    if own:
        extras.setdefault("written", {})["category"] = own


def _status(
    problems: Problems,
    path: str,
    detail: Mapping[str, Any],
    from_fhir: dict[str, str],
    system_name: str,
) -> str | None:
    """The exact domain status: statusReason's code if given, else from detail.status."""
    status = detail.get("status")
    mapped = from_fhir.get(str(status))
    if mapped is None:
        problems.add(
            f"{path}.status",
            f"{status!r} has no counterpart here; expected one of: {', '.join(from_fhir)}",
        )
    reason = detail.get("statusReason")
    if reason is None:
        return mapped
    system = t.local(system_name).url
    exact = None
    for coding_path, coding in codings(reason, f"{path}.statusReason"):
        if coding.get("system") == system:
            exact = read_local_code(problems, coding_path, coding, system_name)
            if exact is not None and mapped is not None and exact != mapped:
                problems.add(
                    f"{coding_path}.code",
                    f"{exact!r} contradicts detail.status {status!r} (which means {mapped!r})",
                )
    return exact or mapped


def _session(problems: Problems, path: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"number": None, "phq9_total": None, "techniques": []}
    for ext_path, ext in indexed(detail.get("extension"), f"{path}.detail.extension"):
        url = ext.get("url")
        if url == t.EXT_SESSION_NUMBER:
            entry["number"] = value(problems, ext_path, ext, "PositiveInt")
        elif url == t.EXT_PHQ9_TOTAL:
            entry["phq9_total"] = value(problems, ext_path, ext, "Integer")
        elif url == t.EXT_SESSION_TECHNIQUE:
            coding = value(problems, ext_path, ext, "Coding")
            entry["techniques"].append(
                read_local_code(
                    problems, f"{ext_path}.valueCoding", coding, "ipt-session-technique"
                )
            )
    if entry["number"] is None:
        problems.add(
            f"{path}.detail.extension",
            f"a session needs its number: a {t.EXT_SESSION_NUMBER} extension",
        )
    code = detail.get("code")
    if code is not None:
        for coding_path, coding in codings(code, f"{path}.detail.code"):
            if coding.get("system") == t.SNOMED and coding.get("code") != t.IPT_SNOMED_CODE:
                problems.add(f"{coding_path}.code", f"a session is {t.IPT_SNOMED_CODE}")
    entry["status"] = _status(
        problems, f"{path}.detail", detail, SESSION_STATUS_FROM_FHIR, "ipt-session-status"
    )
    period = detail.get("scheduledPeriod") or {}
    period_path = f"{path}.detail.scheduledPeriod"
    entry["date"] = read_date(problems, f"{period_path}.start", period.get("start"))
    end = read_date(problems, f"{period_path}.end", period.get("end"), end=True)
    if end is not None and end != entry["date"]:
        problems.add(f"{period_path}.end", "a session takes place on one day: it ends on it")
    return entry


def _homework(
    problems: Problems, path: str, detail: Mapping[str, Any], patient: str | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    kind_system = t.local("ipt-homework-kind").url
    kinds = [
        (coding_path, coding)
        for coding_path, coding in codings(detail.get("code"), f"{path}.detail.code")
        if coding.get("system") == kind_system
    ]
    if not kinds:
        problems.add(f"{path}.detail.code", f"the kind of homework, a code from {kind_system}")
    entry["kind"] = read_local_code(problems, *kinds[0], "ipt-homework-kind") if kinds else None
    entry["description"] = detail.get("description")
    goal = read_references(
        problems,
        f"{path}.detail.goal",
        detail.get("goal"),
        ("Goal",),
        "homework serves one goal at most",
        relative=True,
    )
    entry["goal_id"] = reference_id(goal)
    entry["status"] = _status(
        problems, f"{path}.detail", detail, HOMEWORK_STATUS_FROM_FHIR, "ipt-homework-status"
    )
    period = detail.get("scheduledPeriod") or {}
    period_path = f"{path}.detail.scheduledPeriod"
    entry["assigned_on"] = read_date(problems, f"{period_path}.start", period.get("start"))
    entry["due_on"] = read_date(problems, f"{period_path}.end", period.get("end"), end=True)
    performers = detail.get("performer") or []
    for performer_path, performer in indexed(performers, f"{path}.detail.performer"):
        if performer.get("reference") != patient:
            problems.add(performer_path, "homework is done by the patient (the plan's subject)")
    return entry


def _activities(
    problems: Problems, resource: Mapping[str, Any], phase_code: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sessions: list[dict[str, Any]] = []
    homework: list[dict[str, Any]] = []
    patient = (resource.get("subject") or {}).get("reference")
    seen: set[str] = set()
    kinds = {"Appointment": SESSION_ACTIVITY_PREFIX, "Task": HOMEWORK_ACTIVITY_PREFIX}
    for path, activity in indexed(resource.get("activity"), f"{_C}.activity"):
        detail = activity.get("detail")
        if detail is None:
            problems.add(f"{path}.detail", "a session or homework activity is described inline")
            continue
        if detail.get("doNotPerform"):
            problems.add(
                f"{path}.detail.doNotPerform",
                "a prohibited activity is neither a session nor homework",
            )
        prefix = kinds.get(str(detail.get("kind")))
        if prefix is None:
            problems.add(f"{path}.detail.kind", "a session is an Appointment, homework a Task")
            continue
        activity_id = activity.get("id")
        row_id = None
        if activity_id is not None:
            if activity_id in seen:
                problems.add(f"{path}.id", f"{activity_id!r} is listed twice")
            seen.add(activity_id)
            if not activity_id.startswith(prefix) or len(activity_id) == len(prefix):
                kind = "session" if prefix == SESSION_ACTIVITY_PREFIX else "homework"
                problems.add(f"{path}.id", f"a {kind} activity's id is {prefix}<id>")
            else:
                row_id = activity_id[len(prefix) :]
        text = read_progress(problems, f"{path}.progress", activity.get("progress"))
        if prefix == SESSION_ACTIVITY_PREFIX:
            session = {"id": row_id, **_session(problems, path, detail), "note": text}
            sessions.append(session)
        else:
            entry = _homework(problems, path, detail, patient)
            phase = {"phase": phase_code} if phase_code else {}
            homework.append({"id": row_id, **phase, **entry, "patient_report": text})
    return sessions, homework


def read_phase(
    resource: Mapping[str, Any], *, whole: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(phase data, sessions, homework, extras) of a valid phase CarePlan; see parse.py."""
    problems = Problems()
    extras = start_extras(problems, resource, OWNED, t.PHASE_PROFILE, whole=whole)
    data: dict[str, Any] = {}
    _session_range(problems, resource, data, extras)
    _categories(problems, resource, data, extras)
    status = resource.get("status")
    data["status"] = PHASE_STATUS_FROM_FHIR.get(str(status))
    if data["status"] is None:
        problems.add(
            f"{_C}.status",
            f"a phase is draft (not started), active or completed, not {status!r}",
        )
    if resource.get("intent") != "plan":
        problems.add(f"{_C}.intent", f"an IPT phase is a plan, not {resource.get('intent')!r}")
    data["patient"] = read_reference(
        problems, f"{_C}.subject", resource.get("subject"), ("Patient",)
    )
    part_of = read_references(
        problems,
        f"{_C}.partOf",
        resource.get("partOf"),
        ("CarePlan",),
        "a phase is part of one episode",
        relative=True,
    )
    if not resource.get("partOf"):
        problems.add(f"{_C}.partOf", "a phase is part of its episode: CarePlan/<id> is required")
    keep_written(extras, resource, _WRITTEN)
    read_goal_references(problems, extras, resource)
    data["plan_id"] = reference_id(part_of)
    period = resource.get("period") or {}
    data["start_date"] = read_date(problems, f"{_C}.period.start", period.get("start"))
    data["end_date"] = read_date(problems, f"{_C}.period.end", period.get("end"), end=True)
    data["description"] = resource.get("description")
    sessions, homework = _activities(problems, resource, data.get("code"))
    problems.raise_if_any()
    return data, sessions, homework, extras
