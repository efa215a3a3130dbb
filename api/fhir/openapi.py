"""The FHIR routes in the OpenAPI document: FHIR JSON schemas as components, with examples
rendered by the same mapping the server uses, and each route's responses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from apispec import APISpec

from fhir_mappings.render import render_episode, render_goal, render_phase
from service.models import CarePlan, Contract, Goal, Phase, TherapySession

FHIR_JSON = "application/fhir+json"
_SPEC = "http://hl7.org/fhir/R4"
_AGREED = datetime(2026, 1, 5, 9, 12, 44, tzinfo=UTC)


def _example_plan() -> tuple[CarePlan, Phase, TherapySession, Goal]:
    plan = CarePlan(
        id="019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61",
        patient="Patient/123",
        status="active",
        variant="standard",
        planned_sessions=12,
        session_frequency="weekly",
        start_date=date(2026, 1, 5),
        end_date=None,
        primary_problem_area="grief",
        secondary_problem_area=None,
        dispute_stage=None,
        condition="Condition/mdd-1",
        therapist="Practitioner/42",
        formulation="Low mood since her father died in March.",
        relapse_prevention=None,
        notes=[],
        created_at=_AGREED,
    )
    plan.identifiers = []
    plan.contracts = [
        Contract(
            sequence=1,
            planned_sessions=12,
            session_frequency="weekly",
            reason=None,
            agreed_at=_AGREED,
            agreed_by="dr.rivera",
        )
    ]
    phase = Phase(
        id="019bfe4c-5b2b-7000-8a11-6f4b9c2d1e01",
        code="initial",
        start_session=1,
        end_session=3,
        status="active",
        start_date=date(2026, 1, 5),
        end_date=None,
        description=None,
    )
    plan.phases = [phase]
    session = TherapySession(
        id="019bfe4c-6c10-7000-9e2f-0a1b2c3d4e5f",
        number=1,
        date=date(2026, 1, 5),
        status="attended",
        phq9_total=17,
        techniques=["interpersonal-inventory", "psychoeducation"],
        note="Sick role given; inventory started.",
    )
    goal = Goal(
        id="019bfe4c-5b2c-7000-b3c4-d5e6f7a8b9c0",
        plan_id=plan.id,
        kind="symptom",
        problem_area=None,
        lifecycle_status="active",
        achievement_status="in-progress",
        priority="high-priority",
        start_date=date(2026, 1, 5),
        description="Remission: PHQ-9 total score below 5 by the end of the course.",
        target_measure="44261-6",
        target_comparator="<",
        target_value=Decimal(5),
        target_due_date=date(2026, 3, 23),
        phase=None,
        notes=[],
    )
    return plan, phase, session, goal


def _examples() -> dict[str, dict[str, Any]]:
    plan, phase, session, goal = _example_plan()
    meta = {"versionId": "1", "lastUpdated": "2026-01-05T09:12:44.000Z"}

    def versioned(resource: dict[str, Any]) -> dict[str, Any]:
        return {**resource, "meta": {**meta, **resource.get("meta", {})}}

    return {
        "episode": versioned(render_episode(plan, [goal])),
        "phase": versioned(render_phase(plan, phase, [session], [], [])),
        "goal": versioned(render_goal(plan, goal)),
    }


def register_components(spec: APISpec) -> None:
    """FHIR JSON schemas, by reference to the specification, with examples."""
    examples = _examples()
    schemas: dict[str, tuple[str, list[dict[str, Any]] | None]] = {
        "FhirCarePlan": (
            f"A FHIR R4 CarePlan ({_SPEC}/careplan.html): an IPT episode or one of its phases",
            [examples["episode"], examples["phase"]],
        ),
        "FhirGoal": (f"A FHIR R4 Goal ({_SPEC}/goal.html)", [examples["goal"]]),
        "FhirBundle": (
            f"A FHIR R4 Bundle ({_SPEC}/bundle.html): searchset, history, batch or transaction",
            None,
        ),
        "OperationOutcome": (
            f"A FHIR R4 OperationOutcome ({_SPEC}/operationoutcome.html): every FHIR error",
            [
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": "not-found",
                            "diagnostics": "CarePlan/x does not exist",
                        }
                    ],
                }
            ],
        ),
        "FhirSubscription": (
            f"A FHIR R4 Subscription ({_SPEC}/subscription.html) with the Subscriptions R5 "
            "Backport profile: a topic, its filters and a rest-hook channel",
            [_SUBSCRIPTION_EXAMPLE],
        ),
        "FhirResource": (f"A FHIR R4 resource ({_SPEC}/resourcelist.html)", None),
        "FhirCapabilityStatement": (
            f"A FHIR R4 CapabilityStatement ({_SPEC}/capabilitystatement.html)",
            None,
        ),
    }
    for name, (description, example) in schemas.items():
        schema: dict[str, Any] = {
            "type": "object",
            "description": description,
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}},
            "additionalProperties": True,
        }
        if example is not None:
            schema["examples"] = example
        spec.components.schema(name, schema)


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
_SUBSCRIPTION_EXAMPLE = {
    "resourceType": "Subscription",
    "meta": {"profile": [f"{_BACKPORT}/backport-subscription"]},
    "status": "requested",
    "reason": "Follow the goals of Patient/123",
    "criteria": "https://ipt-careplans.org/fhir/SubscriptionTopic/goal",
    "_criteria": {
        "extension": [
            {
                "url": f"{_BACKPORT}/backport-filter-criteria",
                "valueString": "Goal?patient=Patient/123",
            }
        ]
    },
    "channel": {
        "type": "rest-hook",
        "endpoint": "https://receiver.example.org/notifications",
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": f"{_BACKPORT}/backport-payload-content", "valueCode": "id-only"}]
        },
        "header": ["Authorization: Bearer receiver-secret"],
        "extension": [{"url": f"{_BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 300}],
    },
}


def _content(schema: str) -> dict[str, Any]:
    return {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


_ERRORS = {
    401: "No valid bearer token (see WWW-Authenticate)",
    403: "The token's scopes do not allow this; the OperationOutcome names the scope needed",
    400: "Malformed request, body or parameter",
    404: "No such resource, or a type this server does not serve",
    406: "Only FHIR JSON is produced",
    409: "Conflicts with stored data (a duplicate identifier)",
    410: "Deleted",
    412: "If-Match names an outdated version, or a conditional request matches several",
    413: "The body is larger than the service accepts (whatever its framing)",
    415: "The body is not application/fhir+json (or json-patch+json for PATCH), or names "
    "another FHIR version (fhirVersion) or charset",
    422: "Valid FHIR that cannot be represented as an IPT care plan (or is not a subscription "
    "this service takes), or breaks a rule",
}


_PATCH_SCHEMA = {
    "type": "array",
    "description": "A JSON Patch (RFC 6902), applied to the current version",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {
                "type": "string",
                "enum": ["add", "remove", "replace", "move", "copy", "test"],
            },
            "path": {"type": "string"},
            "from": {"type": "string"},
            "value": {},
        },
    },
    "examples": [[{"op": "replace", "path": "/status", "value": "on-hold"}]],
}


def request_body(*schemas: str, patch: bool = False) -> dict[str, Any]:
    """The ``requestBody`` of a FHIR write: one of these resource schemas, as FHIR JSON
    (``application/json`` is read the same way), or a JSON Patch."""
    if patch:
        return {
            "required": True,
            "content": {"application/json-patch+json": {"schema": _PATCH_SCHEMA}},
        }
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schemas]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {
        "required": True,
        "content": {FHIR_JSON: {"schema": schema}, "application/json": {"schema": schema}},
    }


def responses(
    success: dict[int, tuple[str, str | None]], *errors: int, public: bool = False
) -> dict[str, Any]:
    """The ``responses`` of a FHIR route: success bodies by schema name, OperationOutcomes
    (with 400 and 406, and 401 and 403 unless the route is ``public``)."""
    documented: dict[str, Any] = {}
    for status, (description, schema) in success.items():
        documented[str(status)] = {"description": description}
        if schema:
            documented[str(status)]["content"] = _content(schema)
    # Every FHIR request goes through content negotiation (406) and the request gate (400).
    for status in dict.fromkeys((*errors, 400, 406, *(() if public else (401, 403)))):
        documented[str(status)] = {
            "description": _ERRORS[status],
            "content": _content("OperationOutcome"),
        }
    return documented
