"""GET /fhir/metadata: the CapabilityStatement, built from what the routes actually serve."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app

from api.fhir.http import json_response
from api.fhir.openapi import responses
from api.fhir.resources import CONFORMANCE_SEARCH, WRITABLE_TYPES
from api.fhir.search_clauses import chain_targets, reverse_chains
from api.http import ApiBlueprint
from fhir_mappings import terminology
from fhir_mappings.audit_event import SEARCH_PARAMETERS as AUDIT_SEARCH_PARAMETERS
from fhir_mappings.conformance import all_resources
from fhir_mappings.search_parameters import INCLUDES, REVINCLUDES, SEARCH_PARAMETERS
from fhir_mappings.topics import TOPICS

# The interactions each resource type supports: kept beside the routes that serve them.
PLAN_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
# A Flag is published from the plan's safety signal: read-only.
PUBLISHED_INTERACTIONS = ["read", "vread", "history-instance", "history-type", "search-type"]
CONFORMANCE_INTERACTIONS = ["read", "search-type"]
# The audit trail is read-only: the server alone writes it.
AUDIT_INTERACTIONS = ["read", "search-type"]
PROFILES = {
    "CarePlan": [terminology.EPISODE_PROFILE, terminology.PHASE_PROFILE],
    "Goal": [terminology.GOAL_PROFILE],
    "QuestionnaireResponse": [terminology.RESPONSE_PROFILE],
    "Observation": [terminology.SCORE_PROFILE],
    "Flag": [terminology.SAFETY_FLAG_PROFILE],
}
_DOCUMENTATION = {
    "QuestionnaireResponse": "The answers of each administration of a rating scale (PHQ-9, "
    "GAD-7) recorded in a care plan; its id is the administration's. A written one (answers "
    "by LOINC answer code or score) is recorded in its basedOn CarePlan, or the patient's "
    "plan whose period holds the date authored.",
    "Observation": "The total score of each administration of a rating scale, with its "
    "severity band and the item answers as components (survey category); derived from the "
    "QuestionnaireResponse of the same id. A written total without components is recorded "
    "as a total imported alone.",
    "Flag": "A safety signal raised by an answer (PHQ-9 item 9 above 0): active until a "
    "clinician acknowledges it, then inactive with period.end.",
}
SOFTWARE_VERSION = "1.0.0"
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
# The export operations: (name, OperationDefinition canonical, where it is invoked).
EXPORT_OPERATIONS = (
    ("export", f"{BULK_DATA}/OperationDefinition/export", "system"),
    ("export", f"{BULK_DATA}/OperationDefinition/patient-export", "Patient"),
)
_EXPORT_DOCUMENTATION = (
    "Bulk data export (Bulk Data Access IG v2), asynchronous (Prefer: respond-async): "
    "_outputFormat (application/fhir+ndjson), _type, _since and _typeFilter; other "
    "parameters are refused unless Prefer: handling=lenient. Needs the read scope of every "
    "type exported (system/*.rs). Files are downloaded with the same token."
)

blp = ApiBlueprint(
    "fhir-metadata",
    __name__,
    url_prefix="/fhir",
    description="The server's CapabilityStatement and conformance resources.",
)


def _documentation(resource_type: str, name: str, expression: str) -> str:
    """Where a parameter is indexed from; for a reference, the chains it takes."""
    text = f"Indexed from {expression}"
    target = chain_targets(resource_type).get(name)
    if target is not None:
        chained = ", ".join(["_id", "_lastUpdated", *SEARCH_PARAMETERS[target]])
        text += (
            f". Chains one link to the {target} it refers to: {name}.<parameter> "
            f"(or {name}:{target}.<parameter>) with any of {chained}; "
            f"e.g. {name}.{_example(target)}"
        )
    return text


def _example(resource_type: str) -> str:
    return {"CarePlan": "status=active", "Goal": "lifecycle-status=active"}.get(
        resource_type, "_id=1"
    )


def _reverse_chains(resource_type: str) -> list[dict[str, str]]:
    chains = reverse_chains(resource_type)
    if not chains:
        return []
    forms = ", ".join(f"_has:{source}:{param}:<parameter>" for source, param in chains)
    return [
        {
            "name": "_has",
            "type": "special",
            "documentation": f"Reverse chaining, one link deep: {forms}",
        }
    ]


_CUSTOM = " (a parameter of this server, not one FHIR defines)"
# Parameters FHIR R4 defines once for several types (clinical-…).
_SHARED_DEFINITIONS = {
    ("Observation", "code"),
    ("Observation", "date"),
    ("Flag", "date"),
}


# Parameters the type defines for itself where most types share FHIR's clinical-… one.
_OWN_DEFINITIONS = {
    ("QuestionnaireResponse", "patient"),
    ("QuestionnaireResponse", "identifier"),
    ("Flag", "identifier"),
}


def _definition(resource_type: str, name: str) -> str:
    if (resource_type, name) in _OWN_DEFINITIONS:
        return f"http://hl7.org/fhir/SearchParameter/{resource_type}-{name}"
    if name in ("patient", "identifier") or (resource_type, name) in _SHARED_DEFINITIONS:
        return f"http://hl7.org/fhir/SearchParameter/clinical-{name}"
    return f"http://hl7.org/fhir/SearchParameter/{resource_type}-{name}"


def _search_params(resource_type: str) -> list[dict[str, str]]:
    common = [
        {
            "name": "_id",
            "type": "token",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        },
        {
            "name": "_lastUpdated",
            "type": "date",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        },
    ]
    return (
        common
        + [
            {
                "name": parameter.name,
                "definition": _definition(resource_type, parameter.name),
                "type": parameter.type,
                "documentation": _documentation(resource_type, parameter.name, parameter.expression)
                + (_CUSTOM if parameter.custom else ""),
            }
            for parameter in SEARCH_PARAMETERS[resource_type].values()
        ]
        + _reverse_chains(resource_type)
    )


def _audit_event() -> dict[str, Any]:
    search_params = []
    for name, (param_type, definition, documentation) in AUDIT_SEARCH_PARAMETERS.items():
        param = {"name": name, "type": param_type, "documentation": documentation}
        if definition:
            param["definition"] = definition
        search_params.append(param)
    return {
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "The audit trail: one record per request that touched patient data. "
        "Read-only, for holders of system/AuditEvent.rs; newest first.",
        "interaction": [{"code": code} for code in AUDIT_INTERACTIONS],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": search_params,
    }


def _patient() -> dict[str, Any]:
    """Patient: no resource of its own here, the compartment its records are exported by."""
    return {
        "type": "Patient",
        "documentation": "No Patient resources are served: the patient-level export "
        "operations export the records of every patient (Patient/$export) or one "
        "(Patient/{id}/$export).",
        "operation": [
            {"name": name, "definition": definition, "documentation": _EXPORT_DOCUMENTATION}
            for name, definition, level in EXPORT_OPERATIONS
            if level == "Patient"
        ],
    }


def _security() -> dict[str, Any]:
    """SMART on FHIR, with the token endpoint of this server."""
    settings = current_app.extensions["ipt_settings"]
    return {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": settings.token_endpoint}],
            }
        ],
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 bearer tokens with SMART v1 and v2 scopes",
            }
        ],
        "description": "Every interaction but this CapabilityStatement and the conformance "
        "resources needs a bearer token; see /.well-known/smart-configuration.",
    }


def capability_statement() -> dict[str, Any]:
    conformance_types = sorted({r["resourceType"] for r in all_resources()})
    resources: list[dict[str, Any]] = [
        {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "supportedProfile": profiles,
            "interaction": [
                {"code": code}
                for code in (
                    PLAN_INTERACTIONS if resource_type in WRITABLE_TYPES else PUBLISHED_INTERACTIONS
                )
            ],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": resource_type in WRITABLE_TYPES,
            "conditionalCreate": resource_type in WRITABLE_TYPES,
            "conditionalRead": "full-support",
            "conditionalUpdate": resource_type in WRITABLE_TYPES,
            "conditionalDelete": "not-supported",
            "searchInclude": list(INCLUDES[resource_type]),
            "searchRevInclude": list(REVINCLUDES[resource_type]),
            "searchParam": _search_params(resource_type),
        }
        for resource_type, profiles in PROFILES.items()
    ]
    resources.append(_patient())
    resources.append(_audit_event())
    resources += [_subscription(), _topics()]
    for resource in resources:
        if resource["type"] in _DOCUMENTATION:
            resource["documentation"] = _DOCUMENTATION[resource["type"]]
    resources += [
        {
            "type": resource_type,
            "interaction": [{"code": c} for c in CONFORMANCE_INTERACTIONS],
            "searchParam": [
                {"name": name, "type": {"url": "uri", "name": "string"}.get(name, "token")}
                for name in CONFORMANCE_SEARCH
            ],
        }
        for resource_type in conformance_types
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "date": "2026-11-25",
        "publisher": "ipt-careplans",
        "kind": "instance",
        "software": {"name": "ipt-careplans", "version": SOFTWARE_VERSION},
        "implementation": {"description": "IPT care plans for depression"},
        "fhirVersion": terminology.FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(),
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "operation": [
                    {"name": name, "definition": definition, "documentation": _EXPORT_DOCUMENTATION}
                    for name, definition, level in EXPORT_OPERATIONS
                    if level == "system"
                ],
            }
        ],
    }


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
SUBSCRIPTION_INTERACTIONS = ["read", "update", "delete", "create", "search-type"]
_SUBSCRIPTION_SEARCH = {
    "_id": ("token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    "status": ("token", "http://hl7.org/fhir/SearchParameter/Subscription-status"),
    "url": ("uri", "http://hl7.org/fhir/SearchParameter/Subscription-url"),
    "criteria": ("string", "http://hl7.org/fhir/SearchParameter/Subscription-criteria"),
    "_lastUpdated": ("date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
}


def _subscription() -> dict[str, Any]:
    """Subscription (R5 Backport, R4 profile), with the topic canonicals it takes."""
    return {
        "extension": [
            {
                "url": f"{_BACKPORT}/StructureDefinition/"
                "capabilitystatement-subscriptiontopic-canonical",
                "valueCanonical": topic.url,
            }
            for topic in TOPICS
        ],
        "type": "Subscription",
        "profile": "http://hl7.org/fhir/StructureDefinition/Subscription",
        "supportedProfile": [f"{_BACKPORT}/StructureDefinition/backport-subscription"],
        "documentation": "Topic-based subscriptions (Subscriptions R5 Backport): a client "
        "subscribes to a topic (the canonicals in this entry's extensions, defined at "
        "/fhir/Basic/{id}) with filters and a rest-hook endpoint. Each subscription is its "
        "owner's alone: the client that created it, with the same patient context.",
        "interaction": [{"code": code} for code in SUBSCRIPTION_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {"name": name, "definition": definition, "type": kind}
            for name, (kind, definition) in _SUBSCRIPTION_SEARCH.items()
        ],
        "operation": [
            {
                "name": "$status",
                "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-status",
            },
            {
                "name": "$events",
                "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-events",
            },
        ],
    }


def _topics() -> dict[str, Any]:
    """The topic definitions: Basic resources (R4 has no SubscriptionTopic)."""
    return {
        "type": "Basic",
        "documentation": "The subscription topics' definitions, SubscriptionTopic as the R4 "
        "backport represents it (R5 cross-version extensions); no other Basic is served.",
        "interaction": [{"code": c} for c in CONFORMANCE_INTERACTIONS],
        "searchParam": [
            {"name": "_id", "type": "token"},
            {"name": "code", "type": "token"},
        ],
    }


@blp.route("/metadata", methods=["GET"])
@blp.doc(
    responses=responses(
        {200: ("The CapabilityStatement", "FhirCapabilityStatement")}, 406, public=True
    ),
    security=[],
)
def metadata() -> Response:
    """The CapabilityStatement

    FHIR version 4.0.1, JSON only; every resource type with the interactions and profiles
    this server really supports.
    """
    return json_response(capability_statement())
