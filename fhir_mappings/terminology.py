"""The canonical URLs and code systems of the project's FHIR views, defined once.

Every URL the FHIR mappings, the conformance resources and the CapabilityStatement use is
built here from one canonical base. Local code systems take their codes from
``service.codes``, so a code added to the domain appears in FHIR at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service import codes
from service.instruments import INSTRUMENTS, AdministrationSource, AnsweredBy, Instrument

CANONICAL_BASE = "https://ipt-careplans.org/fhir"
FHIR_VERSION = "4.0.1"

SNOMED = "http://snomed.info/sct"
LOINC = codes.LOINC
UCUM = "http://unitsofmeasure.org"
US_CORE_CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
GOAL_CATEGORY = "http://terminology.hl7.org/CodeSystem/goal-category"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
GOAL_PRIORITY = "http://terminology.hl7.org/CodeSystem/goal-priority"

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
# HL7's extensions: the score of an answer, and what a Flag is about.
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"

IPT_SNOMED_CODE = "443730003"
IPT_SNOMED_DISPLAY = "Interpersonal psychotherapy"


def structure_definition(name: str) -> str:
    return f"{CANONICAL_BASE}/StructureDefinition/{name}"


def code_system(name: str) -> str:
    return f"{CANONICAL_BASE}/CodeSystem/{name}"


def value_set(name: str) -> str:
    return f"{CANONICAL_BASE}/ValueSet/{name}"


def questionnaire(instrument: Instrument) -> str:
    """The canonical URL of an instrument's Questionnaire (``.../Questionnaire/phq-9``)."""
    return f"{CANONICAL_BASE}/Questionnaire/{instrument.key}"


# --- profiles -------------------------------------------------------------------------------

EPISODE_PROFILE = structure_definition("ipt-episode-careplan")
PHASE_PROFILE = structure_definition("ipt-phase-careplan")
GOAL_PROFILE = structure_definition("ipt-goal")
RESPONSE_PROFILE = structure_definition("ipt-questionnaire-response")
SCORE_PROFILE = structure_definition("ipt-total-score")
SAFETY_FLAG_PROFILE = structure_definition("ipt-safety-flag")

# --- extensions -----------------------------------------------------------------------------
# Episode CarePlan
EXT_VARIANT = structure_definition("ipt-variant")  # valueCode
EXT_PLANNED_SESSIONS = structure_definition("ipt-planned-sessions")  # valuePositiveInt
EXT_SESSION_FREQUENCY = structure_definition("ipt-session-frequency")  # valueCode
EXT_CONTRACT = structure_definition("ipt-treatment-contract")  # complex, one per contract
EXT_PROBLEM_AREA = structure_definition("ipt-problem-area")  # complex, one per area
EXT_RELAPSE_PREVENTION = structure_definition("ipt-relapse-prevention")  # complex
# Phase CarePlan
EXT_SESSION_RANGE = structure_definition("ipt-session-range")  # complex: first, last
# Phase CarePlan activity.detail
EXT_SESSION_NUMBER = structure_definition("ipt-session-number")  # valuePositiveInt
EXT_PHQ9_TOTAL = structure_definition("ipt-phq9-total")  # valueInteger 0-27
EXT_SESSION_TECHNIQUE = structure_definition("ipt-session-technique")  # valueCoding, repeats
# Goal
EXT_GOAL_EPISODE = structure_definition("ipt-goal-episode")  # valueReference(CarePlan)
EXT_GOAL_PHASE = structure_definition("ipt-goal-phase")  # valueCode
# QuestionnaireResponse and total Observation of an administration
EXT_ANSWERED_BY = structure_definition("ipt-answered-by")  # valueCode
EXT_SCORE_SOURCE = structure_definition("ipt-score-source")  # valueCode: items, total-only
# Flag of a safety signal
EXT_ACKNOWLEDGEMENT = structure_definition("ipt-acknowledgement")  # complex: at, by, action


@dataclass(frozen=True)
class LocalCodeSystem:
    """A code list of the domain published as a CodeSystem with its ValueSet."""

    name: str
    title: str
    description: str
    enum: type[StrEnum]

    @property
    def url(self) -> str:
        return code_system(self.name)

    @property
    def value_set_url(self) -> str:
        return value_set(self.name)

    @property
    def codes(self) -> list[str]:
        return codes.values(self.enum)


