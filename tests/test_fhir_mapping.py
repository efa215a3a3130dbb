"""The FHIR mapping as pure functions: rows in memory -> FHIR R4 JSON -> domain data."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import fhirkit
import pytest

from fhir_mappings import terminology as t
from fhir_mappings.parse import (
    MappingError,
    apply_extras,
    episode_from_fhir,
    goal_from_fhir,
    phase_from_fhir,
    validate_structure,
)
from fhir_mappings.render import render_episode, render_goal, render_phase
from fhir_mappings.verbatim import overlay
from service.models import (
    CarePlan,
    Contract,
    Goal,
    Homework,
    Phase,
    PlanIdentifier,
    TherapySession,
)


def unowned(extras: dict[str, Any], *also: str) -> dict[str, Any]:
    """The extras of the elements the mapping does not read (``written`` and the write's
    ``checks`` are verbatim.py's; ``also``, say ``created``, left out too)."""
    return {k: v for k, v in extras.items() if k not in ("written", "checks", *also)}


AGREED = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def empty_tables() -> None:
    """Pure functions: no database to empty (replaces the suite's database fixture)."""


# --- realistic plans ------------------------------------------------------------------------


def plan_data(**changes: Any) -> Json:
    """Plan data as create_plan takes it (and episode_from_fhir gives it back)."""
    data: Json = {
        "patient": "Patient/123",
        "status": "active",
        "variant": "standard",
        "planned_sessions": 12,
        "session_frequency": "weekly",
        "start_date": date(2026, 1, 5),
        "end_date": None,
        "problem_areas": ["grief"],
        "dispute_stage": None,
        "condition": None,
        "therapist": None,
        "formulation": None,
        "relapse_prevention": None,
        "notes": [],
        "identifiers": [],
    }
    return {**data, **changes}


def goal_data(**changes: Any) -> Json:
    """Goal data as add_goal takes it: by default the template's PHQ-9 symptom goal."""
    phq9 = {"measure": "44261-6", "comparator": "<", "value": Decimal("5.000")}
    data: Json = {
        "kind": "symptom",
        "problem_area": None,
        "description": "Remission of depressive symptoms: PHQ-9 total score below 5.",
        "lifecycle_status": "active",
        "achievement_status": "in-progress",
        "priority": "high-priority",
        "start_date": date(2026, 1, 5),
        "target": {**phq9, "due_date": date(2026, 3, 23)},
        "phase": None,
        "notes": [],
    }
    return {**data, **changes}


PLAN_FIELDS = [k for k in plan_data() if k not in ("problem_areas", "identifiers")]
GOAL_FIELDS = [k for k in goal_data() if k != "target"]
SESSION_FIELDS = ("number", "date", "status", "phq9_total", "techniques", "note")
HOMEWORK_FIELDS = (
    *("phase", "goal_id", "kind", "description"),
    *("assigned_on", "due_on", "status", "patient_report"),
)
Contracts = list[tuple[int, str, str | None]]


def make_plan(plan_id: str, data: Json, contracts: Contracts) -> CarePlan:
    """A plan row from plan data and its contract history (sessions, frequency, reason)."""
    areas = data["problem_areas"]
    plan = CarePlan(
        id=plan_id,
        **{k: data[k] for k in PLAN_FIELDS},
        primary_problem_area=areas[0],
        secondary_problem_area=areas[1] if len(areas) > 1 else None,
        created_at=AGREED,
    )
    plan.identifiers = [PlanIdentifier(**i) for i in data["identifiers"]]
    plan.contracts = [
        Contract(
            sequence=n,
            planned_sessions=sessions,
            session_frequency=frequency,
            reason=reason,
            agreed_at=AGREED,
            agreed_by="dr.rivera",
        )
        for n, (sessions, frequency, reason) in enumerate(contracts, start=1)
    ]
    return plan


def make_goal(goal_id: str, data: Json) -> Goal:
    target = data["target"] or {}
    columns = {f"target_{key}": target.get(key) for key in ("measure", "comparator", "value")}
    return Goal(
        id=goal_id,
        plan_id="plan",
        **{k: data[k] for k in GOAL_FIELDS},
        **columns,
        target_due_date=target.get("due_date"),
    )


def grief_plan() -> CarePlan:
    return make_plan("plan-grief", plan_data(), [(12, "weekly", None)])


def dispute_plan(
    formulation: str = "Conflict with her partner since she went back to work.",
) -> CarePlan:
    relapse = {
        "warning_signs": ["Withdrawing from friends", "Sleeping badly for a week"],
        "actions": ["Call a friend the same day"],
        "contacts": [
            {"name": "Sister (Maria)", "relationship": "sister", "telecom": "+44 20 7946 0000"},
            {"name": "GP practice"},
        ],
    }
    first_note = {"text": "Dispute first.", "author": "Dr A. Rivera"}
    data = plan_data(
        planned_sessions=16,
        problem_areas=["role-dispute", "role-transition"],
        dispute_stage="impasse",
        condition="Condition/mdd-1",
        therapist="https://ehr.example.org/fhir/Practitioner/42",
        formulation=formulation,
        end_date=date(2026, 4, 27),
        relapse_prevention=relapse,
        notes=[{**first_note, "time": "2026-01-12T10:30:00+00:00"}, {"text": "Partner at 6."}],
        identifiers=[
            {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "IPT-2026-0042"},
            {"system": "https://clinic.example.org/ids", "value": "A-17"},
        ],
    )
    contracts = [(12, "weekly", None), (16, "weekly", "Slow progress; four sessions added.")]
    return make_plan("plan-dispute", data, contracts)


def maintenance_plan() -> CarePlan:
    data = plan_data(
        variant="maintenance",
        session_frequency="monthly",
        status="draft",
        problem_areas=["interpersonal-deficits"],
    )
    return make_plan("plan-maint", data, [(12, "monthly", None)])


def goals() -> list[Goal]:
    area_note = {"text": "Named the dispute <b>clearly</b>", "author": "Dr A. Rivera"}
    area = goal_data(
        kind="problem-area",
        problem_area="role-dispute",
        description="Identify the dispute.",
        achievement_status=None,
        priority="medium-priority",
        target=None,
        phase="middle",
        notes=[area_note],
    )
    due_only = {"measure": None, "comparator": None, "value": None, "due_date": date(2026, 4, 1)}
    transition = goal_data(
        kind="problem-area",
        problem_area="role-transition",
        lifecycle_status="proposed",
        achievement_status=None,
        priority=None,
        start_date=None,
        description="Accept the new role.",
        target=due_only,
    )
    gad7 = {"measure": "70274-6", "comparator": "<=", "value": Decimal("7.5"), "due_date": None}
    return [
        make_goal("goal-phq9", goal_data()),
        make_goal("goal-area", area),
        make_goal("goal-due", transition),
        make_goal("goal-decimal", goal_data(target=gad7)),
    ]


def session(*row: Any) -> TherapySession:
    return TherapySession(**dict(zip(("id", *SESSION_FIELDS), row, strict=True)))


def homework(*row: Any) -> Homework:
    return Homework(**dict(zip(("id", *HOMEWORK_FIELDS), row, strict=True)))


PhaseState = tuple[CarePlan, Phase, list[TherapySession], list[Homework], list[Goal]]


def middle_phase() -> PhaseState:
    """A middle phase with attended, missed, scheduled and cancelled sessions and homework."""
    plan = dispute_plan()
    phase = Phase(
        id="phase-middle",
        code="middle",
        start_session=4,
        end_session=13,
        status="active",
        start_date=date(2026, 1, 26),
        end_date=None,
        description="Communication analysis of the dispute.",
    )
    plan.phases = [phase]
    techniques = ["communication-analysis", "role-play"]
    note = "Discussed the argument about childcare & money."
    sessions = [
        session("s6", 6, None, "scheduled", None, [], None),
        session("s4", 4, date(2026, 1, 26), "attended", 14, techniques, note),
        session("s5", 5, date(2026, 2, 2), "no-show", None, [], None),
        session("s7", 7, date(2026, 2, 16), "cancelled", None, [], "Therapist ill."),
    ]
    monday, next_monday = date(2026, 2, 2), date(2026, 2, 9)
    work = [
        homework(
            *("hw1", "middle", "goal-area", "assertive-practice", "Say what you need once."),
            *(date(2026, 1, 26), monday, "completed", "I did it twice."),
        ),
        homework(
            *("hw2", "middle", None, "observe-interaction", "Notice how arguments start."),
            *(monday, None, "assigned", None),
        ),
        homework(
            *("hw3", "middle", None, "reconnect", "Call an old friend."),
            *(monday, next_monday, "not-done", "Too tired."),
        ),
    ]
    return plan, phase, sessions, work, [g for g in goals() if g.phase == "middle"]


def expected_plan_data(plan: CarePlan) -> Json:
    data = {k: getattr(plan, k) for k in PLAN_FIELDS}
    data["problem_areas"] = plan.problem_areas
    data["identifiers"] = [{"system": i.system, "value": i.value} for i in plan.identifiers]
    return data


def expected_goal_data(goal: Goal) -> Json:
    return {**{k: getattr(goal, k) for k in GOAL_FIELDS}, "target": goal.target}


def every_resource() -> list[Json]:
    plan, phase, sessions, work, phase_goals = middle_phase()
    resources = [render_phase(plan, phase, sessions, work, phase_goals)]
    for episode in (grief_plan(), dispute_plan(), maintenance_plan()):
        resources += [render_episode(episode, goals())]
        resources += [render_goal(episode, goal) for goal in goals()]
    return resources


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource", every_resource(), ids=lambda r: f"{r['resourceType']}-{r['id']}"
)
def test_every_rendered_resource_is_valid_fhir_r4(resource: Json) -> None:
    validate_structure(copy.deepcopy(resource), resource["resourceType"])
    assert [str(i) for i in fhirkit.validate(resource) if i.severity == "error"] == []
    root = ElementTree.fromstring(resource["text"]["div"])
    assert root.tag == "{http://www.w3.org/1999/xhtml}div"
    assert resource["text"]["status"] == "generated"
    assert "versionId" not in resource["meta"] and "lastUpdated" not in resource["meta"]


