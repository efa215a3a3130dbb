"""The IPT template: the canonical goals of each problem area and the symptom goal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from service.codes import (
    FREQUENCY_INTERVAL_DAYS,
    PHQ9_REMISSION_BELOW,
    PHQ9_TOTAL,
    Comparator,
    Frequency,
    GoalKind,
    GoalPriority,
    PhaseCode,
    ProblemArea,
    Variant,
)

# The goals the IPT manual sets for each problem area, in the order it gives them.
CANONICAL_GOALS: dict[ProblemArea, tuple[str, ...]] = {
    ProblemArea.GRIEF: (
        "Facilitate the mourning process.",
        "Help the patient re-establish interests and relationships that can partly "
        "substitute for what was lost.",
    ),
    ProblemArea.ROLE_DISPUTE: (
        "Identify the dispute.",
        "Choose a plan of action.",
        "Modify expectations or faulty communication to bring about a satisfactory "
        "resolution of the dispute.",
    ),
    ProblemArea.ROLE_TRANSITION: (
        "Mourn and accept the loss of the old role.",
        "Help the patient regard the new role as more positive.",
        "Restore self-esteem by developing a sense of mastery of the new role's demands.",
    ),
    ProblemArea.INTERPERSONAL_DEFICITS: (
        "Reduce the patient's social isolation.",
        "Encourage the formation of new relationships.",
    ),
}

SYMPTOM_GOAL_ACUTE = (
    "Remission of depressive symptoms: PHQ-9 total score below 5 by the end of the acute course."
)
SYMPTOM_GOAL_MAINTENANCE = (
    "Sustained remission: PHQ-9 total score stays below 5 throughout maintenance treatment."
)


@dataclass(frozen=True)
class GoalDraft:
    """A goal the template proposes; the plan fills in status and dates."""

    kind: GoalKind
    description: str
    priority: GoalPriority
    problem_area: ProblemArea | None = None
    phase: PhaseCode | None = None
    target_measure: str | None = None
    target_comparator: Comparator | None = None
    target_value: Decimal | None = None


def course_end(start: date, planned_sessions: int, frequency: str) -> date:
    """The date of the last session if every session happens on schedule."""
    interval = FREQUENCY_INTERVAL_DAYS[Frequency(frequency)]
    return start + timedelta(days=round(interval * (planned_sessions - 1)))


def default_goals(variant: str, problem_areas: list[str]) -> list[GoalDraft]:
    """The canonical goals of each chosen problem area, then the PHQ-9 symptom goal."""
    work_phase = PhaseCode.MAINTENANCE if variant == Variant.MAINTENANCE else PhaseCode.MIDDLE
    drafts = []
    for rank, area in enumerate(problem_areas):
        priority = GoalPriority.HIGH if rank == 0 else GoalPriority.MEDIUM
        for text in CANONICAL_GOALS[ProblemArea(area)]:
            drafts.append(
                GoalDraft(GoalKind.PROBLEM_AREA, text, priority, ProblemArea(area), work_phase)
            )
    drafts.append(
        GoalDraft(
            GoalKind.SYMPTOM,
            SYMPTOM_GOAL_MAINTENANCE if variant == Variant.MAINTENANCE else SYMPTOM_GOAL_ACUTE,
            GoalPriority.HIGH,
            target_measure=PHQ9_TOTAL.code,
            target_comparator=Comparator.LT,
            target_value=Decimal(PHQ9_REMISSION_BELOW),
        )
    )
    return drafts
