"""FHIR writes: create (also conditional), update (also conditional and create-on-update),
JSON Patch and delete, with ETags checked atomically and ``Prefer: return``."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
from flask import Response, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, PreconditionFailed, UnsupportedMediaType

from api.auth.access import authorize, refuse_chosen_id
from api.body import json_body
from api.fhir.http import (
    body_response,
    if_match,
    no_content,
    operation_outcome,
    version_headers,
)
from api.fhir.openapi import request_body, responses
from api.fhir.resources import base_url, blp, check_writable
from api.fhir.search import Search, matching_ids
from api.http import actor, database, read_connection
from fhir_mappings import apply
from fhir_mappings.parse import Checked, checked
from fhir_mappings.parse_common import MappingError
from service import resource_store
from service.errors import Conflict, NotFound

JSON_TYPES = ("application/fhir+json", "application/json")
PATCH_TYPES = ("application/json-patch+json",)


def _body(types: tuple[str, ...] = JSON_TYPES) -> Any:
    if request.mimetype not in types:
        raise UnsupportedMediaType(
            f"send the body as {' or '.join(types)}, not {request.mimetype or 'nothing'}"
        )
    return json_body()


def _resource_body(resource_type: str) -> Checked:
    """The body as a resource of ``resource_type`` whose every element has its FHIR shape:
    checked before anything (authorisation included) reads an element of it."""
    body = _body()
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        found = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise BadRequest(f"the body must be a {resource_type} resource, not {found!r}")
    return checked(body, resource_type)


def _patch_operations() -> list[dict[str, Any]]:
    """A JSON Patch document: a list of operations, each an object with string op and path."""
    operations = _body(PATCH_TYPES)
    if not isinstance(operations, list):
        raise MappingError([("$this", "a JSON Patch is a list of operations")])
    problems = []
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            problems.append((f"$this[{index}]", "an operation is an object"))
            continue
        for member in ("op", "path", "from"):
            if member in operation and not isinstance(operation[member], str):
                problems.append((f"$this[{index}].{member}", "must be a string"))
        for member in ("op", "path"):
            if member not in operation:
                problems.append((f"$this[{index}].{member}", "is required"))
    if problems:
        raise MappingError(problems)
    return operations


def _respond(written: apply.Written, status: int) -> Response:
    """The outcome of a write as ``Prefer: return`` asks (the resource by default)."""
    stored = resource_store.served(read_connection(), written.resource_type, written.id)
    assert stored is not None
    headers = version_headers(stored.version_id, stored.last_updated)
    location = f"{base_url()}/{written.resource_type}/{written.id}/_history/{stored.version_id}"
    headers["Location"] = location
    if status == 201:
        headers["Content-Location"] = location
    prefer = request.headers.get("Prefer", "").replace(" ", "")
    if "return=minimal" in prefer:
        response = no_content(status)
        response.headers.update(headers)
        return response
    if "return=OperationOutcome" in prefer:
        verb = "created" if status == 201 else "updated"
        return operation_outcome(
            status,
            "informational",
            f"{written.resource_type}/{written.id} {verb}",
            headers=headers,
            severity="information",
        )
    return body_response(stored.content, status, headers)


def _existing(resource_type: str, criteria: str) -> list[str]:
    """Ids of the live resources a conditional request's criteria match."""
    from urllib.parse import parse_qsl

    from werkzeug.datastructures import MultiDict

    params = MultiDict(parse_qsl(criteria, keep_blank_values=True))
    if not params:
        raise BadRequest("the conditional request has no search criteria")
    return matching_ids(Search(resource_type, params, strict=True))


@blp.route("/<resource_type>", methods=["POST"])
@blp.doc(
    requestBody=request_body("FhirCarePlan", "FhirGoal"),
    responses=responses(
        {
            201: ("Created", "FhirCarePlan"),
            200: ("An existing match of If-None-Exist", "FhirCarePlan"),
        },
        400,
        404,
        406,
        409,
        412,
        413,
        415,
        422,
    ),
)
def create(resource_type: str) -> Response:
    """Create a CarePlan (an episode), a Goal, or a score (QuestionnaireResponse, Observation)

    The server assigns the id. A score joins its `basedOn` CarePlan, or the patient's one
    plan whose period holds its date (422 naming why when none or several do). With
    `If-None-Exist: identifier=system|value` the create is conditional: an existing match
    is returned (200) instead, several matches answer 412.
    Identifiers are unique in the database, so parallel conditional creates make one
    resource.
    """
    check_writable(resource_type)
    resource = _resource_body(resource_type)
    authorize(resource_type, "c", resource=resource)
    criteria = request.headers.get("If-None-Exist")
    if criteria:
        found = _existing(resource_type, criteria)
        if len(found) > 1:
            raise PreconditionFailed(f"If-None-Exist matches {len(found)} resources")
        if found:
            return _respond(apply.Written(resource_type, found[0], False), 200)
    try:
        written = apply.create(database(), resource, actor())
    except (Conflict, IntegrityError):
        # Another request claimed the identifier first: that one is the match.
        if criteria:
            found = _existing(resource_type, criteria)
            if len(found) == 1:
                return _respond(apply.Written(resource_type, found[0], False), 200)
        raise
    return _respond(written, 201)


