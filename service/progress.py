"""How a course of scores is judged: a symptom goal's achievement, response and remission.

The rules, for the scores of one instrument in a plan, in the order they were taken
(date, then session number, then the order they were recorded):

- The **baseline** is the plan's first score; the **latest** is its last.
- A symptom goal whose target names the instrument's total is
  - ``achieved`` when the latest score meets the target,
  - ``sustaining`` when it meets it and the score before did too,
  - otherwise ``improving`` when the latest is at least the instrument's minimal clinically
    important difference (PHQ-9: 5 points, GAD-7: 4) below the baseline, ``worsening`` when
    it is that much above it, and ``no-change`` when it is closer to it than that;
  - ``in-progress`` while the baseline is the only score.
- **Response**: the latest score is at most half the baseline (a reduction of at least 50 %;
  a baseline of 0 cannot respond). **Remission**: the latest score is below the
  instrument's remission threshold (PHQ-9 and GAD-7: below 5).

All these scales score higher for more symptoms, so lower is better; the target's comparator
only says when it is met (``<`` 5 is met by 4, ``<=`` 5 by 5; a target without a
comparator is met by that value exactly).

A clinician may set a goal's achievement status by hand; it stands until the next score of
the goal's measure is recorded, changed or removed, when the rules take over again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from service.codes import Comparator, GoalAchievement
from service.instruments import Band, Instrument


@dataclass(frozen=True)
class Score:
    """One score of a course, with what orders it."""

    administered_on: date
    session_number: int | None
    recorded_at: datetime
    id: str
    total: int


def in_order(scores: Iterable[Score]) -> list[Score]:
    """Scores in the order they were taken: by date, session number, then recording."""
    return sorted(
        scores,
        key=lambda s: (
            s.administered_on,
            s.session_number if s.session_number is not None else 0,
            s.recorded_at,
            s.id,
        ),
    )


def meets(total: int, comparator: str | None, value: Decimal | int) -> bool:
    """Whether a total meets a target: ``total <comparator> value``."""
    target = Decimal(value)
    match comparator:
        case Comparator.LT:
            return total < target
        case Comparator.LE:
            return total <= target
        case Comparator.GE:
            return total >= target
        case Comparator.GT:
            return total > target
        case _:
            return total == target


def achievement(
    instrument: Instrument,
    totals: Sequence[int],
    comparator: str | None,
    value: Decimal | int,
) -> GoalAchievement:
    """The achievement status a course of totals (in order) gives a goal with this target."""
    if not totals:
        return GoalAchievement.IN_PROGRESS
    latest = totals[-1]
    if meets(latest, comparator, value):
        if len(totals) > 1 and meets(totals[-2], comparator, value):
            return GoalAchievement.SUSTAINING
        return GoalAchievement.ACHIEVED
    if len(totals) == 1:
        return GoalAchievement.IN_PROGRESS
    improvement = totals[0] - latest
    if improvement >= instrument.minimal_important_change:
        return GoalAchievement.IMPROVING
    if -improvement >= instrument.minimal_important_change:
        return GoalAchievement.WORSENING
    return GoalAchievement.NO_CHANGE


@dataclass(frozen=True)
class Outcome:
    """Where a course of totals stands against its baseline."""

    baseline: int
    latest: int
    change: int  # latest - baseline: negative is better
    band: Band
    response: bool
    remission: bool


def outcome(instrument: Instrument, totals: Sequence[int]) -> Outcome | None:
    """The outcome of a course of totals (in order); None before the first score."""
    if not totals:
        return None
    baseline, latest = totals[0], totals[-1]
    return Outcome(
        baseline=baseline,
        latest=latest,
        change=latest - baseline,
        band=instrument.band(latest),
        response=instrument.is_response(baseline, latest),
        remission=instrument.in_remission(latest),
    )
