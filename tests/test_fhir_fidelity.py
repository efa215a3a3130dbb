"""What a FHIR client writes is kept, or the write is refused: never a success with data lost.

``assert_written_or_refused`` is the property: after a create or update, either the
stored resource holds everything the client wrote (apart from what the server owns: id,
meta.versionId and lastUpdated, a narrative it generated, the treatment contract
history) or the write was refused with 422 naming the element and nothing changed. It
runs over tables of valid R4 forms of every element the mapping reads, over forms the
service refuses, and over combinations hypothesis generates.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import requests
from conftest import Client, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fhir_write import (
    new_episode,
    new_goal,
    read,
    returned,
    send,
    unprocessable,
)

from fhir_mappings import terminology as t

Json = dict[str, Any]
# What the server owns in a resource: a client's value is replaced, by FHIR's rules.
SERVER_META = ("versionId", "lastUpdated")


# --- the property ---------------------------------------------------------------------------


def _contains(stored: Any, written: Any) -> bool:
    """Whether ``stored`` holds everything ``written`` says: objects key by key, lists entry
    by entry (each written entry held by its own stored entry, in any order)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            key in stored and _contains(stored[key], value) for key, value in written.items()
        )
    if isinstance(written, list):
        if not isinstance(stored, list):
            return False
        free = list(range(len(stored)))
        for entry in written:
            match = next((i for i in free if _contains(stored[i], entry)), None)
            if match is None:
                return False
            free.remove(match)
        return True
    return bool(stored == written)


def client_part(resource: Json) -> Json:
    """``resource`` without what the server owns."""
    result = copy.deepcopy(resource)
    result.pop("id", None)
    meta = result.get("meta")
    if meta is not None:
        for key in SERVER_META:
            meta.pop(key, None)
        if not meta:
            del result["meta"]
    if (result.get("text") or {}).get("status") == "generated":
        del result["text"]
    extensions = [e for e in result.get("extension", []) if e.get("url") != t.EXT_CONTRACT]
    if extensions:
        result["extension"] = extensions
    else:
        result.pop("extension", None)
    return result


def missing(stored: Json, written: Json) -> list[str]:
    """The top-level elements of ``written`` the stored resource does not hold."""
    wanted = client_part(written)
    return [name for name, value in wanted.items() if not _contains(stored.get(name), value)]


def _state(client: Client, reference: str | None, plan: Json | None) -> Any:
    """What a refused write must leave as it was: the resource and the plan's history."""
    resource = client.get(f"/fhir/{reference}").json() if reference else None
    history = None
    if plan is not None:
        entries = client.get("/fhir/_history", params={"_count": "500"}).json().get("entry", [])
        history = [(e.get("fullUrl"), (e.get("resource") or {}).get("meta")) for e in entries]
        assert history, "the history lists the plan's resources"
    counts = {
        kind: client.get(f"/fhir/{kind}", params={"_summary": "count"}).json()["total"]
        for kind in ("CarePlan", "Goal")
    }
    return resource, history, counts


def assert_written_or_refused(
    client: Client,
    method: str,
    path: str,
    body: Json,
    *,
    expected: int | None = None,
    names: str | None = None,
    plan: Json | None = None,
) -> requests.Response:
    """Send a write; it is either kept in full (2xx) or refused with 422 changing nothing.

    ``expected``: the exact status; ``names``: the element a refusal must name.
    """
    reference = path.removeprefix("/fhir/") if method == "PUT" else None
    before = _state(client, reference, plan)
    response = send(client, method, path, copy.deepcopy(body))
    if expected is not None:
        assert response.status_code == expected, response.text
    if response.status_code in (200, 201):
        answered = returned(response, response.status_code)
        stored = read(client, f"{body['resourceType']}/{answered['id']}")
        assert stored == answered
        assert missing(stored, body) == [], (missing(stored, body), stored)
    else:
        expressions = unprocessable(response)
        if names is not None:
            assert names in expressions, response.text
        assert _state(client, reference, plan) == before
    return response


