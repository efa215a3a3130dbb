"""Reading a plan's phases and changing one: its session range, status, dates, description."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service import phases as phase_rules
from service.codes import PhaseCode, PhaseStatus
from service.db import Database
from service.editing import PlanEdit, assign, check_version, edit_plan, load_plan
from service.errors import NotFound
from service.models import CarePlan, Phase
from service.rules import Problems, check_code, check_date_order, check_dates, check_text


def _find(plan: CarePlan, code: str) -> Phase:
    for phase in plan.phases:
        if phase.code == code:
            return phase
    if code not in set(PhaseCode):
        raise NotFound(
            f"{code!r} is not a phase; phases are {', '.join(p.value for p in PhaseCode)}"
        )
    raise NotFound(f"care plan {plan.id!r} has no {code} phase")


def list_phases(database: Database, plan_id: str) -> list[Phase]:
    with database.reading() as session:
        return list(load_plan(session, plan_id).phases)


def get_phase(database: Database, plan_id: str, code: str) -> Phase:
    with database.reading() as session:
        return _find(load_plan(session, plan_id), code)


def update_phase(
    database: Database,
    plan_id: str,
    code: str,
    data: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> Phase:
    """Change a phase. Moving a boundary moves the neighbouring phase's boundary with it."""
    with edit_plan(database, plan_id, actor) as edit:
        phase = _find(edit.plan, code)
        check_version(phase, expected_version, f"{code} phase")
        edit.require_open("its phases")
        _apply(edit, phase, data)
    return get_phase(database, plan_id, code)


def _apply(edit: PlanEdit, phase: Phase, data: Mapping[str, Any]) -> None:
    problems = Problems()
    check_code(problems, "status", data.get("status"), PhaseStatus)
    check_text(problems, "description", data.get("description"))
    start = data.get("start_date", phase.start_date)
    end = data.get("end_date", phase.end_date)
    check_dates(problems, data, "start_date", "end_date")
    check_date_order(problems, "end_date", end, "start_date", start)
    problems.raise_if_any()

    phases = edit.plan.phases
    before = snapshot(phases)
    if "start_session" in data or "end_session" in data:
        last = edit.last_attended()
        phase_rules.resize(phases, phase.code, data.get("start_session"), data.get("end_session"))
        if last is not None:
            phase_rules.realign(phases, last[0])
            phase_rules.advance(phases, *last)
    status = data.get("status")
    if status == PhaseStatus.ACTIVE and phase.status != PhaseStatus.ACTIVE:
        phase_rules.activate(phases, phase.code, data.get("start_date") or edit.now.date())
    elif status is not None and status != phase.status:
        phase.status = status
        if status == PhaseStatus.COMPLETED and phase.end_date is None:
            phase.end_date = edit.now.date()
    fields = assign(
        phase, {k: data[k] for k in ("start_date", "end_date", "description") if k in data}
    )
    log_phase_changes(edit, before, {phase.code: fields})


_TRACKED = ("start_session", "end_session", "status", "start_date", "end_date")


def snapshot(phases: Sequence[Phase]) -> dict[str, tuple[object, ...]]:
    """What a phase change may touch, per phase, to log afterwards what did change."""
    return {p.code: tuple(getattr(p, name) for name in _TRACKED) for p in phases}


def log_phase_changes(
    edit: PlanEdit,
    before: dict[str, tuple[object, ...]],
    also: Mapping[str, list[str]] | None = None,
) -> None:
    """Log every phase that differs from ``before`` with the fields that changed."""
    for phase in edit.plan.phases:
        old = before[phase.code]
        moved = [n for n, o in zip(_TRACKED, old, strict=True) if getattr(phase, n) != o]
        extra = [f for f in (also or {}).get(phase.code, []) if f not in moved]
        edit.updated("phase", phase, moved + extra)
