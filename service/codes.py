"""The code lists of the IPT domain: the one source for validation, mapping and documentation.

Every list of statuses and codes the service accepts lives here. The native API schemas,
the FHIR mappings, the conformance resources and the OpenAPI document all read them from
this module, so a code added here is accepted, mapped and documented everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.instruments import INSTRUMENTS, LOINC


class PlanStatus(StrEnum):
    """FHIR R4 request-status, the value set of CarePlan.status."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    REVOKED = "revoked"
    COMPLETED = "completed"
    ENTERED_IN_ERROR = "entered-in-error"


# Which plan status may follow which. A closed plan (completed, revoked, entered-in-error)
# keeps only its notes editable; entered-in-error is final.
PLAN_STATUS_TRANSITIONS: dict[PlanStatus, frozenset[PlanStatus]] = {
    PlanStatus.DRAFT: frozenset(
        {PlanStatus.ACTIVE, PlanStatus.ON_HOLD, PlanStatus.REVOKED, PlanStatus.ENTERED_IN_ERROR}
    ),
    PlanStatus.ACTIVE: frozenset(
        {PlanStatus.ON_HOLD, PlanStatus.COMPLETED, PlanStatus.REVOKED, PlanStatus.ENTERED_IN_ERROR}
    ),
    PlanStatus.ON_HOLD: frozenset(
        {PlanStatus.ACTIVE, PlanStatus.COMPLETED, PlanStatus.REVOKED, PlanStatus.ENTERED_IN_ERROR}
    ),
    PlanStatus.COMPLETED: frozenset({PlanStatus.ENTERED_IN_ERROR}),
    PlanStatus.REVOKED: frozenset({PlanStatus.ENTERED_IN_ERROR}),
    PlanStatus.ENTERED_IN_ERROR: frozenset(),
}
CLOSED_PLAN_STATUSES = frozenset(
    {PlanStatus.COMPLETED, PlanStatus.REVOKED, PlanStatus.ENTERED_IN_ERROR}
)


class Variant(StrEnum):
    """The IPT formats a plan can follow."""

    STANDARD = "standard"
    BRIEF = "brief"
    ADOLESCENT = "adolescent"
    GROUP = "group"
    MAINTENANCE = "maintenance"


class Frequency(StrEnum):
    """How often sessions take place under the treatment contract."""

    TWICE_WEEKLY = "twice-weekly"
    WEEKLY = "weekly"
    FORTNIGHTLY = "fortnightly"
    MONTHLY = "monthly"


# Days between two sessions for each frequency (monthly as 4 weeks, as IPT-M schedules it).
FREQUENCY_INTERVAL_DAYS: dict[Frequency, float] = {
    Frequency.TWICE_WEEKLY: 3.5,
    Frequency.WEEKLY: 7,
    Frequency.FORTNIGHTLY: 14,
    Frequency.MONTHLY: 28,
}


@dataclass(frozen=True)
class VariantContract:
    """The default contract of a variant and the session counts it allows."""

    default_sessions: int
    default_frequency: Frequency
    min_sessions: int
    max_sessions: int


VARIANT_CONTRACTS: dict[Variant, VariantContract] = {
    Variant.STANDARD: VariantContract(12, Frequency.WEEKLY, 7, 52),
    Variant.BRIEF: VariantContract(8, Frequency.WEEKLY, 7, 52),
    Variant.ADOLESCENT: VariantContract(12, Frequency.WEEKLY, 7, 52),
    Variant.GROUP: VariantContract(8, Frequency.WEEKLY, 7, 52),
    Variant.MAINTENANCE: VariantContract(12, Frequency.MONTHLY, 1, 60),
}


class ProblemArea(StrEnum):
    """The four IPT problem areas (focus areas)."""

    GRIEF = "grief"
    ROLE_DISPUTE = "role-dispute"
    ROLE_TRANSITION = "role-transition"
    INTERPERSONAL_DEFICITS = "interpersonal-deficits"


PROBLEM_AREA_DISPLAY: dict[ProblemArea, str] = {
    ProblemArea.GRIEF: "Grief (complicated bereavement)",
    ProblemArea.ROLE_DISPUTE: "Interpersonal role dispute",
    ProblemArea.ROLE_TRANSITION: "Role transition",
    ProblemArea.INTERPERSONAL_DEFICITS: "Interpersonal deficits (social isolation)",
}


