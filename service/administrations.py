"""Administrations of rating scales (PHQ-9, GAD-7) in a plan, and what follows from them.

An administration holds the answers to an instrument's items (service/instruments.py) and
the total computed from them; a total imported from elsewhere is recorded alone, as
``total-only``. Every change to a plan's scores, in the same transaction:

- hands the achievement status of the plan's symptom goals on that instrument's total
  back to the rules of service/progress.py (a clinician's status stands until then);
- raises a safety signal when the instrument's safety item (PHQ-9 item 9) is answered
  above 0; nothing but a clinician's acknowledgement closes it;
- keeps the PHQ-9 total a session shows equal to that of its PHQ-9 administration.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session

from service import progress
from service.codes import FINISHED_GOAL_STATUSES, GoalKind, SessionStatus
from service.db import Database
from service.editing import PlanEdit, check_version, edit_plan, load_child, require_plan
from service.errors import RuleViolation
from service.instruments import (
    INSTRUMENTS,
    PHQ9,
    AdministrationSource,
    AnsweredBy,
    Instrument,
)
from service.models import Administration, Goal, SafetySignal, TherapySession, new_id
from service.rules import (
    MAX_SHORT_TEXT,
    Problems,
    check_code,
    check_dates,
    check_text,
)

ENTITY = "administration"
SIGNAL_ENTITY = "safety-signal"
_FIELDS = (
    "instrument",
    "administered_on",
    "session_number",
    "answered_by",
    "source",
    "answers",
    "total",
    "note",
)
# Clinics record in local time; a date one day ahead of UTC is still "today" somewhere.
_FUTURE_TOLERANCE = timedelta(days=1)


class SignalStatus:
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


def _live(session: Session, plan_id: str) -> list[Administration]:
    return list(
        session.scalars(
            select(Administration)
            .where(Administration.plan_id == plan_id, Administration.deleted_at.is_(None))
            .order_by(Administration.administered_on, Administration.created_at, Administration.id)
        )
    )


# What orders a course and its totals, as columns: a change to a plan's scores reads its
# course with this one statement, not as objects (built once: building a statement costs
# as much as running it).
_PLAN: BindParameter[str] = bindparam("plan_id")
_INSTRUMENT: BindParameter[str] = bindparam("instrument")
_COURSE = select(
    Administration.administered_on,
    Administration.session_number,
    Administration.created_at,
    Administration.id,
    Administration.total,
).where(
    Administration.plan_id == _PLAN,
    Administration.instrument == _INSTRUMENT,
    Administration.deleted_at.is_(None),
)


def course_of(session: Session, plan_id: str, instrument: str) -> list[progress.Score]:
    """The live scores of one instrument in a plan, in the order they were taken."""
    rows = session.execute(_COURSE, {"plan_id": plan_id, "instrument": instrument})
    return progress.in_order(progress.Score(*row) for row in rows)


def totals_in_order(session: Session, plan_id: str, instrument: str) -> list[int]:
    """The totals of one instrument's live scores in a plan, in the order they were taken."""
    return [s.total for s in course_of(session, plan_id, instrument)]


def list_in_order(session: Session, plan_id: str, instrument: str | None) -> list[Administration]:
    """A plan's live administrations (of one instrument), in the order they were taken."""
    found = [a for a in _live(session, plan_id) if instrument in (None, a.instrument)]
    by_id = {a.id: a for a in found}
    return [by_id[s.id] for s in progress.in_order(score(a) for a in found)]


def of_session(session: Session, plan_id: str, number: int) -> list[Administration]:
    """The live administrations taken in session ``number`` of a plan."""
    return list(
        session.scalars(
            select(Administration)
            .where(
                Administration.plan_id == plan_id,
                Administration.session_number == number,
                Administration.deleted_at.is_(None),
            )
            .order_by(Administration.administered_on, Administration.created_at, Administration.id)
        )
    )


