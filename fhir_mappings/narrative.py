"""The generated narrative (``text``) of the FHIR views: a plain-language summary in XHTML.

Every value is HTML-escaped here, in one place: callers hand over plain strings, never
markup. The summary is wrapped in a ``div`` of class ``ipt-generated`` so that a narrative
this service generated can be told apart from one a client wrote.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from service import codes
from service.instruments import INSTRUMENTS, AdministrationSource
from service.models import (
    Administration,
    CarePlan,
    Goal,
    Homework,
    Phase,
    SafetySignal,
    TherapySession,
)

XHTML_NAMESPACE = "http://www.w3.org/1999/xhtml"
GENERATED_CLASS = "ipt-generated"
_OPEN = f'<div xmlns="{XHTML_NAMESPACE}"><div class="{GENERATED_CLASS}">'
_CLOSE = "</div></div>"

Cell = str | Sequence[str] | None
"""A table value: a text, a list of texts (shown as a bulleted list), or nothing."""


# Characters XML 1.0 cannot hold. The API refuses them in what it is sent (api/body.py); a
# record holding one from before is shown with U+FFFD, so that the narrative stays XHTML.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(value: object) -> str:
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _cell(value: Cell) -> str:
    if isinstance(value, str):
        return _escape(value)
    items = "".join(f"<li>{_escape(item)}</li>" for item in value or ())
    return f"<ul>{items}</ul>"


def _details(rows: Sequence[tuple[str, Cell]]) -> str:
    """A two-column table of the rows that have a value."""
    body = "".join(
        f"<tr><th>{_escape(label)}</th><td>{_cell(value)}</td></tr>"
        for label, value in rows
        if value
    )
    return f"<table>{body}</table>" if body else ""


def _grid(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><caption>{_escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _narrative(title: str, *parts: str) -> dict[str, str]:
    div = f"{_OPEN}<p><b>{_escape(title)}</b></p>{''.join(parts)}{_CLOSE}"
    return {"status": "generated", "div": div}


def is_generated(text: Any) -> bool:
    """Whether a resource's ``text`` is a narrative this service generated."""
    return (
        isinstance(text, dict)
        and text.get("status") == "generated"
        and isinstance(text.get("div"), str)
        and text["div"].startswith(_OPEN)
    )


def _area(area: str) -> str:
    try:
        return codes.PROBLEM_AREA_DISPLAY[codes.ProblemArea(area)]
    except ValueError:
        return area


def _phase(code: str) -> str:
    try:
        return codes.PHASE_DISPLAY[codes.PhaseCode(code)]
    except ValueError:
        return code


def _score(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value.normalize())


def _span(start: object, end: object) -> str | None:
    if start and end:
        return f"{start} to {end}"
    if start:
        return f"from {start}"
    return f"until {end}" if end else None


