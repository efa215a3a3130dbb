"""A QuestionnaireResponse or a total Observation an EHR writes, read as an administration.

The answers are read by the instrument's declarations (service/instruments.py): an item by
its link id or its LOINC code, an answer by its LOINC answer code (LA…), by the score its
``ordinalValue`` extension carries, or by the score itself (``valueInteger``). The
QuestionnaireResponse names its instrument by the canonical of its Questionnaire (or the
LOINC panel at the end of it); the Observation by the LOINC code of the total. The care
plan is the ``basedOn`` CarePlan, or else found by the caller from the patient and date.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.narrative import is_generated
from fhir_mappings.parse_common import MappingError, Problems
from fhir_mappings.parse_extras import read_meta
from fhir_mappings.render_measures import IMPORTED_NOTE
from fhir_mappings.search_parameters import normalise_reference
from service.instruments import (
    BY_PANEL_CODE,
    BY_TOTAL_CODE,
    INSTRUMENTS,
    LOINC,
    AnsweredBy,
    Instrument,
    Item,
)

# Elements the mapping reads or renders; any other is kept as the client wrote it.
_SHARED = {"resourceType", "id", "meta", "text", "extension", "basedOn", "status", "subject"}
OWNED = {
    "QuestionnaireResponse": _SHARED | {"questionnaire", "authored", "source", "item"},
    "Observation": _SHARED
    | {
        "category",
        "code",
        "effectiveDateTime",
        "valueQuantity",
        "valueInteger",
        "interpretation",
        "note",
        "derivedFrom",
        "component",
    },
}
PROFILES = {"QuestionnaireResponse": t.RESPONSE_PROFILE, "Observation": t.SCORE_PROFILE}
_OWN_EXTENSIONS = {t.EXT_ANSWERED_BY, t.EXT_SCORE_SOURCE}
_ANSWERED_BY = {
    "Patient": AnsweredBy.PATIENT,
    "RelatedPerson": AnsweredBy.CARER,
    "Practitioner": AnsweredBy.CLINICIAN,
    "PractitionerRole": AnsweredBy.CLINICIAN,
}


@dataclass
class ReadScore:
    """An administration as a written resource gives it."""

    patient: str | None
    plan_id: str | None  # from basedOn; None: the patient's plan of that date
    administered_on: date | None
    data: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def _loinc(codings: Any) -> Iterator[str]:
    for concept in codings if isinstance(codings, list) else [codings]:
        for coding in (
            (concept or {}).get("coding", []) if "coding" in (concept or {}) else [concept]
        ):
            if isinstance(coding, Mapping) and coding.get("system") == LOINC and coding.get("code"):
                yield str(coding["code"])


def _ordinal(coding: Mapping[str, Any]) -> int | None:
    for ext in coding.get("extension", []):
        if ext.get("url") == t.ORDINAL_VALUE and "valueDecimal" in ext:
            return int(ext["valueDecimal"])
    return None


def _score(problems: Problems, path: str, item: Item, value: Mapping[str, Any]) -> int | None:
    """The score of one answer to ``item``."""
    scores = {a.code: a.score for a in item.answers}
    listed = ", ".join(f"{a.code} ({a.display})" for a in item.answers)
    coding = value.get("valueCoding")
    if coding is None and "valueCodeableConcept" in value:
        coding = next(iter(value["valueCodeableConcept"].get("coding", [])), None)
    if coding is not None:
        if coding.get("code") in scores:
            return scores[coding["code"]]
        ordinal = _ordinal(coding)
        if ordinal is not None and ordinal in scores.values():
            return ordinal
        problems.add(path, f"{coding.get('code')!r} is not an answer to {item.link_id}: {listed}")
        return None
    number = value.get("valueInteger", value.get("valueDecimal"))
    if isinstance(number, int | float) and int(number) == number and number in scores.values():
        return int(number)
    problems.add(path, f"an answer to {item.link_id} is one of {listed} (or its score)")
    return None


def _when(problems: Problems, path: str, value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        problems.add(path, "the date the scale was taken is required (YYYY-MM-DD)")
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        problems.add(path, f"{value!r} is not a date")
        return None


def _plan(problems: Problems, path: str, based_on: Any) -> str | None:
    plans = [normalise_reference(r.get("reference", "")) for r in based_on or []]
    episodes = [r.split("/", 1)[1] for r in plans if r.startswith("CarePlan/")]
    if len(episodes) > 1:
        problems.add(path, "names one care plan (the episode CarePlan)")
    return episodes[0] if episodes else None


def _answered_by(resource: Mapping[str, Any], author: Any) -> str:
    for ext in resource.get("extension", []):
        if ext.get("url") == t.EXT_ANSWERED_BY and ext.get("valueCode"):
            return str(ext["valueCode"])
    reference = normalise_reference((author or {}).get("reference", ""))
    return _ANSWERED_BY.get(reference.split("/", 1)[0], AnsweredBy.PATIENT)


def _extras(problems: Problems, resource: Mapping[str, Any]) -> dict[str, Any]:
    resource_type = str(resource["resourceType"])
    extras = {k: v for k, v in resource.items() if k not in OWNED[resource_type]}
    others = [e for e in resource.get("extension", []) if e.get("url") not in _OWN_EXTENSIONS]
    if others:
        extras["extension"] = others
    meta = read_meta(problems, resource_type, resource.get("meta"), PROFILES[resource_type])
    if meta:
        extras["meta"] = meta
    text = resource.get("text")
    if text is not None and not is_generated(text):
        extras["text"] = text
    return extras


def _instrument_of_response(problems: Problems, canonical: Any) -> Instrument | None:
    url = str(canonical or "").split("|", 1)[0].rstrip("/")
    tail = url.rsplit("/", 1)[-1]
    found = INSTRUMENTS.get(tail) if url == f"{t.CANONICAL_BASE}/Questionnaire/{tail}" else None
    found = found or BY_PANEL_CODE.get(tail)
    if found is None:
        known = ", ".join(t.questionnaire(i) for i in INSTRUMENTS.values())
        problems.add("QuestionnaireResponse.questionnaire", f"{canonical!r} is not one of {known}")
    return found


def _flat(items: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for index, item in enumerate(items or []):
        here = f"{path}[{index}]"
        yield here, item
        yield from _flat(item.get("item"), f"{here}.item")
        for a_index, answer in enumerate(item.get("answer", [])):
            yield from _flat(answer.get("item"), f"{here}.answer[{a_index}].item")


def _item(instrument: Instrument, link_id: Any, codes: list[str]) -> Item | None:
    found = instrument.item(str(link_id))
    if found is None:
        found = next((i for i in instrument.all_items if i.code in codes), None)
    return found


def response_from_fhir(resource: Mapping[str, Any]) -> ReadScore:
    """Read a QuestionnaireResponse (already checked as FHIR R4)."""
    problems = Problems()
    path = "QuestionnaireResponse"
    instrument = _instrument_of_response(problems, resource.get("questionnaire"))
    read = ReadScore(
        patient=(resource.get("subject") or {}).get("reference"),
        plan_id=_plan(problems, f"{path}.basedOn", resource.get("basedOn")),
        administered_on=_when(problems, f"{path}.authored", resource.get("authored")),
        extras=_extras(problems, resource),
    )
    if resource.get("status") not in ("completed", "amended"):
        problems.add(f"{path}.status", "a scale's answers are recorded once completed (or amended)")
    if instrument is None:
        problems.raise_if_any()
        raise AssertionError("unreachable")
    answers: dict[str, int] = {}
    total = None
    total_link = f"{instrument.key}-total"
    for here, item in _flat(resource.get("item"), f"{path}.item"):
        codes = list(_loinc(item.get("code", []))) if "code" in item else []
        values = item.get("answer", [])
        if item.get("linkId") == total_link or instrument.total_code in codes:
            number = next((a.get("valueInteger") for a in values), None)
            total = number if isinstance(number, int) else None
            continue
        declared = _item(instrument, item.get("linkId"), codes)
        if declared is None:
            if values:
                problems.add(
                    f"{here}.linkId", f"the {instrument.name} has no item {item.get('linkId')!r}"
                )
            continue
        if len(values) != 1:
            if values:
                problems.add(f"{here}.answer", "an item of the scale takes one answer")
            continue
        score = _score(problems, f"{here}.answer[0]", declared, values[0])
        if score is not None:
            answers[declared.link_id] = score
    problems.raise_if_any()
    read.data = {
        "instrument": instrument.key,
        "administered_on": read.administered_on,
        "answered_by": _answered_by(resource, resource.get("source")),
    }
    if answers:
        read.data.update(answers=answers, total=total)
    return read


def score_from_fhir(resource: Mapping[str, Any]) -> ReadScore:
    """Read a total Observation (already checked as FHIR R4): a total-only administration,
    or one with its answers when the components give every scored item."""
    problems = Problems()
    path = "Observation"
    codes = list(_loinc(resource.get("code")))
    instrument = next((BY_TOTAL_CODE[c] for c in codes if c in BY_TOTAL_CODE), None)
    if instrument is None:
        totals = ", ".join(f"{i.total_code} ({i.total_display})" for i in INSTRUMENTS.values())
        problems.add(f"{path}.code", f"the LOINC code of a total this server keeps: {totals}")
    read = ReadScore(
        patient=(resource.get("subject") or {}).get("reference"),
        plan_id=_plan(problems, f"{path}.basedOn", resource.get("basedOn")),
        administered_on=_when(
            problems, f"{path}.effectiveDateTime", resource.get("effectiveDateTime")
        ),
        extras=_extras(problems, resource),
    )
    if resource.get("status") not in ("final", "amended", "corrected"):
        problems.add(f"{path}.status", "a total is recorded final (or amended, corrected)")
    quantity = resource.get("valueQuantity") or {}
    total = resource.get("valueInteger", quantity.get("value"))
    if not isinstance(total, int | float) or int(total) != total:
        problems.add(
            f"{path}.value[x]", "the total is a whole number (valueQuantity or valueInteger)"
        )
    if instrument is None:
        problems.raise_if_any()
        raise AssertionError("unreachable")
    answers: dict[str, int] = {}
    for index, component in enumerate(resource.get("component", [])):
        here = f"{path}.component[{index}]"
        declared = _item(instrument, None, list(_loinc(component.get("code"))))
        if declared is None:
            problems.add(f"{here}.code", f"not an item of the {instrument.name}")
            continue
        score = _score(problems, f"{here}.value[x]", declared, component)
        if score is not None:
            answers[declared.link_id] = score
    problems.raise_if_any()
    notes = [n.get("text") for n in resource.get("note", []) if n.get("text") != IMPORTED_NOTE]
    read.data = {
        "instrument": instrument.key,
        "administered_on": read.administered_on,
        "answered_by": _answered_by(resource, next(iter(resource.get("performer", [])), None)),
        "answers": answers or None,
        "total": int(total) if isinstance(total, int | float) else None,
        "note": "\n".join(n for n in notes if n) or None,
    }
    return read


def read_score(resource: Mapping[str, Any]) -> ReadScore:
    if resource.get("resourceType") == "QuestionnaireResponse":
        return response_from_fhir(resource)
    if resource.get("resourceType") == "Observation":
        return score_from_fhir(resource)
    raise MappingError([(str(resource.get("resourceType")), "not a score this server keeps")])