def list_administrations(
    database: Database, plan_id: str, instrument: str | None = None
) -> list[Administration]:
    """A plan's administrations in the order they were taken."""
    with database.reading() as session:
        require_plan(session, plan_id)
        return list_in_order(session, plan_id, instrument)


def get_administration(database: Database, plan_id: str, administration_id: str) -> Administration:
    with database.reading() as session:
        require_plan(session, plan_id)
        return load_child(session, Administration, plan_id, administration_id, ENTITY)


def score(administration: Administration) -> progress.Score:
    return progress.Score(
        administration.administered_on,
        administration.session_number,
        administration.created_at,
        administration.id,
        administration.total,
    )


def instrument_of(administration: Administration) -> Instrument:
    return INSTRUMENTS[administration.instrument]


# --- checks ---------------------------------------------------------------------------------


def _check(
    problems: Problems,
    edit: PlanEdit,
    values: dict[str, Any],
    changed: Collection[str] | None = None,
    record_id: str | None = None,
) -> None:
    """Check an administration as it would be stored, and compute its total.

    ``values["answers"]`` None with a ``total``: a total-only administration. With answers,
    a total given is checked against the one computed.
    """
    instrument = INSTRUMENTS.get(values["instrument"] or "")
    if instrument is None:
        problems.add(
            "instrument",
            f"unknown instrument {values['instrument']!r}; expected one of: "
            + ", ".join(INSTRUMENTS),
        )
        return
    check_code(problems, "answered_by", values["answered_by"], AnsweredBy)
    check_text(problems, "note", values["note"], limit=MAX_SHORT_TEXT)
    _check_when(problems, edit, values, changed, record_id)
    answers = values["answers"]
    if answers is None:
        total = values["total"]
        if total is None:
            problems.add(
                "answers",
                f"the answers to the {len(instrument.items)} items of the {instrument.name} "
                "are required (or, for a score imported from elsewhere, its total alone)",
            )
        elif not instrument.min_score <= total <= instrument.max_score:
            problems.add(
                "total",
                f"a {instrument.name} total is {instrument.min_score} to "
                f"{instrument.max_score}, not {total}",
            )
        values["source"] = AdministrationSource.TOTAL_ONLY
        return
    if not isinstance(answers, Mapping):
        problems.add("answers", "an object of item link ids and their scores")
        return
    known = {item.link_id: item for item in instrument.all_items}
    for link_id, value in answers.items():
        item = known.get(link_id)
        if item is None:
            problems.add(
                f"answers.{link_id}",
                f"the {instrument.name} has no item {link_id!r}; its items are " + ", ".join(known),
            )
        elif not isinstance(value, int) or isinstance(value, bool):
            problems.add(f"answers.{link_id}", "a score is a whole number")
        elif not 0 <= value <= item.max_score:
            problems.add(f"answers.{link_id}", f"a score is 0 to {item.max_score}, not {value}")
    missing = [item.link_id for item in instrument.items if item.link_id not in answers]
    if missing:
        problems.add(
            "answers",
            f"every scored item of the {instrument.name} needs an answer; missing: "
            + ", ".join(missing),
        )
    if problems:
        return
    computed = instrument.total({k: int(v) for k, v in answers.items()})
    if values["total"] is not None and values["total"] != computed:
        problems.add(
            "total",
            f"the total is computed from the answers: {computed}, not {values['total']}",
        )
    values["total"] = computed
    values["source"] = AdministrationSource.ITEMS


