"""FHIR R4 AuditEvents of the service's REST interactions, after the IHE Basic Audit Log
Patterns (BALP) where they fit.

Pure: the facts of one audited request in, the AuditEvent out. The facts never hold a
request body, a token or free text; a search's parameters are the one thing taken from the
request as written, because they are what was looked for.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_plus

from fhir_mappings.projection import instant
from fhir_mappings.search_parameters import normalise_reference
from fhir_mappings.terminology import CANONICAL_BASE

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
CLIENT_ID_SYSTEM = f"{CANONICAL_BASE}/sid/client-id"
SERVER_NAME = "ipt-careplans"

# The restful-interaction codes recorded, with the AuditEvent action each one is.
ACTIONS: dict[str, str] = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "capabilities": "R",
    "search-type": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete", "transaction", "batch"})
SEARCH_INTERACTIONS = frozenset({"search-type"})
# A request for an access token (POST /auth/token): recorded as a DICOM "User
# Authentication" event, not as a RESTful interaction.
LOGIN = "login"

# Query parameters that can carry a credential or other secret: their values are never
# stored or logged, whatever the route (a token sent as ?access_token= is refused, and
# must not then sit in the audit trail for every audit reader to see).
SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "client_secret",
        "client_assertion",
        "code",
        "code_verifier",
        "password",
        "secret",
        "api_key",
        "apikey",
        "authorization",
    }
)
REDACTED = "redacted"

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,39}$")

OUTCOMES = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}

# The search parameters of GET /fhir/AuditEvent: name -> (type, definition, documentation).
SEARCH_PARAMETERS: dict[str, tuple[str, str | None, str]] = {
    "date": (
        "date",
        "http://hl7.org/fhir/SearchParameter/AuditEvent-date",
        "When the event was recorded (AuditEvent.recorded), with the FHIR prefixes but ap",
    ),
    "agent": (
        "token",
        None,
        "Who acted: the user (X-Actor or the token's), the token's client id, or without a "
        "token the X-Actor name",
    ),
    "entity": (
        "reference",
        "http://hl7.org/fhir/SearchParameter/AuditEvent-entity",
        "The resource the request touched, e.g. CarePlan/123 (AuditEvent.entity.what)",
    ),
    "patient": (
        "reference",
        "http://hl7.org/fhir/SearchParameter/AuditEvent-patient",
        "The patient whose data the request touched, Patient/123 or 123",
    ),
    "outcome": (
        "token",
        "http://hl7.org/fhir/SearchParameter/AuditEvent-outcome",
        "0 success, 4 minor failure (4xx), 8 serious failure (5xx), 12 major failure",
    ),
}


def outcome_of(status: int) -> str:
    """The AuditEvent outcome of an HTTP status."""
    if status >= 500:
        return "8"
    return "4" if status >= 400 else "0"


def status_text(status: int) -> str:
    """``404 Not Found``: the status alone, never the error's message (it can quote data)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def reference(resource_type: str | None, resource_id: str | None) -> str | None:
    """``Type/id``, or None unless both are well-formed (a URL can hold anything)."""
    if resource_type and resource_id and _TYPE.match(resource_type):
        return f"{resource_type}/{resource_id}" if _FHIR_ID.match(resource_id) else None
    return None


def patient_searched(parameters: Iterable[tuple[str, str]]) -> str | None:
    """The one patient a search is limited to by ``patient`` or ``subject``, if any."""
    found = set()
    for name, value in parameters:
        if name.split(":")[0] in ("patient", "subject"):
            for part in value.split(","):
                target = normalise_reference(part) if "/" in part else f"Patient/{part}"
                kind, _, patient_id = target.partition("/")
                if kind == "Patient" and reference(kind, patient_id):
                    found.add(target)
    return found.pop() if len(found) == 1 else None


# A patient reference in a JSON document: a "reference" to a Patient (FHIR) or a "patient"
# member (the native API). Matched on the serialised text: inside a JSON string every quote
# is escaped, so free text that looks like such a member never matches.
_PATIENT_MEMBER = re.compile(r'"(?:reference|patient)"\s*:\s*("(?:[^"\\]|\\.)*")')


def patients_in(document: bytes | str) -> list[str]:
    """Every patient a JSON response names (``Patient/<id>``), in order of appearance: the
    patients whose data it holds."""
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
    if "atient" not in text:
        return []
    found: dict[str, None] = {}
    for match in _PATIENT_MEMBER.finditer(text):
        try:
            value = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(value, str) or "Patient/" not in value:
            continue
        target = normalise_reference(value.split("/_history")[0])
        if target.startswith("Patient/") and target.count("/") == 1 and len(target) > 8:
            found[target] = None
    return list(found)