# --- bodies ---------------------------------------------------------------------------------


def goal_of(client: Client, plan: Json, index: int = 0) -> str:
    return str(client.get(plan_url(plan, "goals")).json()["items"][index]["id"])


def episode_body(client: Client, plan: Json) -> Json:
    body = new_episode(client, plan)
    body.pop("created", None)
    body["extension"] = [e for e in body["extension"] if e["url"] != t.EXT_CONTRACT]
    return body


CONTAINED_GOAL = {
    "resourceType": "Goal",
    "id": "g1",
    "lifecycleStatus": "active",
    "description": {"text": "Sleep through the night"},
    "subject": {"reference": "Patient/123"},
}
CONTAINED_PRACTITIONER = {"resourceType": "Practitioner", "id": "pr1", "name": [{"text": "Dr R"}]}
LOINC_PHQ9 = {"system": t.LOINC, "code": "44261-6"}
SNOMED_DEPRESSION = {"system": t.SNOMED, "code": "35489007", "display": "Depressive disorder"}

# Valid R4 forms of the episode's elements: (name, changes to a read episode).
EPISODE_FORMS: list[tuple[str, Json]] = [
    ("start as dateTime with offset", {"period": {"start": "2026-01-05T09:00:00+01:00"}}),
    ("start in UTC with fraction", {"period": {"start": "2026-01-05T09:00:00.250Z"}}),
    ("start late in the day west", {"period": {"start": "2026-01-05T23:30:00-05:00"}}),
    ("start as a month", {"period": {"start": "2026-01"}}),
    ("start as a year", {"period": {"start": "2026"}}),
    ("period with end month", {"period": {"start": "2026-01-05", "end": "2026-06"}}),
    ("period with id", {"period": {"id": "p", "start": "2026-01-05"}}),
    ("identifier value only", {"identifier": [{"value": "EHR-1"}]}),
    (
        "identifier with use type period assigner",
        {
            "identifier": [
                {
                    "use": "official",
                    "type": {"text": "Care plan number"},
                    "system": "urn:oid:1.2.3",
                    "value": "CP-7",
                    "period": {"start": "2026-01-01"},
                    "assigner": {"display": "St Elsewhere"},
                }
            ]
        },
    ),
    ("subject by absolute URL", {"subject": {"reference": "https://ehr.example.org/Patient/9"}}),
    (
        "subject with display and type",
        {"subject": {"reference": "Patient/123", "type": "Patient", "display": "Jane Doe"}},
    ),
    ("author with display", {"author": {"reference": "Practitioner/7", "display": "Dr Rivera"}}),
    ("author by identifier", {"author": {"identifier": {"system": "urn:npi", "value": "123"}}}),
    ("author display only", {"author": {"display": "Dr Rivera"}}),
    ("author contained", {"author": {"reference": "#pr1"}, "contained": [CONTAINED_PRACTITIONER]}),
    ("addresses by identifier", {"addresses": [{"identifier": {"value": "dx-1"}}]}),
    ("addresses with display", {"addresses": [{"reference": "Condition/4", "display": "MDD"}]}),
    ("category with text", {"category": [{"text": "Psychotherapy"}]}),
    (
        "own category with more codings",
        {
            "category": [
                {
                    "coding": [
                        {"system": t.SNOMED, "code": t.IPT_SNOMED_CODE, "display": "IPT"},
                        {"system": "urn:clinic", "code": "ipt"},
                    ],
                    "text": "Interpersonal psychotherapy",
                }
            ]
        },
    ),
    (
        "note by reference",
        {
            "note": [
                {
                    "authorReference": {"reference": "Practitioner/7", "display": "Dr R"},
                    "text": "Seen.",
                }
            ]
        },
    ),
    (
        "note with time and id",
        {"note": [{"id": "n1", "time": "2026-01-05T10:00:00+01:00", "text": "Seen."}]},
    ),
    ("created by the client", {"created": "2025-12-20T08:00:00+01:00"}),
    ("supportingInfo", {"supportingInfo": [{"reference": "Observation/phq9-1"}]}),
    ("contributor", {"contributor": [{"display": "GP"}]}),
    ("status extension", {"_status": {"extension": [{"url": "urn:x", "valueString": "y"}]}}),
]

