"""POST /fhir: batch and transaction Bundles.

Every entry's shape is checked first (bundle_entries.py); the code here reads only the
checked :class:`Entry`. A transaction is all or nothing: its entries run in one database
transaction and any failure rolls every one back. Ids are settled before any reference is
rewritten: the matches of conditional creates and updates first, then new ids for the
rest, so a reference to an entry's ``fullUrl`` points at the resource it matched or the
one it creates. Conditional references (``CarePlan?identifier=s|v``) are resolved inside
the transaction. A batch runs each entry on its own and reports each outcome: a failing
entry, whatever the failure, is an error entry and the others still run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC
from functools import partial
from http import HTTPStatus
from typing import Any

import flask
from flask import Response, g, request
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import BadRequest, HTTPException, UnsupportedMediaType

from api.auth.access import Forbidden, Unauthenticated, authorize, refuse_chosen_id
from api.body import json_body
from api.fhir.bundle_entries import (
    Entry,
    EntryError,
    check_entry,
    check_envelope,
    mapping_failure,
)
from api.fhir.bundle_ids import Target, check_identities, order, resolved, settle
from api.fhir.http import body_response, json_response, parse_etag, weak_etag
from api.fhir.openapi import request_body, responses
from api.fhir.resources import base_url, blp
from api.fhir.search import Search, run
from api.http import actor, database
from api.problems import domain_status
from fhir_mappings import apply
from fhir_mappings.parse import Checked
from fhir_mappings.parse_common import MappingError
from fhir_mappings.projection import instant
from service import resource_store
from service.errors import Conflict, DomainError, Gone, NotFound
from service.models import StoredResource

__all__ = ["BundleFailed", "EntryError", "bundle"]

log = logging.getLogger("ipt_careplans.errors")
# The interaction a written entry counts as (in the metrics).
_WRITES = {"POST": "create", "PUT": "update", "DELETE": "delete"}


class BundleFailed(Exception):
    """A transaction failed: nothing of it was stored. ``failures`` name each bad entry."""

    def __init__(self, failures: list[EntryError]) -> None:
        super().__init__(failures[0].message)
        self.failures = failures


class _Raced(Exception):
    """A write conflicted with stored data; a conditional write may have lost a race."""

    def __init__(self, failure: EntryError) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _status(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _outcome(failure: EntryError) -> dict[str, Any]:
    issues: list[dict[str, Any]] = [
        {"severity": "error", "code": failure.code, "diagnostics": message, "expression": [path]}
        for path, message in failure.expressions
    ] or [{"severity": "error", "code": failure.code, "diagnostics": failure.message}]
    return {"resourceType": "OperationOutcome", "issue": issues}


def _authorize(entry: Entry, resource: dict[str, Any] | None, target: Target | None) -> None:
    """Each entry is authorised as if it were sent alone."""
    kind = entry.resource_type
    if entry.method == "GET":
        authorize(kind, "s" if entry.resource_id is None else "r", entry.resource_id)
    elif entry.method == "DELETE":
        authorize(kind, "d", entry.resource_id)
    elif entry.method == "POST":
        authorize(kind, "c", None, resource)
    else:
        assert target is not None
        authorize(kind, "u", target.id, resource)
        with database().reading() as session:
            creates = resource_store.current(session, kind, target.id) is None
        if creates:
            if entry.resource_id is not None or (resource or {}).get("id") == target.id:
                # The id is the client's: as PUT alone, not for a confined token.
                refuse_chosen_id(kind, target.id)
            authorize(kind, "c")


def _current(resource_type: str, resource_id: str) -> StoredResource:
    with database().reading() as session:
        stored = resource_store.current(session, resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    if stored.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted")
    return stored


def _response(resource_type: str, stored: StoredResource, status: str) -> dict[str, Any]:
    return {
        "status": status,
        "location": f"{resource_type}/{stored.id}/_history/{stored.version_id}",
        "etag": weak_etag(stored.version_id),
        "lastModified": instant(stored.last_updated),
    }


def _stored_entry(resource_type: str, resource_id: str, status: str) -> dict[str, Any]:
    return _entry_of(resource_type, _current(resource_type, resource_id), status)


def _entry_of(resource_type: str, stored: StoredResource, status: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url()}/{resource_type}/{stored.id}",
        "resource": json.loads(stored.content),
        "response": _response(resource_type, stored, status),
    }


def _read(entry: Entry) -> dict[str, Any]:
    """A read, conditional on ``ifNoneMatch`` or ``ifModifiedSince`` when given."""
    assert entry.resource_id is not None
    stored = _current(entry.resource_type, entry.resource_id)
    unchanged = False
    if entry.if_none_match is not None:
        tags = [tag.strip() for tag in entry.if_none_match.split(",")]
        unchanged = "*" in tags or stored.version_id in [parse_etag(tag) for tag in tags]
    elif entry.if_modified_since is not None:
        modified = stored.last_updated.replace(microsecond=0)
        unchanged = modified.astimezone(UTC) <= entry.if_modified_since.astimezone(UTC)
    if unchanged:
        return {"response": _response(entry.resource_type, stored, "304 Not Modified")}
    return _entry_of(entry.resource_type, stored, "200 OK")


def _run(
    entry: Entry, resource: dict[str, Any] | None, target: Target | None
) -> Callable[[], dict[str, Any]]:
    """Run one entry; its response entry is made once the writes are published."""
    kind = entry.resource_type
    if entry.method == "GET":
        if entry.resource_id is not None:
            read = _read(entry)
            return lambda: read
        try:
            search = Search(kind, entry.query)
        except BadRequest as error:
            path = f"{entry.path}.request.url"
            raise EntryError.at(entry.index, 400, "invalid", path, str(error.description)) from None
        searchset = {"resource": json.loads(run(search)), "response": {"status": "200 OK"}}
        return lambda: searchset
    if entry.method == "DELETE":
        assert entry.resource_id is not None
        apply.delete(database(), kind, entry.resource_id, actor(), entry.if_match)
        return lambda: {"response": {"status": "204 No Content"}}
    assert resource is not None and target is not None
    # The entry's resource passed the structure check; resolving its references replaced
    # reference strings by strings and the id by a server id, which keeps it valid.
    resource = Checked(resource)
    if entry.method == "POST":
        if target.matched:
            return partial(_stored_entry, kind, target.id, "200 OK")
        written = apply.create(database(), resource, actor(), target.id)
        return partial(_stored_entry, written.resource_type, written.id, "201 Created")
    body = Checked({**resource, "id": target.id})
    written = apply.update(database(), kind, target.id, body, actor(), entry.if_match)
    return partial(_stored_entry, kind, target.id, _status(201 if written.created else 200))


def _failure(index: int | None, error: Exception, total: bool = False) -> EntryError:
    """The status and outcome of a failed entry, as the single-request routes would answer.

    An error no rule covers is re-raised, unless ``total``: then it is logged (its type
    and where it was raised, never its message) and answered as a 500 of this entry.
    """
    if isinstance(error, EntryError):
        return error
    if isinstance(error, MappingError):
        if index is not None:
            return mapping_failure(index, error)
        return EntryError(None, 422, "processing", str(error), list(error.problems))
    if isinstance(error, Forbidden):
        return EntryError(index, 403, "forbidden", str(error))
    if isinstance(error, Unauthenticated):
        return EntryError(index, 401, "login", str(error))
    if isinstance(error, DomainError):
        status, code = domain_status(error)
        return EntryError(index, status, code, error.message)
    if isinstance(error, IntegrityError):
        message = "the write conflicts with stored data: an identifier or number is already taken"
        return EntryError(index, 409, "conflict", message)
    if isinstance(error, StaleDataError):
        message = "the record changed while this request ran: read it again and retry"
        return EntryError(index, 409, "conflict", message)
    if isinstance(error, HTTPException):
        return EntryError(index, error.code or 400, "invalid", str(error.description))
    if not total:
        raise error
    if isinstance(error, OperationalError):
        log.error("database error in a batch entry", extra={"error": type(error.orig).__name__})
        return EntryError(index, 503, "transient", "the database is unavailable or busy: retry")
    log.exception("unhandled error in a batch entry", extra={"entry": index})
    return EntryError(
        index, 500, "exception", "the entry could not be processed; it has been logged"
    )


@blp.route("", methods=["POST"])
@blp.doc(
    requestBody=request_body("FhirBundle"),
    responses=responses(
        {200: ("A batch-response or transaction-response Bundle", "FhirBundle")},
        400,
        403,
        409,
        412,
        415,
        422,
    ),
)
def bundle() -> Response:
    """Process a batch or transaction Bundle

    Every entry is checked first: the entry and its `request` are objects of the FHIR
    types, the method and URL are supported, and the resource of a POST or PUT is a valid
    R4 resource of the URL's type. A problem is answered with an OperationOutcome whose
    `expression` names the element (`Bundle.entry[2].request.url`).

    A transaction is all or nothing, and any bad entry fails it (nothing is stored). Its
    entries run in FHIR order (DELETE, POST, PUT, GET); its GET entries see its writes.
    References to an entry's `fullUrl` point at the resource it creates, or at the one
    its condition matched (`ifNoneExist`, conditional `PUT CarePlan?identifier=…`, 200 OK);
    a conditional reference (`CarePlan?identifier=system|value`) is resolved inside the
    transaction (412 when it matches several resources, 422 when none). Re-sending a
    transaction of conditional creates changes nothing.

    A batch reports each entry's outcome on its own: a bad entry gets its own error entry
    (status and OperationOutcome) and the other entries are still processed.
    """
    if request.mimetype not in ("application/fhir+json", "application/json"):
        raise UnsupportedMediaType("send the Bundle as application/fhir+json")
    body = json_body()
    try:
        kind, entries = check_envelope(body)
        if kind == "transaction":
            return body_response(json.dumps(_transaction(entries)))
        return body_response(json.dumps(_batch(entries)))
    except EntryError as failure:
        return _refused([failure], "")
    except BundleFailed as failed:
        return _refused(failed.failures, "the transaction was rolled back: ")


# The base URL with a trailing slash (``POST [base]/``), as several client libraries send
# batches and transactions: the same endpoint, not documented twice.
flask.Blueprint.add_url_rule(blp, "/", endpoint="bundle", view_func=bundle, methods=["POST"])


def _refused(failures: list[EntryError], prefix: str) -> Response:
    """One OperationOutcome for the whole request: an issue per element found wrong."""
    issues = []
    for failure in failures:
        where = f"entry {failure.index} failed: " if failure.index is not None else ""
        outcome = _outcome(failure)
        for issue in outcome["issue"]:
            issue["diagnostics"] = f"{prefix}{where}{issue['diagnostics']}"
            if failure.index is not None:
                # Whatever the failure, the entry it came from is named.
                issue.setdefault("expression", [f"Bundle.entry[{failure.index}]"])
            issues.append(issue)
    body = {"resourceType": "OperationOutcome", "issue": issues}
    return json_response(body, failures[0].status)


def _transaction(raw: list[Any]) -> dict[str, Any]:
    entries, failures = [], []
    for index, item in enumerate(raw):
        try:
            entries.append(check_entry(index, item))
        except EntryError as failure:
            failures.append(failure)
    if failures:
        raise BundleFailed(failures)
    try:
        check_identities(entries)
    except EntryError as failure:
        raise BundleFailed([failure]) from None
    try:
        return _run_transaction(entries)
    except _Raced as raced:
        if not any(entry.conditional for entry in entries):
            raise BundleFailed([raced.failure]) from None
    # A parallel request stored what a condition looks for first: now it matches.
    try:
        return _run_transaction(entries)
    except _Raced as raced:
        raise BundleFailed([raced.failure]) from None


def _run_transaction(entries: list[Entry]) -> dict[str, Any]:
    results: dict[int, Callable[[], dict[str, Any]]] = {}
    written: list[tuple[str, str]] = []
    index: int | None = None
    try:
        with database().transaction():
            # Ids first: what each condition matches, then new ids for the rest.
            targets: dict[int, Target] = {}
            for entry in entries:
                index = entry.index
                if (target := settle(entry)) is not None:
                    targets[entry.index] = target
            full_urls = {
                e.full_url: f"{e.resource_type}/{targets[e.index].id}"
                for e in entries
                if e.full_url and e.index in targets
            }
            published = False
            for entry in order(entries):
                index = entry.index
                if not published and entry.method == "GET":
                    # The reads come last and see the Bundle's writes, as published.
                    database().publish_pending()
                    published = True
                resource = resolved(entry, full_urls) if entry.resource is not None else None
                target = targets.get(entry.index)
                _authorize(entry, resource, target)
                results[entry.index] = _run(entry, resource, target)
                written.extend(_written(entry))
            index = None  # what fails from here on fails at the commit
    except EntryError as failure:
        raise BundleFailed([failure]) from None
    except (Conflict, IntegrityError) as error:
        raise _Raced(_failure(index, error)) from error
    except Exception as error:
        raise BundleFailed([_failure(index, error)]) from error
    g.fhir_bundle_writes = written
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [results[i]() for i in range(len(entries))],
    }


def _batch_entry(index: int, raw: Any) -> dict[str, Any]:
    entry = check_entry(index, raw)
    try:
        return _write_or_read(entry)
    except (Conflict, IntegrityError):
        if not entry.conditional:
            raise
    # A parallel request stored what the condition looks for first: now it matches.
    return _write_or_read(entry)


def _write_or_read(entry: Entry) -> dict[str, Any]:
    target = settle(entry)
    _authorize(entry, entry.resource, target)
    result = _run(entry, entry.resource, target)()
    g.setdefault("fhir_bundle_writes", []).extend(_written(entry))
    return result


def _written(entry: Entry) -> list[tuple[str, str]]:
    """(type, interaction) of a write entry that succeeded; a conditional create that
    found its match counts as a create, as it does sent alone."""
    if entry.method == "GET":
        return []
    return [(entry.resource_type, _WRITES[entry.method])]


def _batch(raw: list[Any]) -> dict[str, Any]:
    results = []
    for index, item in enumerate(raw):
        try:
            results.append(_batch_entry(index, item))
        except Exception as error:  # every failure is this entry's own
            failure = _failure(index, error, total=True)
            results.append(
                {"response": {"status": str(failure.status), "outcome": _outcome(failure)}}
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": results}
