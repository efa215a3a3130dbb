"""The rules that judge a course of scores, and the instrument declarations they read."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import progress
from service.codes import MEASURES, GoalAchievement
from service.instruments import GAD7, INSTRUMENTS, PHQ9, Instrument

A = GoalAchievement

# course of PHQ-9 totals (in order), target "< 5" -> achievement, response, remission
PHQ9_COURSES = [
    ([], A.IN_PROGRESS, None, None),
    ([18], A.IN_PROGRESS, False, False),
    ([4], A.ACHIEVED, False, True),
    ([18, 14], A.NO_CHANGE, False, False),
    ([18, 13], A.IMPROVING, False, False),
    ([18, 9], A.IMPROVING, True, False),
    ([18, 4], A.ACHIEVED, True, True),
    ([18, 4, 3], A.SUSTAINING, True, True),
    ([18, 4, 6], A.IMPROVING, True, False),
    ([18, 4, 16], A.NO_CHANGE, False, False),
    ([10, 15], A.WORSENING, False, False),
    ([10, 14], A.NO_CHANGE, False, False),
    ([8, 12, 3, 2], A.SUSTAINING, True, True),
    ([0, 0], A.SUSTAINING, False, True),  # a baseline of 0 cannot respond
    ([27, 23], A.NO_CHANGE, False, False),
    ([27, 22], A.IMPROVING, False, False),
    ([20, 10], A.IMPROVING, True, False),  # exactly half the baseline is a response
    ([20, 11], A.IMPROVING, False, False),
]


@pytest.mark.parametrize(("totals", "status", "response", "remission"), PHQ9_COURSES)
def test_a_phq9_course_is_judged_by_the_documented_rules(
    totals: list[int], status: A, response: bool | None, remission: bool | None
) -> None:
    assert progress.achievement(PHQ9, totals, "<", 5) == status
    judged = progress.outcome(PHQ9, totals)
    if not totals:
        assert judged is None
        return
    assert judged is not None
    assert (judged.response, judged.remission) == (response, remission)
    assert judged.change == totals[-1] - totals[0]
    assert judged.band == PHQ9.band(totals[-1])


@pytest.mark.parametrize(
    ("comparator", "value", "total", "met"),
    [
        ("<", 5, 4, True),
        ("<", 5, 5, False),
        ("<=", 5, 5, True),
        ("<=", Decimal("4.5"), 5, False),
        (">=", 10, 10, True),
        (">", 10, 10, False),
        (None, 7, 7, True),
        (None, 7, 6, False),
    ],
)
def test_a_target_is_met_as_its_comparator_says(
    comparator: str | None, value: Decimal | int, total: int, met: bool
) -> None:
    assert progress.meets(total, comparator, value) is met


def test_gad7_uses_its_own_minimal_important_change() -> None:
    assert progress.achievement(GAD7, [15, 11], "<", 5) == A.IMPROVING
    assert progress.achievement(PHQ9, [15, 11], "<", 5) == A.NO_CHANGE


totals_of = st.sampled_from(list(INSTRUMENTS.values())).flatmap(
    lambda i: st.tuples(
        st.just(i), st.lists(st.integers(i.min_score, i.max_score), min_size=1, max_size=40)
    )
)


@given(totals_of, st.sampled_from(["<", "<=", ">", ">=", None]), st.integers(0, 27))
def test_every_course_gets_exactly_one_status_and_only_met_targets_are_achieved(
    course: tuple[Instrument, list[int]], comparator: str | None, value: int
) -> None:
    instrument, totals = course
    status = progress.achievement(instrument, totals, comparator, value)
    met = progress.meets(totals[-1], comparator, value)
    assert (status in {A.ACHIEVED, A.SUSTAINING}) is met
    if status == A.SUSTAINING:
        assert progress.meets(totals[-2], comparator, value)
    if not met and len(totals) > 1:
        gain = totals[0] - totals[-1]
        mic = instrument.minimal_important_change
        expected = A.IMPROVING if gain >= mic else A.WORSENING if -gain >= mic else A.NO_CHANGE
        assert status == expected


@given(totals_of)
def test_remission_and_response_follow_the_latest_score(
    course: tuple[Instrument, list[int]],
) -> None:
    instrument, totals = course
    judged = progress.outcome(instrument, totals)
    assert judged is not None
    assert judged.remission is (totals[-1] < 5)
    assert judged.response is (totals[0] > 0 and 2 * totals[-1] <= totals[0])
    assert judged.band.low <= totals[-1] <= judged.band.high


def test_the_instruments_carry_the_loinc_codes_of_the_published_forms() -> None:
    assert PHQ9.panel_code == "44249-1" and PHQ9.total_code == "44261-6"
    assert [i.code for i in PHQ9.items] == [
        "44250-9",
        "44255-8",
        "44259-0",
        "44254-1",
        "44251-7",
        "44258-2",
        "44252-5",
        "44253-3",
        "44260-8",
    ]
    assert PHQ9.difficulty is not None and PHQ9.difficulty.code == "69722-7"
    assert [(a.code, a.score) for a in PHQ9.items[0].answers] == [
        ("LA6568-5", 0),
        ("LA6569-3", 1),
        ("LA6570-1", 2),
        ("LA6571-9", 3),
    ]
    assert (PHQ9.min_score, PHQ9.max_score) == (0, 27)
    assert (GAD7.panel_code, GAD7.total_code, GAD7.max_score) == ("69737-5", "70274-6", 21)
    assert [b.code for b in PHQ9.bands] == [
        "none",
        "mild",
        "moderate",
        "moderately-severe",
        "severe",
    ]
    # The goal measures are the instruments' totals (plus scales only a target may name).
    for instrument in INSTRUMENTS.values():
        measure = MEASURES[instrument.total_code]
        assert (measure.min_score, measure.max_score) == (0, instrument.max_score)


@pytest.mark.parametrize("total", range(28))
def test_each_phq9_total_falls_in_its_published_band(total: int) -> None:
    expected = (
        "none"
        if total <= 4
        else "mild"
        if total <= 9
        else "moderate"
        if total <= 14
        else "moderately-severe"
        if total <= 19
        else "severe"
    )
    assert PHQ9.band(total).code == expected
