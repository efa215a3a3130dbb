"""The phases of a course: their default session ranges, changes to them, and advancing.

The phases of a plan always cover sessions 1..planned_sessions with contiguous,
non-overlapping ranges in the order initial, middle, termination (or one maintenance
phase for the maintenance variant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from service.codes import (
    INITIAL_PHASE_SESSIONS,
    PHASE_DISPLAY,
    TERMINATION_PHASE_SESSIONS,
    PhaseCode,
    PhaseStatus,
    Variant,
)
from service.errors import RuleViolation
from service.models import Phase


@dataclass(frozen=True)
class Range:
    code: PhaseCode
    start: int
    end: int


def phase_codes(variant: str) -> list[PhaseCode]:
    """The phases a plan of this variant has, in order."""
    if variant == Variant.MAINTENANCE:
        return [PhaseCode.MAINTENANCE]
    return [PhaseCode.INITIAL, PhaseCode.MIDDLE, PhaseCode.TERMINATION]


def default_ranges(variant: str, planned_sessions: int) -> list[Range]:
    """Initial = 1-3, termination = the last 3, middle in between (IPT defaults)."""
    if variant == Variant.MAINTENANCE:
        return [Range(PhaseCode.MAINTENANCE, 1, planned_sessions)]
    initial_end = INITIAL_PHASE_SESSIONS
    termination_start = planned_sessions - TERMINATION_PHASE_SESSIONS + 1
    return [
        Range(PhaseCode.INITIAL, 1, initial_end),
        Range(PhaseCode.MIDDLE, initial_end + 1, termination_start - 1),
        Range(PhaseCode.TERMINATION, termination_start, planned_sessions),
    ]


def phase_for_session(phases: Sequence[Phase], number: int) -> Phase:
    for phase in phases:
        if phase.start_session <= number <= phase.end_session:
            return phase
    raise RuleViolation.on("number", f"session {number} lies in no phase of the plan")


def _describe(phase: Phase) -> str:
    name = PHASE_DISPLAY[PhaseCode(phase.code)].lower()
    return f"{name} (sessions {phase.start_session}-{phase.end_session})"


def resize(phases: Sequence[Phase], code: str, start: int | None, end: int | None) -> list[str]:
    """Move a phase's boundaries; its neighbours give or take the sessions to stay contiguous.

    Returns the codes of the phases whose range changed. The first phase always starts at
    session 1 and the last ends at the last session of the contract.
    """
    ordered = sorted(phases, key=lambda p: p.start_session)
    index = next(i for i, p in enumerate(ordered) if p.code == code)
    phase = ordered[index]
    new_start = phase.start_session if start is None else start
    new_end = phase.end_session if end is None else end
    if new_end < new_start:
        raise RuleViolation.on(
            "end_session", f"end_session {new_end} is before start_session {new_start}"
        )
    if index == 0 and new_start != 1:
        raise RuleViolation.on(
            "start_session", f"the {code} phase is the first: it must start at session 1"
        )
    last = ordered[-1]
    if index == len(ordered) - 1 and new_end != last.end_session:
        raise RuleViolation.on(
            "end_session",
            f"the {code} phase is the last: it must end at session {last.end_session}, "
            "the last session of the contract (renegotiate planned_sessions to change it)",
        )
    if index > 0 and new_start <= ordered[index - 1].start_session:
        raise RuleViolation.on(
            "start_session",
            f"start_session {new_start} overlaps the whole {_describe(ordered[index - 1])}",
        )
    if index < len(ordered) - 1 and new_end >= ordered[index + 1].end_session:
        raise RuleViolation.on(
            "end_session",
            f"end_session {new_end} overlaps the whole {_describe(ordered[index + 1])}",
        )
    changed: list[str] = []
    if index > 0 and ordered[index - 1].end_session != new_start - 1:
        ordered[index - 1].end_session = new_start - 1
        changed.append(ordered[index - 1].code)
    if index < len(ordered) - 1 and ordered[index + 1].start_session != new_end + 1:
        ordered[index + 1].start_session = new_end + 1
        changed.append(ordered[index + 1].code)
    if (phase.start_session, phase.end_session) != (new_start, new_end):
        phase.start_session, phase.end_session = new_start, new_end
        changed.append(phase.code)
    return changed


def stretch_to(phases: Sequence[Phase], planned_sessions: int) -> None:
    """Re-lay the phases for a renegotiated session count; no phase's status changes.

    The last phase keeps its length and moves to the end of the contract; the phase before
    it grows or shrinks. Once the last phase has begun it keeps its start instead and only
    its end follows the contract: moving it later would send it back to not-started and
    the phase before it, completed, back to active. A contract too short to keep every
    phase, or ending before the last phase's begun start, is refused.
    """
    ordered = sorted(phases, key=lambda p: p.start_session)
    last = ordered[-1]
    if len(ordered) == 1:
        last.end_session = planned_sessions
        return
    if last.status != PhaseStatus.NOT_STARTED:
        if planned_sessions < last.start_session:
            raise RuleViolation.on(
                "planned_sessions",
                f"the {last.code} phase is {last.status} from session {last.start_session}: "
                f"a contract of {planned_sessions} sessions would end before it, and a "
                "phase's progress never moves backwards",
            )
        last.end_session = planned_sessions
        return
    length = last.end_session - last.start_session + 1
    new_last_start = planned_sessions - length + 1
    before = ordered[-2]
    if new_last_start - 1 < before.start_session:
        raise RuleViolation.on(
            "planned_sessions",
            f"{planned_sessions} sessions leave no session for the {before.code} phase "
            f"(it starts at session {before.start_session} and the {last.code} phase "
            f"takes the last {length})",
        )
    before.end_session = new_last_start - 1
    last.start_session = new_last_start
    last.end_session = planned_sessions


def advance(phases: Sequence[Phase], number: int, on: date | None) -> list[Phase]:
    """A session was attended: its phase becomes active, earlier phases complete.

    Phases never move backwards here; returns the phases that changed.
    """
    current = phase_for_session(phases, number)
    changed = []
    for phase in sorted(phases, key=lambda p: p.start_session):
        if phase.start_session < current.start_session and phase.status != PhaseStatus.COMPLETED:
            phase.status = PhaseStatus.COMPLETED
            phase.start_date = phase.start_date or on
            phase.end_date = phase.end_date or on
            changed.append(phase)
        elif phase is current and phase.status == PhaseStatus.NOT_STARTED:
            phase.status = PhaseStatus.ACTIVE
            phase.start_date = phase.start_date or on
            changed.append(phase)
    return changed


def activate(phases: Sequence[Phase], code: str, on: date) -> list[Phase]:
    """A phase was started by hand: earlier phases complete, later ones have not started."""
    target = next(p for p in phases if p.code == code)
    changed = advance(phases, target.start_session, on)
    if target.status != PhaseStatus.ACTIVE:
        target.status = PhaseStatus.ACTIVE
        target.end_date = None
        changed.append(target)
    for phase in phases:
        if phase.start_session > target.start_session and phase.status == PhaseStatus.ACTIVE:
            phase.status = PhaseStatus.NOT_STARTED
            phase.start_date = None
            changed.append(phase)
    return changed


def complete_active(phases: Sequence[Phase], on: date) -> list[Phase]:
    """The plan ended: the phase in progress is completed."""
    changed = []
    for phase in phases:
        if phase.status == PhaseStatus.ACTIVE:
            phase.status = PhaseStatus.COMPLETED
            phase.end_date = phase.end_date or on
            changed.append(phase)
    return changed


def realign(phases: Sequence[Phase], last_attended: int | None) -> list[Phase]:
    """After ranges moved: a phase ahead of the last attended session has not started.

    When the phase in progress moved past that session, the phase now holding it is the
    one in progress again.
    """
    if last_attended is None:
        return []
    changed = []
    for phase in phases:
        if phase.start_session > last_attended and phase.status == PhaseStatus.ACTIVE:
            phase.status = PhaseStatus.NOT_STARTED
            phase.start_date = None
            changed.append(phase)
    current = phase_for_session(phases, last_attended)
    if changed and current.status == PhaseStatus.COMPLETED:
        current.status = PhaseStatus.ACTIVE
        current.end_date = None
        changed.append(current)
    return changed
