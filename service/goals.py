"""Goals of a plan: symptom goals measured by a scale, and goals of its problem areas."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from service import administrations, progress
from service.codes import (
    FINISHED_GOAL_STATUSES,
    MEASURES,
    Comparator,
    GoalAchievement,
    GoalKind,
    GoalLifecycleStatus,
    GoalPriority,
    PhaseCode,
    PlanStatus,
)
from service.db import Database
from service.editing import (
    PlanEdit,
    assign,
    check_version,
    edit_plan,
    load_child,
    require_plan,
)
from service.errors import Conflict, RuleViolation
from service.instruments import BY_TOTAL_CODE
from service.models import CarePlan, Goal, Homework, new_id
from service.rules import (
    Problems,
    check_code,
    check_date_order,
    check_dates,
    check_notes,
    check_text,
)

_TARGET_COLUMNS = {
    "measure": "target_measure",
    "comparator": "target_comparator",
    "value": "target_value",
    "due_date": "target_due_date",
}
# Target values are stored with 3 decimal places (Numeric(9, 3)).
_VALUE_STEP = Decimal("0.001")
# The dates a client writes, as it names them.
_DATE_FIELDS = ("start_date", "target.due_date")
# Target columns as the API names them.
_API_FIELDS = {column: f"target.{key}" for key, column in _TARGET_COLUMNS.items()}
_PLAIN_FIELDS = (
    "kind",
    "problem_area",
    "description",
    "lifecycle_status",
    "achievement_status",
    "priority",
    "start_date",
    "phase",
    "notes",
)


def achievement_source(goal: Goal) -> str:
    """Who set the goal's achievement status: ``rules`` for a symptom goal whose target
    names the total of an instrument the plan records (service/progress.py) while no
    clinician has set it, ``clinician`` otherwise."""
    ruled = (
        goal.kind == GoalKind.SYMPTOM
        and goal.target_measure in BY_TOTAL_CODE
        and goal.target_value is not None
    )
    return "rules" if ruled and not goal.achievement_manual else "clinician"


def _ruled_status(edit: PlanEdit, goal: Mapping[str, Any]) -> str | None:
    """The achievement status the rules give a goal (column names) from the plan's scores
    of its measure; None when the rules do not judge it or no score has been taken."""
    instrument = BY_TOTAL_CODE.get(goal["target_measure"] or "")
    if (
        instrument is None
        or goal["kind"] != GoalKind.SYMPTOM
        or goal["target_value"] is None
        or goal["lifecycle_status"] in FINISHED_GOAL_STATUSES
    ):
        return None
    try:
        value = Decimal(goal["target_value"])
    except (ArithmeticError, TypeError, ValueError):
        return None
    totals = administrations.totals_in_order(edit.session, edit.plan.id, instrument.key)
    if not totals:
        return None
    return progress.achievement(instrument, totals, goal["target_comparator"], value)


def list_goals(database: Database, plan_id: str) -> list[Goal]:
    with database.reading() as session:
        require_plan(session, plan_id)
        return list(
            session.scalars(
                select(Goal)
                .where(Goal.plan_id == plan_id, Goal.deleted_at.is_(None))
                .order_by(Goal.created_at, Goal.id)
            )
        )


def get_goal(database: Database, plan_id: str, goal_id: str) -> Goal:
    with database.reading() as session:
        require_plan(session, plan_id)
        return load_child(session, Goal, plan_id, goal_id, "goal")


def _target_columns(target: Mapping[str, Any] | None) -> dict[str, Any]:
    target = target or {}
    return {column: target.get(key) for key, column in _TARGET_COLUMNS.items()}


def _check_goal(
    problems: Problems, plan: CarePlan, goal: Mapping[str, Any], kept_area: str | None = None
) -> None:
    """Check a goal as it would be stored (column names).

    ``kept_area`` is a problem area the goal may keep although the plan no longer has it.
    """
    check_code(problems, "kind", goal["kind"], GoalKind)
    check_code(problems, "lifecycle_status", goal["lifecycle_status"], GoalLifecycleStatus)
    check_code(problems, "achievement_status", goal["achievement_status"], GoalAchievement)
    check_code(problems, "priority", goal["priority"], GoalPriority)
    check_text(problems, "description", goal["description"], required=True)
    check_notes(problems, "notes", goal["notes"])
    area = goal["problem_area"]
    if goal["kind"] == GoalKind.PROBLEM_AREA:
        if area is None:
            problems.add("problem_area", "a problem-area goal names its problem area")
        elif area not in plan.problem_areas and area != kept_area:
            problems.add(
                "problem_area",
                f"{area!r} is not a problem area of this plan ({', '.join(plan.problem_areas)})",
            )
    elif goal["kind"] == GoalKind.SYMPTOM and area is not None:
        problems.add("problem_area", "a symptom goal has no problem area")
    phase = goal["phase"]
    if phase is not None:
        check_code(problems, "phase", phase, PhaseCode)
        if phase in set(PhaseCode) and phase not in {p.code for p in plan.phases}:
            problems.add("phase", f"this plan has no {phase} phase")
    _check_target(problems, goal)
    check_date_order(
        problems, "target.due_date", goal["target_due_date"], "start_date", goal["start_date"]
    )


def _check_target(problems: Problems, goal: Mapping[str, Any]) -> None:
    measure_code = goal["target_measure"]
    comparator = goal["target_comparator"]
    value = goal["target_value"]
    if measure_code is not None and measure_code not in MEASURES:
        problems.add(
            "target.measure",
            f"unknown measure {measure_code!r}; expected one of: "
            + ", ".join(f"{m.code} ({m.display})" for m in MEASURES.values()),
        )
        return
    check_code(problems, "target.comparator", comparator, Comparator)
    if value is None:
        if comparator is not None:
            problems.add("target.value", "a comparator needs a value to compare with")
        return
    if measure_code is None:
        problems.add("target.measure", "a target value needs the measure it is scored on")
        return
    measure = MEASURES[measure_code]
    number = Decimal(value)
    if not number.is_finite() or not measure.min_score <= number <= measure.max_score:
        problems.add(
            "target.value",
            f"{value} is outside the {measure.display} range "
            f"{measure.min_score}-{measure.max_score}",
        )
    elif number != number.quantize(_VALUE_STEP):
        problems.add("target.value", f"{value} has more than 3 decimal places")


def add_goal(
    database: Database,
    plan_id: str,
    data: Mapping[str, Any],
    actor: str,
    goal_id: str | None = None,
) -> Goal:
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its goals")
        plan = edit.plan
        draft = plan.status == PlanStatus.DRAFT
        values = {name: data.get(name) for name in _PLAIN_FIELDS}
        values["notes"] = list(data.get("notes") or [])
        values["lifecycle_status"] = data.get("lifecycle_status") or (
            GoalLifecycleStatus.PROPOSED if draft else GoalLifecycleStatus.ACTIVE
        )
        values["start_date"] = data.get("start_date") or plan.start_date
        values.update(_target_columns(data.get("target")))
        problems = Problems()
        check_dates(problems, data, *_DATE_FIELDS)
        _check_goal(problems, plan, values)
        problems.raise_if_any()
        # A status the client gives is a clinician's; otherwise a symptom goal on a scale
        # the plan records starts where its scores stand.
        manual = values["achievement_status"] is not None
        ruled = None if manual else _ruled_status(edit, values)
        if ruled is not None:
            values["achievement_status"] = ruled
        goal = Goal(id=goal_id or new_id(), plan_id=plan.id, achievement_manual=manual, **values)
        edit.created("goal", goal)
    return get_goal(database, plan_id, goal.id)


def update_goal(
    database: Database,
    plan_id: str,
    goal_id: str,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> Goal:
    with edit_plan(database, plan_id, actor) as edit:
        goal = load_child(edit.session, Goal, edit.plan.id, goal_id, "goal")
        check_version(goal, expected_version, "goal")
        _apply_goal_changes(edit, goal, data)
    return get_goal(database, plan_id, goal_id)


def _apply_goal_changes(edit: PlanEdit, goal: Goal, data: Mapping[str, Any]) -> None:
    changes = {name: data[name] for name in _PLAIN_FIELDS if name in data}
    if "target" in data:
        changes.update(_target_columns(data["target"]))
    changing = [name for name, value in changes.items() if getattr(goal, name) != value]
    if goal.lifecycle_status == GoalLifecycleStatus.ENTERED_IN_ERROR and changing:
        raise RuleViolation.on(
            _API_FIELDS.get(changing[0], changing[0]),
            "the goal was entered in error: it can no longer change",
        )
    if any(name != "notes" for name in changing):
        edit.require_open("its goals (other than their notes)")
    merged = {name: changes.get(name, getattr(goal, name)) for name in _PLAIN_FIELDS}
    merged.update({c: changes.get(c, getattr(goal, c)) for c in _TARGET_COLUMNS.values()})
    # A finished goal keeps its problem area even after the plan dropped that area.
    finished = merged["lifecycle_status"] in FINISHED_GOAL_STATUSES
    problems = Problems()
    check_dates(problems, data, *_DATE_FIELDS)
    _check_goal(problems, edit.plan, merged, kept_area=goal.problem_area if finished else None)
    problems.raise_if_any()
    if (
        "achievement_status" not in changes
        and not goal.achievement_manual
        and any(getattr(goal, name) != merged[name] for name in (*_TARGET_COLUMNS.values(), "kind"))
    ):
        # A new target is judged by the rules on the scores already taken.
        ruled = _ruled_status(edit, merged)
        if ruled is not None:
            changes["achievement_status"] = ruled
    fields = assign(goal, changes)
    by_clinician = "achievement_status" in data and "achievement_status" in fields
    if by_clinician and not goal.achievement_manual:
        # A clinician's judgement stands until the next score of the goal's measure.
        goal.achievement_manual = True
        fields.append("achievement_manual")
    edit.updated("goal", goal, fields)


def delete_goal(
    database: Database, plan_id: str, goal_id: str, actor: str, expected_version: int | None = None
) -> None:
    """Mark a goal deleted; refused while live homework still serves it."""
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its goals")
        goal = load_child(edit.session, Goal, edit.plan.id, goal_id, "goal")
        check_version(goal, expected_version, "goal")
        serving = edit.session.scalar(
            select(Homework.id).where(Homework.goal_id == goal.id, Homework.deleted_at.is_(None))
        )
        if serving is not None:
            raise Conflict(
                f"homework {serving} serves this goal: delete it or move it to another goal first"
            )
        edit.deleted("goal", goal)
