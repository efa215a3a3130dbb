"""A plan's progress, read in one transaction: what a clinician reviews at a session.

For each instrument (service/instruments.py) the plan's scores in the order they were taken
(service/progress.in_order), each with its band, its change from the baseline and whether
the safety item was answered above 0; the baseline, the latest score, the change and
whether the course is a response or a remission (service/progress.outcome). Beside them:
the goals and how their achievement was set, attendance, homework completion, the open
safety signals and the phases.

It only reads: one statement per kind of record (the plan with its phases, its
administrations, goals, sessions, homework and open signals), of the columns it needs,
whatever the number of scores, so that a plan with forty scores answers as quickly as one
with four. A reader that holds the current document already (the client, or the service's cache of
rendered documents) is answered from the plan's row alone (:func:`progress_unless`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, select

from service import progress
from service.administrations import SignalStatus
from service.codes import GoalKind, HomeworkStatus, SessionStatus
from service.db import Database, fetch_first
from service.errors import Gone, NotFound
from service.instruments import BY_TOTAL_CODE, INSTRUMENTS
from service.models import (
    Administration,
    CarePlan,
    Goal,
    Homework,
    Phase,
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
    updated_at: datetime  # of the plan's row: with the version, names its stored state

    @property
    def key(self) -> tuple[str, int, datetime, date]:
        """What the document is a function of (as :attr:`PlanHead.key`)."""
        return (self.plan_id, self.version, self.updated_at, self.as_of)


# The statements, built once (building them costs as much as running some of them), of
# the columns the document needs: rows, not objects, are what it is computed from.
_PLAN: BindParameter[str] = bindparam("plan_id")
_plans, _phases = CarePlan.__table__.c, Phase.__table__.c
_scores, _goals = Administration.__table__.c, Goal.__table__.c
_sessions, _homework = TherapySession.__table__.c, Homework.__table__.c
_signals = SafetySignal.__table__.c
# The plan with its phases (one row per phase; one without phases when it has none).
_PLAN_AND_PHASES = (
    select(
        _plans.patient,
        _plans.version,
        _plans.updated_at,
        _plans.status,
        _plans.variant,
        _plans.start_date,
        _plans.planned_sessions,
        _plans.deleted_at,
        _phases.code,
        _phases.status.label("phase_status"),
        _phases.start_session,
        _phases.end_session,
        _phases.start_date.label("phase_start_date"),
        _phases.end_date.label("phase_end_date"),
    )
    .select_from(CarePlan.__table__.outerjoin(Phase.__table__, _phases.plan_id == _plans.id))
    .where(_plans.id == _PLAN)
    .order_by(_phases.start_session)
)
# The plan's row alone: what a document already at hand is checked against.
_HEAD = select(_plans.patient, _plans.version, _plans.updated_at, _plans.deleted_at).where(
    _plans.id == _PLAN
)
_ADMINISTRATIONS = select(
    _scores.administered_on,
    _scores.session_number,
    _scores.created_at,
    _scores.id,
    _scores.total,
    _scores.instrument,
    _scores.source,
    _scores.answers,
).where(_scores.plan_id == _PLAN, _scores.deleted_at.is_(None))
_GOALS = (
    select(
        _goals.id,
        _goals.kind,
        _goals.problem_area,
        _goals.description,
        _goals.lifecycle_status,
        _goals.achievement_status,
        _goals.achievement_manual,
        _goals.target_measure,
        _goals.target_comparator,
        _goals.target_value,
        _goals.target_due_date,
    )
    .where(_goals.plan_id == _PLAN, _goals.deleted_at.is_(None))
    .order_by(_goals.created_at, _goals.id)
)
_SESSIONS = select(_sessions.number, _sessions.status).where(
    _sessions.plan_id == _PLAN, _sessions.deleted_at.is_(None)
)
_HOMEWORK = select(_homework.status, _homework.due_on).where(
    _homework.plan_id == _PLAN, _homework.deleted_at.is_(None)
)
_OPEN_SIGNALS = (
    select(
        _signals.id,
        _signals.administration_id,
        _signals.instrument,
        _signals.item,
        _signals.score,
        _signals.raised_on,
    )
    .where(
        _signals.plan_id == _PLAN,
        _signals.deleted_at.is_(None),
        _signals.status == SignalStatus.OPEN,
    )
    .order_by(_signals.created_at, _signals.id)
)


@dataclass(frozen=True)
class PlanHead:
    """What a plan's row alone says of its progress: whose it is and which document it
    gives. The document depends on nothing but the plan's stored state, which its version
    and last write time name, and the day it is computed (``as_of``: homework comes due).
    """

    plan_id: str
    patient: str
    version: int
    updated_at: datetime
    as_of: date

    @property
    def key(self) -> tuple[str, int, datetime, date]:
        """What the document is a function of: equal keys give equal documents."""
        return (self.plan_id, self.version, self.updated_at, self.as_of)


def plan_head(connection: Connection, plan_id: str, as_of: date | None = None) -> PlanHead:
    """What the plan's row says of its progress, read as one prepared statement outside
    any transaction (as a FHIR read reads a resource): enough to answer a reader, or to
    serve a document already rendered, without reading the rest.

    NotFound or Gone as reading the plan answers.
    """
    row = fetch_first(connection, _HEAD, {"plan_id": plan_id})
    if row is None:
        raise NotFound(f"care plan {plan_id!r} does not exist")
    patient, version, updated_at, deleted_at = row
    if deleted_at is not None:
        raise Gone(f"care plan {plan_id!r} was deleted")
    return PlanHead(plan_id, patient, version, updated_at, as_of or utcnow().date())


def plan_progress(database: Database, plan_id: str, as_of: date | None = None) -> PlanProgress:
    """The progress of a plan (NotFound or Gone as reading the plan answers)."""
    found = progress_unless(database, plan_id, lambda _head: False, as_of)
    assert isinstance(found, PlanProgress)
    return found


def progress_unless(
    database: Database,
    plan_id: str,
    held: Callable[[PlanHead], bool],
    as_of: date | None = None,
) -> PlanProgress | PlanHead:
    """The progress of a plan, or only what its row says (:class:`PlanHead`) when
    ``held`` says the caller has that document already (nothing else is read then).

    NotFound or Gone as reading the plan answers.
    """
    today = as_of or utcnow().date()
    with database.reading() as session:
        connection = session.connection()
        given = {"plan_id": plan_id}
        rows = connection.execute(_PLAN_AND_PHASES, given).all()
        if not rows:
            raise NotFound(f"care plan {plan_id!r} does not exist")
        plan = rows[0]
        if plan.deleted_at is not None:
            raise Gone(f"care plan {plan_id!r} was deleted")
        head = PlanHead(plan_id, plan.patient, plan.version, plan.updated_at, today)
        if held(head):
            return head
        administrations = connection.execute(_ADMINISTRATIONS, given).all()
        goals = connection.execute(_GOALS, given).all()
        held_sessions = connection.execute(_SESSIONS, given).all()
        homework_rows = connection.execute(_HOMEWORK, given).all()
        signals = connection.execute(_OPEN_SIGNALS, given).all()
    return PlanProgress(
        plan_id=plan_id,
        patient=plan.patient,
        version=plan.version,
        status=plan.status,
        variant=plan.variant,
        start_date=plan.start_date,
        as_of=today,
        instruments=courses(administrations),
        goals=[goal_progress(goal) for goal in goals],
        attendance=attendance(plan.planned_sessions, [(n, s) for n, s in held_sessions]),
        homework=completion([(s, d) for s, d in homework_rows], today),
        open_safety_signals=[OpenSignal(*signal) for signal in signals],
        phases=[
            PhaseProgress(
                p.code,
                p.phase_status,
                p.start_session,
                p.end_session,
                p.phase_start_date,
                p.phase_end_date,
            )
            for p in rows
            if p.code is not None
        ],
        updated_at=plan.updated_at,
    )


def courses(administrations: Sequence[Any]) -> list[InstrumentCourse]:
    """The course of each instrument, in the order the instruments are declared; an
    instrument never administered in the plan is listed with no scores.

    ``administrations``: rows of their ``administered_on``, ``session_number``,
    ``created_at``, ``id`` and ``total`` (what orders them), ``instrument``, ``source``
    and ``answers``.
    """
    by_id = {a.id: a for a in administrations}
    found = []
    for instrument in INSTRUMENTS.values():
        ordered = progress.in_order(
            progress.Score(*a[:5]) for a in administrations if a.instrument == instrument.key
        )
        totals = [s.total for s in ordered]
        outcome = progress.outcome(instrument, totals)
        safety_item = instrument.safety_item
        points = []
        for point in ordered:
            record = by_id[point.id]
            band = instrument.band(point.total)
            safety = (record.answers or {}).get(safety_item or "", 0)
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
                    flagged=safety_item is not None and safety > 0,
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


def achievement_source(goal: Any) -> str | None:
    """Who set the goal's achievement status: the rules, for a symptom goal whose target
    names an instrument's total and that no clinician has overridden; else a clinician.

    ``goal``: a goal, or a row of its columns."""
    if goal.achievement_status is None:
        return None
    ruled = (
        goal.kind == GoalKind.SYMPTOM
        and goal.target_measure in BY_TOTAL_CODE
        and goal.target_value is not None
        and not goal.achievement_manual
    )
    return AchievementSource.RULES if ruled else AchievementSource.CLINICIAN


def goal_progress(goal: Any) -> GoalProgress:
    """A goal (or a row of its columns) as its progress shows it."""
    target = {
        "measure": goal.target_measure,
        "comparator": goal.target_comparator,
        "value": goal.target_value,
        "due_date": goal.target_due_date,
    }
    return GoalProgress(
        id=goal.id,
        kind=goal.kind,
        problem_area=goal.problem_area,
        description=goal.description,
        lifecycle_status=goal.lifecycle_status,
        achievement_status=goal.achievement_status,
        achievement_source=achievement_source(goal),
        target=target if any(v is not None for v in target.values()) else None,
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


def attendance(planned_sessions: int, held: list[tuple[int, str]]) -> Attendance:
    """Sessions by status, the contract's planned sessions and the longest no-show run."""
    statuses = [status for _number, status in held]
    return Attendance(
        attended=statuses.count(SessionStatus.ATTENDED),
        no_show=statuses.count(SessionStatus.NO_SHOW),
        cancelled=statuses.count(SessionStatus.CANCELLED),
        scheduled=statuses.count(SessionStatus.SCHEDULED),
        planned_sessions=planned_sessions,
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
