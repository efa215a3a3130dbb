"""Therapy sessions, addressed by their number in the contract; attending one moves the phases."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import phases as phase_rules
from service.codes import (
    HELD_SESSION_STATUSES,
    PHQ9_MAX,
    SESSION_STATUS_TRANSITIONS,
    PlanStatus,
    SessionStatus,
    Technique,
)
from service.db import Database
from service.editing import PlanEdit, assign, check_version, edit_plan, require_plan
from service.errors import Conflict, Gone, NotFound, RuleViolation
from service.models import TherapySession
from service.phase_changes import log_phase_changes, snapshot
from service.rules import (
    INTEGER_MAX,
    MAX_SHORT_TEXT,
    Problems,
    check_code,
    check_dates,
    check_distinct,
    check_text,
)

_FIELDS = ("date", "status", "phq9_total", "techniques", "note")
# Clinics record in local time; a date one day ahead of UTC is still "today" somewhere.
_FUTURE_TOLERANCE = timedelta(days=1)


def list_sessions(database: Database, plan_id: str) -> list[TherapySession]:
    with database.reading() as session:
        require_plan(session, plan_id)
        return list(
            session.scalars(
                select(TherapySession)
                .where(TherapySession.plan_id == plan_id, TherapySession.deleted_at.is_(None))
                .order_by(TherapySession.number)
            )
        )


def _load_session(session: Session, plan_id: str, number: int) -> TherapySession:
    if not 1 <= number <= INTEGER_MAX:
        # No such number is ever stored; the database is not asked about it.
        raise NotFound(f"session {number} of care plan {plan_id!r} has not been recorded")
    rows = session.scalars(
        select(TherapySession)
        .where(TherapySession.plan_id == plan_id, TherapySession.number == number)
        .order_by(TherapySession.deleted_at.is_(None).desc())
    ).all()
    live = [r for r in rows if not r.is_deleted]
    if live:
        return live[0]
    if rows:
        raise Gone(f"session {number} of care plan {plan_id!r} was deleted")
    raise NotFound(f"session {number} of care plan {plan_id!r} has not been recorded")


def get_session(database: Database, plan_id: str, number: int) -> TherapySession:
    with database.reading() as session:
        require_plan(session, plan_id)
        return _load_session(session, plan_id, number)


def _check_session(
    problems: Problems,
    edit: PlanEdit,
    values: Mapping[str, Any],
    changed: Collection[str] | None = None,
) -> None:
    """Check a session as it would be stored; ``changed`` names the fields an update sets.

    The plan-status and date rules apply to what is being recorded now, so that a note on
    a session held before the plan went on hold can still be corrected.
    """
    plan = edit.plan
    status = values["status"]
    check_code(problems, "status", status, SessionStatus)
    held = status in HELD_SESSION_STATUSES
    recording = changed is None or "status" in changed
    if held and recording and plan.status != PlanStatus.ACTIVE:
        problems.add(
            "status", f"the plan is {plan.status}: sessions are held only while it is active"
        )
    when = values["date"]
    if when is None and held:
        problems.add("date", f"an {status} session needs its date")
    if when is not None and (recording or "date" in (changed or ())):
        if when < plan.start_date:
            problems.add(
                "date",
                f"{when.isoformat()} is before the plan's start {plan.start_date.isoformat()}",
            )
        if held and when > edit.now.date() + _FUTURE_TOLERANCE:
            problems.add(
                "date", f"an {status} session cannot lie in the future ({when.isoformat()})"
            )
    score = values["phq9_total"]
    if score is not None:
        if not 0 <= score <= PHQ9_MAX:
            problems.add("phq9_total", f"a PHQ-9 total is 0 to {PHQ9_MAX}, not {score}")
        elif status != SessionStatus.ATTENDED:
            problems.add("phq9_total", "a PHQ-9 score is recorded only for an attended session")
    techniques = values["techniques"] or []
    for index, technique in enumerate(techniques):
        check_code(problems, f"techniques.{index}", technique, Technique)
    check_distinct(problems, "techniques", techniques)
    if techniques and status != SessionStatus.ATTENDED:
        problems.add("techniques", "techniques are recorded only for an attended session")
    check_text(problems, "note", values["note"], limit=MAX_SHORT_TEXT)


def _after_change(edit: PlanEdit, record: TherapySession) -> None:
    if record.status == SessionStatus.ATTENDED:
        before = snapshot(edit.plan.phases)
        phase_rules.advance(edit.plan.phases, record.number, record.date)
        log_phase_changes(edit, before)


def record_session(
    database: Database, plan_id: str, data: Mapping[str, Any], actor: str
) -> TherapySession:
    """Record (schedule or document) a session of the contract."""
    try:
        with edit_plan(database, plan_id, actor) as edit:
            edit.require_open("its sessions")
            plan = edit.plan
            number = data.get("number")
            problems = Problems()
            if number is None:
                problems.add("number", "is required")
            elif not 1 <= number <= plan.planned_sessions:
                problems.add(
                    "number",
                    f"session {number} is beyond the contract of {plan.planned_sessions} sessions"
                    if number > plan.planned_sessions
                    else "session numbers start at 1",
                )
            values = {name: data.get(name) for name in _FIELDS}
            values["status"] = values["status"] or SessionStatus.SCHEDULED
            values["techniques"] = list(values["techniques"] or [])
            check_dates(problems, data, "date")
            _check_session(problems, edit, values)
            problems.raise_if_any()
            taken = edit.session.scalar(
                select(TherapySession.id).where(
                    TherapySession.plan_id == plan.id,
                    TherapySession.number == number,
                    TherapySession.deleted_at.is_(None),
                )
            )
            if taken is not None:
                raise Conflict(
                    f"session {number} is already recorded: change it with PATCH instead"
                )
            record = TherapySession(plan_id=plan.id, number=number, **values)
            edit.created("session", record)
            edit.session.flush()
            _after_change(edit, record)
    except IntegrityError as error:
        raise Conflict(f"session {data.get('number')} is already recorded") from error
    return get_session(database, plan_id, record.number)


def update_session(
    database: Database,
    plan_id: str,
    number: int,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> TherapySession:
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its sessions")
        record = _load_session(edit.session, edit.plan.id, number)
        check_version(record, expected_version, f"session {number}")
        changes = {name: data[name] for name in _FIELDS if name in data}
        current = SessionStatus(record.status)
        new = changes.get("status", current)
        if new != current and new in set(SessionStatus):
            allowed = SESSION_STATUS_TRANSITIONS[current]
            if new not in allowed:
                raise RuleViolation.on(
                    "status",
                    f"a {current} session cannot become {new}"
                    + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""),
                )
        merged = {name: changes.get(name, getattr(record, name)) for name in _FIELDS}
        if merged["status"] != SessionStatus.ATTENDED and "status" in changes:
            # Scores and techniques belong to an attended session only.
            for name, empty in (("phq9_total", None), ("techniques", [])):
                if name not in changes:
                    merged[name] = changes[name] = empty
        problems = Problems()
        check_dates(problems, data, "date")
        _check_session(problems, edit, merged, set(changes))
        problems.raise_if_any()
        edit.updated("session", record, assign(record, changes))
        _after_change(edit, record)
    return get_session(database, plan_id, number)


def delete_session(
    database: Database, plan_id: str, number: int, actor: str, expected_version: int | None = None
) -> None:
    """Mark a session deleted (recorded in error); its number can be recorded again."""
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its sessions")
        record = _load_session(edit.session, edit.plan.id, number)
        check_version(record, expected_version, f"session {number}")
        edit.deleted("session", record)