def _check_when(
    problems: Problems,
    edit: PlanEdit,
    values: dict[str, Any],
    changed: Collection[str] | None,
    record_id: str | None = None,
) -> None:
    plan = edit.plan
    number = values["session_number"]
    held: TherapySession | None = None
    if number is not None and (changed is None or "session_number" in changed):
        held = edit.session.scalar(
            select(TherapySession).where(
                TherapySession.plan_id == plan.id,
                TherapySession.number == number,
                TherapySession.deleted_at.is_(None),
            )
        )
        if held is None:
            problems.add("session_number", f"session {number} of this plan has not been recorded")
        elif held.status != SessionStatus.ATTENDED:
            problems.add(
                "session_number",
                f"session {number} is {held.status}: scores are taken in attended sessions "
                "(or between sessions, without a session number)",
            )
        else:
            # One administration of an instrument per session: the session's score.
            other = edit.session.scalar(
                select(Administration.id).where(
                    Administration.plan_id == plan.id,
                    Administration.session_number == number,
                    Administration.instrument == values["instrument"],
                    Administration.deleted_at.is_(None),
                    Administration.id != (record_id or ""),
                )
            )
            if other is not None:
                problems.add(
                    "session_number",
                    f"session {number} already has a {values['instrument']} administration "
                    f"({other}): change that one instead",
                )
    when = values["administered_on"]
    if when is None and held is not None:
        when = values["administered_on"] = held.date
    if when is None:
        problems.add("administered_on", "is required (or a session number to take its date)")
        return
    if changed is not None and not {"administered_on", "session_number"} & set(changed):
        return
    if when < plan.start_date:
        problems.add(
            "administered_on",
            f"{when.isoformat()} is before the plan's start {plan.start_date.isoformat()}",
        )
    if when > edit.now.date() + _FUTURE_TOLERANCE:
        problems.add("administered_on", f"a score cannot be taken in the future ({when})")
    if held is not None and held.date is not None and held.date != when:
        problems.add(
            "administered_on",
            f"{when.isoformat()} is not the date of session {number} ({held.date.isoformat()})",
        )


# --- changes --------------------------------------------------------------------------------


def record_administration(
    database: Database,
    plan_id: str,
    data: Mapping[str, Any],
    actor: str,
    administration_id: str | None = None,
) -> Administration:
    """Record an administration: ``instrument``, ``administered_on`` (or ``session_number``
    to take its date), ``answered_by`` (default patient), ``answers`` (link id -> score) or,
    for an imported score, ``total`` alone; ``note``."""
    with edit_plan(database, plan_id, actor) as edit:
        record = add_administration(edit, data, administration_id)
    # As it was committed: a new record's every column was written from this object.
    return record


def add_administration(
    edit: PlanEdit, data: Mapping[str, Any], administration_id: str | None = None
) -> Administration:
    """Record an administration within an open edit of its plan."""
    edit.require_open("its scores")
    values = {name: data.get(name) for name in _FIELDS}
    values["answered_by"] = values["answered_by"] or AnsweredBy.PATIENT
    if values["answers"] is not None and isinstance(values["answers"], Mapping):
        values["answers"] = dict(values["answers"])
    problems = Problems()
    check_dates(problems, data, "administered_on")
    _check(problems, edit, values)
    problems.raise_if_any()
    record = Administration(id=administration_id or new_id(), plan_id=edit.plan.id, **values)
    edit.created(ENTITY, record)
    edit.session.flush()
    after_change(edit, record)
    return record