def _notes(notes: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for note in notes:
        by = ", ".join(str(note[k]) for k in ("author", "time") if note.get(k))
        lines.append(f"{note.get('text', '')}" + (f" ({by})" if by else ""))
    return lines


def episode_narrative(plan: CarePlan, goals: Sequence[Goal]) -> dict[str, str]:
    """The narrative of an episode CarePlan."""
    areas = []
    for rank, area in zip(codes.ProblemAreaRank, plan.problem_areas, strict=False):
        line = f"{_area(area)} ({rank.value})"
        if area == codes.ProblemArea.ROLE_DISPUTE and plan.dispute_stage:
            line += f", dispute stage {plan.dispute_stage}"
        areas.append(line)
    relapse = plan.relapse_prevention or {}
    contacts = [
        ", ".join(str(c[k]) for k in ("name", "relationship", "telecom") if c.get(k))
        for c in relapse.get("contacts") or []
    ]
    contracts = [
        f"{c.sequence}: {c.planned_sessions} sessions, {c.session_frequency}, agreed "
        f"{c.agreed_at.date().isoformat() if c.agreed_at else 'on an unknown date'}"
        + (f" by {c.agreed_by}" if c.agreed_by else "")
        + (f" ({c.reason})" if c.reason else "")
        for c in plan.contracts
    ]
    rows: list[tuple[str, Cell]] = [
        ("Patient", plan.patient),
        ("Status", plan.status),
        ("Format", f"{plan.variant} IPT"),
        ("Contract", f"{plan.planned_sessions} sessions, {plan.session_frequency}"),
        ("Period", _span(plan.start_date, plan.end_date)),
        ("Problem areas", areas),
        ("Condition", plan.condition),
        ("Therapist", plan.therapist),
        ("Formulation", plan.formulation),
        ("Goals", [g.description for g in goals]),
        ("Warning signs", relapse.get("warning_signs")),
        ("Actions when they appear", relapse.get("actions")),
        ("Contacts", contacts),
        ("Identifiers", [f"{i.system}|{i.value}" for i in plan.identifiers]),
        ("Contract history", contracts),
        ("Notes", _notes(plan.notes or [])),
    ]
    return _narrative("Interpersonal psychotherapy (IPT) care plan", _details(rows))


def phase_narrative(
    plan: CarePlan,
    phase: Phase,
    sessions: Sequence[TherapySession],
    homework: Sequence[Homework],
    goals: Sequence[Goal],
) -> dict[str, str]:
    """The narrative of a phase CarePlan."""
    rows: list[tuple[str, Cell]] = [
        ("Patient", plan.patient),
        ("Care plan", f"CarePlan/{plan.id}"),
        ("Sessions", f"{phase.start_session} to {phase.end_session}"),
        ("Status", phase.status),
        ("Period", _span(phase.start_date, phase.end_date)),
        ("Description", phase.description),
        ("Goals", [g.description for g in goals]),
    ]
    session_rows = [
        [
            str(s.number),
            s.date.isoformat() if s.date else "",
            s.status,
            "" if s.phq9_total is None else str(s.phq9_total),
            ", ".join(s.techniques or []),
            s.note or "",
        ]
        for s in sessions
    ]
    homework_rows = [
        [
            h.kind,
            h.description,
            h.status,
            _span(h.assigned_on, h.due_on) or "",
            h.patient_report or "",
        ]
        for h in homework
    ]
    return _narrative(
        f"{_phase(phase.code)} of an IPT care plan",
        _details(rows),
        _grid(
            "Sessions",
            ("Number", "Date", "Status", "PHQ-9", "Techniques", "Note"),
            session_rows,
        ),
        _grid(
            "Homework",
            ("Kind", "Task", "Status", "Assigned", "Patient's report"),
            homework_rows,
        ),
    )


def goal_narrative(plan: CarePlan, goal: Goal) -> dict[str, str]:
    """The narrative of a Goal."""
    target = None
    if goal.target is not None:
        measure = codes.MEASURES.get(goal.target_measure or "")
        parts = [measure.display if measure else goal.target_measure or "target"]
        if goal.target_value is not None:
            parts += [goal.target_comparator or "=", _score(Decimal(goal.target_value))]
        if goal.target_due_date:
            parts.append(f"by {goal.target_due_date.isoformat()}")
        target = " ".join(parts)
    rows: list[tuple[str, Cell]] = [
        ("Patient", plan.patient),
        ("Care plan", f"CarePlan/{plan.id}"),
        ("Kind", goal.kind),
        ("Problem area", _area(goal.problem_area) if goal.problem_area else None),
        ("Status", goal.lifecycle_status),
        ("Achievement", goal.achievement_status),
        ("Priority", goal.priority),
        ("Start", goal.start_date.isoformat() if goal.start_date else None),
        ("Target", target),
        ("Phase", _phase(goal.phase) if goal.phase else None),
        ("Notes", _notes(goal.notes or [])),
    ]
    return _narrative(f"IPT goal: {goal.description}", _details(rows))


def _number(value: int | None) -> str | None:
    return None if value is None else str(value)


def _answer_rows(administration: Administration) -> list[list[str]]:
    instrument = INSTRUMENTS[administration.instrument]
    rows = []
    for item in instrument.all_items:
        score = (administration.answers or {}).get(item.link_id)
        if score is not None:
            answer = item.answer(score)
            rows.append([item.text, answer.display, str(score)])
    return rows


def _administration_rows(plan: CarePlan, administration: Administration) -> list[tuple[str, Cell]]:
    instrument = INSTRUMENTS[administration.instrument]
    band = instrument.band(administration.total)
    imported = administration.source == AdministrationSource.TOTAL_ONLY
    return [
        ("Patient", plan.patient),
        ("Care plan", f"CarePlan/{plan.id}"),
        ("Taken on", administration.administered_on.isoformat()),
        ("Session", _number(administration.session_number)),
        ("Answered by", administration.answered_by),
        ("Total", f"{administration.total} of {instrument.max_score} ({band.display})"),
        ("Source", "imported total only, without the item answers" if imported else None),
        ("Note", administration.note),
    ]


def response_narrative(plan: CarePlan, administration: Administration) -> dict[str, str]:
    """The narrative of the QuestionnaireResponse of an administration."""
    instrument = INSTRUMENTS[administration.instrument]
    return _narrative(
        f"{instrument.name} answers",
        _details(_administration_rows(plan, administration)),
        _grid("Answers", ("Question", "Answer", "Score"), _answer_rows(administration)),
    )


def score_narrative(plan: CarePlan, administration: Administration) -> dict[str, str]:
    """The narrative of the total-score Observation of an administration."""
    instrument = INSTRUMENTS[administration.instrument]
    return _narrative(
        f"{instrument.total_display}: {administration.total}",
        _details(_administration_rows(plan, administration)),
    )


def flag_narrative(plan: CarePlan, signal: SafetySignal, text: str) -> dict[str, str]:
    """The narrative of the Flag of a safety signal."""
    acknowledged = None
    if signal.acknowledged_at is not None:
        acknowledged = f"{signal.acknowledged_at.date().isoformat()} by {signal.acknowledged_by}"
    rows: list[tuple[str, Cell]] = [
        ("Patient", plan.patient),
        ("Care plan", f"CarePlan/{plan.id}"),
        ("Status", signal.status),
        ("Raised on", signal.raised_on.isoformat()),
        ("Answer", f"{signal.score} on {signal.item}"),
        ("Acknowledged", acknowledged),
        ("Action taken", signal.action_taken),
    ]
    return _narrative(f"Safety signal: {text}", _details(rows))
