"""The clinic's outcomes over a period: aggregate figures only, small cells suppressed.

Figures, for the plans of the period (deleted plans, drafts and plans entered in error
left out), in total and broken down by primary problem area and by variant:

- **plans started**: plans whose start date lies in the period;
- **plans closed**: plans completed or revoked in the period (the day the status was set,
  from the change log);
- **courses ended**: plans whose course ended in the period, the earliest of: the plan
  closed; the last session of the termination phase attended; the third no-show in a row.
  Of those: **drop-outs** (revoked; completed before the contract's sessions were attended;
  or three no-shows in a row) and their rate, and the **mean sessions attended**;
- **acute courses ended**: plans completed, or whose termination phase's last session was
  attended, in the period. Of those **measured** (a PHQ-9 baseline and a later score, up
  to the end of the acute course): the **response** and **remission** rates and the **mean
  change** of the PHQ-9, the last score against the baseline (service/progress.outcome).

Each figure is computed from a population of plans (the plans started, closed, ended,
acute courses ended, or measured). A figure computed from fewer than
:data:`MINIMUM_PATIENTS` distinct patients is suppressed: it is published as null with
the reason. In a breakdown whose total is published, a single suppressed row could be
recomputed by subtracting the others from the total; so when exactly one row of a
breakdown is suppressed, the published row with the fewest patients is suppressed too
(complementary suppression). The same population gives the same suppression to every
figure computed from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from statistics import fmean
from typing import Any

from sqlalchemy import select

from service import progress
from service.administrations import score
from service.codes import (
    PhaseCode,
    PlanStatus,
    ProblemArea,
    SessionStatus,
    Variant,
    values,
)
from service.db import Database
from service.instruments import PHQ9
from service.models import Administration, CarePlan, Phase, PlanChange, TherapySession
from service.rules import Problems

MINIMUM_PATIENTS = 5
# The run of no-shows that counts as dropping out.
DROP_OUT_NO_SHOWS = 3
FEWER_THAN = f"fewer than {MINIMUM_PATIENTS} patients"
COMPLEMENTARY = (
    "complementary: with the total and the other rows it would reveal a cell suppressed "
    f"for {FEWER_THAN}"
)
# The longest period a report covers (ten years and a leap day or two).
MAX_DAYS = 3660


@dataclass(frozen=True)
class PlanFacts:
    """What the report needs of one plan."""

    patient: str
    problem_area: str
    variant: str
    started_on: date | None  # None for a plan that never started (a draft)
    closed_on: date | None
    acute_end: date | None
    dropout_on: date | None
    attended: int
    # The PHQ-9 totals up to the end of the acute course, in order.
    phq9: tuple[int, ...] = ()

    @property
    def ended_on(self) -> date | None:
        ends = [d for d in (self.closed_on, self.acute_end, self.dropout_on) if d is not None]
        return min(ends) if ends else None


@dataclass(frozen=True)
class Cell:
    value: float | int | None
    suppressed: bool = False
    reason: str | None = None


# figure name -> (population, how the figure is computed from the population's plans)
Population = str
_Figure = tuple[Population, Callable[[list[PlanFacts]], float | int | None]]


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _measured(plans: list[PlanFacts]) -> list[PlanFacts]:
    return [p for p in plans if len(p.phq9) >= 2]


def _outcomes(plans: list[PlanFacts]) -> list[progress.Outcome]:
    found = [progress.outcome(PHQ9, p.phq9) for p in plans]
    return [o for o in found if o is not None]


FIGURES: dict[str, _Figure] = {
    "plans_started": ("started", len),
    "plans_closed": ("closed", len),
    "courses_ended": ("ended", len),
    "dropouts": ("ended", lambda ps: sum(1 for p in ps if p.dropout_on is not None)),
    "dropout_rate": (
        "ended",
        lambda ps: _rate(sum(1 for p in ps if p.dropout_on is not None), len(ps)),
    ),
    "mean_sessions_attended": (
        "ended",
        lambda ps: round(fmean(p.attended for p in ps), 2) if ps else None,
    ),
    "acute_courses_ended": ("acute", len),
    "measured": ("measured", len),
    "response_rate": (
        "measured",
        lambda ps: _rate(sum(o.response for o in _outcomes(ps)), len(ps)),
    ),
    "remission_rate": (
        "measured",
        lambda ps: _rate(sum(o.remission for o in _outcomes(ps)), len(ps)),
    ),
    "mean_phq9_change": (
        "measured",
        lambda ps: round(fmean(o.change for o in _outcomes(ps)), 2) if ps else None,
    ),
}
POPULATIONS = ("started", "closed", "ended", "acute", "measured")


def _within(day: date | None, start: date, end: date) -> bool:
    return day is not None and start <= day <= end


def populations(plans: Iterable[PlanFacts], start: date, end: date) -> dict[str, list[PlanFacts]]:
    """The plans each population of the period holds."""
    plans = list(plans)
    acute = [p for p in plans if _within(p.acute_end, start, end)]
    return {
        "started": [p for p in plans if _within(p.started_on, start, end)],
        "closed": [p for p in plans if _within(p.closed_on, start, end)],
        "ended": [p for p in plans if _within(p.ended_on, start, end)],
        "acute": acute,
        "measured": _measured(acute),
    }


@dataclass
class Row:
    """One row of the report: a breakdown's group (or the total) and its figures."""

    key: str | None
    patients: dict[str, int]  # population -> distinct patients
    figures: dict[str, Cell] = field(default_factory=dict)