@blp.route("/<resource_type>/<resource_id>", methods=["PUT"])
@blp.doc(
    requestBody=request_body("FhirCarePlan", "FhirGoal"),
    responses=responses(
        {200: ("Updated", "FhirCarePlan"), 201: ("Created with this id", "FhirCarePlan")},
        400,
        404,
        406,
        409,
        410,
        412,
        413,
        415,
        422,
    ),
)
def update(resource_type: str, resource_id: str) -> Response:
    """Update (or create with this id) a resource

    The body's id must be the URL's. `If-Match: W/"n"` makes the update conditional on
    the version, checked in the same transaction as the write (412 on a mismatch). An
    episode's update goes through every rule of the domain; a phase's activities are
    matched to its sessions and homework by their `activity.id`.
    """
    check_writable(resource_type)
    resource = _resource_body(resource_type)
    if resource.get("id") != resource_id:
        raise BadRequest(f"the body's id {resource.get('id')!r} is not the URL's {resource_id!r}")
    _authorize_update(resource_type, resource_id, resource)
    written = apply.update(database(), resource_type, resource_id, resource, actor(), if_match())
    return _respond(written, 201 if written.created else 200)


@blp.route("/<resource_type>", methods=["PUT"])
@blp.doc(
    requestBody=request_body("FhirCarePlan", "FhirGoal"),
    responses=responses(
        {200: ("The match updated", "FhirCarePlan"), 201: ("Created", "FhirCarePlan")},
        400,
        404,
        406,
        409,
        412,
        413,
        415,
        422,
    ),
)
def conditional_update(resource_type: str) -> Response:
    """Conditional update: `PUT /fhir/{type}?identifier=system|value`

    No match creates the resource, one match updates it, several answer 412.
    """
    check_writable(resource_type)
    resource = _resource_body(resource_type)
    criteria = request.query_string.decode()
    try:
        written = _update_match(resource_type, resource, criteria)
    except (Conflict, IntegrityError):
        # A parallel request created the match first (its identifier is taken): update it.
        written = _update_match(resource_type, resource, criteria)
    return _respond(written, 201 if written.created else 200)


def _authorize_update(resource_type: str, resource_id: str, resource: dict[str, Any]) -> None:
    """An update needs ``u``; one that creates the resource needs ``c`` as well, and is
    not open to a token confined to a patient (the id could be another patient's)."""
    authorize(resource_type, "u", resource_id, resource)
    if resource_store.served(read_connection(), resource_type, resource_id) is None:
        refuse_chosen_id(resource_type, resource_id)
        authorize(resource_type, "c")


def _update_match(resource_type: str, resource: dict[str, Any], criteria: str) -> apply.Written:
    authorize(resource_type, "u", resource=resource)
    found = _existing(resource_type, criteria)
    if len(found) > 1:
        raise PreconditionFailed(f"the criteria match {len(found)} resources")
    if found:
        if resource.get("id") not in (None, found[0]):
            raise BadRequest(f"the body's id {resource['id']!r} is not the match's {found[0]!r}")
        matched = {**resource, "id": found[0]}
        return apply.update(database(), resource_type, found[0], matched, actor(), if_match())
    if resource.get("id"):
        _authorize_update(resource_type, resource["id"], resource)
        return apply.update(database(), resource_type, resource["id"], resource, actor())
    authorize(resource_type, "c")
    return apply.create(database(), resource, actor())


@blp.route("/<resource_type>/<resource_id>", methods=["PATCH"])
@blp.doc(
    requestBody=request_body(patch=True),
    responses=responses({200: ("Patched", "FhirCarePlan")}, 400, 404, 406, 410, 412, 413, 415, 422),
)
def patch(resource_type: str, resource_id: str) -> Response:
    """Change a resource with a JSON Patch

    Applied to the current version; the result must still be a valid resource of the
    profile and passes the same rules as an update. Honours `If-Match`.
    """
    check_writable(resource_type)
    operations = _patch_operations()
    with database().reading() as session:
        stored = resource_store.current(session, resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    try:
        result = jsonpatch.apply_patch(json.loads(stored.content), operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise MappingError([(resource_type, f"the patch cannot be applied: {error}")]) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        # The patch's own shape checks passed but it does not fit the resource (e.g. a
        # path through a string): the library raises Python's errors for these.
        raise MappingError(
            [(resource_type, f"the patch cannot be applied to this resource: {error}")]
        ) from None
    if (
        not isinstance(result, dict)
        or result.get("id") != resource_id
        or (result.get("resourceType") != resource_type)
    ):
        raise MappingError([(resource_type, "a patch cannot change the resource type or id")])
    # What the patch made is checked as a written body would be, before anything reads it.
    patched = checked(result, resource_type)
    authorize(resource_type, "u", resource_id, patched)
    expected = if_match()
    if expected is None:
        # Patched against this version: refuse if another write lands in between.
        expected = stored.version_id
    written = apply.update(database(), resource_type, resource_id, patched, actor(), expected)
    return _respond(written, 200)


@blp.route("/<resource_type>/<resource_id>", methods=["DELETE"])
@blp.doc(responses=responses({204: ("Deleted", None)}, 400, 404, 412, 422))
def delete(resource_type: str, resource_id: str) -> Response:
    """Delete a CarePlan episode (with its phases and goals), a Goal or a score

    Deleting a QuestionnaireResponse or an Observation deletes the administration: both.
    The history keeps every version; reading it afterwards answers 410. Honours
    `If-Match`.
    """
    check_writable(resource_type)
    apply.delete(database(), resource_type, resource_id, actor(), if_match())
    return no_content()
