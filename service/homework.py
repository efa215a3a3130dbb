"""Homework: optional between-session tasks the patient takes on, and their report of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from service.codes import (
    HOMEWORK_STATUS_TRANSITIONS,
    HomeworkKind,
    HomeworkStatus,
    PhaseCode,
    PhaseStatus,
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
from service.errors import RuleViolation
from service.models import CarePlan, Goal, Homework
from service.rules import Problems, check_code, check_date_order, check_dates, check_text

_FIELDS = (
    "phase",
    "goal_id",
    "kind",
    "description",
    "assigned_on",
    "due_on",
    "status",
    "patient_report",
)
# Once homework is finished only the patient's report of it may still be written.
_FINISHED_EDITABLE = frozenset({"patient_report"})
_DATE_FIELDS = ("assigned_on", "due_on")


def list_homework(database: Database, plan_id: str) -> list[Homework]:
    with database.reading() as session:
        require_plan(session, plan_id)
        return list(
            session.scalars(
                select(Homework)
                .where(Homework.plan_id == plan_id, Homework.deleted_at.is_(None))
                .order_by(Homework.created_at, Homework.id)
            )
        )


def get_homework(database: Database, plan_id: str, homework_id: str) -> Homework:
    with database.reading() as session:
        require_plan(session, plan_id)
        return load_child(session, Homework, plan_id, homework_id, "homework")


def _current_phase(plan: CarePlan) -> str | None:
    active = [p.code for p in plan.phases if p.status == PhaseStatus.ACTIVE]
    return active[0] if active else None


def _check_homework(problems: Problems, edit: PlanEdit, values: Mapping[str, Any]) -> None:
    if values["kind"] is None:
        problems.add("kind", "is required")
    check_code(problems, "kind", values["kind"], HomeworkKind)
    check_code(problems, "status", values["status"], HomeworkStatus)
    check_text(problems, "description", values["description"], required=True)
    check_text(problems, "patient_report", values["patient_report"])
    phase = values["phase"]
    if phase is None:
        problems.add("phase", "no phase is active: name the phase this homework belongs to")
    else:
        check_code(problems, "phase", phase, PhaseCode)
        if phase in set(PhaseCode) and phase not in {p.code for p in edit.plan.phases}:
            problems.add("phase", f"this plan has no {phase} phase")
    check_date_order(problems, "due_on", values["due_on"], "assigned_on", values["assigned_on"])
    check_date_order(
        problems, "assigned_on", values["assigned_on"], "the plan's start", edit.plan.start_date
    )
    goal_id = values["goal_id"]
    if goal_id is not None:
        goal = edit.session.get(Goal, goal_id)
        if goal is None or goal.plan_id != edit.plan.id or goal.is_deleted:
            problems.add("goal_id", f"goal {goal_id!r} is not a goal of this plan")


def assign_homework(
    database: Database, plan_id: str, data: Mapping[str, Any], actor: str
) -> Homework:
    """Give the patient a task; it belongs to the active phase unless another is named."""
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its homework")
        values = {name: data.get(name) for name in _FIELDS}
        values["phase"] = data.get("phase") or _current_phase(edit.plan)
        values["assigned_on"] = data.get("assigned_on") or edit.now.date()
        values["status"] = data.get("status") or HomeworkStatus.ASSIGNED
        problems = Problems()
        check_dates(problems, data, *_DATE_FIELDS)
        _check_homework(problems, edit, values)
        problems.raise_if_any()
        homework = Homework(plan_id=edit.plan.id, **values)
        edit.created("homework", homework)
    return get_homework(database, plan_id, homework.id)


def update_homework(
    database: Database,
    plan_id: str,
    homework_id: str,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> Homework:
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its homework")
        homework = load_child(edit.session, Homework, edit.plan.id, homework_id, "homework")
        check_version(homework, expected_version, "homework")
        changes = {name: data[name] for name in _FIELDS if name in data}
        _check_status_change(homework, changes)
        merged = {name: changes.get(name, getattr(homework, name)) for name in _FIELDS}
        problems = Problems()
        check_dates(problems, data, *_DATE_FIELDS)
        _check_homework(problems, edit, merged)
        problems.raise_if_any()
        edit.updated("homework", homework, assign(homework, changes))
    return get_homework(database, plan_id, homework_id)


def _check_status_change(homework: Homework, changes: Mapping[str, Any]) -> None:
    current = HomeworkStatus(homework.status)
    new = changes.get("status", current)
    if not HOMEWORK_STATUS_TRANSITIONS[current]:
        for name, value in changes.items():
            if name not in _FINISHED_EDITABLE and getattr(homework, name) != value:
                raise RuleViolation.on(
                    name, f"homework is {current}: only the patient's report can still change"
                )
        return
    if (
        new != current
        and new in set(HomeworkStatus)
        and new not in HOMEWORK_STATUS_TRANSITIONS[current]
    ):
        raise RuleViolation.on("status", f"homework that is {current} cannot become {new}")


def delete_homework(
    database: Database,
    plan_id: str,
    homework_id: str,
    actor: str,
    expected_version: int | None = None,
) -> None:
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its homework")
        homework = load_child(edit.session, Homework, edit.plan.id, homework_id, "homework")
        check_version(homework, expected_version, "homework")
        edit.deleted("homework", homework)
