"""The Questionnaire of every rating scale the service records (PHQ-9, GAD-7).

Generated from the declarations of ``service.instruments``: the LOINC panel as the
Questionnaire's code, one choice item per question with its LOINC code and the LOINC
answers (LA codes), each scored answer carrying its score in HL7's ``ordinalValue``
extension; the functional difficulty item, answered but never scored; and the total, a
read-only integer item computed from the others.
"""

from __future__ import annotations

from typing import Any

from fhir_mappings import terminology
from fhir_mappings.conformance_terminology import canonical, narrative
from service.instruments import INSTRUMENTS, LOINC, AnswerOption, Instrument, Item


def total_link_id(instrument: Instrument) -> str:
    """The link id of the total item: ``phq-9-total``."""
    return f"{instrument.key}-total"


def answer_coding(answer: AnswerOption, scored: bool = True) -> dict[str, Any]:
    """The LOINC coding of an answer; a scored one carries its score (``ordinalValue``)."""
    coding: dict[str, Any] = {"system": LOINC, "code": answer.code, "display": answer.display}
    if scored:
        coding["extension"] = [{"url": terminology.ORDINAL_VALUE, "valueDecimal": answer.score}]
    return coding


def _item(item: Item, scored: bool) -> dict[str, Any]:
    return {
        "linkId": item.link_id,
        "code": [{"system": LOINC, "code": item.code, "display": item.text}],
        "text": item.text,
        "type": "choice",
        "required": scored,
        "answerOption": [{"valueCoding": answer_coding(a, scored)} for a in item.answers],
    }


def _total_item(instrument: Instrument) -> dict[str, Any]:
    return {
        "linkId": total_link_id(instrument),
        "code": [
            {"system": LOINC, "code": instrument.total_code, "display": instrument.total_display}
        ],
        "text": f"{instrument.total_display} ({instrument.min_score}-{instrument.max_score}): "
        "the sum of the scores of the scored items",
        "type": "integer",
        "readOnly": True,
    }


def questionnaire(instrument: Instrument) -> dict[str, Any]:
    """The Questionnaire of one instrument."""
    description = (
        f"The {instrument.title}: {len(instrument.items)} items scored 0 to "
        f"{max(i.max_score for i in instrument.items)}, a total of {instrument.min_score} to "
        f"{instrument.max_score}. The difficulty item is answered but not scored."
    )
    bands = ", ".join(f"{b.display} {b.low}-{b.high}" for b in instrument.bands)
    text = narrative(
        instrument.title,
        description,
        f"Severity of the total: {bands}.",
        table=[(item.link_id, item.text) for item in instrument.all_items],
    )
    items = [_item(item, scored=True) for item in instrument.items]
    if instrument.difficulty is not None:
        items.append(_item(instrument.difficulty, scored=False))
    items.append(_total_item(instrument))
    url = terminology.questionnaire(instrument)
    return {
        **canonical("Questionnaire", instrument.key, url, instrument.title, description, text),
        "subjectType": ["Patient"],
        "code": [{"system": LOINC, "code": instrument.panel_code, "display": instrument.title}],
        "item": items,
    }


def questionnaires() -> list[dict[str, Any]]:
    """One Questionnaire per instrument, in the order ``service.instruments`` declares them."""
    return [questionnaire(instrument) for instrument in INSTRUMENTS.values()]
