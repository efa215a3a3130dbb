"""The search parameters the server supports, and the values each takes from a resource.

One table serves indexing (values extracted when a version is stored), query parsing and
the CapabilityStatement. Values are extracted from the stored JSON, so elements a client
wrote verbatim are searchable like mapped ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from service.instants import EARLIEST, LATEST, parse_range

ParamType = Literal["token", "reference", "date"]

REQUEST_STATUS = "http://hl7.org/fhir/request-status"
REQUEST_INTENT = "http://hl7.org/fhir/request-intent"
GOAL_STATUS = "http://hl7.org/fhir/goal-status"
RESPONSE_STATUS = "http://hl7.org/fhir/questionnaire-answers-status"
OBSERVATION_STATUS = "http://hl7.org/fhir/observation-status"
FLAG_STATUS = "http://hl7.org/fhir/flag-status"


@dataclass(frozen=True)
class Token:
    system: str | None
    code: str


@dataclass(frozen=True)
class DateRange:
    """The instants a date value covers: ``2026-01`` covers all of January."""

    low: datetime
    high: datetime


Value = Token | str | DateRange


@dataclass(frozen=True)
class SearchParameter:
    name: str
    type: ParamType
    expression: str
    extract: Callable[[dict[str, Any]], Iterator[Value]]
    # The resource type a reference points to when the query gives only an id.
    target: str | None = None
    # A canonical URL: matched as written, not read as a Type/id reference.
    canonical: bool = False
    # Not one of FHIR's own search parameters for the type (the service's addition).
    custom: bool = False

    @property
    def definition(self) -> str:
        return f"http://hl7.org/fhir/SearchParameter/{self.name}"


# --- value helpers ------------------------------------------------------------------------


def parse_date_range(value: str) -> DateRange:
    """The range a FHIR date, dateTime or instant covers (UTC when no zone is given),
    within the instants the database holds (see :mod:`service.instants`).

    Raises :class:`service.instants.InvalidInstant` (a ValueError) for invalid syntax.
    """
    return DateRange(*parse_range(value))


def _period(period: dict[str, Any] | None) -> Iterator[DateRange]:
    if not period:
        return
    low = parse_date_range(period["start"]).low if "start" in period else EARLIEST
    high = parse_date_range(period["end"]).high if "end" in period else LATEST
    yield DateRange(low, high)


def _dates(*values: str | None) -> Iterator[DateRange]:
    for value in values:
        if value:
            yield parse_date_range(value)


def _codings(concepts: list[dict[str, Any]] | dict[str, Any] | None) -> Iterator[Token]:
    if isinstance(concepts, dict):
        concepts = [concepts]
    for concept in concepts or []:
        for coding in concept.get("coding", []):
            if "code" in coding:
                yield Token(coding.get("system"), coding["code"])


def _code(system: str, value: str | None) -> Iterator[Token]:
    if value:
        yield Token(system, value)


def _identifiers(resource: dict[str, Any]) -> Iterator[Token]:
    listed = resource.get("identifier", [])
    # QuestionnaireResponse has one identifier, not a list.
    for identifier in [listed] if isinstance(listed, dict) else listed:
        if "value" in identifier:
            yield Token(identifier.get("system"), identifier["value"])


def _references(*references: dict[str, Any] | None) -> Iterator[str]:
    for reference in references:
        if reference and "reference" in reference:
            yield normalise_reference(reference["reference"])


def normalise_reference(reference: str) -> str:
    """``https://ehr/fhir/Patient/1`` and ``Patient/1`` index alike, as ``Patient/1``."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return reference


def _patient(resource: dict[str, Any]) -> Iterator[str]:
    for reference in _references(resource.get("subject")):
        if reference.startswith("Patient/"):
            yield reference