def _row(key: str | None, plans: list[PlanFacts], start: date, end: date) -> Row:
    held = populations(plans, start, end)
    row = Row(key, {name: len({p.patient for p in held[name]}) for name in POPULATIONS})
    for name, (population, compute) in FIGURES.items():
        if row.patients[population] < MINIMUM_PATIENTS:
            row.figures[name] = Cell(None, True, FEWER_THAN)
        else:
            row.figures[name] = Cell(compute(held[population]))
    return row


def _suppress(row: Row, population: str, reason: str) -> None:
    for name, (of, _compute) in FIGURES.items():
        if of == population:
            row.figures[name] = Cell(None, True, reason)


def _complement(rows: Sequence[Row], total: Row) -> None:
    """In each population, when exactly one row is suppressed and the total is not,
    suppress the published row with the fewest patients too."""
    for population in POPULATIONS:
        if total.patients[population] < MINIMUM_PATIENTS:
            continue
        suppressed = [r for r in rows if r.patients[population] < MINIMUM_PATIENTS]
        published = [r for r in rows if r.patients[population] >= MINIMUM_PATIENTS]
        if len(suppressed) == 1 and published:
            smallest = min(published, key=lambda r: r.patients[population])
            _suppress(smallest, population, COMPLEMENTARY)


@dataclass(frozen=True)
class Report:
    start: date
    end: date
    problem_area: str | None
    variant: str | None
    total: Row
    by_problem_area: list[Row]
    by_variant: list[Row]

    @property
    def minimum_patients(self) -> int:
        return MINIMUM_PATIENTS


def summarise(
    plans: Iterable[PlanFacts],
    start: date,
    end: date,
    problem_area: str | None = None,
    variant: str | None = None,
) -> Report:
    """The report of these plans over the period (``start`` to ``end`` inclusive)."""
    chosen = [
        p
        for p in plans
        if (problem_area is None or p.problem_area == problem_area)
        and (variant is None or p.variant == variant)
    ]
    total = _row(None, chosen, start, end)
    breakdowns = []
    for attribute, codes, only in (
        ("problem_area", values(ProblemArea), problem_area),
        ("variant", values(Variant), variant),
    ):
        keys = [only] if only is not None else codes
        rows = [
            _row(key, [p for p in chosen if getattr(p, attribute) == key], start, end)
            for key in keys
        ]
        _complement(rows, total)
        breakdowns.append(rows)
    return Report(start, end, problem_area, variant, total, breakdowns[0], breakdowns[1])


# --- reading the facts ----------------------------------------------------------------------