# Forms the service cannot keep, each refused naming its element: (name, changes, element).
EPISODE_REFUSALS: list[tuple[str, Json, str]] = [
    (
        "contained goal",
        {"goal": [{"reference": "#g1"}], "contained": [CONTAINED_GOAL]},
        "CarePlan.goal[0]",
    ),
    ("goal by identifier", {"goal": [{"identifier": {"value": "g"}}]}, "CarePlan.goal[0]"),
    (
        "goal elsewhere",
        {"goal": [{"reference": "https://ehr.example.org/Goal/1"}]},
        "CarePlan.goal[0]",
    ),
    ("goal not stored", {"goal": [{"reference": "Goal/nowhere"}]}, "CarePlan.goal[0]"),
    ("contained nothing references", {"contained": [CONTAINED_GOAL]}, "CarePlan.contained[0]"),
    (
        "local reference to nothing",
        {"author": {"reference": "#nobody"}},
        "CarePlan.author.reference",
    ),
    (
        "subject by identifier",
        {"subject": {"identifier": {"value": "MRN-1"}}},
        "CarePlan.subject.reference",
    ),
    (
        "identifier without value",
        {"identifier": [{"system": "urn:x"}]},
        "CarePlan.identifier[0].value",
    ),
    (
        "second condition",
        {"addresses": [{"reference": "Condition/1"}, {"reference": "Condition/2"}]},
        "CarePlan.addresses[1]",
    ),
    (
        "modifier extension",
        {"modifierExtension": [{"url": "urn:x", "valueBoolean": True}]},
        "CarePlan.modifierExtension",
    ),
    (
        "reference type contradicts",
        {"author": {"reference": "Practitioner/7", "type": "Device"}},
        "CarePlan.author.type",
    ),
]


def _changed(body: Json, changes: Json) -> Json:
    result = copy.deepcopy(body)
    for name, value in changes.items():
        if name == "category":
            result["category"] = result.get("category", []) + value
        else:
            result[name] = value
    return result


@pytest.mark.parametrize(("name", "changes"), EPISODE_FORMS, ids=[f[0] for f in EPISODE_FORMS])
def test_every_valid_form_of_an_episode_element_is_kept_on_create_and_update(
    client: Client, plan: Json, name: str, changes: Json
) -> None:
    body = _changed(episode_body(client, plan), changes)
    created = assert_written_or_refused(client, "POST", "/fhir/CarePlan", body, expected=201)
    new_id = created.json()["id"]
    # The same form sent again in an update of a plan whose elements were otherwise written.
    update = {**body, "id": new_id}
    assert_written_or_refused(client, "PUT", f"/fhir/CarePlan/{new_id}", update, expected=200)


@pytest.mark.parametrize(
    ("name", "changes", "element"), EPISODE_REFUSALS, ids=[f[0] for f in EPISODE_REFUSALS]
)
def test_what_an_episode_cannot_keep_is_refused_naming_it_and_nothing_is_stored(
    client: Client, plan: Json, name: str, changes: Json, element: str
) -> None:
    body = _changed(episode_body(client, plan), changes)
    assert_written_or_refused(
        client, "POST", "/fhir/CarePlan", body, expected=422, names=element, plan=plan
    )
    update = {**body, "id": plan["id"]}
    assert_written_or_refused(
        client,
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        update,
        expected=422,
        names=element,
        plan=plan,
    )


