"""A plan's progress, read in one transaction: what a clinician reviews at a session.

For each instrument (service/instruments.py) the plan's scores in the order they were taken
(service/progress.in_order), each with its band, its change from the baseline and whether
the safety item was answered above 0; the baseline, the latest score, the change and
whether the course is a response or a remission (service/progress.outcome). Beside them:
the goals and how their achievement was set, attendance, homework completion, the open
safety signals and the phases.

It only reads: one statement per kind of record (the plan with its contracts, its phases,
administrations, goals, sessions, homework and open signals), whatever the number of
scores, so that a plan with forty scores answers as quickly as one with four.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import BindParameter, bindparam, select

from service import progress
from service.administrations import SignalStatus, score
from service.codes import GoalKind, HomeworkStatus, SessionStatus
from service.db import Database
from service.editing import load_plan
from service.instruments import BY_TOTAL_CODE, INSTRUMENTS
from service.models import (
    Administration,
    CarePlan,
    Goal,
    Homework,
    SafetySignal,
    TherapySession,
    utcnow,
)


class AchievementSource:
    """Who set a goal's achievement status."""

    RULES = "rules"  # service/progress.py, from the scores of the goal's measure
    CLINICIAN = "clinician"  # set by hand (it stands until the next score)


@dataclass(frozen=True)
class ScorePoint:
    id: str
    administered_on: date
    session_number: int | None
    total: int
    band_code: str
    band_display: str
    source: str
    change: int  # from the baseline: negative is better
    flagged: bool  # the safety item answered above 0


@dataclass(frozen=True)
class InstrumentCourse:
    instrument: str
    name: str
    scores: list[ScorePoint]
    baseline: int | None
    latest: int | None
    change: int | None
    band_code: str | None
    band_display: str | None
    response: bool | None
    remission: bool | None


@dataclass(frozen=True)
class GoalProgress:
    id: str
    kind: str
    problem_area: str | None
    description: str
    lifecycle_status: str
    achievement_status: str | None
    achievement_source: str | None
    target: dict[str, Any] | None


@dataclass(frozen=True)
class Attendance:
    attended: int
    no_show: int
    cancelled: int
    scheduled: int
    planned_sessions: int
    longest_no_show_run: int


@dataclass(frozen=True)
class HomeworkCompletion:
    assigned: int
    in_progress: int
    completed: int
    not_done: int
    cancelled: int
    due: int
    completion_rate: float | None


@dataclass(frozen=True)
class OpenSignal:
    id: str
    administration_id: str
    instrument: str
    item: str
    score: int
    raised_on: date


@dataclass(frozen=True)
class PhaseProgress:
    code: str
    status: str
    start_session: int
    end_session: int
    start_date: date | None
    end_date: date | None


@dataclass(frozen=True)
class PlanProgress:
    plan_id: str
    patient: str
    version: int
    status: str
    variant: str
    start_date: date
    as_of: date
    instruments: list[InstrumentCourse]
    goals: list[GoalProgress]
    attendance: Attendance
    homework: HomeworkCompletion
    open_safety_signals: list[OpenSignal]
    phases: list[PhaseProgress]


# The statements, built once (building them costs as much as running some of them).
_PLAN: BindParameter[str] = bindparam("plan_id")
_ADMINISTRATIONS = select(Administration).where(
    Administration.plan_id == _PLAN, Administration.deleted_at.is_(None)
)
_GOALS = (
    select(Goal)
    .where(Goal.plan_id == _PLAN, Goal.deleted_at.is_(None))
    .order_by(Goal.created_at, Goal.id)
)
_SESSIONS = select(TherapySession.number, TherapySession.status).where(
    TherapySession.plan_id == _PLAN, TherapySession.deleted_at.is_(None)
)
_HOMEWORK = select(Homework.status, Homework.due_on).where(
    Homework.plan_id == _PLAN, Homework.deleted_at.is_(None)
)
_OPEN_SIGNALS = (
    select(SafetySignal)
    .where(
        SafetySignal.plan_id == _PLAN,
        SafetySignal.deleted_at.is_(None),
        SafetySignal.status == SignalStatus.OPEN,
    )
    .order_by(SafetySignal.created_at, SafetySignal.id)
)


def plan_progress(database: Database, plan_id: str, as_of: date | None = None) -> PlanProgress:
    """The progress of a plan (NotFound or Gone as reading the plan answers)."""
    today = as_of or utcnow().date()
    with database.reading() as session:
        plan = load_plan(session, plan_id)
        given = {"plan_id": plan_id}
        administrations = list(session.scalars(_ADMINISTRATIONS, given))
        goals = list(session.scalars(_GOALS, given))
        held = session.execute(_SESSIONS, given).all()
        homework_rows = session.execute(_HOMEWORK, given).all()
        signals = list(session.scalars(_OPEN_SIGNALS, given))
        return PlanProgress(
            plan_id=plan.id,
            patient=plan.patient,
            version=plan.version,
            status=plan.status,
            variant=plan.variant,
            start_date=plan.start_date,
            as_of=today,
            instruments=courses(administrations),
            goals=[goal_progress(goal) for goal in goals],
            attendance=attendance(plan, [(n, s) for n, s in held]),
            homework=completion([(s, d) for s, d in homework_rows], today),
            open_safety_signals=[
                OpenSignal(s.id, s.administration_id, s.instrument, s.item, s.score, s.raised_on)
                for s in signals
            ],
            phases=[
                PhaseProgress(
                    p.code, p.status, p.start_session, p.end_session, p.start_date, p.end_date
                )
                for p in sorted(plan.phases, key=lambda p: p.start_session)
            ],
        )


