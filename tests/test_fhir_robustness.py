"""No input makes the FHIR interface fail with a 500: every refusal is an OperationOutcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Client

ODD_BODIES: list[Any] = [
    [],
    "CarePlan",
    12,
    None,
    {},
    {"resourceType": "CarePlan"},
    {"resourceType": "CarePlan", "status": ["active"], "intent": {"a": 1}},
    {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "extension": [{"url": 5}],
    },
    {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "period": {"start": "not a date"},
    },
    {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [{"detail": {"status": "x"}}] * 3,
    },
    {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "x"},
        "subject": {"reference": "Patient/1"},
        "target": [{"detailQuantity": {"value": 1e308}}],
    },
    {"resourceType": "CarePlan", "id": "../../etc", "status": "active"},
    {
        "resourceType": "CarePlan",
        "text": {"status": "generated", "div": "<div><script>alert(1)</script></div>"},
    },
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=lambda b: json.dumps(b)[:40])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_odd_bodies_are_refused_with_an_operation_outcome(
    client: Client, plan: dict, body: Any, method: str
) -> None:
    resource_type = body.get("resourceType", "CarePlan") if isinstance(body, dict) else "CarePlan"
    if resource_type not in ("CarePlan", "Goal"):
        resource_type = "CarePlan"
    path = f"/fhir/{resource_type}" + (f"/{plan['id']}" if method == "PUT" else "")
    response = client.request(
        method, path, data=json.dumps(body), headers={"Content-Type": "application/fhir+json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/CarePlan?date=ge",
        "/fhir/CarePlan?date=2026-13-45",
        "/fhir/CarePlan?_lastUpdated=gtnonsense",
        "/fhir/CarePlan?patient=",
        "/fhir/CarePlan?_count=99999999999999999999",
        "/fhir/CarePlan?status:missing=1",
        "/fhir/Goal?target-date=eq2026-02-30",
        "/fhir/_history?_at=2026-99",
        "/fhir/CarePlan/x/_history/abc",
        "/fhir/CarePlan?_sort=-",
        "/fhir/CarePlan?_include=CarePlan",
    ],
)
def test_odd_queries_are_refused_or_answered_never_failing(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code < 500, response.text
    assert response.json()["resourceType"] in ("OperationOutcome", "Bundle")
