"""Care plans: creating one from the IPT template, reading, listing, changing, deleting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from service import administrations, plan_checks, progress
from service import phases as phase_rules
from service.codes import (
    CLOSED_PLAN_STATUSES,
    FINISHED_GOAL_STATUSES,
    PLAN_STATUS_TRANSITIONS,
    VARIANT_CONTRACTS,
    Frequency,
    GoalAchievement,
    GoalKind,
    GoalLifecycleStatus,
    PhaseStatus,
    PlanStatus,
    ProblemArea,
    Variant,
)
from service.db import Database
from service.editing import (
    PlanEdit,
    assign,
    changed_fields,
    check_version,
    edit_plan,
    field_values,
    load_plan,
    plan_query,
    require_plan,
)
from service.errors import RuleViolation
from service.instants import clamp
from service.instruments import BY_TOTAL_CODE
from service.models import (
    CarePlan,
    Contract,
    Goal,
    Phase,
    PlanChange,
    PlanIdentifier,
    TherapySession,
    new_id,
)
from service.phase_changes import log_phase_changes, snapshot
from service.rules import (
    Problems,
    check_code,
    check_date_order,
    check_dates,
)
from service.template import course_end, default_goals

CREATABLE_STATUSES = (PlanStatus.DRAFT, PlanStatus.ACTIVE)
ACUTE_VARIANTS = frozenset(v for v in Variant if v != Variant.MAINTENANCE)
# Fields a closed plan still lets change.
CLOSED_PLAN_EDITABLE = frozenset({"notes", "status"})


# --- reading --------------------------------------------------------------------------


def get_plan(database: Database, plan_id: str) -> CarePlan:
    with database.reading() as session:
        return load_plan(session, plan_id)


@dataclass(frozen=True)
class PlanFilter:
    patient: str | None = None
    statuses: tuple[str, ...] = ()
    problem_area: str | None = None
    variant: str | None = None
    updated_since: datetime | None = None
    updated_before: datetime | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None
    # Deleted plans too (listed as tombstones): how a sync client learns of deletions.
    include_deleted: bool = False


def list_plans(
    database: Database, criteria: PlanFilter, offset: int, limit: int
) -> tuple[list[CarePlan], int]:
    """One page of the plans matching every given criterion, oldest first, and the total."""
    conditions: list[Any] = [] if criteria.include_deleted else [CarePlan.deleted_at.is_(None)]
    if criteria.patient:
        conditions.append(CarePlan.patient == criteria.patient)
    if criteria.statuses:
        conditions.append(CarePlan.status.in_(criteria.statuses))
    if criteria.problem_area:
        conditions.append(
            or_(
                CarePlan.primary_problem_area == criteria.problem_area,
                CarePlan.secondary_problem_area == criteria.problem_area,
            )
        )
    if criteria.variant:
        conditions.append(CarePlan.variant == criteria.variant)
    # Clamped: an instant at the end of the calendar in another zone is beyond it in UTC.
    if criteria.updated_since:
        conditions.append(CarePlan.updated_at >= clamp(criteria.updated_since))
    if criteria.updated_before:
        conditions.append(CarePlan.updated_at < clamp(criteria.updated_before))
    if criteria.identifier_value is not None:
        match = select(PlanIdentifier.plan_id).where(
            PlanIdentifier.value == criteria.identifier_value
        )
        if criteria.identifier_system is not None:
            match = match.where(PlanIdentifier.system == criteria.identifier_system)
        conditions.append(CarePlan.id.in_(match))
    with database.reading() as session:
        total = session.scalar(select(func.count()).select_from(CarePlan).where(*conditions))
        page = session.scalars(
            plan_query()
            .where(*conditions)
            .order_by(CarePlan.created_at, CarePlan.id)
            .offset(offset)
            .limit(limit)
        ).all()
        return list(page), total or 0


def list_changes(database: Database, plan_id: str) -> list[PlanChange]:
    with database.reading() as session:
        require_plan(session, plan_id)
        return list(
            session.scalars(
                select(PlanChange).where(PlanChange.plan_id == plan_id).order_by(PlanChange.id)
            )
        )


def expected_end_date(plan: CarePlan) -> date:
    """The planned end of the course: the end date if set, else the date of the last session."""
    return plan.end_date or course_end(
        plan.start_date, plan.planned_sessions, plan.session_frequency
    )


# --- creating -------------------------------------------------------------------------


def create_plan(
    database: Database, data: Mapping[str, Any], actor: str, plan_id: str | None = None
) -> CarePlan:
    """Create a plan, its phases, and (unless ``default_goals`` is false) the template goals.

    ``plan_id`` is a client's choice of id (a FHIR create-on-update); the server picks one
    otherwise.
    """
    variant = data.get("variant", Variant.STANDARD)
    problems = Problems()
    check_code(problems, "variant", variant, Variant)
    contract = VARIANT_CONTRACTS.get(Variant(variant)) if variant in set(Variant) else None
    sessions = data.get("planned_sessions") or (contract.default_sessions if contract else 12)
    frequency = data.get("session_frequency") or (
        contract.default_frequency if contract else Frequency.WEEKLY
    )
    status = data.get("status", PlanStatus.ACTIVE)
    areas = list(data.get("problem_areas") or [])
    if status not in CREATABLE_STATUSES:
        check_code(problems, "status", status, PlanStatus)
        if status in set(PlanStatus):
            problems.add("status", f"a new plan is draft or active, not {status}")
    if data.get("patient") is None:
        problems.add("patient", "is required")
    if data.get("start_date") is None:
        problems.add("start_date", "is required")
    plan_checks.check_problem_areas(problems, areas, data.get("dispute_stage"))
    plan_checks.check_contract(problems, variant, sessions, frequency)
    plan_checks.check_plan_fields(problems, data, variant)
    check_dates(problems, data, "start_date", "end_date")
    check_date_order(
        problems, "end_date", data.get("end_date"), "start_date", data.get("start_date")
    )
    problems.raise_if_any()

    plan = CarePlan(
        id=plan_id or new_id(),
        patient=data["patient"],
        status=status,
        variant=variant,
        planned_sessions=sessions,
        session_frequency=frequency,
        start_date=data["start_date"],
        end_date=data.get("end_date"),
        primary_problem_area=areas[0],
        secondary_problem_area=areas[1] if len(areas) > 1 else None,
        dispute_stage=data.get("dispute_stage"),
        condition=data.get("condition"),
        therapist=data.get("therapist"),
        formulation=data.get("formulation"),
        relapse_prevention=data.get("relapse_prevention"),
        notes=list(data.get("notes") or []),
    )
    plan.identifiers = [
        PlanIdentifier(system=i["system"], value=i["value"]) for i in data.get("identifiers") or []
    ]
    plan.contracts = [
        Contract(
            sequence=1,
            planned_sessions=sessions,
            session_frequency=frequency,
            reason=data.get("contract_change_reason"),
            agreed_by=actor,
        )
    ]
    try:
        with database.writing() as session:
            plan_checks.check_identifiers_free(session, data.get("identifiers") or [], None)
            edit = PlanEdit(session, plan, actor, notify=database.notify)
            plan.contracts[0].agreed_at = edit.now
            edit.created("care_plan", plan)
            for r in phase_rules.default_ranges(variant, sessions):
                phase = Phase(
                    code=r.code,
                    start_session=r.start,
                    end_session=r.end,
                    status=PhaseStatus.NOT_STARTED,
                )
                plan.phases.append(phase)
                edit.created("phase", phase)
            session.flush()
            if data.get("default_goals", True):
                _add_template_goals(edit)
            edit.finish()
    except IntegrityError as error:
        raise plan_checks.identifier_conflict() from error
    return get_plan(database, plan.id)


def _add_template_goals(edit: PlanEdit) -> None:
    plan = edit.plan
    active = plan.status == PlanStatus.ACTIVE
    due = expected_end_date(plan)
    for draft in default_goals(plan.variant, plan.problem_areas):
        edit.created(
            "goal",
            Goal(
                plan_id=plan.id,
                kind=draft.kind,
                problem_area=draft.problem_area,
                description=draft.description,
                lifecycle_status=GoalLifecycleStatus.ACTIVE
                if active
                else GoalLifecycleStatus.PROPOSED,
                achievement_status=GoalAchievement.IN_PROGRESS if active else None,
                priority=draft.priority,
                start_date=plan.start_date,
                target_measure=draft.target_measure,
                target_comparator=draft.target_comparator,
                target_value=draft.target_value,
                target_due_date=due,
                phase=draft.phase,
                notes=[],
            ),
        )


# --- changing -------------------------------------------------------------------------


def update_plan(
    database: Database,
    plan_id: str,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> CarePlan:
    """Apply a partial change to a plan; only the fields present in ``data`` change."""
    try:
        with edit_plan(database, plan_id, actor, expected_version) as edit:
            _apply_plan_changes(edit, data)
    except IntegrityError as error:
        raise plan_checks.identifier_conflict() from error
    return get_plan(database, plan_id)


def _apply_plan_changes(edit: PlanEdit, data: Mapping[str, Any]) -> None:
    plan = edit.plan
    problems = Problems()
    plan_checks.check_immutable(problems, plan, data)
    plan_checks.check_plan_fields(problems, data, plan.variant)
    new_status = data.get("status", plan.status)
    if new_status != plan.status:
        check_code(problems, "status", new_status, PlanStatus)
        allowed = PLAN_STATUS_TRANSITIONS.get(PlanStatus(plan.status), frozenset())
        if new_status in set(PlanStatus) and new_status not in allowed:
            problems.add(
                "status",
                f"a {plan.status} plan cannot become {new_status}"
                + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; it is final"),
            )
    if plan.status in CLOSED_PLAN_STATUSES:
        for name in sorted(set(data) - CLOSED_PLAN_EDITABLE):
            if _differs(plan, name, data[name]):
                problems.add(
                    name,
                    f"care plan is {plan.status}: only its notes can change",
                )
    areas = data.get("problem_areas", plan.problem_areas)
    stage = data.get("dispute_stage", plan.dispute_stage)
    if "problem_areas" in data or "dispute_stage" in data:
        if (
            "problem_areas" in data
            and ProblemArea.ROLE_DISPUTE not in areas
            and "dispute_stage" not in data
        ):
            stage = None  # the stage goes with the dispute
        plan_checks.check_problem_areas(problems, areas, stage)
    sessions = data.get("planned_sessions", plan.planned_sessions)
    frequency = data.get("session_frequency", plan.session_frequency)
    variant = data.get("variant", plan.variant)
    plan_checks.check_contract(problems, variant, sessions, frequency)
    start = data.get("start_date", plan.start_date)
    end = data.get("end_date", plan.end_date)
    check_dates(problems, data, "start_date", "end_date")
    check_date_order(
        problems, "end_date" if "end_date" in data else "start_date", end, "start_date", start
    )
    closing = _goal_outcomes(edit, problems, data, new_status)
    problems.raise_if_any()

    if "problem_areas" in data:
        plan_checks.check_dropped_areas(edit, areas)
    if start != plan.start_date:
        plan_checks.check_start_before_sessions(edit, start)
    contract_changed = (sessions, frequency) != (plan.planned_sessions, plan.session_frequency)
    # The fields logged as changed are those whose value differs from this, whatever
    # changed them (the contract, the status, the fields sent).
    before = field_values(plan, LOGGED_PLAN_FIELDS)
    if contract_changed:
        _renegotiate(edit, sessions, frequency, data.get("contract_change_reason"))
    elif data.get("contract_change_reason") is not None:
        raise RuleViolation.on(
            "contract_change_reason",
            "a contract change reason is given only with a new planned_sessions "
            "or session_frequency",
        )
    changes = {
        name: data[name]
        for name in (
            "variant",
            "start_date",
            "end_date",
            "condition",
            "therapist",
            "formulation",
            "relapse_prevention",
            "notes",
        )
        if name in data
    }
    changes["primary_problem_area"] = areas[0]
    changes["secondary_problem_area"] = areas[1] if len(areas) > 1 else None
    changes["dispute_stage"] = stage
    assign(plan, changes)
    identifiers = _replace_identifiers(edit, data["identifiers"]) if "identifiers" in data else []
    if new_status != plan.status:
        _close_goals(edit, closing)
        _change_status(edit, PlanStatus(new_status))
    edit.updated("care_plan", plan, changed_fields(plan, before) + identifiers)


# The plan's own fields a change is logged for (its identifiers are compared as a set).
LOGGED_PLAN_FIELDS = (
    "variant",
    "status",
    "planned_sessions",
    "session_frequency",
    "primary_problem_area",
    "secondary_problem_area",
    "dispute_stage",
    "start_date",
    "end_date",
    "condition",
    "therapist",
    "formulation",
    "relapse_prevention",
    "notes",
)


def _differs(plan: CarePlan, name: str, value: Any) -> bool:
    if name == "identifiers":
        return sorted((i["system"], i["value"]) for i in value) != sorted(
            (i.system, i.value) for i in plan.identifiers
        )
    if name == "problem_areas":
        return list(value) != plan.problem_areas
    if name == "contract_change_reason":
        return value is not None
    return bool(getattr(plan, name, None) != value)


def _renegotiate(edit: PlanEdit, sessions: int, frequency: str, reason: str | None) -> None:
    plan = edit.plan
    highest = edit.session.scalar(
        select(func.max(TherapySession.number)).where(
            TherapySession.plan_id == plan.id, TherapySession.deleted_at.is_(None)
        )
    )
    if highest is not None and sessions < highest:
        raise RuleViolation.on(
            "planned_sessions",
            f"session {highest} is already recorded: the contract cannot shrink below it",
        )
    last = edit.last_attended()
    before = snapshot(plan.phases)
    phase_rules.stretch_to(plan.phases, sessions)
    if last is not None:
        # Forward only: a shorter middle phase may leave the last attended session in
        # the next phase, which then is the one in progress.
        phase_rules.advance(plan.phases, last[0], last[1])
    log_phase_changes(edit, before)
    plan.planned_sessions = sessions
    plan.session_frequency = frequency
    plan.contracts.append(
        Contract(
            sequence=len(plan.contracts) + 1,
            planned_sessions=sessions,
            session_frequency=frequency,
            reason=reason,
            agreed_at=edit.now,
            agreed_by=edit.actor,
        )
    )


def _replace_identifiers(edit: PlanEdit, identifiers: list[Mapping[str, str]]) -> list[str]:
    plan = edit.plan
    wanted = [(i["system"], i["value"]) for i in identifiers]
    current = [(i.system, i.value) for i in plan.identifiers]
    if sorted(wanted) == sorted(current):
        return []
    plan_checks.check_identifiers_free(edit.session, identifiers, plan.id)
    keep = [i for i in plan.identifiers if (i.system, i.value) in wanted]
    plan.identifiers = keep + [
        PlanIdentifier(system=s, value=v) for s, v in wanted if (s, v) not in current
    ]
    edit.session.flush()
    return ["identifiers"]


# A goal in one of these states still binds the plan: a plan is not completed around it.
OPEN_GOAL_STATUSES = frozenset(
    {
        GoalLifecycleStatus.PROPOSED,
        GoalLifecycleStatus.PLANNED,
        GoalLifecycleStatus.ACCEPTED,
        GoalLifecycleStatus.ACTIVE,
        GoalLifecycleStatus.ON_HOLD,
    }
)
RESOLVE = "resolve"


def open_goals(edit: PlanEdit) -> list[Goal]:
    """The plan's goals that still bind it, in the order they were set."""
    return list(
        edit.session.scalars(
            select(Goal)
            .where(
                Goal.plan_id == edit.plan.id,
                Goal.deleted_at.is_(None),
                Goal.lifecycle_status.in_(OPEN_GOAL_STATUSES),
            )
            .order_by(Goal.created_at, Goal.id)
        )
    )