def test_the_start_date_is_the_day_written_and_partial_dates_are_widest(
    client: Client, plan: Json
) -> None:
    cases = {
        "2026-01-05T23:30:00-05:00": ("2026-01-05", None),
        "2026-02": ("2026-02-01", None),
    }
    for start, (day, _) in cases.items():
        body = _changed(episode_body(client, plan), {"period": {"start": start, "end": "2026-06"}})
        created = returned(send(client, "POST", "/fhir/CarePlan", body), 201)
        native = client.get(f"/api/v1/care-plans/{created['id']}").json()
        assert (native["start_date"], native["end_date"]) == (day, "2026-06-30")
        assert created["period"] == {"start": start, "end": "2026-06"}


def test_goals_of_the_plan_itself_are_accepted_with_their_display(
    client: Client, plan: Json
) -> None:
    first, second = goal_of(client, plan, 0), goal_of(client, plan, 1)
    body = {**episode_body(client, plan), "id": plan["id"]}
    body["goal"] = [{"reference": f"Goal/{second}", "display": "Grief goal"}]
    stored = returned(send(client, "PUT", f"/fhir/CarePlan/{plan['id']}", body), 200)
    assert {"reference": f"Goal/{second}", "display": "Grief goal"} in stored["goal"]
    # The list stays the plan's: every goal of the plan is listed.
    assert {"reference": f"Goal/{first}"} in stored["goal"]


def test_a_goal_of_another_plan_is_refused(client: Client, plan: Json) -> None:
    other = client.create_plan()
    body = {**episode_body(client, plan), "id": plan["id"]}
    body["goal"] = [
        {"reference": f"Goal/{goal_of(client, plan)}"},
        {"reference": f"Goal/{goal_of(client, other)}"},
    ]
    response = assert_written_or_refused(
        client,
        "PUT",
        f"/fhir/CarePlan/{plan['id']}",
        body,
        expected=422,
        names="CarePlan.goal[1]",
        plan=plan,
    )
    assert "not a goal of this plan" in response.text


def test_a_transaction_creates_an_episode_listing_the_goal_it_creates(
    client: Client, plan: Json
) -> None:
    episode = episode_body(client, plan)
    episode["goal"] = [{"reference": "urn:uuid:1f6b2a2e-0000-4000-8000-000000000002"}]
    goal = new_goal(client, plan)
    goal["extension"] = [
        {
            "url": t.EXT_GOAL_EPISODE,
            "valueReference": {"reference": "urn:uuid:1f6b2a2e-0000-4000-8000-000000000001"},
        }
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:1f6b2a2e-0000-4000-8000-000000000001",
                "resource": episode,
                "request": {"method": "POST", "url": "CarePlan"},
            },
            {
                "fullUrl": "urn:uuid:1f6b2a2e-0000-4000-8000-000000000002",
                "resource": goal,
                "request": {"method": "POST", "url": "Goal"},
            },
        ],
    }
    answer = returned(send(client, "POST", "/fhir", bundle), 200)
    episode_ref, goal_ref = (
        e["response"]["location"].split("/_history")[0] for e in answer["entry"]
    )
    stored = read(client, episode_ref.split("/fhir/")[-1])
    assert stored["goal"] == [{"reference": goal_ref.split("/fhir/")[-1]}]


# --- identifiers without a system -----------------------------------------------------------


