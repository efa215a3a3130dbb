"""A plan's printable summary: one HTML page for the clinician and the patient.

It holds the problem areas and formulation, the treatment contract and its
renegotiations, the phases, the goals and how they stand, the progress chart and its
scores, the homework, the relapse-prevention plan and the day it was printed. It is one
self-contained document (styles inline, the chart as inline SVG; no scripts, fonts or
other files fetched) laid out for A4 paper when printed.

Every value is escaped by the template engine: what a client wrote (a formulation, a goal,
a report) shows as the text it is, never as markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from api.progress_chart import ChartInput, describe, render_svg, svg_fragment
from service.codes import (
    MEASURES,
    PHASE_DISPLAY,
    PROBLEM_AREA_DISPLAY,
    GoalKind,
    PhaseCode,
    ProblemArea,
    ProblemAreaRank,
    SessionStatus,
)
from service.db import Database
from service.goals import list_goals
from service.homework import list_homework
from service.models import CarePlan, Goal, Homework, Phase, TherapySession
from service.plans import expected_end_date, get_plan
from service.sessions import list_sessions

_TEMPLATES = Environment(
    loader=PackageLoader("api", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class ScoreRow(NamedTuple):
    """One administration as the page lists it; a plain tuple of the first five fields
    will do too."""

    when: date
    session_number: int | None
    instrument: str
    total: int
    band: str
    flagged: bool = False


def summary_html(
    database: Database,
    plan_id: str,
    chart: ChartInput | None,
    scores: Iterable[Sequence[Any]] | None = None,
    printed_on: date | None = None,
) -> str:
    """The summary page of the plan with this id (NotFound or Gone as reading it raises).

    ``chart`` is the progress chart to show (None: no chart) and ``scores`` the rows of
    the score table (``ScoreRow`` or tuples of date, session, instrument, total, band).
    """
    plan = get_plan(database, plan_id)
    return render_summary(
        plan,
        goals=list_goals(database, plan_id),
        homework=list_homework(database, plan_id),
        sessions=list_sessions(database, plan_id),
        chart=chart,
        scores=scores,
        printed_on=printed_on,
    )


def render_summary(
    plan: CarePlan,
    goals: Sequence[Goal],
    homework: Sequence[Homework],
    sessions: Sequence[TherapySession],
    chart: ChartInput | None = None,
    scores: Iterable[Sequence[Any]] | None = None,
    printed_on: date | None = None,
) -> str:
    """The summary page of a loaded plan (with its contracts and phases), as HTML."""
    held = [s.status for s in sessions]
    return _TEMPLATES.get_template("summary_page.html").render(
        lang="en",
        plan=plan,
        variant=f"{plan.variant} IPT",
        expected_end=expected_end_date(plan),
        problem_areas=_problem_areas(plan),
        contracts=sorted(plan.contracts, key=lambda c: c.sequence),
        attended=held.count(SessionStatus.ATTENDED),
        missed=held.count(SessionStatus.NO_SHOW),
        phases=[
            _PhaseRow(phase, _display(PHASE_DISPLAY, PhaseCode, phase.code))
            for phase in sorted(plan.phases, key=lambda p: p.start_session)
        ],
        goals=[_goal_row(goal) for goal in goals],
        homework=list(homework),
        chart_svg=Markup(svg_fragment(render_svg(chart))) if chart is not None else None,
        chart_caption=describe(chart) if chart is not None else "",
        scores=[ScoreRow(*row) for row in scores or ()],
        relapse=_relapse_plan(plan.relapse_prevention),
        printed_on=printed_on or date.today(),
    )


@dataclass(frozen=True)
class _ProblemAreaRow:
    display: str
    rank: str
    stage: str | None


@dataclass(frozen=True)
class _PhaseRow:
    record: Phase
    display: str


@dataclass(frozen=True)
class _GoalRow:
    description: str
    area: str
    target: str
    status: str


@dataclass(frozen=True)
class _Contact:
    name: str
    relationship: str | None
    telecom: str | None


@dataclass(frozen=True)
class _RelapsePlan:
    warning_signs: list[str]
    actions: list[str]
    contacts: list[_Contact]


def _relapse_plan(stored: dict[str, Any] | None) -> _RelapsePlan | None:
    """The stored plan with every part present (a client may have left any out)."""
    if not stored:
        return None
    return _RelapsePlan(
        warning_signs=list(stored.get("warning_signs") or []),
        actions=list(stored.get("actions") or []),
        contacts=[
            _Contact(str(c.get("name") or ""), c.get("relationship"), c.get("telecom"))
            for c in stored.get("contacts") or []
        ],
    )


def _display(table: Any, codes: Any, code: str | None) -> str:
    """The display of a code, or the code itself if it is not (or no longer) in the list."""
    if code is None:
        return ""
    return str(table[codes(code)]) if code in set(codes) else code


def _problem_areas(plan: CarePlan) -> list[_ProblemAreaRow]:
    rows = []
    for rank, area in zip(ProblemAreaRank, plan.problem_areas, strict=False):
        stage = plan.dispute_stage if area == ProblemArea.ROLE_DISPUTE else None
        rows.append(_ProblemAreaRow(_display(PROBLEM_AREA_DISPLAY, ProblemArea, area), rank, stage))
    return rows


def _goal_row(goal: Goal) -> _GoalRow:
    if goal.kind == GoalKind.SYMPTOM:
        area = "Symptoms"
    else:
        area = _display(PROBLEM_AREA_DISPLAY, ProblemArea, goal.problem_area)
    status = goal.lifecycle_status
    if goal.achievement_status:
        status += f" ({goal.achievement_status})"
    return _GoalRow(goal.description, area, _target(goal), status)


def _target(goal: Goal) -> str:
    parts = []
    if goal.target_measure is not None:
        measure = MEASURES.get(goal.target_measure)
        parts.append(measure.display if measure else goal.target_measure)
    if goal.target_value is not None:
        value = goal.target_value.normalize()
        parts.append(f"{goal.target_comparator or '='} {value:f}")
    if goal.target_due_date is not None:
        parts.append(f"by {goal.target_due_date.isoformat()}")
    return " ".join(parts)