def update_administration(
    database: Database,
    plan_id: str,
    administration_id: str,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> Administration:
    """Change an administration; the instrument is fixed once recorded."""
    with edit_plan(database, plan_id, actor) as edit:
        record = load_child(edit.session, Administration, plan_id, administration_id, ENTITY)
        check_version(record, expected_version, ENTITY)
        change_administration(edit, record, data)
    return get_administration(database, plan_id, administration_id)


def change_administration(edit: PlanEdit, record: Administration, data: Mapping[str, Any]) -> None:
    edit.require_open("its scores")
    if "instrument" in data and data["instrument"] != record.instrument:
        raise RuleViolation.on(
            "instrument",
            f"an administration of the {instrument_of(record).name} stays one: "
            "delete it and record the other instrument's",
        )
    changes = {name: data[name] for name in _FIELDS if name in data and name != "source"}
    if "answers" in changes and "total" not in changes:
        changes["total"] = None  # computed again from the new answers
    if "total" in changes and "answers" not in changes and record.answers is not None:
        changes["answers"] = None if changes["total"] is not None else record.answers
    merged = {name: changes.get(name, getattr(record, name)) for name in _FIELDS}
    merged["answered_by"] = merged["answered_by"] or AnsweredBy.PATIENT
    problems = Problems()
    check_dates(problems, data, "administered_on")
    _check(problems, edit, merged, set(changes), record.id)
    problems.raise_if_any()
    previous_session = record.session_number
    fields = [name for name in _FIELDS if getattr(record, name) != merged[name]]
    for name in fields:
        setattr(record, name, merged[name])
    edit.updated(ENTITY, record, fields)
    if fields:
        edit.session.flush()
        after_change(edit, record, previous_session)


def delete_administration(
    database: Database,
    plan_id: str,
    administration_id: str,
    actor: str,
    expected_version: int | None = None,
) -> None:
    """Mark an administration deleted (recorded in error). Its safety signals stay."""
    with edit_plan(database, plan_id, actor) as edit:
        record = load_child(edit.session, Administration, plan_id, administration_id, ENTITY)
        check_version(record, expected_version, ENTITY)
        remove_administration(edit, record)


def remove_administration(edit: PlanEdit, record: Administration) -> None:
    edit.require_open("its scores")
    edit.deleted(ENTITY, record)
    edit.session.flush()
    after_change(edit, record)


# --- what follows from a change ---------------------------------------------------------------


def after_change(
    edit: PlanEdit, record: Administration, previous_session: int | None = None
) -> None:
    """Goals, safety signals and the sessions' totals, after a change to ``record``
    (which was of session ``previous_session`` before it)."""
    instrument = instrument_of(record)
    course = edit.courses[instrument.key] = course_of(edit.session, edit.plan.id, instrument.key)
    apply_goal_rules(edit, instrument, [s.total for s in course], hand_back=True)
    if not record.is_deleted:
        _raise_signal(edit, instrument, record)
    if instrument is PHQ9:
        numbers = {n for n in (record.session_number, previous_session) if n is not None}
        _sync_session_totals(edit, course, numbers)


def apply_goal_rules(
    edit: PlanEdit, instrument: Instrument, totals: list[int], *, hand_back: bool
) -> None:
    """Set the achievement status of the plan's open symptom goals on ``instrument`` from
    its ``totals`` (in the order they were taken).

    ``hand_back``: a score changed, so a clinician's status gives way to the rules again.
    """
    goals = edit.session.scalars(
        select(Goal).where(
            Goal.plan_id == edit.plan.id,
            Goal.deleted_at.is_(None),
            Goal.kind == GoalKind.SYMPTOM,
            Goal.target_measure == instrument.total_code,
            Goal.target_value.is_not(None),
        )
    ).all()
    for goal in goals:
        if goal.lifecycle_status in FINISHED_GOAL_STATUSES:
            continue
        if goal.achievement_manual and not hand_back:
            continue
        assert goal.target_value is not None
        status = progress.achievement(instrument, totals, goal.target_comparator, goal.target_value)
        fields = []
        if goal.achievement_manual:
            goal.achievement_manual = False
            fields.append("achievement_manual")
        if goal.achievement_status != status:
            goal.achievement_status = status
            fields.append("achievement_status")
        edit.updated("goal", goal, fields)


def _raise_signal(edit: PlanEdit, instrument: Instrument, record: Administration) -> None:
    """A safety signal for an answer to the safety item above 0, unless one is open for
    this administration or an earlier one already covered as high an answer."""
    if instrument.safety_item is None or not record.answers:
        return
    answer = record.answers.get(instrument.safety_item, 0)
    if answer <= 0:
        return
    earlier = edit.session.scalars(
        select(SafetySignal).where(SafetySignal.administration_id == record.id)
    ).all()
    if any(s.status == SignalStatus.OPEN for s in earlier) or any(
        s.score >= answer for s in earlier
    ):
        return
    signal = SafetySignal(
        plan_id=edit.plan.id,
        administration_id=record.id,
        instrument=instrument.key,
        item=instrument.safety_item,
        score=answer,
        raised_on=record.administered_on,
        status=SignalStatus.OPEN,
    )
    edit.created(SIGNAL_ENTITY, signal)


def _sync_session_totals(edit: PlanEdit, course: list[progress.Score], numbers: set[int]) -> None:
    """Each of these sessions shows the total of its latest PHQ-9 administration
    (``course``: the plan's PHQ-9 scores in order)."""
    for number in numbers:
        held = edit.session.scalar(
            select(TherapySession).where(
                TherapySession.plan_id == edit.plan.id,
                TherapySession.number == number,
                TherapySession.deleted_at.is_(None),
            )
        )
        if held is None:
            continue
        of_number = [s for s in course if s.session_number == number]
        total = of_number[-1].total if of_number else None
        if held.phq9_total != total:
            held.phq9_total = total
            edit.updated("session", held, ["phq9_total"])


# --- safety signals ---------------------------------------------------------------------------


def list_signals(database: Database, plan_id: str, status: str | None = None) -> list[SafetySignal]:
    with database.reading() as session:
        require_plan(session, plan_id)
        query = select(SafetySignal).where(
            SafetySignal.plan_id == plan_id, SafetySignal.deleted_at.is_(None)
        )
        if status is not None:
            query = query.where(SafetySignal.status == status)
        return list(session.scalars(query.order_by(SafetySignal.created_at, SafetySignal.id)))


def open_signals(database: Database, plan_ids: Collection[str]) -> dict[str, list[SafetySignal]]:
    """The open safety signals of each of these plans, oldest first."""
    if not plan_ids:
        return {}
    found: dict[str, list[SafetySignal]] = {}
    with database.reading() as session:
        rows = session.scalars(
            select(SafetySignal)
            .where(
                SafetySignal.plan_id.in_(set(plan_ids)),
                SafetySignal.status == SignalStatus.OPEN,
                SafetySignal.deleted_at.is_(None),
            )
            .order_by(SafetySignal.created_at, SafetySignal.id)
        )
        for signal in rows:
            found.setdefault(signal.plan_id, []).append(signal)
    return found


def get_signal(database: Database, plan_id: str, signal_id: str) -> SafetySignal:
    with database.reading() as session:
        require_plan(session, plan_id)
        return load_child(session, SafetySignal, plan_id, signal_id, SIGNAL_ENTITY)


def acknowledge_signal(
    database: Database,
    plan_id: str,
    signal_id: str,
    action_taken: str | None,
    actor: str,
    expected_version: int | None = None,
) -> SafetySignal:
    """A clinician acknowledges a signal, saying what was done. Only once; never undone."""
    with edit_plan(database, plan_id, actor) as edit:
        signal = load_child(edit.session, SafetySignal, plan_id, signal_id, SIGNAL_ENTITY)
        check_version(signal, expected_version, SIGNAL_ENTITY)
        problems = Problems()
        if signal.status != SignalStatus.OPEN:
            problems.add(
                "status",
                f"the signal was acknowledged by {signal.acknowledged_by} at "
                f"{signal.acknowledged_at}: an acknowledgement is not undone or repeated",
            )
        if not (action_taken or "").strip():
            problems.add(
                "action_taken", "say what was done (e.g. risk assessed, safety plan reviewed)"
            )
        check_text(problems, "action_taken", action_taken, limit=MAX_SHORT_TEXT)
        problems.raise_if_any()
        signal.status = SignalStatus.ACKNOWLEDGED
        signal.acknowledged_at = edit.now
        signal.acknowledged_by = actor
        signal.action_taken = action_taken
        edit.updated(
            SIGNAL_ENTITY, signal, ["status", "acknowledged_at", "acknowledged_by", "action_taken"]
        )
    return get_signal(database, plan_id, signal_id)
