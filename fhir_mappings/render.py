"""Domain rows as FHIR R4 resources, element by element as docs/fhir-mapping.md lays down.

The functions are pure: they read the rows they are given and return JSON-ready dicts.
Empty elements are left out (FHIR forbids nulls, empty lists and empty objects), dates are
``YYYY-MM-DD``, date-times ISO 8601 with an offset, scores JSON numbers. ``meta.versionId``
and ``meta.lastUpdated`` are the server's to add.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from fhir_mappings import terminology as t
from fhir_mappings.narrative import episode_narrative, goal_narrative, phase_narrative
from service import codes
from service.models import CarePlan, Contract, Goal, Homework, Phase, TherapySession

CAREPLAN_CATEGORY_CODE = "assess-plan"
CAREPLAN_CATEGORY_DISPLAY = "Assessment and Plan of Treatment"
GOAL_CATEGORY_CODE = "behavioral"
GOAL_CATEGORY_DISPLAY = "Behavioral"
SCORE_UNIT = "{score}"
SESSION_ACTIVITY_PREFIX = "session-"
HOMEWORK_ACTIVITY_PREFIX = "homework-"
CONTACT_PARTS = ("name", "relationship", "telecom")
_FHIR_DATETIME = re.compile(
    r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?)?)?$"
)

_Row = TypeVar("_Row", Goal, Homework, TherapySession)

# Phase status -> CarePlan.status of the phase CarePlan.
PHASE_STATUS: dict[str, str] = {
    codes.PhaseStatus.NOT_STARTED: "draft",
    codes.PhaseStatus.ACTIVE: "active",
    codes.PhaseStatus.COMPLETED: "completed",
}
# Session status -> activity.detail.status.
SESSION_STATUS: dict[str, str] = {
    codes.SessionStatus.SCHEDULED: "scheduled",
    codes.SessionStatus.ATTENDED: "completed",
    codes.SessionStatus.NO_SHOW: "stopped",
    codes.SessionStatus.CANCELLED: "cancelled",
}
# Homework status -> activity.detail.status.
HOMEWORK_STATUS: dict[str, str] = {
    codes.HomeworkStatus.ASSIGNED: "not-started",
    codes.HomeworkStatus.IN_PROGRESS: "in-progress",
    codes.HomeworkStatus.COMPLETED: "completed",
    codes.HomeworkStatus.NOT_DONE: "stopped",
    codes.HomeworkStatus.CANCELLED: "cancelled",
}


# --- small builders ---------------------------------------------------------------------


def compact(value: Any) -> Any:
    """``value`` without None, empty lists, empty dicts and empty strings, recursively."""
    if isinstance(value, dict):
        kept = {k: compact(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        kept_items = [compact(v) for v in value]
        return [v for v in kept_items if v not in (None, [], {}, "")]
    return value


def fhir_date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def fhir_datetime(value: datetime | None) -> str | None:
    """ISO 8601 with an offset; a naive value is taken as UTC, as the service stores it."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def fhir_number(value: Decimal | int | float) -> int | float:
    """A JSON number: an int when the value is integral."""
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return compact({"system": system, "code": code, "display": display})


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [coding(system, code, display)]}


def reference(target: str | None) -> dict[str, str] | None:
    return {"reference": target} if target else None