def _activity_details(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for activity in resource.get("activity", []):
        if "detail" in activity:
            yield activity["detail"]


def _activity_dates(resource: dict[str, Any]) -> Iterator[DateRange]:
    for detail in _activity_details(resource):
        yield from _period(detail.get("scheduledPeriod"))
        for event in detail.get("scheduledTiming", {}).get("event", []):
            yield from _dates(event)


# --- the parameters -----------------------------------------------------------------------

_CAREPLAN: list[SearchParameter] = [
    SearchParameter("identifier", "token", "CarePlan.identifier", _identifiers),
    SearchParameter(
        "patient",
        "reference",
        "CarePlan.subject.where(resolve() is Patient)",
        _patient,
        target="Patient",
    ),
    SearchParameter(
        "subject",
        "reference",
        "CarePlan.subject",
        lambda r: _references(r.get("subject")),
        target="Patient",
    ),
    SearchParameter(
        "status", "token", "CarePlan.status", lambda r: _code(REQUEST_STATUS, r.get("status"))
    ),
    SearchParameter(
        "intent", "token", "CarePlan.intent", lambda r: _code(REQUEST_INTENT, r.get("intent"))
    ),
    SearchParameter(
        "category", "token", "CarePlan.category", lambda r: _codings(r.get("category"))
    ),
    SearchParameter("date", "date", "CarePlan.period", lambda r: _period(r.get("period"))),
    SearchParameter(
        "part-of",
        "reference",
        "CarePlan.partOf",
        lambda r: _references(*r.get("partOf", [])),
        target="CarePlan",
    ),
    SearchParameter(
        "goal",
        "reference",
        "CarePlan.goal",
        lambda r: _references(*r.get("goal", [])),
        target="Goal",
    ),
    SearchParameter(
        "condition",
        "reference",
        "CarePlan.addresses",
        lambda r: _references(*r.get("addresses", [])),
        target="Condition",
    ),
    SearchParameter(
        "instantiates-canonical",
        "reference",
        "CarePlan.instantiatesCanonical",
        lambda r: iter(r.get("instantiatesCanonical", [])),
        canonical=True,
    ),
    SearchParameter(
        "activity-code",
        "token",
        "CarePlan.activity.detail.code",
        lambda r: (t for d in _activity_details(r) for t in _codings(d.get("code"))),
    ),
    SearchParameter("activity-date", "date", "CarePlan.activity.detail.scheduled", _activity_dates),
]

_GOAL: list[SearchParameter] = [
    SearchParameter("identifier", "token", "Goal.identifier", _identifiers),
    SearchParameter(
        "patient",
        "reference",
        "Goal.subject.where(resolve() is Patient)",
        _patient,
        target="Patient",
    ),
    SearchParameter(
        "subject",
        "reference",
        "Goal.subject",
        lambda r: _references(r.get("subject")),
        target="Patient",
    ),
    SearchParameter(
        "lifecycle-status",
        "token",
        "Goal.lifecycleStatus",
        lambda r: _code(GOAL_STATUS, r.get("lifecycleStatus")),
    ),
    SearchParameter(
        "achievement-status",
        "token",
        "Goal.achievementStatus",
        lambda r: _codings(r.get("achievementStatus")),
    ),
    SearchParameter("category", "token", "Goal.category", lambda r: _codings(r.get("category"))),
    SearchParameter(
        "start-date", "date", "(Goal.start as date)", lambda r: _dates(r.get("startDate"))
    ),
    SearchParameter(
        "target-date",
        "date",
        "(Goal.target.due as date)",
        lambda r: _dates(*(t.get("dueDate") for t in r.get("target", []))),
    ),
]


def _subject_parameters(resource_type: str) -> list[SearchParameter]:
    """identifier, patient and subject: alike on every type the service publishes."""
    return [
        SearchParameter("identifier", "token", f"{resource_type}.identifier", _identifiers),
        SearchParameter(
            "patient",
            "reference",
            f"{resource_type}.subject.where(resolve() is Patient)",
            _patient,
            target="Patient",
        ),
        SearchParameter(
            "subject",
            "reference",
            f"{resource_type}.subject",
            lambda r: _references(r.get("subject")),
            target="Patient",
        ),
    ]


def _based_on(resource_type: str) -> SearchParameter:
    return SearchParameter(
        "based-on",
        "reference",
        f"{resource_type}.basedOn",
        lambda r: _references(*r.get("basedOn", [])),
        target="CarePlan",
    )


_RESPONSE: list[SearchParameter] = [
    *_subject_parameters("QuestionnaireResponse"),
    _based_on("QuestionnaireResponse"),
    SearchParameter(
        "questionnaire",
        "reference",
        "QuestionnaireResponse.questionnaire",
        lambda r: iter([r["questionnaire"]] if r.get("questionnaire") else []),
        canonical=True,
    ),
    SearchParameter(
        "status",
        "token",
        "QuestionnaireResponse.status",
        lambda r: _code(RESPONSE_STATUS, r.get("status")),
    ),
    SearchParameter(
        "authored", "date", "QuestionnaireResponse.authored", lambda r: _dates(r.get("authored"))
    ),
]

_OBSERVATION: list[SearchParameter] = [
    *_subject_parameters("Observation"),
    _based_on("Observation"),
    SearchParameter(
        "status",
        "token",
        "Observation.status",
        lambda r: _code(OBSERVATION_STATUS, r.get("status")),
    ),
    SearchParameter(
        "category", "token", "Observation.category", lambda r: _codings(r.get("category"))
    ),
    SearchParameter("code", "token", "Observation.code", lambda r: _codings(r.get("code"))),
    SearchParameter(
        "component-code",
        "token",
        "Observation.component.code",
        lambda r: (t for c in r.get("component", []) for t in _codings(c.get("code"))),
    ),
    SearchParameter(
        "date", "date", "Observation.effective", lambda r: _dates(r.get("effectiveDateTime"))
    ),
    SearchParameter(
        "derived-from",
        "reference",
        "Observation.derivedFrom",
        lambda r: _references(*r.get("derivedFrom", [])),
        target="QuestionnaireResponse",
    ),
]

_FLAG: list[SearchParameter] = [
    *_subject_parameters("Flag"),
    SearchParameter("date", "date", "Flag.period", lambda r: _period(r.get("period"))),
    SearchParameter(
        "status", "token", "Flag.status", lambda r: _code(FLAG_STATUS, r.get("status")), custom=True
    ),
    SearchParameter(
        "category", "token", "Flag.category", lambda r: _codings(r.get("category")), custom=True
    ),
    SearchParameter("code", "token", "Flag.code", lambda r: _codings(r.get("code")), custom=True),
]

SEARCH_PARAMETERS: dict[str, dict[str, SearchParameter]] = {
    "CarePlan": {p.name: p for p in _CAREPLAN},
    "Goal": {p.name: p for p in _GOAL},
    "QuestionnaireResponse": {p.name: p for p in _RESPONSE},
    "Observation": {p.name: p for p in _OBSERVATION},
    "Flag": {p.name: p for p in _FLAG},
}

# _include / _revinclude values: (source type, reference parameter).
INCLUDES: dict[str, tuple[str, ...]] = {
    "CarePlan": ("CarePlan:goal", "CarePlan:part-of"),
    "Goal": (),
    "QuestionnaireResponse": ("QuestionnaireResponse:based-on",),
    "Observation": ("Observation:derived-from", "Observation:based-on"),
    "Flag": (),
}
REVINCLUDES: dict[str, tuple[str, ...]] = {
    "CarePlan": (
        "CarePlan:part-of",
        "QuestionnaireResponse:based-on",
        "Observation:based-on",
    ),
    "Goal": ("CarePlan:goal",),
    "QuestionnaireResponse": ("Observation:derived-from",),
    "Observation": (),
    "Flag": (),
}
SORTS = ("_id", "_lastUpdated", "date")


def index_values(resource: dict[str, Any]) -> Iterator[tuple[SearchParameter, Value]]:
    """Every (parameter, value) a resource is found by."""
    for parameter in SEARCH_PARAMETERS.get(resource["resourceType"], {}).values():
        for value in parameter.extract(resource):
            yield parameter, value
