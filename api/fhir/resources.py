"""Reading published resources: read, vread and history at instance, type and system level.

Bodies are the stored JSON documents, sent as they were stored: no resource model is
built or serialised on this path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from sqlalchemy import Row

from api import audit
from api.auth.access import (
    PLAN_TYPES,
    WRITABLE_TYPES,
    allowed,
    compartment,
    require,
)
from api.auth.principal import current_principal
from api.fhir.http import (
    FhirError,
    body_response,
    json_response,
    not_modified,
    operation_outcome,
    version_headers,
    weak_etag,
)
from api.fhir.openapi import responses
from api.fhir.parameters import InvalidParameter, count_param, instant_param
from api.http import ApiBlueprint, database, read_connection
from fhir_mappings import conformance
from fhir_mappings.projection import instant
from fhir_mappings.summary import InvalidShape, element_names, reshape, summary_mode
from service import resource_store
from service.errors import Gone, NotFound
from service.instants import LATEST
from service.resource_store import HistoryQuery

CONFORMANCE_TYPES = ("CodeSystem", "ValueSet", "StructureDefinition", "Questionnaire")
DEFAULT_COUNT = 50
MAX_COUNT = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}").fullmatch
_VERSION_ID = re.compile(r"[0-9]{1,10}").fullmatch
_MAX_VERSION = 2**31 - 1
_LATEST_MILLIS = (LATEST - _EPOCH) // timedelta(milliseconds=1)

blp = ApiBlueprint(
    "fhir",
    __name__,
    url_prefix="/fhir",
    description="FHIR R4 CarePlan, Goal, QuestionnaireResponse, Observation and Flag "
    "resources (application/fhir+json).",
)


@blp.errorhandler(InvalidParameter)
def invalid_parameter(error: InvalidParameter) -> Response:
    """A query parameter that cannot be applied: 400 naming it in the issue's expression."""
    return operation_outcome(
        400, "invalid", error.description or "", [(error.parameter, error.description or "")]
    )


def base_url() -> str:
    return request.host_url.rstrip("/") + "/fhir"


def check_id(resource_type: str, resource_id: str) -> None:
    """A 404 for what cannot be a FHIR id (``[A-Za-z0-9.-]{1,64}``): no resource has it,
    and text such as a NUL character must not reach the database."""
    if not _FHIR_ID(resource_id):
        raise NotFound(f"{resource_type} has no resource with that id")


def check_type(resource_type: str) -> None:
    if resource_type not in PLAN_TYPES:
        raise FhirError(
            404, "not-supported", f"this server does not serve {resource_type} resources"
        )


def read_only_reason(resource_type: str) -> str:
    """Why a published type takes no writes."""
    return (
        f"{resource_type} resources are published from the care plan's safety signals: a "
        "clinician acknowledges a signal through the native API "
        "(/api/v1/care-plans/{id}/safety-signals)"
    )


def check_writable(resource_type: str) -> None:
    """A write names a type this server takes writes of: 405 for a published type."""
    check_type(resource_type)
    if resource_type not in WRITABLE_TYPES:
        raise FhirError(405, "not-supported", read_only_reason(resource_type))


# The _summary forms a read may ask for (count belongs to search).
READ_SUMMARY_MODES = ("true", "false", "text", "data")
_SHAPE_PARAMETERS = [
    {
        "in": "query",
        "name": "_summary",
        "required": False,
        "schema": {"type": "string", "enum": list(READ_SUMMARY_MODES)},
        "description": "A reduced form of the resource (tagged SUBSETTED)",
    },
    {
        "in": "query",
        "name": "_elements",
        "required": False,
        "schema": {"type": "string"},
        "description": "Comma-separated top-level elements to keep (with the mandatory ones)",
    },
]


