"""The mapping of administrations and safety signals, as pure functions, over any answers:
every rendering is valid FHIR R4 for two validators, and reading it back gives the
administration it was rendered from."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import fhirkit
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings import terminology as t
from fhir_mappings.parse import validate_structure
from fhir_mappings.parse_measures import response_from_fhir, score_from_fhir
from fhir_mappings.render_measures import render_flag, render_response, render_score
from service.instruments import INSTRUMENTS, AdministrationSource, AnsweredBy, Instrument
from service.models import Administration, CarePlan, SafetySignal

PLAN = CarePlan(id="plan-1", patient="Patient/123", start_date=date(2026, 1, 5))


def assert_valid(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    validate_structure(resource, resource["resourceType"])
    errors = [(i.path, i.message) for i in fhirkit.validate(resource) if i.severity == "error"]
    assert errors == []


# Text as a clinician types it: no control characters (FHIR strings and XHTML exclude them).
NOTES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20).filter(
    str.strip
)


@st.composite
def administrations(draw: st.DrawFn) -> Administration:
    instrument: Instrument = draw(st.sampled_from(list(INSTRUMENTS.values())))
    total_only = draw(st.booleans())
    answers: dict[str, int] | None = None
    if total_only:
        total = draw(st.integers(instrument.min_score, instrument.max_score))
    else:
        answers = {item.link_id: draw(st.integers(0, item.max_score)) for item in instrument.items}
        if instrument.difficulty is not None and draw(st.booleans()):
            answers[instrument.difficulty.link_id] = draw(st.integers(0, 3))
        total = instrument.total(answers)
    return Administration(
        id="adm-1",
        plan_id=PLAN.id,
        instrument=instrument.key,
        administered_on=draw(st.dates(date(2026, 1, 5), date(2026, 12, 1))),
        session_number=None,
        answered_by=draw(st.sampled_from(list(AnsweredBy))).value,
        source=(AdministrationSource.TOTAL_ONLY if total_only else AdministrationSource.ITEMS),
        answers=answers,
        total=total,
        note=draw(st.none() | NOTES),
        version=draw(st.integers(1, 3)),
        created_at=datetime(2026, 1, 5, tzinfo=UTC),
    )


@settings(max_examples=60, deadline=None)
@given(administrations())
def test_every_administration_renders_valid_resources_that_read_back(
    administration: Administration,
) -> None:
    instrument = INSTRUMENTS[administration.instrument]
    response = render_response(PLAN, administration)
    score = render_score(PLAN, administration)
    assert_valid(response)
    assert_valid(score)

    read = response_from_fhir(response)
    assert read.patient == PLAN.patient and read.plan_id == PLAN.id
    assert read.data["administered_on"] == administration.administered_on
    assert read.data["answered_by"] == administration.answered_by
    assert read.data.get("answers") == administration.answers
    assert read.extras == {}

    from_score = score_from_fhir(score)
    assert from_score.data["total"] == administration.total
    assert from_score.data["answers"] == administration.answers
    assert from_score.data["note"] == administration.note
    assert (
        score["interpretation"][0]["coding"][0]["code"]
        == instrument.band(administration.total).code
    )
    assert score["status"] == ("final" if administration.version == 1 else "amended")


@settings(max_examples=30, deadline=None)
@given(
    raised=st.dates(date(2026, 1, 5), date(2026, 12, 1)),
    acknowledged=st.none()
    | st.datetimes(datetime(2026, 1, 5), datetime(2026, 12, 2), timezones=st.just(UTC)),
    score=st.integers(1, 3),
)
def test_every_safety_signal_renders_a_valid_flag(
    raised: date, acknowledged: datetime | None, score: int
) -> None:
    signal = SafetySignal(
        id="signal-1",
        plan_id=PLAN.id,
        administration_id="adm-1",
        instrument="phq-9",
        item="phq-9-9",
        score=score,
        raised_on=raised,
        status="acknowledged" if acknowledged else "open",
        acknowledged_at=acknowledged,
        acknowledged_by="clinician-1" if acknowledged else None,
        action_taken="Safety plan reviewed" if acknowledged else None,
    )
    flag = render_flag(PLAN, signal)
    assert_valid(flag)
    assert flag["status"] == ("inactive" if acknowledged else "active")
    assert ("end" in flag["period"]) == (acknowledged is not None)
    assert flag["code"]["coding"][0]["system"] == t.local("ipt-safety-signal").url