def test_an_identifier_without_a_system_is_unique_searchable_and_shown_natively(
    client: Client, plan: Json
) -> None:
    body = _changed(episode_body(client, plan), {"identifier": [{"value": "EHR-77"}]})
    created = returned(send(client, "POST", "/fhir/CarePlan", body), 201)
    assert created["identifier"] == [{"value": "EHR-77"}]
    native = client.get(f"/api/v1/care-plans/{created['id']}").json()
    assert native["identifiers"] == [{"value": "EHR-77"}]
    for token in ("|EHR-77", "EHR-77"):
        found = client.get("/fhir/CarePlan", params={"identifier": token}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
    listed = client.get("/api/v1/care-plans", params={"identifier": "|EHR-77"}).json()
    assert [p["id"] for p in listed["items"]] == [created["id"]]
    # Another plan cannot take it; one with a system of the same value can.
    again = send(client, "POST", "/fhir/CarePlan", body)
    assert again.status_code == 409, again.text
    with_system = _changed(body, {"identifier": [{"system": "urn:x", "value": "EHR-77"}]})
    returned(send(client, "POST", "/fhir/CarePlan", with_system), 201)
    # A conditional create on the value without a system finds the first plan.
    conditional = send(
        client, "POST", "/fhir/CarePlan", body, **{"If-None-Exist": "identifier=|EHR-77"}
    )
    assert conditional.status_code == 200, conditional.text


def test_the_native_api_takes_an_identifier_without_a_system(client: Client) -> None:
    plan = client.create_plan(identifiers=[{"value": "N-1"}])
    assert plan["identifiers"] == [{"value": "N-1"}]
    assert read(client, f"CarePlan/{plan['id']}")["identifier"] == [{"value": "N-1"}]


# --- generated combinations ------------------------------------------------------------------

_SERIAL = itertools.count()
_EPISODE_ELEMENTS = st.fixed_dictionaries(
    {},
    optional={
        "period": st.builds(
            lambda start, end: {"start": start, **({"end": end} if end else {})},
            st.sampled_from(
                [
                    "2026-01-05",
                    "2026-01-05T09:00:00+01:00",
                    "2026-01",
                    "2026-01-05T00:00:00Z",
                    "2026",
                ]
            ),
            st.sampled_from([None, "2026-12-31", "2026-12", "2026-12-31T18:00:00-08:00"]),
        ),
        "identifier": st.lists(
            st.builds(
                lambda value, system, use: {
                    **({"use": use} if use else {}),
                    **({"system": system} if system else {}),
                    "value": value,
                },
                st.sampled_from(["A-1", "B-2", "C-3"]),
                st.sampled_from([None, "urn:x", "https://ehr.example.org/ids"]),
                st.sampled_from([None, "official", "secondary"]),
            ),
            min_size=1,
            max_size=2,
            unique_by=lambda i: (i.get("system"), i["value"]),
        ),
        "author": st.sampled_from(
            [
                {"reference": "Practitioner/1"},
                {"reference": "PractitionerRole/2", "display": "IPT therapist"},
                {"identifier": {"value": "npi-1"}},
                {"reference": "https://ehr.example.org/Practitioner/3"},
                {"reference": "#c1"},
                {"reference": "Goal/1"},
            ]
        ),
        "addresses": st.sampled_from(
            [
                [{"reference": "Condition/1"}],
                [{"display": "Major depression"}],
                [{"reference": "#c1"}],
            ]
        ),
        "goal": st.sampled_from(
            [
                [{"reference": "#c1"}],
                [{"reference": "Goal/unknown"}],
                [{"display": "a goal"}],
            ]
        ),
        "note": st.lists(
            st.sampled_from(
                [
                    {"text": "Seen."},
                    {"text": "Seen.", "time": "2026-01-05"},
                    {"text": "Seen.", "authorReference": {"display": "Dr R"}},
                ]
            ),
            min_size=1,
            max_size=2,
        ),
        "contained": st.just([{**CONTAINED_PRACTITIONER, "id": "c1"}]),
        "description": st.sampled_from(["Grief after her mother's death.", "x" * 300]),
    },
)


@pytest.mark.slow
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=_EPISODE_ELEMENTS)
def test_any_episode_a_client_writes_is_kept_or_refused(
    client: Client, plan: Json, changes: Json
) -> None:
    body = episode_body(client, plan)
    body.update(copy.deepcopy(changes))
    for identifier in body.get("identifier", []):
        # Unique across examples: a taken identifier is another matter (409).
        identifier["value"] += f"-{next(_SERIAL)}"
    response = assert_written_or_refused(client, "POST", "/fhir/CarePlan", body, plan=plan)
    assert response.status_code in (201, 422), response.text