def _resolved(edit: PlanEdit, goal: Goal) -> dict[str, Any]:
    """What ``resolve`` makes of an open goal: completed; a symptom goal achieved when its
    last score meets its target (achieved or sustaining), otherwise, and for every other
    goal, not achieved."""
    achieved = False
    instrument = BY_TOTAL_CODE.get(goal.target_measure or "")
    if goal.kind == GoalKind.SYMPTOM and instrument is not None and goal.target_value is not None:
        totals = administrations.totals_in_order(edit.session, edit.plan.id, instrument.key)
        status = progress.achievement(instrument, totals, goal.target_comparator, goal.target_value)
        achieved = status in (GoalAchievement.ACHIEVED, GoalAchievement.SUSTAINING)
    elif goal.kind == GoalKind.SYMPTOM:
        # A scale the plan does not record: the status a clinician last gave it.
        achieved = goal.achievement_status in (
            GoalAchievement.ACHIEVED,
            GoalAchievement.SUSTAINING,
        )
    return {
        "lifecycle_status": GoalLifecycleStatus.COMPLETED,
        "achievement_status": GoalAchievement.ACHIEVED
        if achieved
        else GoalAchievement.NOT_ACHIEVED,
    }


def _goal_outcomes(
    edit: PlanEdit, problems: Problems, data: Mapping[str, Any], new_status: str
) -> dict[str, dict[str, Any]]:
    """What becomes of each open goal when the plan is completed (``open_goals``): goal id
    -> the lifecycle and achievement status it is closed with. A plan is not completed
    with goals still open unless the request says what becomes of them."""
    given = data.get("open_goals")
    completing = new_status == PlanStatus.COMPLETED and edit.plan.status != PlanStatus.COMPLETED
    if not completing:
        if given is not None:
            problems.add("open_goals", "says what becomes of open goals when the plan is completed")
        return {}
    goals = open_goals(edit)
    if given is None:
        for goal in goals:
            problems.add(
                f"open_goals.{goal.id}",
                f"goal {goal.id} ({goal.description[:60]}) is still {goal.lifecycle_status}: "
                'finish it first, or say what becomes of it in open_goals ("resolve", or its '
                "lifecycle_status and achievement_status)",
            )
        return {}
    if given == RESOLVE:
        return {goal.id: _resolved(edit, goal) for goal in goals}
    if not isinstance(given, Mapping):
        problems.add(
            "open_goals",
            '"resolve", or an object of goal ids and what becomes of each '
            '({lifecycle_status, achievement_status} or "resolve")',
        )
        return {}
    by_id = {goal.id: goal for goal in goals}
    outcomes: dict[str, dict[str, Any]] = {}
    for goal_id, outcome in given.items():
        field = f"open_goals.{goal_id}"
        listed = by_id.get(goal_id)
        if listed is None:
            problems.add(field, f"{goal_id!r} is not an open goal of this plan")
        elif outcome == RESOLVE:
            outcomes[goal_id] = _resolved(edit, listed)
        elif not isinstance(outcome, Mapping) or set(outcome) - {
            "lifecycle_status",
            "achievement_status",
        }:
            problems.add(
                field, '"resolve", or an object of lifecycle_status and achievement_status'
            )
        else:
            lifecycle = outcome.get("lifecycle_status", GoalLifecycleStatus.COMPLETED)
            achievement = outcome.get("achievement_status")
            check_code(problems, f"{field}.lifecycle_status", lifecycle, GoalLifecycleStatus)
            check_code(problems, f"{field}.achievement_status", achievement, GoalAchievement)
            if lifecycle in OPEN_GOAL_STATUSES:
                problems.add(
                    f"{field}.lifecycle_status",
                    f"a goal is closed with the plan: {', '.join(sorted(FINISHED_GOAL_STATUSES))}"
                    f", not {lifecycle}",
                )
            outcomes[goal_id] = {
                "lifecycle_status": lifecycle,
                "achievement_status": achievement,
                "achievement_manual": achievement is not None,
            }
    for goal in goals:
        if goal.id not in given:
            problems.add(
                f"open_goals.{goal.id}",
                f"goal {goal.id} ({goal.description[:60]}) is still {goal.lifecycle_status}: "
                'say what becomes of it ("resolve", or its lifecycle_status and '
                "achievement_status)",
            )
    return outcomes