class SafetySignalKind(StrEnum):
    """What a safety signal is about."""

    SELF_HARM_THOUGHTS = "self-harm-thoughts"


SAFETY_SIGNAL_TEXT = "Thoughts of self-harm or of being better off dead (PHQ-9 item 9)"


def _severity_enum(instrument: Instrument) -> type[StrEnum]:
    """The severity bands of an instrument as a code list."""
    members = [(band.code.replace("-", "_").upper(), band.code) for band in instrument.bands]
    return StrEnum(f"{instrument.name.replace('-', '')}Severity", members)  # type: ignore[return-value]


SEVERITY: dict[str, type[StrEnum]] = {
    key: _severity_enum(instrument) for key, instrument in INSTRUMENTS.items()
}


def severity_system(instrument: Instrument) -> str:
    """The name of the local code system of an instrument's severity bands."""
    return f"ipt-{instrument.key}-severity"


class CarePlanKind(StrEnum):
    """Which of the project's CarePlans a resource is."""

    EPISODE = "episode"
    PHASE = "phase"


LOCAL_CODE_SYSTEMS: dict[str, LocalCodeSystem] = {
    system.name: system
    for system in (
        LocalCodeSystem(
            "ipt-careplan-kind",
            "IPT CarePlan kind",
            "Whether a CarePlan is the episode of IPT or one of its phases.",
            CarePlanKind,
        ),
        LocalCodeSystem(
            "ipt-problem-area",
            "IPT problem area",
            "The four interpersonal problem areas IPT works on.",
            codes.ProblemArea,
        ),
        LocalCodeSystem(
            "ipt-problem-area-rank",
            "IPT problem area rank",
            "Whether a problem area is the plan's primary or its secondary one.",
            codes.ProblemAreaRank,
        ),
        LocalCodeSystem(
            "ipt-dispute-stage",
            "IPT role-dispute stage",
            "The stage of an interpersonal role dispute.",
            codes.DisputeStage,
        ),
        LocalCodeSystem(
            "ipt-phase", "IPT phase", "The phases of a course of IPT.", codes.PhaseCode
        ),
        LocalCodeSystem(
            "ipt-variant", "IPT variant", "The formats of IPT a plan can follow.", codes.Variant
        ),
        LocalCodeSystem(
            "ipt-session-frequency",
            "IPT session frequency",
            "How often sessions take place under the treatment contract.",
            codes.Frequency,
        ),
        LocalCodeSystem(
            "ipt-homework-kind",
            "IPT homework kind",
            "Kinds of between-session tasks a patient takes on.",
            codes.HomeworkKind,
        ),
        LocalCodeSystem(
            "ipt-homework-status",
            "IPT homework status",
            "The status of homework, kept exactly beside the FHIR activity status.",
            codes.HomeworkStatus,
        ),
        LocalCodeSystem(
            "ipt-session-status",
            "IPT session status",
            "The status of a session, kept exactly beside the FHIR activity status.",
            codes.SessionStatus,
        ),
        LocalCodeSystem(
            "ipt-session-technique",
            "IPT session technique",
            "Techniques an IPT therapist uses in a session.",
            codes.Technique,
        ),
        LocalCodeSystem(
            "ipt-goal-kind",
            "IPT goal kind",
            "A symptom goal measured by a scale, or a goal of a problem area.",
            codes.GoalKind,
        ),
        LocalCodeSystem(
            "ipt-answered-by",
            "Who answered a rating scale",
            "Who gave the answers of an administration of a rating scale.",
            AnsweredBy,
        ),
        LocalCodeSystem(
            "ipt-score-source",
            "Source of a rating-scale total",
            "Whether a total was computed from the item answers or imported alone.",
            AdministrationSource,
        ),
        *(
            LocalCodeSystem(
                severity_system(instrument),
                f"{instrument.name} severity",
                f"The severity bands of the {instrument.name} total score.",
                SEVERITY[instrument.key],
            )
            for instrument in INSTRUMENTS.values()
        ),
        LocalCodeSystem(
            "ipt-safety-signal",
            "IPT safety signal",
            "What a safety signal raised by an answer is about.",
            SafetySignalKind,
        ),
    )
}


def local(name: str) -> LocalCodeSystem:
    return LOCAL_CODE_SYSTEMS[name]