def test_episode_elements_follow_the_mapping() -> None:
    resource = render_episode(dispute_plan(), goals())
    assert resource["meta"] == {"profile": [t.EPISODE_PROFILE]}
    assert (resource["status"], resource["intent"]) == ("active", "plan")
    assert [c["coding"][0]["code"] for c in resource["category"]] == [
        "assess-plan",
        "episode",
        t.IPT_SNOMED_CODE,
    ]
    assert resource["period"] == {"start": "2026-01-05", "end": "2026-04-27"}
    assert resource["created"] == "2026-01-05T09:30:00+00:00"
    assert resource["addresses"] == [{"reference": "Condition/mdd-1"}]
    assert resource["goal"][0] == {"reference": "Goal/goal-phq9"}
    urls = [e["url"] for e in resource["extension"]]
    assert urls.count(t.EXT_CONTRACT) == 2 and urls.count(t.EXT_PROBLEM_AREA) == 2
    dispute = resource["extension"][urls.index(t.EXT_PROBLEM_AREA)]["extension"]
    assert [e["url"] for e in dispute] == ["area", "rank", "disputeStage"]
    assert resource["note"][0] == {
        "authorString": "Dr A. Rivera",
        "time": "2026-01-12T10:30:00+00:00",
        "text": "Dispute first.",
    }


