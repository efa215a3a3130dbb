"""POST /fhir: batch and transaction Bundles.

A transaction is all or nothing: its entries run in one database transaction and any
failure rolls every one back. ``urn:uuid:`` full URLs of created resources are given
server ids first and every reference to them is rewritten. A batch runs each entry on its
own and reports each outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Response, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, HTTPException, PreconditionFailed

from api.auth.access import Forbidden, Unauthenticated, authorize
from api.body import json_body
from api.fhir.http import body_response, parse_etag, weak_etag
from api.fhir.openapi import responses
from api.fhir.resources import PLAN_TYPES, base_url, blp
from api.fhir.search import Search, matching_ids, run
from api.http import actor, database
from api.problems import domain_status
from fhir_mappings import apply
from fhir_mappings.parse_common import MappingError
from fhir_mappings.projection import instant
from service import resource_store
from service.errors import DomainError, Gone, NotFound
from service.models import new_id

# The order a transaction processes its entries in (FHIR R4 http.html#trules).
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3, "GET": 4}


class EntryError(Exception):
    """An entry failed: its status and OperationOutcome."""

    def __init__(self, index: int, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.index, self.status, self.code, self.message = index, status, code, message


def _outcome(code: str, message: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }


def _split_url(url: str) -> tuple[str, str | None, MultiDict[str, str]]:
    """(type, id or None, query) of an entry's request URL (relative or under our base)."""
    parts = urlsplit(url)
    path = parts.path.removeprefix(urlsplit(base_url()).path).strip("/")
    segments = path.split("/") if path else []
    if not segments or segments[0] not in PLAN_TYPES or len(segments) > 2:
        raise BadRequest(f"request.url {url!r} does not name a CarePlan or Goal")
    return (
        segments[0],
        (segments[1] if len(segments) == 2 else None),
        MultiDict(parse_qsl(parts.query, keep_blank_values=True)),
    )


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    """Every reference to a urn:uuid: of this Bundle, rewritten to the id assigned to it."""
    if isinstance(value, dict):
        return {
            k: ids.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, ids)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def _stored_entry(resource_type: str, resource_id: str, status: str) -> dict[str, Any]:
    with database().reading() as session:
        stored = resource_store.current(session, resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    if stored.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted")
    return {
        "fullUrl": f"{base_url()}/{resource_type}/{resource_id}",
        "resource": json.loads(stored.content),
        "response": {
            "status": status,
            "location": f"{resource_type}/{resource_id}/_history/{stored.version_id}",
            "etag": weak_etag(stored.version_id),
            "lastModified": instant(stored.last_updated),
        },
    }


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    version = parse_etag(header)
    if version is None:
        raise BadRequest(f"ifMatch {header!r} is not a version ETag")
    return version


_INTERACTIONS = {"GET": "r", "POST": "c", "PUT": "u", "DELETE": "d"}


def _authorize_entry(
    method: Any, resource_type: str, resource_id: str | None, resource: Any
) -> None:
    """Each entry is authorised as if it were sent alone."""
    interaction = _INTERACTIONS.get(str(method))
    if interaction is None:
        return  # refused as an unsupported method below
    if method == "GET" and resource_id is None:
        interaction = "s"
    body = resource if isinstance(resource, dict) and method in ("POST", "PUT") else None
    authorize(resource_type, interaction, resource_id, body)


def _run_entry(entry: dict[str, Any], assigned: dict[str, str]) -> Callable[[], dict[str, Any]]:
    """Run one entry; its response entry is made once the writes are published."""
    req = entry.get("request") or {}
    method = req.get("method")
    resource_type, resource_id, query = _split_url(str(req.get("url", "")))
    resource = entry.get("resource")
    _authorize_entry(method, resource_type, resource_id, resource)
    if method == "GET":
        if resource_id is None:
            searchset = {
                "resource": json.loads(run(Search(resource_type, query))),
                "response": {"status": "200 OK"},
            }
            return lambda: searchset
        read = _stored_entry(resource_type, resource_id, "200 OK")
        return lambda: read
    if method == "DELETE":
        if resource_id is None:
            raise BadRequest("conditional delete is not supported: name the resource")
        apply.delete(database(), resource_type, resource_id, actor(), _if_match(req.get("ifMatch")))
        return lambda: {"response": {"status": "204 No Content"}}
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise BadRequest(f"the entry's resource must be a {resource_type}")
    if method == "POST":
        criteria = req.get("ifNoneExist")
        if criteria:
            found = matching_ids(Search(resource_type, MultiDict(parse_qsl(criteria)), strict=True))
            if len(found) > 1:
                raise PreconditionFailed(f"ifNoneExist matches {len(found)} resources")
            if found:
                return partial(_stored_entry, resource_type, found[0], "200 OK")
        new = assigned.get(str(entry.get("fullUrl")), "").split("/")[-1] or new_id()
        written = apply.create(database(), resource, actor(), new)
        return partial(_stored_entry, written.resource_type, written.id, "201 Created")
    if method == "PUT":
        if resource_id is None:
            raise BadRequest("conditional update in a Bundle is not supported: name the resource")
        if resource.get("id") != resource_id:
            raise BadRequest(f"the resource's id is not {resource_id!r}")
        written = apply.update(
            database(), resource_type, resource_id, resource, actor(), _if_match(req.get("ifMatch"))
        )
        status = "201 Created" if written.created else "200 OK"
        return partial(_stored_entry, resource_type, resource_id, status)
    raise BadRequest(f"request.method {method!r} is not supported in a Bundle")


def _failure(index: int, error: Exception) -> EntryError:
    """The status and outcome of a failed entry, as the single-request routes would answer."""
    if isinstance(error, MappingError):
        text = "; ".join(f"{path}: {message}" for path, message in error.problems)
        return EntryError(index, 422, "processing", text)
    if isinstance(error, NotFound):
        return EntryError(index, 404, "not-found", error.message)
    if isinstance(error, Forbidden):
        return EntryError(index, 403, "forbidden", str(error))
    if isinstance(error, Unauthenticated):
        return EntryError(index, 401, "login", str(error))
    if isinstance(error, DomainError):
        status, code = domain_status(error)
        return EntryError(index, status, code, error.message)
    if isinstance(error, HTTPException):
        return EntryError(index, error.code or 400, "invalid", str(error.description))
    raise error


@blp.route("", methods=["POST"])
@blp.doc(
    responses=responses(
        {200: ("A batch-response or transaction-response Bundle", "FhirBundle")},
        400,
        404,
        409,
        412,
        415,
        422,
    )
)
def bundle() -> Response:
    """Process a batch or transaction Bundle

    A transaction is all or nothing and rewrites `urn:uuid:` references to the ids it
    assigns; entries run in FHIR order (DELETE, POST, PUT, PATCH, GET), and its GET
    entries (reads and searches) see what its writes stored. A batch reports each entry's
    outcome on its own.
    """
    if request.mimetype not in ("application/fhir+json", "application/json"):
        raise BadRequest("send the Bundle as application/fhir+json")
    body = json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("the body must be a Bundle")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be batch or transaction, not {kind!r}")
    entries = body.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadRequest("Bundle.entry must be a list of entries")
    if kind == "transaction":
        return body_response(json.dumps(_transaction(entries)))
    return body_response(json.dumps(_batch(entries)))


def _transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    assigned = {
        str(e["fullUrl"]): f"{e['resource']['resourceType']}/{new_id()}"
        for e in entries
        if str(e.get("fullUrl", "")).startswith("urn:uuid:")
        and (e.get("request") or {}).get("method") == "POST"
        and isinstance(e.get("resource"), dict)
    }
    rewritten = [_rewrite(e, assigned) for e in entries]

    def rank(index: int) -> tuple[int, int, int]:
        """FHIR's method order; episodes before the goals that point at them."""
        entry = rewritten[index]
        method = str((entry.get("request") or {}).get("method"))
        is_goal = (entry.get("resource") or {}).get("resourceType") == "Goal"
        return METHOD_ORDER.get(method, 9), int(is_goal), index

    order = sorted(range(len(rewritten)), key=rank)
    results: dict[int, Callable[[], dict[str, Any]]] = {}
    try:
        with database().transaction():
            published = False
            for index in order:
                try:
                    entry = {**rewritten[index], "fullUrl": entries[index].get("fullUrl")}
                    if not published and (entry.get("request") or {}).get("method") == "GET":
                        # The reads come last and see the Bundle's writes, as published.
                        database().publish_pending()
                        published = True
                    results[index] = _run_entry(entry, assigned)
                except Exception as error:
                    raise _failure(index, error) from error
    except EntryError as failure:
        raise BundleFailed(failure) from None
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [results[i]() for i in range(len(entries))],
    }


class BundleFailed(Exception):
    """A transaction failed on one entry: nothing of it was stored."""

    def __init__(self, failure: EntryError) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _batch(entries: list[dict[str, Any]]) -> dict[str, Any]:
    results = []
    for index, entry in enumerate(entries):
        try:
            results.append(_run_entry(entry, {})())
        except Exception as error:
            failure = _failure(index, error)
            results.append(
                {
                    "response": {
                        "status": str(failure.status),
                        "outcome": _outcome(failure.code, failure.message),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": results}
