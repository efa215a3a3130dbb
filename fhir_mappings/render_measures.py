"""Administrations of rating scales and safety signals as FHIR R4 resources.

Each live administration publishes a QuestionnaireResponse (its answers) and an Observation
(its total), both with the administration's id; each safety signal publishes a Flag. The
element-by-element mapping is that of docs/fhir-mapping.md; the total Observation follows
US Core's screening and assessment pattern (category survey, the total's LOINC code, the
item answers as components, derived from the QuestionnaireResponse).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.conformance_questionnaires import answer_coding, total_link_id
from fhir_mappings.narrative import flag_narrative, response_narrative, score_narrative
from fhir_mappings.render import (
    SCORE_UNIT,
    coding,
    compact,
    complex_extension,
    concept,
    extension,
    fhir_date,
    fhir_datetime,
    reference,
)
from service import progress
from service.instruments import INSTRUMENTS, LOINC, AdministrationSource, AnsweredBy, Instrument
from service.models import Administration, CarePlan, SafetySignal

SURVEY = "survey"
SURVEY_DISPLAY = "Survey"
CLINICAL_FLAG = "clinical"
CLINICAL_FLAG_DISPLAY = "Clinical"
IMPORTED_NOTE = "Total imported without the item answers."


def instrument_of(administration: Administration) -> Instrument:
    return INSTRUMENTS[administration.instrument]


def _amended(administration: Administration) -> bool:
    """Whether the administration was changed after it was recorded."""
    return (administration.version or 1) > 1


def _provenance(administration: Administration) -> list[dict[str, Any] | None]:
    """Who answered and where the total came from: on the response and the Observation."""
    return [
        extension(t.EXT_ANSWERED_BY, "Code", administration.answered_by),
        extension(t.EXT_SCORE_SOURCE, "Code", administration.source),
    ]


def _answered(administration: Administration) -> Iterable[tuple[Any, Any]]:
    """(item, answer) for every item answered, in the instrument's order."""
    answers = administration.answers or {}
    for item in instrument_of(administration).all_items:
        score = answers.get(item.link_id)
        if score is not None:
            yield item, item.answer(score)


def render_response(plan: CarePlan, administration: Administration) -> dict[str, Any]:
    """The QuestionnaireResponse of an administration: its answers, then the total; a
    total-only administration has no items (its source extension says so)."""
    instrument = instrument_of(administration)
    scored = {item.link_id for item in instrument.items}
    items = [
        {
            "linkId": item.link_id,
            "text": item.text,
            "answer": [{"valueCoding": answer_coding(answer, item.link_id in scored)}],
        }
        for item, answer in _answered(administration)
    ]
    if items:
        items.append(
            {
                "linkId": total_link_id(instrument),
                "text": instrument.total_display,
                "answer": [{"valueInteger": administration.total}],
            }
        )
    resource = {
        "resourceType": "QuestionnaireResponse",
        "id": administration.id,
        "meta": {"profile": [t.RESPONSE_PROFILE]},
        "text": response_narrative(plan, administration),
        "extension": _provenance(administration),
        "basedOn": [reference(f"CarePlan/{plan.id}")],
        "questionnaire": t.questionnaire(instrument),
        "status": "amended" if _amended(administration) else "completed",
        "subject": reference(plan.patient),
        "authored": fhir_date(administration.administered_on),
        "source": (
            reference(plan.patient)
            if administration.answered_by == AnsweredBy.PATIENT
            and (plan.patient or "").startswith("Patient/")
            else None
        ),
        "item": items,
    }
    return dict(compact(resource))


def severity(instrument: Instrument, total: int) -> dict[str, Any]:
    """The severity band of a total as an interpretation."""
    band = instrument.band(total)
    system = t.local(t.severity_system(instrument)).url
    return {"coding": [coding(system, band.code, band.display)], "text": band.display}


def render_score(plan: CarePlan, administration: Administration) -> dict[str, Any]:
    """The total-score Observation of an administration."""
    instrument = instrument_of(administration)
    imported = administration.source == AdministrationSource.TOTAL_ONLY
    notes = []
    if imported:
        notes.append({"text": IMPORTED_NOTE})
    if administration.note:
        notes.append({"text": administration.note})
    resource = {
        "resourceType": "Observation",
        "id": administration.id,
        "meta": {"profile": [t.SCORE_PROFILE]},
        "text": score_narrative(plan, administration),
        "extension": _provenance(administration),
        "basedOn": [reference(f"CarePlan/{plan.id}")],
        "status": "amended" if _amended(administration) else "final",
        "category": [concept(t.OBSERVATION_CATEGORY, SURVEY, SURVEY_DISPLAY)],
        "code": concept(LOINC, instrument.total_code, instrument.total_display),
        "subject": reference(plan.patient),
        "effectiveDateTime": fhir_date(administration.administered_on),
        "valueQuantity": {
            "value": administration.total,
            "unit": SCORE_UNIT,
            "system": t.UCUM,
            "code": SCORE_UNIT,
        },
        "interpretation": [severity(instrument, administration.total)],
        "note": notes,
        "derivedFrom": [reference(f"QuestionnaireResponse/{administration.id}")],
        "component": [
            {
                "code": concept(LOINC, item.code, item.text),
                "valueCodeableConcept": concept(LOINC, answer.code, answer.display),
            }
            for item, answer in _answered(administration)
        ],
    }
    return dict(compact(resource))


def render_flag(plan: CarePlan, signal: SafetySignal) -> dict[str, Any]:
    """The Flag of a safety signal: active while open, inactive once acknowledged."""
    acknowledged = signal.acknowledged_at is not None
    observation = signal.administration_id
    kind = t.SafetySignalKind.SELF_HARM_THOUGHTS
    resource = {
        "resourceType": "Flag",
        "id": signal.id,
        "meta": {"profile": [t.SAFETY_FLAG_PROFILE]},
        "text": flag_narrative(plan, signal, t.SAFETY_SIGNAL_TEXT),
        "extension": [
            extension(t.FLAG_DETAIL, "Reference", reference(f"Observation/{observation}")),
            complex_extension(
                t.EXT_ACKNOWLEDGEMENT,
                [
                    extension("at", "DateTime", fhir_datetime(signal.acknowledged_at)),
                    extension("by", "String", signal.acknowledged_by),
                    extension("action", "String", signal.action_taken),
                ],
            ),
        ],
        "status": "inactive" if acknowledged else "active",
        "category": [concept(t.FLAG_CATEGORY, CLINICAL_FLAG, CLINICAL_FLAG_DISPLAY)],
        "code": {
            "coding": [coding(t.local("ipt-safety-signal").url, kind.value, t.SAFETY_SIGNAL_TEXT)],
            "text": t.SAFETY_SIGNAL_TEXT,
        },
        "subject": reference(plan.patient),
        "period": {
            "start": fhir_date(signal.raised_on),
            "end": fhir_datetime(signal.acknowledged_at),
        },
    }
    return dict(compact(resource))


def latest_scores(administrations: Sequence[Administration]) -> dict[str, str]:
    """The id of the latest live administration of each instrument, by its total's LOINC
    code (what a symptom goal's ``outcomeReference`` points to)."""
    latest: dict[str, str] = {}
    for instrument in INSTRUMENTS.values():
        of_it = [a for a in administrations if a.instrument == instrument.key and not a.is_deleted]
        ordered = progress.in_order(
            progress.Score(a.administered_on, a.session_number, a.created_at, a.id, a.total)
            for a in of_it
        )
        if ordered:
            latest[instrument.total_code] = ordered[-1].id
    return latest