def test_phase_activities_are_sessions_by_number_then_homework() -> None:
    plan, phase, sessions, homework, phase_goals = middle_phase()
    resource = render_phase(plan, phase, sessions, homework, phase_goals)
    ids = [a["id"] for a in resource["activity"]]
    assert ids == [f"session-s{n}" for n in (4, 5, 6, 7)] + [f"homework-hw{n}" for n in (1, 2, 3)]
    statuses = " ".join(a["detail"]["status"] for a in resource["activity"])
    assert statuses == "completed stopped scheduled cancelled completed not-started stopped"
    attended = resource["activity"][0]
    assert attended["progress"] == [{"text": "Discussed the argument about childcare & money."}]
    assert {"url": t.EXT_PHQ9_TOTAL, "valueInteger": 14} in attended["detail"]["extension"]
    assert attended["detail"]["scheduledPeriod"] == {"start": "2026-01-26", "end": "2026-01-26"}
    assert resource["activity"][4]["detail"]["scheduledPeriod"] == {
        "start": "2026-01-26",
        "end": "2026-02-02",
    }
    assert resource["partOf"] == [{"reference": "CarePlan/plan-dispute"}]


def test_goal_target_values_are_json_numbers() -> None:
    plan = grief_plan()
    by_id = {g.id: render_goal(plan, g) for g in goals()}
    quantity = by_id["goal-phq9"]["target"][0]["detailQuantity"]
    assert quantity == {"value": 5, "comparator": "<", "system": t.UCUM, "code": "{score}"}
    assert isinstance(quantity["value"], int)
    assert by_id["goal-decimal"]["target"][0]["detailQuantity"]["value"] == 7.5
    assert by_id["goal-due"]["target"] == [{"dueDate": "2026-04-01"}]