@blp.route("/<resource_type>/<resource_id>", methods=["GET"])
@blp.doc(
    parameters=_SHAPE_PARAMETERS,
    responses=responses(
        {200: ("The current version", "FhirCarePlan"), 304: ("Not modified", None)},
        400,
        404,
        406,
        410,
    ),
)
def read(resource_type: str, resource_id: str) -> Response:
    """Read a CarePlan, Goal, QuestionnaireResponse, Observation or Flag

    The current version, with `ETag: W/"versionId"` and `Last-Modified`; 304 for a
    matching `If-None-Match` or a later `If-Modified-Since`; 410 once deleted.
    `_summary` (true, text, data, false) and `_elements` reduce it as a search does,
    tagged SUBSETTED.
    """
    if resource_type in CONFORMANCE_TYPES:
        return _read_conformance(resource_type, resource_id)
    check_type(resource_type)
    check_id(resource_type, resource_id)
    stored = resource_store.served(read_connection(), resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    audit.note_patient(stored.patient)
    if stored.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted")
    shape = _shape(resource_type)
    headers = version_headers(stored.version_id, stored.last_updated)
    if not_modified(stored.version_id, stored.last_updated):
        response = Response(status=304)
        response.headers.update(headers)
        return response
    return body_response(_shaped(stored.content, shape), headers=headers)


@blp.route("/<resource_type>/<resource_id>/_history/<version_id>", methods=["GET"])
@blp.doc(
    parameters=_SHAPE_PARAMETERS,
    responses=responses({200: ("That version", "FhirCarePlan")}, 400, 404, 406, 410),
)
def vread(resource_type: str, resource_id: str, version_id: str) -> Response:
    """Read one version of a resource

    Every version stays readable; the version that recorded a deletion answers 410.
    `_summary` and `_elements` reduce it as on read.
    """
    check_type(resource_type)
    check_id(resource_type, resource_id)
    shape = _shape(resource_type)
    # Versions are 32-bit integers: anything else (a Unicode digit, 20 digits) is no version.
    if not _VERSION_ID(version_id) or int(version_id) > _MAX_VERSION:
        raise NotFound(absent_version(f"{resource_type}/{resource_id}", version_id))
    with database().reading() as session:
        found = resource_store.version(session, resource_type, resource_id, int(version_id))
    if found is None:
        raise NotFound(absent_version(f"{resource_type}/{resource_id}", version_id))
    if found.deleted or found.content is None:
        raise Gone(f"version {version_id} of {resource_type}/{resource_id} records its deletion")
    return body_response(
        _shaped(found.content, shape),
        headers=version_headers(found.version_id, found.last_updated),
    )


def absent_version(reference: str, version_id: str) -> str:
    """What a vread answers for a version nobody holds (another patient's included)."""
    if not _VERSION_ID(version_id) or int(version_id) > _MAX_VERSION:
        return f"{reference} has no version {version_id!r}"
    return f"{reference} has no version {version_id}"


def _shape(resource_type: str) -> tuple[str | None, list[str] | None] | None:
    """The ``_summary`` and ``_elements`` a read asks for; None when it asks for neither
    (the common case, served as stored without parsing it)."""
    args = request.args
    if "_summary" not in args and "_elements" not in args:
        return None
    try:
        summary = summary_mode(args.get("_summary"), READ_SUMMARY_MODES)
        elements = element_names(resource_type, args.get("_elements"))
    except InvalidShape as error:
        raise InvalidParameter(error.parameter, str(error)) from None
    if summary in (None, "false") and not elements:
        return None
    return summary, elements


def _shaped(content: str, shape: tuple[str | None, list[str] | None] | None) -> str:
    if shape is None:
        return content
    return json.dumps(reshape(json.loads(content), *shape), ensure_ascii=False)


def _read_conformance(resource_type: str, resource_id: str) -> Response:
    resource = conformance.find(resource_type, resource_id)
    if resource is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    return json_response(resource)


# What a search of conformance resources takes (each one value; ``url`` also ``url|version``).
CONFORMANCE_SEARCH = ("url", "_id", "name", "version", "status")
_CONFORMANCE_RESULTS = ("_format", "_pretty", "_count", "_total")


def search_conformance(resource_type: str, params: Iterable[tuple[str, str]]) -> Response:
    """A searchset of the conformance resources of a type: by ``url`` (``url|version``),
    ``_id``, ``name``, ``version`` and ``status``; an unknown parameter is ignored, or a
    400 under ``Prefer: handling=strict``. ``params`` are the query's (name, value) pairs,
    of the URL or of a ``_search`` form."""
    params = list(params)
    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    wanted: dict[str, str] = {}
    for name, value in params:
        if name in _CONFORMANCE_RESULTS:
            continue
        if name not in CONFORMANCE_SEARCH:
            if strict:
                raise InvalidParameter(
                    name, f"{resource_type} is searched by {', '.join(CONFORMANCE_SEARCH)}"
                )
            continue
        if name == "url" and "|" in value:
            value, wanted["version"] = value.split("|", 1)
        wanted[name] = value
    fields = {"_id": "id"}
    found = [
        resource
        for resource in conformance.all_resources()
        if resource["resourceType"] == resource_type
        and all(resource.get(fields.get(k, k)) == v for k, v in wanted.items())
    ]
    query = urlencode([(k, v) for k, v in params if k in wanted])
    self_url = f"{base_url()}/{resource_type}{'?' + query if query else ''}"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base_url()}/{resource_type}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in found
        ],
    }
    if not found:
        del bundle["entry"]
    return json_response(bundle)


def _history(resource_type: str | None, resource_id: str | None) -> Response:
    count = count_param("_count", request.args.get("_count"), DEFAULT_COUNT, MAX_COUNT, 1)
    since = instant_param("_since", request.args.get("_since"))
    before_sequence, horizon = _cursor()
    if horizon is None:
        # The first page: what every later page and the next poll are measured against.
        horizon = database().history_horizon()
        if since is not None:
            horizon = max(horizon, since)
    query = HistoryQuery(
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=horizon,
        at=instant_param("_at", request.args.get("_at")),
        before_sequence=before_sequence,
        limit=count + 1,
        resource_types=None if resource_type else _searchable_types(),
        patient=compartment(),
    )
    with database().reading() as session:
        if resource_id is not None:
            _require_existing(session, resource_type or "", resource_id)
        versions = list(resource_store.history(session, query))
    page, more = versions[:count], len(versions) > count
    return body_response(_history_bundle(page, more, count, horizon))


