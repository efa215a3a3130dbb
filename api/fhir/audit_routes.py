"""GET /fhir/AuditEvent and /fhir/AuditEvent/{id}: the audit trail, read-only.

Reading them needs a scope naming AuditEvent (``system/AuditEvent.rs``): a wildcard does
not grant it. A token confined to a patient reads only that patient's records.
Audit records are written by the server alone: every attempt to create, change or delete
one answers 405, so that no API can rewrite who did what.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from sqlalchemy import ColumnElement, and_, func, or_, select
from werkzeug.exceptions import BadRequest

from api.audit import stored_event
from api.auth.access import compartment
from api.fhir.http import FHIR_JSON, body_response, operation_outcome, version_headers
from api.fhir.openapi import responses
from api.fhir.parameters import InvalidParameter, check_text, count_param, date_options
from api.fhir.resources import base_url, blp
from api.http import database
from fhir_mappings.audit_event import OUTCOMES, SEARCH_PARAMETERS
from fhir_mappings.search_parameters import normalise_reference
from service import audit_journal
from service.errors import NotFound
from service.instants import InvalidInstant, clamp, parse_instant
from service.models import AuditRecord

DEFAULT_COUNT = 20
MAX_COUNT = 200
RESULT_PARAMETERS = ("_count", "_cursor", "_total", "_format", "_pretty")
_ENTITY_TYPES = (
    "CarePlan",
    "Goal",
    "QuestionnaireResponse",
    "Observation",
    "Flag",
    "AuditEvent",
)
# Record ids are FHIR ids (the server makes them).
_RECORD_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}").fullmatch
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")

_OUTCOME = {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
_AUDIT_EVENT = {
    FHIR_JSON: {
        "schema": {
            "type": "object",
            "description": "A FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html)",
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string", "const": "AuditEvent"}},
            "additionalProperties": True,
        }
    }
}
_QUERY = [
    {
        "in": "query",
        "name": name,
        "required": False,
        "schema": {"type": "string"},
        "description": doc,
    }
    for name, (_, _, doc) in SEARCH_PARAMETERS.items()
] + [
    {
        "in": "query",
        "name": name,
        "required": False,
        "schema": {"type": "string"},
        "description": doc,
    }
    for name, doc in (
        ("_count", f"Records per page (default {DEFAULT_COUNT}, at most {MAX_COUNT})"),
        ("_total", "accurate (or estimate) adds Bundle.total; none by default"),
        ("_cursor", "Where a next link continues"),
    )
]
_REFUSED = {
    **responses({}, 400),
    "405": {
        "description": "Audit records cannot be created, changed or deleted",
        "content": _OUTCOME,
        "headers": {"Allow": {"description": "GET", "schema": {"type": "string"}}},
    },
}


def _split(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def _date(value: str) -> ColumnElement[bool]:
    recorded = AuditRecord.recorded
    options = []
    for prefix, low, high in date_options("date", value, _DATE_PREFIXES):
        clauses: dict[str, ColumnElement[bool]] = {
            "eq": and_(recorded >= low, recorded <= high),
            "ne": or_(recorded < low, recorded > high),
            "gt": recorded > high,
            "sa": recorded > high,
            "ge": recorded >= low,
            "lt": recorded < low,
            "eb": recorded < low,
            "le": recorded <= high,
        }
        options.append(clauses[prefix])
    return or_(*options)


def _references(value: str, name: str, default_type: str | None) -> list[str]:
    targets = []
    for part in _split(value):
        if "/" in part:
            targets.append(normalise_reference(part))
        elif default_type is not None:
            targets.append(f"{default_type}/{part}")
        else:
            targets += [f"{resource_type}/{part}" for resource_type in _ENTITY_TYPES]
    if not targets:
        raise BadRequest(f"{name}: no value")
    return targets


def _agent(name: str) -> ColumnElement[bool]:
    """The actor recorded, or the client whose identifier the AuditEvent names."""
    return or_(AuditRecord.agent == name, AuditRecord.client_id == name)


def _clause(name: str, value: str) -> ColumnElement[bool] | None:
    """The condition of one parameter; None for a parameter AuditEvent does not have."""
    if name == "date":
        return _date(value)
    if name == "agent":
        return or_(*(_agent(part) for part in _split(value) or [value]))
    if name == "entity":
        return AuditRecord.entity.in_(_references(value, name, None))
    if name == "patient":
        return AuditRecord.patient.in_(_references(value, name, "Patient"))
    if name == "outcome":
        codes = _split(value)
        unknown = [code for code in codes if code not in OUTCOMES]
        if unknown or not codes:
            raise BadRequest(f"outcome takes {', '.join(OUTCOMES)}, not {value!r}")
        return AuditRecord.outcome.in_(codes)
    return None


def _cursor(value: str | None) -> ColumnElement[bool] | None:
    """Records after the position a ``next`` link carries (newest first)."""
    if value is None:
        return None
    refused = InvalidParameter("_cursor", "not a cursor this server issued")
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    if not isinstance(data, dict) or not isinstance(data.get("r"), str):
        raise refused
    record_id = data.get("i")
    if not isinstance(record_id, str) or not _RECORD_ID(record_id):
        raise refused
    try:
        recorded = parse_instant(data["r"])
    except InvalidInstant:
        raise refused from None
    return or_(
        AuditRecord.recorded < recorded,
        and_(AuditRecord.recorded == recorded, AuditRecord.id < record_id),
    )


def _encode_cursor(record: AuditRecord) -> str:
    data = {"r": clamp(record.recorded).isoformat(), "i": record.id}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _count() -> int:
    return count_param("_count", request.args.get("_count"), DEFAULT_COUNT, MAX_COUNT)


def _link(relation: str, used: list[tuple[str, str]], cursor: str | None) -> dict[str, str]:
    kept = [
        (name, value)
        for name, value in request.args.items(multi=True)
        if name in RESULT_PARAMETERS and name != "_cursor"
    ]
    query = [*used, *kept, *([("_cursor", cursor)] if cursor else [])]
    return {"relation": relation, "url": f"{base_url()}/AuditEvent?{urlencode(query)}"}


@blp.route("/AuditEvent", methods=["GET"])
@blp.doc(
    parameters=_QUERY,
    responses=responses({200: ("A searchset Bundle of AuditEvents", "FhirBundle")}, 400, 406),
)
def audit_search() -> Response:
    """Search the audit trail

    Newest first. `date` (the time recorded, with the prefixes eq, ne, gt, lt, ge, le, sa
    and eb), `agent` (the acting user, client id or X-Actor name), `entity` (a resource
    such as `CarePlan/123`), `patient` (`Patient/123` or `123`) and `outcome` (0, 4, 8,
    12); a comma means OR, a repeated parameter AND. `_count` (at most 200) with a `next`
    link; `_total=accurate` adds the number of matches. Unknown parameters are ignored
    unless `Prefer: handling=strict` asks for a 400.
    """
    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    conditions: list[ColumnElement[bool]] = []
    used: list[tuple[str, str]] = []
    for name, value in request.args.items(multi=True):
        check_text(name, value)
        if name in RESULT_PARAMETERS:
            continue
        clause = _clause(name, value)
        if clause is None:
            if strict:
                raise BadRequest(f"unknown search parameter {name!r} for AuditEvent")
            continue
        conditions.append(clause)
        used.append((name, value))
    bound = compartment()
    if bound is not None:
        # A token confined to a patient reads that patient's records only.
        conditions.append(AuditRecord.patient == bound)
    total_mode = request.args.get("_total", "none")
    if total_mode not in ("none", "estimate", "accurate"):
        raise BadRequest("_total must be none, estimate or accurate")
    count = _count()
    after = _cursor(request.args.get("_cursor"))
    audit_journal.move(database())  # every record committed before the search is found
    with database().reading() as session:
        total = None
        if total_mode != "none":
            total = session.scalar(select(func.count()).select_from(AuditRecord).where(*conditions))
        page_conditions = [*conditions, *([after] if after is not None else [])]
        records = list(
            session.scalars(
                select(AuditRecord)
                .where(*page_conditions)
                .order_by(AuditRecord.recorded.desc(), AuditRecord.id.desc())
                .limit(count + 1)
            )
        )
    more, records = len(records) > count, records[:count]
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = [_link("self", used, request.args.get("_cursor"))]
    if more and records:
        head["link"].append(_link("next", used, _encode_cursor(records[-1])))
    entries = ",".join(
        f'{{"fullUrl":{json.dumps(f"{base_url()}/AuditEvent/{r.id}")},'
        f'"resource":{stored_event(r)},"search":{{"mode":"match"}}}}'
        for r in records
    )
    encoded = json.dumps(head)
    return body_response(f'{encoded[:-1]},"entry":[{entries}]}}' if entries else encoded)


@blp.route("/AuditEvent/<audit_id>", methods=["GET"])
@blp.doc(
    responses={
        "200": {"description": "The AuditEvent, as recorded", "content": _AUDIT_EVENT},
        **responses({}, 404, 406),
    }
)
def audit_read(audit_id: str) -> Response:
    """Read one audit record

    Exactly as it was recorded; audit records never change, so every one is at version 1.
    """
    audit_journal.move(database())
    with database().reading() as session:
        record = session.get(AuditRecord, audit_id)
    bound = compartment()
    if record is None or (bound is not None and record.patient != bound):
        raise NotFound(f"AuditEvent/{audit_id} does not exist")
    return body_response(stored_event(record), headers=version_headers(1, record.recorded))


def _refuse() -> Response:
    return operation_outcome(
        405,
        "not-supported",
        "audit records are written by the server alone: they cannot be created, changed or "
        "deleted through any API",
        headers={"Allow": "GET"},
    )


@blp.route("/AuditEvent", methods=["POST", "PUT", "PATCH", "DELETE"])
@blp.doc(responses=_REFUSED)
def audit_type_write() -> Response:
    """Audit records cannot be written

    The audit trail is append-only and only the server appends to it: creating AuditEvents
    (or conditionally updating or deleting them) always answers 405.
    """
    return _refuse()


@blp.route("/AuditEvent/<audit_id>", methods=["POST", "PUT", "PATCH", "DELETE"])
@blp.doc(responses=_REFUSED)
def audit_instance_write(audit_id: str) -> Response:
    """Audit records cannot be changed or deleted

    Updating, patching or deleting an AuditEvent always answers 405: the record of who did
    what stays as it was written.
    """
    return _refuse()