class ProblemAreaRank(StrEnum):
    """The place of a problem area in the plan: the first chosen is primary."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


MAX_PROBLEM_AREAS = len(ProblemAreaRank)


class DisputeStage(StrEnum):
    """The stage of a role dispute."""

    RENEGOTIATION = "renegotiation"
    IMPASSE = "impasse"
    DISSOLUTION = "dissolution"


class PhaseCode(StrEnum):
    """The phases of an IPT course, in the order they happen."""

    INITIAL = "initial"
    MIDDLE = "middle"
    TERMINATION = "termination"
    MAINTENANCE = "maintenance"


PHASE_DISPLAY: dict[PhaseCode, str] = {
    PhaseCode.INITIAL: "Initial phase",
    PhaseCode.MIDDLE: "Middle phase",
    PhaseCode.TERMINATION: "Termination phase",
    PhaseCode.MAINTENANCE: "Maintenance phase",
}

# Default length of the initial and termination phases of an acute course.
INITIAL_PHASE_SESSIONS = 3
TERMINATION_PHASE_SESSIONS = 3


class PhaseStatus(StrEnum):
    NOT_STARTED = "not-started"
    ACTIVE = "active"
    COMPLETED = "completed"


class GoalKind(StrEnum):
    """A symptom goal (measured by a scale) or a goal of a problem area."""

    SYMPTOM = "symptom"
    PROBLEM_AREA = "problem-area"


class GoalLifecycleStatus(StrEnum):
    """FHIR R4 goal-status, the value set of Goal.lifecycleStatus."""

    PROPOSED = "proposed"
    PLANNED = "planned"
    ACCEPTED = "accepted"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    REJECTED = "rejected"


# A goal in one of these states no longer binds the plan: its problem area may be dropped.
FINISHED_GOAL_STATUSES = frozenset(
    {
        GoalLifecycleStatus.COMPLETED,
        GoalLifecycleStatus.CANCELLED,
        GoalLifecycleStatus.ENTERED_IN_ERROR,
        GoalLifecycleStatus.REJECTED,
    }
)


class GoalAchievement(StrEnum):
    """FHIR R4 goal-achievement (http://terminology.hl7.org/CodeSystem/goal-achievement)."""

    IN_PROGRESS = "in-progress"
    IMPROVING = "improving"
    WORSENING = "worsening"
    NO_CHANGE = "no-change"
    ACHIEVED = "achieved"
    SUSTAINING = "sustaining"
    NOT_ACHIEVED = "not-achieved"
    NO_PROGRESS = "no-progress"
    NOT_ATTAINABLE = "not-attainable"


class GoalPriority(StrEnum):
    """FHIR R4 goal-priority (http://terminology.hl7.org/CodeSystem/goal-priority)."""

    HIGH = "high-priority"
    MEDIUM = "medium-priority"
    LOW = "low-priority"


class Comparator(StrEnum):
    """FHIR quantity comparators usable in a goal target."""

    LT = "<"
    LE = "<="
    GE = ">="
    GT = ">"


@dataclass(frozen=True)
class Measure:
    """A rating scale a goal target can be measured with, and its score range."""

    system: str
    code: str
    display: str
    min_score: int
    max_score: int


# The totals of the instruments the service records administrations of (service/instruments.py),
# and scales whose scores are kept elsewhere but that a goal target may still name.
MEASURES: dict[str, Measure] = {
    m.code: m
    for m in (
        *(
            Measure(LOINC, i.total_code, i.total_display, i.min_score, i.max_score)
            for i in INSTRUMENTS.values()
        ),
        Measure(LOINC, "89209-1", "BDI-II total score", 0, 63),
    )
}
PHQ9_TOTAL = MEASURES["44261-6"]
PHQ9_REMISSION_BELOW = 5


class HomeworkKind(StrEnum):
    OBSERVE_INTERACTION = "observe-interaction"
    TRY_NEW_INTERACTION = "try-new-interaction"
    ASSERTIVE_PRACTICE = "assertive-practice"
    RECONNECT = "reconnect"
    REFLECT_ON_CONVERSATION = "reflect-on-conversation"
    OTHER = "other"


class HomeworkStatus(StrEnum):
    ASSIGNED = "assigned"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    NOT_DONE = "not-done"
    CANCELLED = "cancelled"


HOMEWORK_STATUS_TRANSITIONS: dict[HomeworkStatus, frozenset[HomeworkStatus]] = {
    HomeworkStatus.ASSIGNED: frozenset(
        {
            HomeworkStatus.IN_PROGRESS,
            HomeworkStatus.COMPLETED,
            HomeworkStatus.NOT_DONE,
            HomeworkStatus.CANCELLED,
        }
    ),
    HomeworkStatus.IN_PROGRESS: frozenset(
        {HomeworkStatus.COMPLETED, HomeworkStatus.NOT_DONE, HomeworkStatus.CANCELLED}
    ),
    HomeworkStatus.COMPLETED: frozenset(),
    HomeworkStatus.NOT_DONE: frozenset(),
    HomeworkStatus.CANCELLED: frozenset(),
}


class SessionStatus(StrEnum):
    SCHEDULED = "scheduled"
    ATTENDED = "attended"
    NO_SHOW = "no-show"
    CANCELLED = "cancelled"


# A session that took place (or was missed) is a fact: it is corrected, not re-scheduled.
# A cancelled session may be booked again.
SESSION_STATUS_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.SCHEDULED: frozenset(
        {SessionStatus.ATTENDED, SessionStatus.NO_SHOW, SessionStatus.CANCELLED}
    ),
    SessionStatus.CANCELLED: frozenset({SessionStatus.SCHEDULED}),
    SessionStatus.ATTENDED: frozenset({SessionStatus.NO_SHOW}),
    SessionStatus.NO_SHOW: frozenset({SessionStatus.ATTENDED}),
}
HELD_SESSION_STATUSES = frozenset({SessionStatus.ATTENDED, SessionStatus.NO_SHOW})


class Technique(StrEnum):
    """Techniques an IPT therapist uses in a session."""

    NONDIRECTIVE_EXPLORATION = "nondirective-exploration"
    DIRECT_ELICITATION = "direct-elicitation"
    ENCOURAGEMENT_OF_AFFECT = "encouragement-of-affect"
    CLARIFICATION = "clarification"
    COMMUNICATION_ANALYSIS = "communication-analysis"
    DECISION_ANALYSIS = "decision-analysis"
    ROLE_PLAY = "role-play"
    THERAPEUTIC_RELATIONSHIP = "use-of-therapeutic-relationship"
    INTERPERSONAL_INVENTORY = "interpersonal-inventory"
    PSYCHOEDUCATION = "psychoeducation"


PHQ9_MAX = PHQ9_TOTAL.max_score


def values(enum: type[StrEnum]) -> list[str]:
    """The codes of a code list, in declaration order."""
    return [member.value for member in enum]