def check_period(
    start: date | None, end: date | None, problem_area: str | None, variant: str | None
) -> None:
    problems = Problems()
    if start is None:
        problems.add("from", "is required: the first day of the period (YYYY-MM-DD)")
    if end is None:
        problems.add("to", "is required: the last day of the period (YYYY-MM-DD)")
    if start is not None and end is not None:
        if end < start:
            problems.add("to", f"{end.isoformat()} is before from {start.isoformat()}")
        elif (end - start).days > MAX_DAYS:
            problems.add("to", f"a report covers at most {MAX_DAYS} days")
    if problem_area is not None and problem_area not in values(ProblemArea):
        problems.add(
            "problem_area",
            f"unknown problem area {problem_area!r}; expected one of: "
            + ", ".join(values(ProblemArea)),
        )
    if variant is not None and variant not in values(Variant):
        problems.add(
            "variant",
            f"unknown variant {variant!r}; expected one of: " + ", ".join(values(Variant)),
        )
    problems.raise_if_any()


def outcomes_report(
    database: Database,
    start: date | None,
    end: date | None,
    problem_area: str | None = None,
    variant: str | None = None,
) -> Report:
    """The outcomes report of the period; RuleViolation for a period or filter that is not
    one."""
    check_period(start, end, problem_area, variant)
    assert start is not None and end is not None
    return summarise(
        clinic_facts(database, problem_area, variant), start, end, problem_area, variant
    )


def clinic_facts(
    database: Database, problem_area: str | None = None, variant: str | None = None
) -> list[PlanFacts]:
    """The facts of every plan the report may count, in one read transaction: five
    statements whatever the number of plans."""
    counted = (
        CarePlan.deleted_at.is_(None),
        CarePlan.status.not_in([PlanStatus.ENTERED_IN_ERROR]),
        *([CarePlan.primary_problem_area == problem_area] if problem_area else []),
        *([CarePlan.variant == variant] if variant else []),
    )
    with database.reading() as session:
        plans = session.execute(
            select(
                CarePlan.id,
                CarePlan.patient,
                CarePlan.status,
                CarePlan.variant,
                CarePlan.primary_problem_area,
                CarePlan.start_date,
                CarePlan.planned_sessions,
                CarePlan.updated_at,
            ).where(*counted)
        ).all()
        ids = select(CarePlan.id).where(*counted).scalar_subquery()
        terminations = dict(
            session.execute(
                select(Phase.plan_id, Phase.end_session).where(
                    Phase.plan_id.in_(ids), Phase.code == PhaseCode.TERMINATION
                )
            ).all()
        )
        sessions = session.execute(
            select(
                TherapySession.plan_id,
                TherapySession.number,
                TherapySession.status,
                TherapySession.date,
            ).where(
                TherapySession.plan_id.in_(ids),
                TherapySession.deleted_at.is_(None),
                TherapySession.status.in_([SessionStatus.ATTENDED, SessionStatus.NO_SHOW]),
            )
        ).all()
        scores = list(
            session.scalars(
                select(Administration).where(
                    Administration.plan_id.in_(ids),
                    Administration.deleted_at.is_(None),
                    Administration.instrument == PHQ9.key,
                )
            )
        )
        closings = session.execute(
            select(PlanChange.plan_id, PlanChange.fields, PlanChange.at)
            .join(CarePlan, CarePlan.id == PlanChange.plan_id)
            .where(
                *counted,
                CarePlan.status.in_([PlanStatus.COMPLETED, PlanStatus.REVOKED]),
                PlanChange.entity == "plan",
                PlanChange.action == "update",
            )
            .order_by(PlanChange.id)
        ).all()
    held: dict[str, list[tuple[int, str, date | None]]] = {}
    for row in sessions:
        held.setdefault(row.plan_id, []).append((row.number, row.status, row.date))
    by_plan: dict[str, list[progress.Score]] = {}
    for administration in scores:
        by_plan.setdefault(administration.plan_id, []).append(score(administration))
    closed_at: dict[str, date] = {}
    for change in closings:
        if "status" in (change.fields or []):
            closed_at[change.plan_id] = change.at.date()
    facts = []
    for plan in plans:
        closed_on = None
        if plan.status in (PlanStatus.COMPLETED, PlanStatus.REVOKED):
            closed_on = closed_at.get(plan.id, plan.updated_at.date())
        facts.append(
            plan_facts(
                patient=plan.patient,
                problem_area=plan.primary_problem_area,
                variant=plan.variant,
                status=plan.status,
                start_date=plan.start_date,
                planned_sessions=plan.planned_sessions,
                closed_on=closed_on,
                termination_end=terminations.get(plan.id),
                held=sorted(held.get(plan.id, [])),
                scores=progress.in_order(by_plan.get(plan.id, [])),
            )
        )
    return facts


