"""What a FHIR client writes in a Goal or a phase CarePlan is kept, or refused naming it.

The property and its helpers are those of test_fhir_fidelity.py.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Client, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fhir_fidelity import (
    CONTAINED_GOAL,
    CONTAINED_PRACTITIONER,
    LOINC_PHQ9,
    SNOMED_DEPRESSION,
    assert_written_or_refused,
)
from test_fhir_write import (
    homework_activity,
    new_goal,
    phase_ids,
    read,
    session_activity,
)

from fhir_mappings import terminology as t

Json = dict[str, Any]
_SERIAL = itertools.count()

# --- goals ----------------------------------------------------------------------------------

GOAL_FORMS: list[tuple[str, Json]] = [
    ("start as a month", {"startDate": "2026-02"}),
    ("description with coding", {"description": {"text": "Sleep", "coding": [SNOMED_DEPRESSION]}}),
    ("description by display", {"description": {"coding": [SNOMED_DEPRESSION]}}),
    ("priority text only", {"priority": {"text": "urgent"}}),
    (
        "priority more codings",
        {
            "priority": {
                "coding": [
                    {"system": t.GOAL_PRIORITY, "code": "high-priority"},
                    {"system": "urn:x", "code": "1"},
                ]
            }
        },
    ),
    ("achievement text only", {"achievementStatus": {"text": "getting there"}}),
    (
        "target with forms",
        {
            "target": [
                {
                    "measure": {
                        "coding": [LOINC_PHQ9, {"system": "urn:x", "code": "phq"}],
                        "text": "PHQ-9",
                    },
                    "detailQuantity": {
                        "value": 5,
                        "comparator": "<",
                        "unit": "points",
                        "system": t.UCUM,
                        "code": "{score}",
                    },
                    "dueDate": "2026-04",
                }
            ]
        },
    ),
    (
        "note by reference",
        {"note": [{"authorReference": {"reference": "Practitioner/1"}, "text": "Agreed."}]},
    ),
    ("addresses", {"addresses": [{"reference": "Condition/4"}]}),
    ("outcome", {"outcomeReference": [{"reference": "Observation/1"}]}),
    ("expressedBy", {"expressedBy": {"reference": "Patient/123"}}),
    ("identifier value only", {"identifier": [{"value": "G-1"}]}),
    ("subject with display", {"subject": {"reference": "Patient/123", "display": "Jane"}}),
]
GOAL_REFUSALS: list[tuple[str, Json, str]] = [
    (
        "start as a concept",
        {"startDate": None, "startCodeableConcept": {"text": "at discharge"}},
        "Goal.startCodeableConcept",
    ),
    (
        "target range",
        {"target": [{"detailRange": {"low": {"value": 1}}}]},
        "Goal.target[0].detailRange",
    ),
    (
        "two targets",
        {"target": [{"dueDate": "2026-04-01"}, {"dueDate": "2026-05-01"}]},
        "Goal.target[1]",
    ),
    (
        "two priorities",
        {
            "priority": {
                "coding": [
                    {"system": t.GOAL_PRIORITY, "code": "high-priority"},
                    {"system": t.GOAL_PRIORITY, "code": "low-priority"},
                ]
            }
        },
        "Goal.priority.coding[1]",
    ),
    ("contained nothing references", {"contained": [CONTAINED_PRACTITIONER]}, "Goal.contained[0]"),
    (
        "description without words",
        {"description": {"coding": [{"system": t.SNOMED, "code": "1"}]}},
        "Goal.description.text",
    ),
]


def _goal_changed(body: Json, changes: Json) -> Json:
    result = copy.deepcopy(body)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


@pytest.mark.parametrize(("name", "changes"), GOAL_FORMS, ids=[f[0] for f in GOAL_FORMS])
def test_every_valid_form_of_a_goal_element_is_kept(
    client: Client, plan: Json, name: str, changes: Json
) -> None:
    body = _goal_changed(new_goal(client, plan), changes)
    created = assert_written_or_refused(client, "POST", "/fhir/Goal", body, expected=201)
    goal_id = created.json()["id"]
    update = {**_goal_changed(new_goal(client, plan), changes), "id": goal_id}
    assert_written_or_refused(client, "PUT", f"/fhir/Goal/{goal_id}", update, expected=200)


@pytest.mark.parametrize(
    ("name", "changes", "element"), GOAL_REFUSALS, ids=[f[0] for f in GOAL_REFUSALS]
)
def test_what_a_goal_cannot_keep_is_refused_naming_it(
    client: Client, plan: Json, name: str, changes: Json, element: str
) -> None:
    body = _goal_changed(new_goal(client, plan), changes)
    assert_written_or_refused(
        client, "POST", "/fhir/Goal", body, expected=422, names=element, plan=plan
    )


# --- phases ---------------------------------------------------------------------------------


def _phase(client: Client, plan: Json) -> tuple[str, Json]:
    reference = f"CarePlan/{phase_ids(plan)['initial']}"
    return f"/fhir/{reference}", read(client, reference)


PHASE_FORMS: list[tuple[str, Callable[[Json, Json], None]]] = [
    (
        "session at a time",
        lambda p, _: p.__setitem__(
            "activity",
            [
                {
                    **session_activity(1, "2026-01-05"),
                    "detail": {
                        **session_activity(1, "2026-01-05")["detail"],
                        "scheduledPeriod": {
                            "start": "2026-01-05T10:00:00+01:00",
                            "end": "2026-01-05T10:50:00+01:00",
                        },
                        "location": {"display": "Room 4"},
                    },
                }
            ],
        ),
    ),
    (
        "session with a progress note by someone",
        lambda p, _: p.__setitem__(
            "activity",
            [
                {
                    **session_activity(1, "2026-01-05"),
                    "progress": [
                        {
                            "text": "Inventory begun.",
                            "authorString": "Dr R",
                            "time": "2026-01-05T11:00:00+01:00",
                        }
                    ],
                }
            ],
        ),
    ),
    (
        "homework with a display and a reason",
        lambda p, plan: p.__setitem__(
            "activity",
            [
                {
                    "detail": {
                        **homework_activity("Patient/123", "Call her sister.")["detail"],
                        "performer": [{"reference": "Patient/123", "display": "Jane"}],
                        "reasonCode": [{"text": "isolation"}],
                    }
                }
            ],
        ),
    ),
    (
        "description and note",
        lambda p, _: p.update(description="Inventory", note=[{"text": "On track."}]),
    ),
    (
        "partOf with display",
        lambda p, _: p.__setitem__("partOf", [{**p["partOf"][0], "display": "The episode"}]),
    ),
]


@pytest.mark.parametrize(("name", "change"), PHASE_FORMS, ids=[f[0] for f in PHASE_FORMS])
def test_every_valid_form_of_a_phase_element_is_kept(
    client: Client, plan: Json, name: str, change: Callable[[Json, Json], None]
) -> None:
    path, phase = _phase(client, plan)
    body = {k: v for k, v in phase.items() if k not in ("meta", "text")}
    change(body, plan)
    assert_written_or_refused(client, "PUT", path, body, expected=200)


def test_a_phase_keeps_its_own_goals_written_with_a_display(client: Client, plan: Json) -> None:
    reference = f"CarePlan/{phase_ids(plan)['middle']}"
    middle = read(client, reference)
    assert middle["goal"]
    body = {k: v for k, v in middle.items() if k not in ("meta", "text")}
    body["goal"] = [{**middle["goal"][0], "display": "the first goal"}]
    assert_written_or_refused(client, "PUT", f"/fhir/{reference}", body, expected=200)


def test_a_phase_refuses_a_goal_of_another_phase(client: Client, plan: Json) -> None:
    path, phase = _phase(client, plan)
    middle = read(client, f"CarePlan/{phase_ids(plan)['middle']}")
    body = {k: v for k, v in phase.items() if k not in ("meta", "text")}
    body["goal"] = [*phase.get("goal", []), *middle["goal"][:1]]
    assert middle["goal"]
    assert_written_or_refused(
        client,
        "PUT",
        path,
        body,
        expected=422,
        names=f"CarePlan.goal[{len(phase.get('goal', []))}]",
        plan=plan,
    )


def _session_with(**detail: Any) -> Json:
    activity = session_activity(1, "2026-01-05")
    activity["detail"].update(detail)
    return activity


PHASE_REFUSALS: list[tuple[str, Json, str]] = [
    (
        "activity by reference",
        {"activity": [{"reference": {"reference": "ServiceRequest/1"}}]},
        "CarePlan.activity[0].detail",
    ),
    (
        "prohibited session",
        {"activity": [_session_with(doNotPerform=True)]},
        "CarePlan.activity[0].detail.doNotPerform",
    ),
    (
        "modifier on an activity",
        {
            "activity": [
                {
                    **session_activity(1, "2026-01-05"),
                    "modifierExtension": [{"url": "urn:x", "valueBoolean": True}],
                }
            ]
        },
        "CarePlan.activity[0].modifierExtension",
    ),
    (
        "session over two days",
        {
            "activity": [
                _session_with(
                    scheduledPeriod={
                        "start": "2026-01-05T22:00:00+01:00",
                        "end": "2026-01-06T01:00:00+01:00",
                    }
                )
            ]
        },
        "CarePlan.activity[0].detail.scheduledPeriod.end",
    ),
    (
        "contained goal",
        {"goal": [{"reference": "#g1"}], "contained": [CONTAINED_GOAL]},
        "CarePlan.goal[0]",
    ),
    (
        "partOf by identifier",
        {"partOf": [{"identifier": {"value": "ep-1"}}]},
        "CarePlan.partOf[0].reference",
    ),
]


@pytest.mark.parametrize(
    ("name", "changes", "element"), PHASE_REFUSALS, ids=[f[0] for f in PHASE_REFUSALS]
)
def test_what_a_phase_cannot_keep_is_refused_naming_it(
    client: Client, plan: Json, name: str, changes: Json, element: str
) -> None:
    path, phase = _phase(client, plan)
    body = {**{k: v for k, v in phase.items() if k not in ("meta", "text")}, **changes}
    assert_written_or_refused(client, "PUT", path, body, expected=422, names=element, plan=plan)
    assert client.get(plan_url(plan, "sessions")).json()["items"] == []


_GOAL_ELEMENTS = st.fixed_dictionaries(
    {},
    optional={
        "startDate": st.sampled_from(["2026-01-05", "2026-02", "2026"]),
        "priority": st.sampled_from(
            [
                {"text": "high"},
                {"coding": [{"system": t.GOAL_PRIORITY, "code": "low-priority"}], "text": "low"},
                {"coding": [{"system": "urn:x", "code": "p1"}]},
            ]
        ),
        "achievementStatus": st.sampled_from(
            [
                {
                    "coding": [
                        {
                            "system": t.GOAL_ACHIEVEMENT,
                            "code": "improving",
                            "display": "Getting better",
                        }
                    ]
                },
                {"text": "unclear"},
            ]
        ),
        "target": st.builds(
            lambda measure, due, quantity: [
                {
                    k: v
                    for k, v in {
                        "measure": measure,
                        "dueDate": due,
                        "detailQuantity": quantity,
                    }.items()
                    if v
                }
            ],
            st.sampled_from(
                [None, {"coding": [LOINC_PHQ9]}, {"text": "PHQ-9", "coding": [LOINC_PHQ9]}]
            ),
            st.sampled_from([None, "2026-04-30", "2026-04"]),
            st.sampled_from(
                [
                    None,
                    {"value": 5, "comparator": "<"},
                    {"value": 4.5, "unit": "score", "system": t.UCUM, "code": "{score}"},
                ]
            ),
        ).filter(lambda target: bool(target[0])),
        "note": st.sampled_from(
            [
                [{"text": "Agreed.", "time": "2026-01-05T10:00:00Z"}],
                [{"text": "Agreed.", "authorReference": {"display": "Dr R"}}],
            ]
        ),
        "subject": st.sampled_from(
            [
                {"reference": "Patient/123", "display": "Jane"},
                {"reference": "Patient/999"},
                {"identifier": {"value": "MRN-1"}},
            ]
        ),
        "outcomeReference": st.just([{"reference": "Observation/o1"}]),
        "identifier": st.just([{"value": "goal-id"}]),
    },
)


@pytest.mark.slow
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=_GOAL_ELEMENTS)
def test_any_goal_a_client_writes_is_kept_or_refused(
    client: Client, plan: Json, changes: Json
) -> None:
    body = {**new_goal(client, plan), **copy.deepcopy(changes)}
    for identifier in body.get("identifier", []):
        identifier["value"] += f"-{next(_SERIAL)}"
    response = assert_written_or_refused(client, "POST", "/fhir/Goal", body, plan=plan)
    assert response.status_code in (201, 422), response.text