def extension(url: str, value_type: str, value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    return {"url": url, f"value{value_type}": value}


def complex_extension(url: str, parts: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    inner = [p for p in parts if p]
    return {"url": url, "extension": inner} if inner else None


def note_time(value: str | None) -> str | None:
    """A note's time as a FHIR dateTime; other ISO 8601 spellings are rewritten."""
    if value is None or _FHIR_DATETIME.match(value):
        return value
    try:
        return fhir_datetime(datetime.fromisoformat(value))
    except ValueError:
        return value


def notes_as_annotations(notes: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Domain notes (text, author, time) as Annotations (text, authorString, time)."""
    return [
        compact(
            {
                "authorString": note.get("author"),
                "time": note_time(note.get("time")),
                "text": note["text"],
            }
        )
        for note in notes or []
    ]


def hl7_display(code: str) -> str:
    """The display of a goal-achievement or goal-priority code (``no-change``: No Change)."""
    return code.replace("-", " ").title()


def _meta(profile: str) -> dict[str, Any]:
    return {"profile": [profile]}


def _display(displays: Mapping[Any, str], code: str) -> str | None:
    return displays.get(code)


def _area_coding(area: str) -> dict[str, str]:
    display = _display(codes.PROBLEM_AREA_DISPLAY, area)
    return coding(t.local("ipt-problem-area").url, area, display)


def _phase_coding(code: str) -> dict[str, str]:
    return coding(t.local("ipt-phase").url, code, _display(codes.PHASE_DISPLAY, code))


def careplan_category(kind: t.CarePlanKind) -> list[dict[str, Any]]:
    """The categories every CarePlan of the service carries (assess-plan and its kind)."""
    return [
        concept(t.US_CORE_CAREPLAN_CATEGORY, CAREPLAN_CATEGORY_CODE, CAREPLAN_CATEGORY_DISPLAY),
        concept(t.local("ipt-careplan-kind").url, kind.value),
    ]


def ipt_concept() -> dict[str, Any]:
    return concept(t.SNOMED, t.IPT_SNOMED_CODE, t.IPT_SNOMED_DISPLAY)


# --- episode ------------------------------------------------------------------------------


def _contract_extension(contract: Contract) -> dict[str, Any] | None:
    return complex_extension(
        t.EXT_CONTRACT,
        [
            extension("sequence", "PositiveInt", contract.sequence),
            extension("plannedSessions", "PositiveInt", contract.planned_sessions),
            extension("frequency", "Code", contract.session_frequency),
            extension("reason", "String", contract.reason),
            extension("agreed", "DateTime", fhir_datetime(contract.agreed_at)),
            extension("agreedBy", "String", contract.agreed_by),
        ],
    )


def _problem_area_extensions(plan: CarePlan) -> list[dict[str, Any] | None]:
    areas = plan.problem_areas
    # The stage belongs to the role dispute; the primary area carries it only if a
    # (rule-breaking) plan has a stage but no dispute, so that nothing is lost.
    stage_area = (
        codes.ProblemArea.ROLE_DISPUTE.value
        if codes.ProblemArea.ROLE_DISPUTE in areas
        else (areas[0] if areas else None)
    )
    result = []
    for rank, area in enumerate(areas):
        stage = plan.dispute_stage if area == stage_area else None
        result.append(
            complex_extension(
                t.EXT_PROBLEM_AREA,
                [
                    extension("area", "Coding", _area_coding(area)),
                    extension("rank", "Code", list(codes.ProblemAreaRank)[rank].value),
                    extension(
                        "disputeStage",
                        "Coding",
                        coding(t.local("ipt-dispute-stage").url, stage) if stage else None,
                    ),
                ],
            )
        )
    return result


def _relapse_extension(relapse: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not relapse:
        return None
    parts: list[dict[str, Any] | None] = []
    parts += [extension("warningSign", "String", s) for s in relapse.get("warning_signs") or []]
    parts += [extension("action", "String", a) for a in relapse.get("actions") or []]
    parts += [
        complex_extension(
            "contact",
            [extension(key, "String", contact.get(key)) for key in CONTACT_PARTS],
        )
        for contact in relapse.get("contacts") or []
    ]
    return complex_extension(t.EXT_RELAPSE_PREVENTION, parts)


def _live(rows: Sequence[_Row]) -> list[_Row]:
    return [row for row in rows if row.deleted_at is None]


def render_episode(plan: CarePlan, goals: Sequence[Goal]) -> dict[str, Any]:
    """The episode CarePlan of a plan; ``goals`` are the plan's goals (deleted ones skipped)."""
    live_goals = _live(goals)
    extensions = [
        extension(t.EXT_VARIANT, "Code", plan.variant),
        extension(t.EXT_PLANNED_SESSIONS, "PositiveInt", plan.planned_sessions),
        extension(t.EXT_SESSION_FREQUENCY, "Code", plan.session_frequency),
        *(_contract_extension(c) for c in sorted(plan.contracts, key=lambda c: c.sequence)),
        *_problem_area_extensions(plan),
        _relapse_extension(plan.relapse_prevention),
    ]
    resource = {
        "resourceType": "CarePlan",
        "id": plan.id,
        "meta": _meta(t.EPISODE_PROFILE),
        "text": episode_narrative(plan, live_goals),
        "extension": extensions,
        "identifier": [{"system": i.system, "value": i.value} for i in plan.identifiers],
        "status": plan.status,
        "intent": "plan",
        "category": [
            *careplan_category(t.CarePlanKind.EPISODE),
            ipt_concept(),
        ],
        "description": plan.formulation,
        "subject": reference(plan.patient),
        "period": {"start": fhir_date(plan.start_date), "end": fhir_date(plan.end_date)},
        "created": fhir_datetime(plan.created_at),
        "author": reference(plan.therapist),
        "addresses": [reference(plan.condition)],
        "goal": [reference(f"Goal/{g.id}") for g in live_goals],
        "note": notes_as_annotations(plan.notes),
    }
    return dict(compact(resource))


# --- phase --------------------------------------------------------------------------------


def _session_activity(session: TherapySession) -> dict[str, Any]:
    status_system = t.local("ipt-session-status").url
    technique_system = t.local("ipt-session-technique").url
    detail = {
        "extension": [
            extension(t.EXT_SESSION_NUMBER, "PositiveInt", session.number),
            extension(t.EXT_PHQ9_TOTAL, "Integer", session.phq9_total),
            *(
                extension(t.EXT_SESSION_TECHNIQUE, "Coding", coding(technique_system, technique))
                for technique in session.techniques or []
            ),
        ],
        "kind": "Appointment",
        "code": ipt_concept(),
        "status": SESSION_STATUS.get(session.status, "unknown"),
        "statusReason": concept(status_system, session.status),
        # A period without an end is ongoing; a session takes the whole of its day.
        "scheduledPeriod": {"start": fhir_date(session.date), "end": fhir_date(session.date)},
    }
    return {
        "id": f"{SESSION_ACTIVITY_PREFIX}{session.id}",
        "progress": [{"text": session.note}] if session.note else [],
        "detail": detail,
    }


def _homework_activity(plan: CarePlan, homework: Homework) -> dict[str, Any]:
    detail = {
        "kind": "Task",
        "code": concept(t.local("ipt-homework-kind").url, homework.kind),
        "goal": [reference(f"Goal/{homework.goal_id}") if homework.goal_id else None],
        "status": HOMEWORK_STATUS.get(homework.status, "unknown"),
        "statusReason": concept(t.local("ipt-homework-status").url, homework.status),
        "scheduledPeriod": {
            "start": fhir_date(homework.assigned_on),
            "end": fhir_date(homework.due_on),
        },
        "performer": [reference(plan.patient)],
        "description": homework.description,
    }
    return {
        "id": f"{HOMEWORK_ACTIVITY_PREFIX}{homework.id}",
        "progress": [{"text": homework.patient_report}] if homework.patient_report else [],
        "detail": detail,
    }


def render_phase(
    plan: CarePlan,
    phase: Phase,
    sessions: Sequence[TherapySession],
    homework: Sequence[Homework],
    goals: Sequence[Goal],
) -> dict[str, Any]:
    """The phase CarePlan; ``sessions``, ``homework`` and ``goals`` are those of the phase.

    Sessions are listed by number, then homework in the order given; deleted rows are
    skipped.
    """
    ordered = sorted(_live(sessions), key=lambda s: s.number)
    homework, goals = _live(homework), _live(goals)
    resource = {
        "resourceType": "CarePlan",
        "id": phase.id,
        "meta": _meta(t.PHASE_PROFILE),
        "text": phase_narrative(plan, phase, ordered, homework, goals),
        "extension": [
            complex_extension(
                t.EXT_SESSION_RANGE,
                [
                    extension("first", "PositiveInt", phase.start_session),
                    extension("last", "PositiveInt", phase.end_session),
                ],
            )
        ],
        "partOf": [reference(f"CarePlan/{plan.id}")],
        "status": PHASE_STATUS.get(phase.status, "unknown"),
        "intent": "plan",
        "category": [
            *careplan_category(t.CarePlanKind.PHASE),
            {"coding": [_phase_coding(phase.code)]},
        ],
        "description": phase.description,
        "subject": reference(plan.patient),
        "period": {"start": fhir_date(phase.start_date), "end": fhir_date(phase.end_date)},
        "goal": [reference(f"Goal/{g.id}") for g in goals],
        "activity": [
            *(_session_activity(s) for s in ordered),
            *(_homework_activity(plan, h) for h in homework),
        ],
    }
    return dict(compact(resource))


# --- goal ---------------------------------------------------------------------------------


def _target(goal: Goal) -> dict[str, Any] | None:
    if goal.target is None:
        return None
    measure = codes.MEASURES.get(goal.target_measure or "")
    quantity = None
    if goal.target_value is not None or goal.target_comparator is not None:
        quantity = {
            "value": None if goal.target_value is None else fhir_number(goal.target_value),
            "comparator": goal.target_comparator,
            "system": t.UCUM,
            "code": SCORE_UNIT,
        }
    return {
        "measure": (
            concept(
                measure.system if measure else t.LOINC,
                goal.target_measure,
                measure.display if measure else None,
            )
            if goal.target_measure
            else None
        ),
        "detailQuantity": quantity,
        "dueDate": fhir_date(goal.target_due_date),
    }


def render_goal(
    plan: CarePlan, goal: Goal, latest: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Goal resource of a goal of ``plan``. ``latest``: the id of the latest
    administration of each instrument by its total's LOINC code; a symptom goal on that
    total names its Observation as ``outcomeReference``."""
    outcome = None
    if goal.kind == codes.GoalKind.SYMPTOM and goal.target_measure:
        outcome = (latest or {}).get(goal.target_measure)
    category = [
        concept(t.GOAL_CATEGORY, GOAL_CATEGORY_CODE, GOAL_CATEGORY_DISPLAY),
        concept(t.local("ipt-goal-kind").url, goal.kind),
    ]
    if goal.problem_area:
        category.append({"coding": [_area_coding(goal.problem_area)]})
    resource = {
        "resourceType": "Goal",
        "id": goal.id,
        "meta": _meta(t.GOAL_PROFILE),
        "text": goal_narrative(plan, goal),
        "extension": [
            extension(t.EXT_GOAL_EPISODE, "Reference", reference(f"CarePlan/{plan.id}")),
            extension(t.EXT_GOAL_PHASE, "Code", goal.phase),
        ],
        "lifecycleStatus": goal.lifecycle_status,
        "achievementStatus": (
            concept(
                t.GOAL_ACHIEVEMENT,
                goal.achievement_status,
                hl7_display(goal.achievement_status),
            )
            if goal.achievement_status
            else None
        ),
        "category": category,
        "priority": (
            concept(t.GOAL_PRIORITY, goal.priority, hl7_display(goal.priority))
            if goal.priority
            else None
        ),
        "description": {"text": goal.description},
        "subject": reference(plan.patient),
        "startDate": fhir_date(goal.start_date),
        "target": [_target(goal)],
        "note": notes_as_annotations(goal.notes),
        "outcomeReference": [reference(f"Observation/{outcome}") if outcome else None],
    }
    return dict(compact(resource))
