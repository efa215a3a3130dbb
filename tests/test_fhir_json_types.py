"""FHIR primitives hold their JSON type, in every resource type this server takes writes of.

A valid resource of each writable type (CarePlan, Goal, QuestionnaireResponse, Observation,
Subscription) has one primitive element replaced by a value of another JSON type: a number
or true where text belongs, text where a number or a boolean belongs, an object or an array
where any primitive belongs. Create and update are then refused (400 or 422) with an
OperationOutcome naming the element, and nothing is stored.

The right JSON type of an element is read from the valid body itself (the FHIR JSON of a
string, date, code or uri is text; of an integer or decimal a number; of a boolean true or
false), not from the server's own tables.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Client, count_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fhir_measures import written_response, written_total

from fhir_mappings.topics import TOPICS
from service.db import Database

FHIR_JSON = {"Content-Type": "application/fhir+json"}
# Where a write of any of the types would leave a trace.
TABLES = (
    "care_plans",
    "goals",
    "administrations",
    "stored_resources",
    "resource_versions",
    "subscriptions",
)
# Elements a client sends back as it read them but the server owns.
SERVER_OWNED = ("meta", "text")

Path = tuple[str | int, ...]


def primitives(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every primitive below ``value`` with its path (resourceType aside)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not path and key == "resourceType":
                continue
            yield from primitives(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from primitives(item, (*path, index))
    elif value is not None:
        yield path, value


def expression(resource_type: str, path: Path) -> str:
    text = resource_type
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def replaced(body: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    holder: Any = changed
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return changed


def wrong_values(right: Any) -> st.SearchStrategy[Any]:
    """Values of a JSON type other than that of ``right`` (a valid primitive)."""
    structures = st.sampled_from([{"value": "x"}, ["x"], [right], {}, []])
    if isinstance(right, bool):
        return st.one_of(st.sampled_from(["true", "false", 1, 0, 1.5]), structures)
    if isinstance(right, int | float):
        return st.one_of(
            st.sampled_from([str(right), "1", True, False]),
            st.text(max_size=5),
            structures,
        )
    return st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        structures,
    )


def writable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in SERVER_OWNED}


def subscription_body() -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "follow the goals",
        "criteria": TOPICS[0].url,
        "end": "2030-01-01T00:00:00Z",
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://93.184.216.34/notifications",
            "payload": "application/fhir+json",
            "header": ["X-Tenant: one"],
        },
    }


def stored(client: Client, resource_type: str) -> dict[str, Any]:
    """A resource of ``resource_type`` the server holds, as a client sends it back."""
    plan = client.create_plan()
    patient = plan["patient"]
    if resource_type == "CarePlan":
        path = f"/fhir/CarePlan/{plan['id']}"
    elif resource_type == "Goal":
        goals = client.get(f"/api/v1/care-plans/{plan['id']}/goals").json()["items"]
        path = f"/fhir/Goal/{goals[0]['id']}"
    else:
        body = {
            "QuestionnaireResponse": lambda: written_response(patient, "2026-01-19", [1] * 9),
            "Observation": lambda: written_total(patient, "2026-01-20T09:00:00Z", 11),
            "Subscription": subscription_body,
        }[resource_type]()
        created = client.post(f"/fhir/{resource_type}", data=json.dumps(body), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        path = f"/fhir/{resource_type}/{created.json()['id']}"
    read = client.get(path)
    assert read.status_code == 200, read.text
    return writable(read.json())


def snapshot(database: Database) -> dict[str, int]:
    return {table: count_rows(database, table) for table in TABLES}


def assert_refused_naming(response: Any, element: str) -> None:
    assert response.status_code in (400, 422), (element, response.status_code, response.text)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", response.text
    named = [
        text
        for issue in outcome["issue"]
        for text in [*issue.get("expression", []), issue.get("diagnostics", "")]
    ]
    assert any(element in text for text in named), (element, response.text)


@pytest.mark.slow
@pytest.mark.parametrize(
    "resource_type", ["CarePlan", "Goal", "QuestionnaireResponse", "Observation", "Subscription"]
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_primitive_of_the_wrong_json_type_is_refused_naming_it_and_nothing_is_stored(
    client: Client, database: Database, resource_type: str, data: st.DataObject
) -> None:
    # A client is registered afresh for each test: its id keys the test's resources.
    resources = _STORED.setdefault(str(client.client_id), {})
    if resource_type not in resources:
        resources[resource_type] = stored(client, resource_type)
    body = resources[resource_type]
    # The id of an update is the URL's: the elements of the resource itself are tried.
    candidates = [(path, value) for path, value in primitives(body) if path != ("id",)]
    path, right = data.draw(st.sampled_from(candidates), label="element")
    wrong = data.draw(wrong_values(right), label="value")
    changed = replaced(body, path, wrong)
    element = expression(resource_type, path)
    before = snapshot(database)
    version = client.get(f"/fhir/{resource_type}/{body['id']}").json()["meta"]["versionId"]

    created = client.post(
        f"/fhir/{resource_type}",
        data=json.dumps({k: v for k, v in changed.items() if k != "id"}),
        headers=FHIR_JSON,
    )
    assert_refused_naming(created, element)
    updated = client.request(
        "PUT",
        f"/fhir/{resource_type}/{body['id']}",
        data=json.dumps(changed),
        headers={**FHIR_JSON, "If-Match": f'W/"{version}"'},
    )
    assert_refused_naming(updated, element)

    assert snapshot(database) == before
    after = client.get(f"/fhir/{resource_type}/{body['id']}").json()
    assert after["meta"]["versionId"] == version


# The stored resource of each type, made once per test (the tables are emptied between tests).
_STORED: dict[str, dict[str, dict[str, Any]]] = {}