def plan_facts(
    *,
    patient: str,
    problem_area: str,
    variant: str,
    status: str,
    start_date: date,
    planned_sessions: int,
    closed_on: date | None,
    termination_end: int | None,
    held: list[tuple[int, str, date | None]],
    scores: list[progress.Score],
) -> PlanFacts:
    """One plan's facts from its status, contract, held sessions (in number order) and
    PHQ-9 scores (in order)."""
    attended = [(n, d) for n, s, d in held if s == SessionStatus.ATTENDED]
    acute_ends = []
    if status == PlanStatus.COMPLETED and closed_on is not None:
        acute_ends.append(closed_on)
    if termination_end is not None:
        acute_ends += [d for n, d in attended if n >= termination_end and d is not None]
    acute_end = min(acute_ends) if acute_ends else None
    dropouts = []
    if closed_on is not None and (status == PlanStatus.REVOKED or len(attended) < planned_sessions):
        dropouts.append(closed_on)
    run = 0
    for _number, state, day in held:
        run = run + 1 if state == SessionStatus.NO_SHOW else 0
        if run == DROP_OUT_NO_SHOWS and day is not None:
            dropouts.append(day)
            break
    course = [s.total for s in scores if acute_end is not None and s.administered_on <= acute_end]
    return PlanFacts(
        patient=patient,
        problem_area=problem_area,
        variant=variant,
        started_on=None if status == PlanStatus.DRAFT else start_date,
        closed_on=closed_on,
        acute_end=acute_end,
        dropout_on=min(dropouts) if dropouts else None,
        attended=len(attended),
        phq9=tuple(course),
    )


def report_dict(report: Report) -> dict[str, Any]:
    """The report as the API and the command line give it."""

    def cells(row: Row) -> dict[str, Any]:
        return {name: _cell(cell) for name, cell in row.figures.items()}

    return {
        "from": report.start,
        "to": report.end,
        "problem_area": report.problem_area,
        "variant": report.variant,
        "minimum_patients": report.minimum_patients,
        "total": cells(report.total),
        "by_problem_area": [
            {"problem_area": row.key, "figures": cells(row)} for row in report.by_problem_area
        ],
        "by_variant": [{"variant": row.key, "figures": cells(row)} for row in report.by_variant],
    }


def _cell(cell: Cell) -> dict[str, Any]:
    if cell.suppressed:
        return {"value": None, "suppressed": True, "reason": cell.reason}
    return {"value": cell.value, "suppressed": False}


CSV_COLUMNS = ("breakdown", "group", "figure", "value", "suppressed", "reason")


def report_rows(report: Report) -> list[tuple[str, str, str, str, str, str]]:
    """The report as CSV rows (one per cell): a suppressed cell's value is blank and its
    ``suppressed`` column says so, with the reason."""
    rows = []
    sections: list[tuple[str, list[Row]]] = [
        ("total", [report.total]),
        ("problem_area", report.by_problem_area),
        ("variant", report.by_variant),
    ]
    for breakdown, listed in sections:
        for row in listed:
            for name, cell in row.figures.items():
                value = "" if cell.value is None else str(cell.value)
                rows.append(
                    (
                        breakdown,
                        row.key or "all",
                        name,
                        value,
                        "true" if cell.suppressed else "false",
                        cell.reason or "",
                    )
                )
    return rows