def courses(administrations: list[Administration]) -> list[InstrumentCourse]:
    """The course of each instrument, in the order the instruments are declared; an
    instrument never administered in the plan is listed with no scores."""
    by_id = {a.id: a for a in administrations}
    found = []
    for instrument in INSTRUMENTS.values():
        ordered = progress.in_order(
            score(a) for a in administrations if a.instrument == instrument.key
        )
        totals = [s.total for s in ordered]
        outcome = progress.outcome(instrument, totals)
        points = []
        for point in ordered:
            record = by_id[point.id]
            band = instrument.band(point.total)
            safety = (record.answers or {}).get(instrument.safety_item or "", 0)
            points.append(
                ScorePoint(
                    id=record.id,
                    administered_on=record.administered_on,
                    session_number=record.session_number,
                    total=record.total,
                    band_code=band.code,
                    band_display=band.display,
                    source=record.source,
                    change=record.total - totals[0],
                    flagged=instrument.safety_item is not None and safety > 0,
                )
            )
        found.append(
            InstrumentCourse(
                instrument=instrument.key,
                name=instrument.name,
                scores=points,
                baseline=outcome.baseline if outcome else None,
                latest=outcome.latest if outcome else None,
                change=outcome.change if outcome else None,
                band_code=outcome.band.code if outcome else None,
                band_display=outcome.band.display if outcome else None,
                response=outcome.response if outcome else None,
                remission=outcome.remission if outcome else None,
            )
        )
    return found


def achievement_source(goal: Goal) -> str | None:
    """Who set the goal's achievement status: the rules, for a symptom goal whose target
    names an instrument's total and that no clinician has overridden; else a clinician."""
    if goal.achievement_status is None:
        return None
    ruled = (
        goal.kind == GoalKind.SYMPTOM
        and goal.target_measure in BY_TOTAL_CODE
        and goal.target_value is not None
        and not goal.achievement_manual
    )
    return AchievementSource.RULES if ruled else AchievementSource.CLINICIAN


def goal_progress(goal: Goal) -> GoalProgress:
    return GoalProgress(
        id=goal.id,
        kind=goal.kind,
        problem_area=goal.problem_area,
        description=goal.description,
        lifecycle_status=goal.lifecycle_status,
        achievement_status=goal.achievement_status,
        achievement_source=achievement_source(goal),
        target=goal.target,
    )


def longest_no_show_run(held: list[tuple[int, str]]) -> int:
    """The most no-shows in a row, in session order: an attended session ends a run, a
    cancelled or still scheduled one (no session took place) does not."""
    longest = run = 0
    for _number, status in sorted(held):
        if status == SessionStatus.NO_SHOW:
            run += 1
            longest = max(longest, run)
        elif status == SessionStatus.ATTENDED:
            run = 0
    return longest


def attendance(plan: CarePlan, held: list[tuple[int, str]]) -> Attendance:
    """Sessions by status, the contract's planned sessions and the longest no-show run."""
    statuses = [status for _number, status in held]
    return Attendance(
        attended=statuses.count(SessionStatus.ATTENDED),
        no_show=statuses.count(SessionStatus.NO_SHOW),
        cancelled=statuses.count(SessionStatus.CANCELLED),
        scheduled=statuses.count(SessionStatus.SCHEDULED),
        planned_sessions=plan.planned_sessions,
        longest_no_show_run=longest_no_show_run(held),
    )


def completion(tasks: list[tuple[str, date | None]], today: date) -> HomeworkCompletion:
    """Homework by status; the completion rate of the tasks that are due.

    A task is due once it is completed or reported not done, or its due date has come;
    a cancelled task never is. The rate is completed / due (None when nothing is due).
    """
    statuses = [status for status, _due in tasks]
    due = sum(
        1
        for status, due_on in tasks
        if status in (HomeworkStatus.COMPLETED, HomeworkStatus.NOT_DONE)
        or (
            status in (HomeworkStatus.ASSIGNED, HomeworkStatus.IN_PROGRESS)
            and due_on is not None
            and due_on <= today
        )
    )
    completed = statuses.count(HomeworkStatus.COMPLETED)
    return HomeworkCompletion(
        assigned=statuses.count(HomeworkStatus.ASSIGNED),
        in_progress=statuses.count(HomeworkStatus.IN_PROGRESS),
        completed=completed,
        not_done=statuses.count(HomeworkStatus.NOT_DONE),
        cancelled=statuses.count(HomeworkStatus.CANCELLED),
        due=due,
        completion_rate=round(completed / due, 4) if due else None,
    )