def test_the_narrative_escapes_every_value() -> None:
    resource = render_episode(dispute_plan("Anger <script>alert('x')</script> & grief"), goals())
    div = resource["text"]["div"]
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; grief" in div
    assert "<script" not in div
    assert not list(ElementTree.fromstring(div).iter("{http://www.w3.org/1999/xhtml}script"))
    goal_div = render_goal(dispute_plan(), goals()[1])["text"]["div"]
    assert "Named the dispute &lt;b&gt;clearly&lt;/b&gt;" in goal_div


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [grief_plan, dispute_plan, maintenance_plan])
def test_episode_round_trip(make: Callable[[], CarePlan]) -> None:
    plan = make()
    rendered = render_episode(plan, goals())
    data, extras = episode_from_fhir(copy.deepcopy(rendered))
    assert data == expected_plan_data(plan)
    assert unowned(extras) == {"created": rendered["created"]}
    assert overlay(rendered, extras["written"], strict=True) == rendered
    contracts = [(c.planned_sessions, c.session_frequency, c.reason) for c in plan.contracts]
    assert render_episode(make_plan(plan.id, data, contracts), goals()) == rendered


@pytest.mark.parametrize("goal", goals(), ids=lambda g: g.id)
def test_goal_round_trip(goal: Goal) -> None:
    plan = dispute_plan()
    rendered = render_goal(plan, goal)
    plan_id, data, extras = goal_from_fhir(copy.deepcopy(rendered))
    assert plan_id == plan.id and unowned(extras) == {}
    assert overlay(rendered, extras["written"], strict=True) == rendered
    assert data == {**expected_goal_data(goal), "patient": plan.patient}
    assert render_goal(plan, make_goal(goal.id, data)) == rendered


def test_phase_round_trip() -> None:
    plan, phase, sessions, homework, phase_goals = middle_phase()
    rendered = render_phase(plan, phase, sessions, homework, phase_goals)
    data, session_entries, homework_entries, extras = phase_from_fhir(copy.deepcopy(rendered))
    assert unowned(extras) == {}
    assert overlay(rendered, extras["written"], strict=True) == rendered
    assert data == {
        "start_session": 4,
        "end_session": 13,
        "status": "active",
        "start_date": date(2026, 1, 26),
        "end_date": None,
        "description": phase.description,
        "code": "middle",
        "plan_id": plan.id,
        "patient": plan.patient,
    }
    ordered = sorted(sessions, key=lambda s: s.number)
    assert session_entries == [
        {"id": s.id, **{k: getattr(s, k) for k in SESSION_FIELDS}} for s in ordered
    ]
    assert homework_entries == [
        {"id": h.id, **{k: getattr(h, k) for k in HOMEWORK_FIELDS}} for h in homework
    ]
    keys = ("start_session", "end_session", "status", "start_date", "end_date", "description")
    rebuilt = Phase(id=phase.id, code=data["code"], **{k: data[k] for k in keys})
    rows = [TherapySession(**e) for e in session_entries]
    work = [Homework(**e) for e in homework_entries]
    assert render_phase(plan, rebuilt, rows, work, phase_goals) == rendered