def _close_goals(edit: PlanEdit, outcomes: Mapping[str, Mapping[str, Any]]) -> None:
    for goal in open_goals(edit):
        outcome = outcomes.get(goal.id)
        if outcome is not None:
            changes = {k: v for k, v in outcome.items() if k != "achievement_manual"}
            fields = assign(goal, changes)
            if outcome.get("achievement_manual") and not goal.achievement_manual:
                goal.achievement_manual = True
                fields.append("achievement_manual")
            edit.updated("goal", goal, fields)


def _change_status(edit: PlanEdit, status: PlanStatus) -> None:
    plan = edit.plan
    today = edit.now.date()
    if status == PlanStatus.COMPLETED:
        for phase in phase_rules.complete_active(plan.phases, today):
            edit.updated("phase", phase, ["status", "end_date"])
    if status == PlanStatus.ACTIVE and plan.status == PlanStatus.DRAFT:
        # Proposed goals come into force with the plan.
        goals = edit.session.scalars(
            select(Goal).where(
                Goal.plan_id == plan.id,
                Goal.deleted_at.is_(None),
                Goal.lifecycle_status == GoalLifecycleStatus.PROPOSED,
            )
        ).all()
        for goal in goals:
            edit.updated(
                "goal",
                goal,
                assign(
                    goal,
                    {
                        "lifecycle_status": GoalLifecycleStatus.ACTIVE,
                        "achievement_status": goal.achievement_status
                        or GoalAchievement.IN_PROGRESS,
                    },
                ),
            )
    plan.status = status


# --- deleting -------------------------------------------------------------------------


def delete_plan(
    database: Database, plan_id: str, actor: str, expected_version: int | None = None
) -> None:
    """Mark the plan deleted; it and everything in it stay stored for the record.

    Its identifiers are released: a deleted plan is found by no search, so a new plan may
    take them.
    """
    with edit_plan(database, plan_id, actor, expected_version) as edit:
        edit.plan.identifiers = []
        edit.deleted("care_plan", edit.plan)


__all__ = [
    "PlanFilter",
    "check_version",
    "create_plan",
    "delete_plan",
    "expected_end_date",
    "get_plan",
    "list_changes",
    "list_plans",
    "update_plan",
]