def _cursor() -> tuple[int | None, datetime | None]:
    """Where a ``next`` link goes on: before a version's sequence number, within the first
    page's horizon (``<sequence>-<horizon in epoch milliseconds>``)."""
    value = request.args.get("_cursor")
    if value is None:
        return None, None
    refused = InvalidParameter(
        "_cursor", f"{value!r} is not one this server wrote: follow the Bundle's next link"
    )
    sequence, dash, millis = value.partition("-")
    # Sequence numbers are 64-bit; horizons are within the instants the database holds.
    if not (sequence.isdigit() and len(sequence) <= 18):
        raise refused
    if not dash:
        # A link from a server without horizons (during an upgrade): go on from here, with
        # the horizon of this request.
        return int(sequence), None
    if not (millis.isdigit() and len(millis) <= 15 and int(millis) <= _LATEST_MILLIS):
        raise refused
    return int(sequence), _EPOCH + timedelta(milliseconds=int(millis))


def _searchable_types() -> tuple[str, ...] | None:
    """For system history: the types the caller may list (all when unauthenticated)."""
    if current_principal() is None:
        return None
    types = tuple(t for t in PLAN_TYPES if allowed(t, "s"))
    if not types:
        require(PLAN_TYPES[0], "s")
    return types


def _require_existing(session: Any, resource_type: str, resource_id: str) -> None:
    if resource_store.current(session, resource_type, resource_id) is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")


def _link(relation: str, params: dict[str, Any]) -> dict[str, str]:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return {"relation": relation, "url": f"{request.base_url}{'?' + query if query else ''}"}


def _history_bundle(page: list[Row[Any]], more: bool, count: int, horizon: datetime) -> str:
    """The page as a history Bundle. Its ``meta.lastUpdated`` is the horizon: every version
    written before it and matching the request is in this page or the pages after it, and
    every version not yet visible was written at or after it; the next poll's ``_since``."""
    kept = {k: request.args[k] for k in ("_since", "_at", "_format") if k in request.args}
    links = [_link("self", {**kept, "_count": count, "_cursor": request.args.get("_cursor")})]
    if more:
        cursor = f"{page[-1].sequence}-{_epoch_millis(horizon)}"
        links.append(_link("next", {**kept, "_count": count, "_cursor": cursor}))
    head = json.dumps(
        {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": instant(horizon)},
            "type": "history",
            "link": links,
        }
    )
    base = json.dumps(base_url())
    entries = ",".join(_history_entry(version, base) for version in page)
    return f'{head[:-1]},"entry":[{entries}]}}'


def _epoch_millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _history_entry(version: Row[Any], base: str) -> str:
    """One entry; the stored resource is embedded as stored.

    Written out directly (an export pages through every version): the type is one this
    server serves, ids are FHIR ids ([A-Za-z0-9-.]), the method and instant are fixed
    forms, and the base URL is JSON-encoded, so nothing else needs escaping.
    """
    reference = f"{version.resource_type}/{version.id}"
    if version.deleted:
        method, url, status = "DELETE", reference, "204"
    elif version.method == "POST":
        method, url, status = "POST", version.resource_type, "201"
    else:
        method, url, status = version.method, reference, "200"
    entry = (
        f'{{"fullUrl":{base[:-1]}/{reference}","request":{{"method":"{method}","url":"{url}"}},'
        f'"response":{{"status":"{status}","etag":{json.dumps(weak_etag(version.version_id))},'
        f'"lastModified":"{instant(version.last_updated)}"}}'
    )
    if version.deleted or version.content is None:
        return entry + "}"
    return f'{entry},"resource":{version.content}}}'


@blp.route("/<resource_type>/<resource_id>/_history", methods=["GET"])
@blp.doc(responses=responses({200: ("A history Bundle", "FhirBundle")}, 400, 404, 406))
def instance_history(resource_type: str, resource_id: str) -> Response:
    """History of one resource

    Every version, newest first, deletions included. `_since`, `_at` and `_count`; the
    `next` link pages on without skipping or repeating versions.
    """
    check_type(resource_type)
    check_id(resource_type, resource_id)
    return _history(resource_type, resource_id)


@blp.route("/<resource_type>/_history", methods=["GET"])
@blp.doc(responses=responses({200: ("A history Bundle", "FhirBundle")}, 400, 404, 406))
def type_history(resource_type: str) -> Response:
    """History of every resource of a type

    Newest first, with `_since`, `_at` and `_count`.
    """
    check_type(resource_type)
    return _history(resource_type, None)


@blp.route("/_history", methods=["GET"])
@blp.doc(responses=responses({200: ("A history Bundle", "FhirBundle")}, 400, 406))
def system_history() -> Response:
    """History of every resource

    Newest first, with `_since`, `_at` and `_count`: what a synchronising EHR pages through.
    The Bundle's `meta.lastUpdated` is the poll's horizon: it lists the versions written
    before it, and a version not yet visible is written at or after it, so the next poll
    takes it as `_since` and misses nothing. `next` links keep the first page's horizon.
    """
    return _history(None, None)