# --- what the client adds -------------------------------------------------------------------


def test_elements_the_mapping_does_not_own_are_kept_verbatim() -> None:
    resource = render_episode(dispute_plan(), goals())
    unknown = {"url": "https://ehr.example.org/fhir/StructureDefinition/x", "valueString": "kept"}
    written = copy.deepcopy(resource)
    written["extension"].append(unknown)
    written["meta"]["tag"] = [{"system": "https://ehr.example.org/tags", "code": "research"}]
    written["meta"]["security"] = [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    ]
    written["meta"]["versionId"] = "3"
    written["text"] = {
        "status": "additional",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Written by us</div>',
    }
    written["contributor"] = [{"reference": "Practitioner/7"}]
    written["careTeam"] = [{"reference": "CareTeam/ct1"}]
    written["instantiatesCanonical"] = ["https://ipt.example.org/PlanDefinition/ipt"]
    written["identifier"][0]["use"] = "official"
    written["subject"]["display"] = "Jane Doe"
    written["category"].append({"text": "Mental health"})
    data, extras = episode_from_fhir(copy.deepcopy(written))
    assert data == expected_plan_data(dispute_plan())
    assert unowned(extras) == {
        "extension": [unknown],
        "meta": {"tag": written["meta"]["tag"], "security": written["meta"]["security"]},
        "text": written["text"],
        "contributor": written["contributor"],
        "careTeam": written["careTeam"],
        "instantiatesCanonical": written["instantiatesCanonical"],
        "identifier": written["identifier"],
        "category": [{"text": "Mental health"}],
        "created": written["created"],
    }
    assert extras["written"]["subject"] == written["subject"]
    del written["meta"]["versionId"]
    assert apply_extras(overlay(resource, extras["written"]), extras) == written


def test_goal_and_phase_keep_unknown_extensions() -> None:
    unknown = {"url": "https://ehr.example.org/x", "valueBoolean": True}
    goal = render_goal(grief_plan(), goals()[0])
    goal["extension"].append(unknown)
    goal["identifier"] = [{"system": "urn:x", "value": "g-1"}]
    assert unowned(goal_from_fhir(goal)[2]) == {
        "extension": [unknown],
        "identifier": goal["identifier"],
    }
    plan, phase, sessions, homework, phase_goals = middle_phase()
    resource = render_phase(plan, phase, sessions, homework, phase_goals)
    resource["extension"].append(unknown)
    resource["note"] = [{"text": "A note on the phase."}]
    assert unowned(phase_from_fhir(resource)[3]) == {
        "extension": [unknown],
        "note": resource["note"],
    }


def test_reading_follows_ranks_and_takes_new_activities() -> None:
    resource = render_episode(dispute_plan(), goals())
    resource["extension"][5], resource["extension"][6] = (
        resource["extension"][6],
        resource["extension"][5],
    )
    assert episode_from_fhir(resource)[0]["problem_areas"] == ["role-dispute", "role-transition"]
    phase = render_phase(*middle_phase())
    del phase["activity"][2]["id"], phase["activity"][5]["id"]
    _, sessions, work, _ = phase_from_fhir(phase)
    assert (sessions[2]["id"], sessions[2]["number"], work[1]["id"]) == (None, 6, None)


def test_a_narrative_this_service_generated_is_not_kept_as_the_clients() -> None:
    plan = dispute_plan()
    stale = render_episode(plan, goals())
    plan.status = "on-hold"
    resource = render_episode(plan, goals())
    resource["text"] = stale["text"]
    data, extras = episode_from_fhir(resource)
    assert (data, unowned(extras, "created")) == (expected_plan_data(plan), {})


def test_extras_follow_identifiers_and_references_the_plan_still_has() -> None:
    resource = render_episode(dispute_plan(), goals())
    kept: Json = {
        "identifier": [
            {"use": "old", "system": "urn:gone", "value": "1"},
            {**resource["identifier"][1], "use": "official"},
        ],
        "subject": {"reference": "Patient/other", "display": "Someone else"},
        "meta": {"profile": ["https://ehr.example.org/StructureDefinition/cp"]},
    }
    merged = apply_extras(resource, kept)
    assert merged["identifier"] == [resource["identifier"][0], kept["identifier"][1]]
    assert merged["subject"] == resource["subject"]
    assert merged["meta"]["profile"] == [t.EPISODE_PROFILE, *kept["meta"]["profile"]]


