"""Therapy sessions, addressed by their number in the contract; attending one moves the phases."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import administrations
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
from service.instruments import PHQ9, AdministrationSource
from service.models import Administration, TherapySession
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
    """A plan's sessions in number order, each with the ``administrations`` taken in it."""
    with database.reading() as session:
        require_plan(session, plan_id)
        found = list(
            session.scalars(
                select(TherapySession)
                .where(TherapySession.plan_id == plan_id, TherapySession.deleted_at.is_(None))
                .order_by(TherapySession.number)
            )
        )
        _with_scores(session, plan_id, found)
        return found


def _with_scores(session: Session, plan_id: str, records: list[TherapySession]) -> None:
    """Give each session the administrations taken in it (``administrations``)."""
    held: dict[int, list[Administration]] = {}
    for administration in administrations.list_in_order(session, plan_id, None):
        if administration.session_number is not None:
            held.setdefault(administration.session_number, []).append(administration)
    for record in records:
        record.administrations = held.get(record.number, [])  # type: ignore[attr-defined]


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
    """A session, with the ``administrations`` taken in it."""
    with database.reading() as session:
        require_plan(session, plan_id)
        record = _load_session(session, plan_id, number)
        _with_scores(session, plan_id, [record])
        return record


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


def _session_phq9(held: list[Administration]) -> Administration | None:
    return next((a for a in held if a.instrument == PHQ9.key), None)


def _is_session_total(administration: Administration) -> bool:
    """The total-only PHQ-9 administration a session's ``phq9_total`` stands for."""
    return (
        administration.instrument == PHQ9.key
        and administration.source == AdministrationSource.TOTAL_ONLY
    )


def _check_scores(
    problems: Problems, held: list[Administration], number: int, changes: Mapping[str, Any]
) -> None:
    """A session's ``phq9_total`` is the total of its PHQ-9 administration: it records or
    changes a total-only one, never one answered item by item; a session that stops being
    attended loses its scores, only the total-only PHQ-9 silently."""
    phq9 = _session_phq9(held)
    if (
        "phq9_total" in changes
        and phq9 is not None
        and phq9.source == AdministrationSource.ITEMS
        and changes["phq9_total"] != phq9.total
    ):
        problems.add(
            "phq9_total",
            f"the PHQ-9 of session {number} was answered item by item (administration "
            f"{phq9.id}, total {phq9.total}): change its answers instead",
        )
    if "status" in changes and changes["status"] != SessionStatus.ATTENDED:
        kept = [a.id for a in held if not _is_session_total(a)]
        if kept:
            problems.add(
                "status",
                f"scores were taken in session {number} (administrations {', '.join(kept)}): "
                "delete them first, or record them without the session",
            )


def _sync_scores(
    edit: PlanEdit,
    record: TherapySession,
    held: list[Administration],
    changes: Mapping[str, Any],
) -> None:
    """Make the session's administrations follow the change: its date, and the total-only
    PHQ-9 administration its ``phq9_total`` records."""
    phq9 = _session_phq9(held)
    if "date" in changes and record.date is not None:
        for administration in held:
            if administration.administered_on != record.date:
                administrations.change_administration(
                    edit, administration, {"administered_on": record.date}
                )
    if "phq9_total" not in changes:
        return
    total = changes["phq9_total"]
    if phq9 is None:
        if total is not None:
            administrations.add_administration(
                edit,
                {"instrument": PHQ9.key, "session_number": record.number, "total": total},
            )
    elif _is_session_total(phq9):
        if total is None:
            administrations.remove_administration(edit, phq9)
        elif total != phq9.total:
            administrations.change_administration(edit, phq9, {"total": total})


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
            if values["phq9_total"] is not None:
                # A number freed by a deleted session has no administrations left.
                _sync_scores(edit, record, [], {"phq9_total": values["phq9_total"]})
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
        held = administrations.of_session(edit.session, edit.plan.id, number)
        _check_scores(problems, held, number, changes)
        problems.raise_if_any()
        edit.updated("session", record, assign(record, changes))
        _sync_scores(edit, record, held, changes)
        _after_change(edit, record)
    return get_session(database, plan_id, number)


def delete_session(
    database: Database, plan_id: str, number: int, actor: str, expected_version: int | None = None
) -> None:
    """Mark a session deleted (recorded in error); its number can be recorded again.

    The total-only PHQ-9 administration its ``phq9_total`` recorded goes with it; a
    session in which scores were answered item by item (or on another instrument) is
    refused with 409 until they are deleted or recorded without the session.
    """
    with edit_plan(database, plan_id, actor) as edit:
        edit.require_open("its sessions")
        record = _load_session(edit.session, edit.plan.id, number)
        check_version(record, expected_version, f"session {number}")
        held = administrations.of_session(edit.session, edit.plan.id, number)
        kept = [a.id for a in held if not _is_session_total(a)]
        if kept:
            raise Conflict(
                f"scores were taken in session {number} (administrations {', '.join(kept)}): "
                "delete them first, or record them without the session"
            )
        edit.deleted("session", record)
        for administration in held:
            administrations.remove_administration(edit, administration)
