"""The rules a care plan's fields must keep, checked before anything is stored."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import func, select

from service.codes import (
    FINISHED_GOAL_STATUSES,
    HELD_SESSION_STATUSES,
    MAX_PROBLEM_AREAS,
    VARIANT_CONTRACTS,
    DisputeStage,
    Frequency,
    ProblemArea,
    Variant,
)
from service.editing import PlanEdit
from service.errors import Conflict, RuleViolation
from service.models import CarePlan, Goal, PlanIdentifier, TherapySession
from service.rules import (
    CONDITION_TYPES,
    PATIENT_TYPES,
    THERAPIST_TYPES,
    Problems,
    check_code,
    check_distinct,
    check_notes,
    check_reference,
    check_text,
)


def check_problem_areas(problems: Problems, areas: list[str], stage: str | None) -> None:
    if not areas:
        problems.add("problem_areas", "at least one problem area is required")
    if len(areas) > MAX_PROBLEM_AREAS:
        problems.add(
            f"problem_areas.{MAX_PROBLEM_AREAS}",
            f"an IPT plan works on at most {MAX_PROBLEM_AREAS} problem areas "
            "(a primary and a secondary)",
        )
    for index, area in enumerate(areas):
        check_code(problems, f"problem_areas.{index}", area, ProblemArea)
    check_distinct(problems, "problem_areas", areas)
    if ProblemArea.INTERPERSONAL_DEFICITS in areas and len(areas) > 1:
        problems.add(
            "problem_areas",
            "interpersonal-deficits is chosen only when no other problem area applies: "
            "it cannot be combined with another area",
        )
    check_code(problems, "dispute_stage", stage, DisputeStage)
    if stage is not None and ProblemArea.ROLE_DISPUTE not in areas:
        problems.add("dispute_stage", "a dispute stage is only recorded for a role-dispute plan")


def check_contract(problems: Problems, variant: str, sessions: int, frequency: str) -> None:
    check_code(problems, "session_frequency", frequency, Frequency)
    if variant not in VARIANT_CONTRACTS:
        return
    contract = VARIANT_CONTRACTS[Variant(variant)]
    if not contract.min_sessions <= sessions <= contract.max_sessions:
        problems.add(
            "planned_sessions",
            f"a {variant} IPT contract has {contract.min_sessions} to {contract.max_sessions} "
            f"sessions, not {sessions}",
        )


def _check_relapse_prevention(problems: Problems, plan: Mapping[str, Any] | None) -> None:
    if plan is None:
        return
    for key in ("warning_signs", "actions"):
        for index, item in enumerate(plan.get(key) or []):
            check_text(problems, f"relapse_prevention.{key}.{index}", item, limit=2000)
    for index, contact in enumerate(plan.get("contacts") or []):
        check_text(
            problems,
            f"relapse_prevention.contacts.{index}.name",
            contact.get("name"),
            limit=255,
            required=True,
        )


def _check_identifiers(problems: Problems, identifiers: list[Mapping[str, str]]) -> None:
    check_distinct(problems, "identifiers", [(i["system"], i["value"]) for i in identifiers])
    for index, identifier in enumerate(identifiers):
        # The empty system is an identifier's without one (unique among those, too).
        check_text(
            problems,
            f"identifiers.{index}.system",
            identifier.get("system") or None,
            limit=512,
        )
        check_text(
            problems,
            f"identifiers.{index}.value",
            identifier.get("value"),
            limit=255,
            required=True,
        )


def check_plan_fields(problems: Problems, data: Mapping[str, Any], variant: str) -> None:
    """Checks of the fields present in ``data`` that need nothing but the fields."""
    check_reference(problems, "patient", data.get("patient"), PATIENT_TYPES)
    check_reference(problems, "condition", data.get("condition"), CONDITION_TYPES)
    check_reference(problems, "therapist", data.get("therapist"), THERAPIST_TYPES)
    check_text(problems, "formulation", data.get("formulation"))
    check_notes(problems, "notes", data.get("notes"))
    _check_relapse_prevention(problems, data.get("relapse_prevention"))
    _check_identifiers(problems, data.get("identifiers") or [])


def check_identifiers_free(
    session: Any, identifiers: list[Mapping[str, str]], plan_id: str | None
) -> None:
    """Name the first identifier that already identifies another plan (not which plan:
    the caller may not be allowed to know it)."""
    for index, identifier in enumerate(identifiers):
        owner = session.scalar(
            select(PlanIdentifier.plan_id).where(
                PlanIdentifier.system == identifier["system"],
                PlanIdentifier.value == identifier["value"],
            )
        )
        if owner is not None and owner != plan_id:
            raise Conflict(
                f"identifiers.{index}: {identifier['system']}|{identifier['value']} already "
                "identifies another care plan"
            )


def identifier_conflict() -> Conflict:
    return Conflict(
        "an identifier of this plan already identifies another care plan "
        "(system and value must be unique)"
    )


def check_immutable(problems: Problems, plan: CarePlan, data: Mapping[str, Any]) -> None:
    if "patient" in data and data["patient"] != plan.patient:
        problems.add("patient", "the patient of a care plan cannot change; create a new plan")
    variant = data.get("variant", plan.variant)
    if variant != plan.variant:
        check_code(problems, "variant", variant, Variant)
        if (variant == Variant.MAINTENANCE) != (plan.variant == Variant.MAINTENANCE):
            problems.add(
                "variant",
                "a plan cannot switch between maintenance and acute treatment; "
                "start a new plan with a new contract",
            )


def check_dropped_areas(edit: PlanEdit, areas: list[str]) -> None:
    dropped = set(edit.plan.problem_areas) - set(areas)
    if not dropped:
        return
    binding = edit.session.scalars(
        select(Goal.problem_area).where(
            Goal.plan_id == edit.plan.id,
            Goal.deleted_at.is_(None),
            Goal.problem_area.in_(dropped),
            Goal.lifecycle_status.not_in([s.value for s in FINISHED_GOAL_STATUSES]),
        )
    ).all()
    if binding:
        raise RuleViolation.on(
            "problem_areas",
            f"problem area {sorted({b for b in binding if b})[0]} still has open goals: "
            "complete, cancel or delete them before dropping the area",
        )


def check_start_before_sessions(edit: PlanEdit, start: date) -> None:
    first = edit.session.scalar(
        select(func.min(TherapySession.date)).where(
            TherapySession.plan_id == edit.plan.id,
            TherapySession.deleted_at.is_(None),
            TherapySession.status.in_([s.value for s in HELD_SESSION_STATUSES]),
        )
    )
    if first is not None and start > first:
        raise RuleViolation.on(
            "start_date",
            f"a session was held on {first.isoformat()}: the plan cannot start after it",
        )