def test_note_times_are_fhir_date_times_and_empty_relapse_plans_are_left_out() -> None:
    plan = grief_plan()
    plan.notes = [{"text": "x", "time": "2026-01-12 10:30:00"}, {"text": "y", "time": "2026-01-12"}]
    plan.relapse_prevention = {"warning_signs": [], "actions": [], "contacts": []}
    resource = render_episode(plan, [])
    assert [n["time"] for n in resource["note"]] == ["2026-01-12T10:30:00+00:00", "2026-01-12"]
    assert t.EXT_RELAPSE_PREVENTION not in [e["url"] for e in resource["extension"]]
    assert [str(i) for i in fhirkit.validate(resource)] == []


# --- refusals -------------------------------------------------------------------------------

DELETE = object()


def patched(resource: Json, changes: dict[str, Any]) -> Json:
    """``resource`` with each path (``note[0].text``) set, appended to, or DELETEd."""
    for path, new in changes.items():
        *parents, last = re.findall(r"[^.\[\]]+", path)
        node: Any = resource
        for part in parents:
            node = node[int(part) if part.isdigit() else part]
        key = int(last) if last.isdigit() else last
        if new is DELETE:
            del node[key]
        elif isinstance(node, list) and key == len(node):
            node.append(new)
        else:
            node[key] = new
    return resource


RENDERED: dict[str, Callable[[], Json]] = {
    "episode": lambda: render_episode(dispute_plan(), goals()),
    "goal": lambda: render_goal(grief_plan(), goals()[0]),
    "phase": lambda: render_phase(*middle_phase()),
}
PARSERS: dict[str, Callable[[Json], object]] = {
    "episode": episode_from_fhir,
    "goal": goal_from_fhir,
    "phase": phase_from_fhir,
}
NOTE_BY_REFERENCE = {
    "note[0].authorString": DELETE,
    "note[0].authorReference": {"reference": "Practitioner/1"},
}
RANGE = {"target[0].detailQuantity": DELETE, "target[0].detailRange": {"low": {"value": 1}}}
MODIFIER = {"modifierExtension": [{"url": "urn:x", "valueBoolean": True}]}
ACTIVITY_ON_EPISODE = {"activity": [{"detail": {"kind": "Task", "status": "scheduled"}}]}
AREA = "extension[5].extension[0].valueCoding"
SECOND_RANK = "extension[6].extension[1].valueCode"
STAGE = {
    "url": "disputeStage",
    "valueCoding": {"system": t.local("ipt-dispute-stage").url, "code": "impasse"},
}
MISPLACED_STAGE = {"extension[5].extension[2]": DELETE, "extension[6].extension[2]": STAGE}
QUANTITY = "target[0].detailQuantity"
DETAIL = "activity[0].detail"
START_CONCEPT = {"startDate": DELETE, "startCodeableConcept": {"text": "soon"}}
ACTIVITY_BY_REFERENCE = {"activity[7]": {"reference": {"reference": "Task/1"}}}
REFUSALS = [
    ("episode", {"intent": "order"}, "intent"),
    ("episode", {"status": "unknown"}, "status"),
    ("episode", {"status": "bogus"}, "status"),
    ("episode", {"addresses[1]": {"reference": "Condition/2"}}, "addresses[1]"),
    ("episode", {"author.reference": "Organization/1"}, "author.reference"),
    ("episode", {"subject.reference": "Group/1"}, "subject.reference"),
    ("episode", ACTIVITY_ON_EPISODE, "activity"),
    ("episode", {f"{AREA}.system": t.SNOMED}, f"{AREA}.system"),
    ("episode", {f"{AREA}.code": "loneliness"}, f"{AREA}.code"),
    ("episode", {SECOND_RANK: "primary"}, "extension[6]"),
    ("episode", MISPLACED_STAGE, "extension[6]"),
    ("episode", {"period.start": DELETE}, "period.start"),
    ("episode", MODIFIER, "modifierExtension"),
    ("episode", {"meta.profile[0]": t.PHASE_PROFILE}, "meta.profile[0]"),
    ("episode", {"description": None}, "description"),
    ("episode", {"goal": []}, "goal"),
    ("episode", {"therapist": "Practitioner/1"}, "therapist"),
    ("goal", {"extension": DELETE}, "extension"),
    ("goal", {"lifecycleStatus": "bogus"}, "lifecycleStatus"),
    ("goal", {"target[1]": {"dueDate": "2026-05-01"}}, "target[1]"),
    ("goal", RANGE, "target[0].detailRange"),
    ("goal", {f"{QUANTITY}.comparator": "=="}, f"{QUANTITY}.comparator"),
    ("goal", {"description": {"coding": [{"system": t.SNOMED, "code": "1"}]}}, "description.text"),
    ("phase", {"status": "on-hold"}, "status"),
    ("phase", {f"{DETAIL}.status": "bogus"}, f"{DETAIL}.status"),
    ("phase", {f"{DETAIL}.kind": "Bogus"}, f"{DETAIL}.kind"),
    ("phase", {f"{DETAIL}.kind": "ServiceRequest"}, f"{DETAIL}.kind"),
    ("phase", {f"{DETAIL}.status": "scheduled"}, f"{DETAIL}.statusReason.coding[0].code"),
    ("phase", {"activity[0].id": "visit-4"}, "activity[0].id"),
    ("phase", {f"{DETAIL}.scheduledPeriod.end": "2026-01-27"}, f"{DETAIL}.scheduledPeriod.end"),
    ("phase", {"activity[1].detail.extension": DELETE}, "activity[1].detail.extension"),
    (
        "phase",
        {"activity[4].detail.performer[0]": {"reference": "Patient/9"}},
        "activity[4].detail.performer[0]",
    ),
    ("phase", ACTIVITY_BY_REFERENCE, "activity[7].detail"),
    ("phase", {"partOf": DELETE}, "partOf"),
    ("phase", {"category[1].coding[0].code": "episode"}, "category[1].coding[0].code"),
]