@dataclass(frozen=True)
class AuditFacts:
    """What one audited request did, by whom, to what.

    ``agent`` is the name the trail is searched by; ``client_id`` and ``user`` come from
    the access token when there is one. ``entity`` and ``patient`` are references
    (``CarePlan/1``, ``Patient/1``); ``query`` is a search's parameters, URL-encoded.
    """

    id: str
    recorded: datetime
    started: datetime
    interaction: str
    action: str
    outcome: str
    agent: str
    status: int | None = None
    client_id: str | None = None
    user: str | None = None
    address: str | None = None
    request_id: str | None = None
    entity: str | None = None
    query: str | None = None
    patient: str | None = None

    @property
    def asserted_user(self) -> str | None:
        """The user an authenticated client named (X-Actor) when it is neither the token's
        user nor its client: the client's word, not something the service authenticated."""
        if self.client_id is None or self.agent in (self.user, self.client_id):
            return None
        return self.agent


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _client(client_id: str) -> dict[str, str]:
    return {"system": CLIENT_ID_SYSTEM, "value": client_id}


def _caller(facts: AuditFacts) -> dict[str, Any]:
    who: dict[str, Any] = (
        {"identifier": _client(facts.client_id)} if facts.client_id else {"display": facts.agent}
    )
    agent: dict[str, Any] = {
        "type": {"coding": [_coding(DICOM, "110153", "Source Role ID")]},
        "who": who,
    }
    if facts.user:
        agent["altId"] = facts.user
    agent["requestor"] = True
    if facts.address:
        agent["network"] = {"address": facts.address, "type": "2"}
    return agent


def _asserted(name: str) -> dict[str, Any]:
    # The user the client says it acts for: recorded beside the client, not as the
    # requestor the service authenticated.
    return {
        "type": {"coding": [_coding(DICOM, "110153", "Source Role ID")]},
        "role": [{"text": "user asserted by the client (X-Actor), not authenticated"}],
        "who": {"display": name},
        "requestor": False,
    }


def _server() -> dict[str, Any]:
    return {
        "type": {"coding": [_coding(DICOM, "110152", "Destination Role ID")]},
        "who": {"display": SERVER_NAME},
        "requestor": False,
    }


def _entities(facts: AuditFacts) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if facts.request_id:
        # BALP records the request id as an entity of its own, so that the audit record
        # and the service's request log can be joined.
        entities.append(
            {
                "what": {"identifier": {"value": facts.request_id}},
                "type": _coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id"),
            }
        )
    if facts.entity:
        resource_type = facts.entity.split("/", 1)[0]
        entities.append(
            {
                "what": {"reference": facts.entity},
                "type": _coding(RESOURCE_TYPES, resource_type, resource_type),
                "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    if facts.query:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "query": base64.b64encode(facts.query.encode("utf-8")).decode("ascii"),
            }
        )
    if facts.patient:
        entities.append(
            {
                "what": {"reference": facts.patient},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    return entities


def render_audit_event(facts: AuditFacts) -> dict[str, Any]:
    """The AuditEvent of one request, as stored and served."""
    recorded = instant(facts.recorded)
    if facts.interaction == LOGIN:
        kind = _coding(DICOM, "110114", "User Authentication")
        subtype = _coding(DICOM, "110122", "Login")
    else:
        kind = _coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation")
        subtype = _coding(RESTFUL_INTERACTION, facts.interaction, facts.interaction)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": facts.id,
        # Audit records never change: every one stays at its first version.
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": kind,
        "subtype": [subtype],
        "action": facts.action,
        "period": {"start": instant(min(facts.started, facts.recorded)), "end": recorded},
        "recorded": recorded,
        "outcome": facts.outcome,
    }
    if facts.status is not None:
        event["outcomeDesc"] = status_text(facts.status)
    event["agent"] = [_caller(facts), _server()]
    if facts.asserted_user:
        event["agent"].insert(1, _asserted(facts.asserted_user))
    event["source"] = {
        "observer": {"display": SERVER_NAME},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    entities = _entities(facts)
    if entities:
        event["entity"] = entities
    return event


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter named ``name`` (decoded, with any ``:modifier``) can carry
    a secret, whatever its case."""
    return name.split(":", 1)[0].strip().lower() in SECRET_PARAMETERS


def redact_query(query: str | None) -> str | None:
    """A URL-encoded query with the value of every secret-bearing parameter replaced by
    ``redacted``, the rest kept as written: the one place a query is made fit to store."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if is_secret_parameter(unquote_plus(name)):
            part = f"{name}={REDACTED}" if equals else name
        parts.append(part)
    return "&".join(parts)
