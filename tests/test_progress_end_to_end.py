"""The progress rules end to end: courses of scores recorded through the API give the
plan's symptom goals the achievement status service/progress.py gives the same totals."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from conftest import Client, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import progress
from service.instruments import GAD7, INSTRUMENTS, PHQ9, Instrument

START = date(2026, 1, 5)


def answers_for(instrument: Instrument, total: int) -> dict[str, int]:
    """Answers to the scored items adding up to ``total`` (item 9 kept at 0)."""
    scored = [i for i in instrument.items if i.link_id != instrument.safety_item]
    result = {i.link_id: 0 for i in instrument.items}
    left = total
    for item in scored:
        result[item.link_id] = min(item.max_score, left)
        left -= result[item.link_id]
    assert left == 0
    return result


def record(client: Client, plan: dict, instrument: Instrument, day: int, total: int) -> None:
    body: dict[str, Any] = {
        "instrument": instrument.key,
        "administered_on": (START + timedelta(days=day)).isoformat(),
    }
    # Odd totals as item answers, even ones imported alone: both count the same.
    # (PHQ-9 without item 9 reaches 24; higher totals are imported.)
    if total % 2 and total <= instrument.max_score - 3:
        body["answers"] = answers_for(instrument, total)
    else:
        body["total"] = total
    response = client.post(plan_url(plan, "administrations"), json=body)
    assert response.status_code == 201, response.text


def goal_status(client: Client, plan: dict, goal_id: str) -> str:
    return str(client.get(plan_url(plan, "goals", goal_id)).json()["achievement_status"])


def add_goal(
    client: Client, plan: dict, instrument: Instrument, comparator: str | None, value: int
) -> str:
    target: dict[str, Any] = {"measure": instrument.total_code, "value": value}
    if comparator is not None:
        target["comparator"] = comparator
    response = client.post(
        plan_url(plan, "goals"),
        json={"kind": "symptom", "description": "Symptoms down.", "target": target},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# (totals in the order taken, the status of the template goal: PHQ-9 below 5)
TABLE = [
    ([], "in-progress"),
    ([18], "in-progress"),
    ([4], "achieved"),
    ([18, 13], "improving"),  # 5 points: the minimal important change
    ([18, 14], "no-change"),
    ([10, 15], "worsening"),
    ([10, 14], "no-change"),
    ([18, 4], "achieved"),
    ([18, 4, 3], "sustaining"),
    ([18, 4, 9], "improving"),
    ([18, 4, 16], "no-change"),
    ([0, 0], "sustaining"),
    ([12, 17, 20], "worsening"),
]


@pytest.mark.parametrize(("totals", "expected"), TABLE)
def test_the_template_symptom_goal_follows_the_phq9_course(
    client: Client, totals: list[int], expected: str
) -> None:
    plan = client.create_plan()
    goal = next(
        g for g in client.get(plan_url(plan, "goals")).json()["items"] if g["kind"] == "symptom"
    )
    for day, total in enumerate(totals):
        record(client, plan, PHQ9, day, total)
    assert goal_status(client, plan, goal["id"]) == expected
    assert progress.achievement(PHQ9, totals, "<", 5) == expected


course = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, PHQ9.max_score)), min_size=1, max_size=6
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    key=st.sampled_from(sorted(INSTRUMENTS)),
    scores=course,
    comparator=st.sampled_from([None, "<", "<=", ">=", ">"]),
    value=st.integers(0, 21),
)
def test_any_course_of_scores_gives_the_goal_the_status_of_the_rules(
    client: Client,
    key: str,
    scores: list[tuple[int, int]],
    comparator: str | None,
    value: int,
) -> None:
    instrument = INSTRUMENTS[key]
    plan = client.create_plan(default_goals=False)
    goal_id = add_goal(client, plan, instrument, comparator, value)
    # Gaps of 0 days put two scores on one date: they count in the order recorded.
    day = 0
    taken = []
    for gap, total in scores:
        day += gap
        total = min(total, instrument.max_score)
        record(client, plan, instrument, day, total)
        taken.append(total)
        expected = progress.achievement(instrument, taken, comparator, Decimal(value))
        assert goal_status(client, plan, goal_id) == expected, taken


def test_a_goal_on_the_other_instrument_ignores_these_scores(client: Client) -> None:
    plan = client.create_plan(default_goals=False)
    anxiety = add_goal(client, plan, GAD7, "<", 5)
    for day, total in enumerate((20, 3, 2)):
        record(client, plan, PHQ9, day, total)
    goal = client.get(plan_url(plan, "goals", anxiety)).json()
    assert (goal["achievement_status"], goal["version"]) == (None, 1)


def test_a_goal_set_after_scores_starts_where_they_stand(client: Client) -> None:
    plan = client.create_plan(default_goals=False)
    for day, total in enumerate((20, 12)):
        record(client, plan, PHQ9, day, total)
    goal_id = add_goal(client, plan, PHQ9, "<", 5)
    goal = client.get(plan_url(plan, "goals", goal_id)).json()
    assert (goal["achievement_status"], goal["achievement_source"]) == ("improving", "rules")
    assert goal["version"] == 1
    # A new target is judged on the same scores; a status given by hand is the clinician's.
    moved = client.patch(
        plan_url(plan, "goals", goal_id),
        json={"target": {"measure": PHQ9.total_code, "comparator": "<=", "value": 12}},
    ).json()
    assert (moved["achievement_status"], moved["version"]) == ("achieved", 2)
    given = client.post(
        plan_url(plan, "goals"),
        json={
            "kind": "symptom",
            "description": "Below 10.",
            "achievement_status": "no-change",
            "target": {"measure": PHQ9.total_code, "comparator": "<", "value": 10},
        },
    ).json()
    assert (given["achievement_status"], given["achievement_source"]) == (
        "no-change",
        "clinician",
    )