def problem_paths(call: Callable[[], object]) -> list[str]:
    with pytest.raises(MappingError) as caught:
        call()
    assert caught.value.problems
    return [path for path, _ in caught.value.problems]


@pytest.mark.parametrize(
    ("kind", "changes", "expression"),
    REFUSALS,
    ids=[f"{kind}-{expression}-{n}" for n, (kind, _, expression) in enumerate(REFUSALS)],
)
def test_unrepresentable_or_invalid_input_is_refused_naming_the_element(
    kind: str, changes: dict[str, Any], expression: str
) -> None:
    resource = patched(RENDERED[kind](), changes)
    prefix = "Goal" if kind == "goal" else "CarePlan"
    assert f"{prefix}.{expression}" in problem_paths(lambda: PARSERS[kind](resource))


def test_every_problem_is_reported_at_once() -> None:
    resource = render_episode(dispute_plan(), goals())
    resource.update(intent="order", status="unknown", author={"reference": "Patient/1"})
    assert {"CarePlan.intent", "CarePlan.status", "CarePlan.author.reference"} <= set(
        problem_paths(lambda: episode_from_fhir(resource))
    )


def test_structure_is_checked_against_the_expected_type() -> None:
    goal = render_goal(grief_plan(), goals()[0])
    assert problem_paths(lambda: validate_structure(goal, "CarePlan")) == ["CarePlan"]
    goal["target"][0]["dueDate"] = "2026-13-01"
    goal["extension"][0]["valueString"] = "two values"
    paths = problem_paths(lambda: validate_structure(goal, "Goal"))
    assert {"Goal.target[0].dueDate", "Goal.extension[0]"} <= set(paths)


def test_a_client_narrative_with_active_content_is_refused() -> None:
    resource = render_goal(grief_plan(), goals()[0])
    resource["text"] = {
        "status": "additional",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="steal()">x</p></div>',
    }
    assert problem_paths(lambda: goal_from_fhir(resource)) == ["Goal.text.div"]
