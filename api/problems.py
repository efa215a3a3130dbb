"""Every error of the native API as RFC 9457 problem details, in one place.

Domain errors, request-validation errors and HTTP errors all end here; the response names
each invalid field. Nothing about the server's internals (stack traces, SQL) is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, json, request
from flask_smorest import Api
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from api.body import BodyError, printable
from api.fhir.http import FhirError, operation_outcome
from api.schemas import ProblemSchema
from fhir_mappings.parse_common import MappingError
from service.errors import Conflict, DomainError, Gone, NotFound, RuleViolation, VersionMismatch

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("ipt_careplans.errors")

_DOMAIN_STATUS: list[tuple[type[DomainError], int, str]] = [
    (RuleViolation, 422, "rule-violation"),
    (NotFound, 404, "not-found"),
    (Gone, 410, "gone"),
    (VersionMismatch, 412, "version-mismatch"),
    (Conflict, 409, "conflict"),
]


# OperationOutcome issue codes for the FHIR interface, by problem kind, then by status.
_FHIR_CODES_BY_KIND = {
    "validation": "invalid",
    "rule-violation": "business-rule",
    "not-found": "not-found",
    "gone": "deleted",
    "version-mismatch": "conflict",
    "conflict": "conflict",
    "malformed": "structure",
    "unsupported-media-type": "not-supported",
    "processing": "processing",
    "unauthenticated": "login",
    "forbidden": "forbidden",
}
_FHIR_CODES_BY_STATUS = {
    400: "invalid",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    412: "conflict",
    415: "not-supported",
    503: "transient",
}


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A problem+json response; on the FHIR interface an OperationOutcome instead."""
    if request.path == "/fhir" or request.path.startswith("/fhir/"):
        code = _FHIR_CODES_BY_KIND.get(kind or "") or _FHIR_CODES_BY_STATUS.get(status, "exception")
        expressions = [(e["field"], e["message"]) for e in errors or []]
        return operation_outcome(status, code, detail, expressions, headers)
    body: dict[str, Any] = {
        "type": f"urn:ipt-careplans:problem:{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_error(field: str, message: str, location: str = "json") -> dict[str, str]:
    pointer = "/" + "/".join(
        part.replace("~", "~0").replace("/", "~1") for part in field.split(".")
    )
    return {"field": field, "pointer": pointer, "location": location, "message": message}


def _flatten(messages: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """marshmallow's nested error dicts -> (dotted field path, message) pairs."""
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            yield from _flatten(value, path if key == "_schema" else (*path, str(key)))
    elif isinstance(messages, list | tuple):
        for message in messages:
            yield from _flatten(message, path)
    else:
        yield ".".join(path) or "(body)", str(messages)


def _validation_problem(error: HTTPException) -> Response:
    data = getattr(error, "data", {}) or {}
    errors = []
    for location, messages in (data.get("messages") or {}).items():
        for field, message in _flatten(messages):
            if message == "Unknown field.":
                message = f"unknown field {field.rsplit('.', 1)[-1]!r}"
            errors.append(field_error(field, message, location))
    fields = ", ".join(e["field"] for e in errors) or "the request"
    return problem(422, f"invalid {fields}", kind="validation", errors=errors)


def _element(resource_type: Any, path: tuple[str | int, ...]) -> str:
    """A body element as a FHIRPath expression from its resource (``CarePlan.note[0].text``)."""
    named = isinstance(resource_type, str) and resource_type.isidentifier()
    expression = resource_type if named else "$this"
    for part in path:
        expression += f"[{part}]" if isinstance(part, int) else f".{part}"
    return expression


def body_problem(error: BodyError) -> Response:
    """A body or parameter refused by :mod:`api.body`, naming each element."""
    kind = {422: "validation", 400: "malformed"}.get(error.status)
    if error.location != "json":
        kind = "validation" if error.status == 422 else None  # a parameter: FHIR "invalid"
    errors = []
    fhir = request.path == "/fhir" or request.path.startswith("/fhir/")
    for path, message in error.errors:
        path = tuple(printable(p) if isinstance(p, str) else p for p in path)
        if error.location != "json":
            field = str(path[0])
        elif fhir:
            field = _element(error.resource_type, path)
        else:
            field = ".".join(str(part) for part in path) or "(body)"
        errors.append(field_error(field, message, error.location))
    return problem(error.status, error.detail, kind=kind, errors=errors or None)


def domain_status(error: DomainError) -> tuple[int, str]:
    """The HTTP status and FHIR issue code of a domain error."""
    for cls, status, kind in _DOMAIN_STATUS:
        if isinstance(error, cls):
            return status, _FHIR_CODES_BY_KIND[kind]
    return 422, "business-rule"


def domain_problem(error: DomainError) -> Response:
    for cls, status, kind in _DOMAIN_STATUS:
        if isinstance(error, cls):
            errors = None
            if isinstance(error, RuleViolation):
                errors = [field_error(p.field, p.message) for p in error.problems] or None
            headers = None
            if isinstance(error, VersionMismatch):
                headers = {"ETag": f'"{error.current_version}"'}
            return problem(status, error.message, kind=kind, errors=errors, headers=headers)
    return problem(422, error.message, kind="rule-violation")


class ProblemApi(Api):
    """flask-smorest's Api, answering every HTTP error with problem details."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> Response:
        status = error.code or 500
        if status == 422 and getattr(error, "data", None):
            return _validation_problem(error)
        if status == 400 and getattr(error, "data", None):
            # webargs: the body is not JSON at all.
            return problem(400, "the request body is not valid JSON", kind="malformed")
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        detail = error.description or HTTPStatus(status).phrase
        if status == 413:
            detail = "the request body is larger than this service accepts"
        if status >= 500:
            detail = "the server could not complete the request; it has been logged"
        return problem(status, detail, headers=headers)


def register(app: Flask) -> None:
    """Turn the domain's and the database's errors into problem responses."""

    @app.errorhandler(DomainError)
    def on_domain_error(error: DomainError) -> Response:
        return domain_problem(error)

    @app.errorhandler(FhirError)
    def on_fhir_error(error: FhirError) -> Response:
        return operation_outcome(error.status, error.code, error.diagnostics)

    @app.errorhandler(BodyError)
    def on_refused_body(error: BodyError) -> Response:
        return body_problem(error)

    from api.auth.access import Forbidden, Unauthenticated

    @app.errorhandler(Unauthenticated)
    def on_unauthenticated(error: Unauthenticated) -> Response:
        return problem(
            401, str(error), kind="unauthenticated", headers={"WWW-Authenticate": error.challenge}
        )

    @app.errorhandler(Forbidden)
    def on_forbidden(error: Forbidden) -> Response:
        return problem(403, str(error), kind="forbidden")

    @app.errorhandler(MappingError)
    def on_unmappable(error: MappingError) -> Response:
        expressions = [{"field": path, "message": message} for path, message in error.problems]
        return problem(
            422,
            "the resource cannot be represented as an IPT care plan",
            kind="processing",
            errors=expressions,
        )

    @app.errorhandler(IntegrityError)
    def on_duplicate(_error: IntegrityError) -> Response:
        return problem(
            409,
            "the write conflicts with stored data: an identifier or number is already taken",
            kind="conflict",
        )

    @app.errorhandler(StaleDataError)
    def on_stale(_error: StaleDataError) -> Response:
        return problem(
            409,
            "the record changed while this request ran: read it again and retry",
            kind="conflict",
        )

    @app.errorhandler(OperationalError)
    def on_database_busy(error: OperationalError) -> Response:
        log.error("database error", extra={"error": type(error.orig).__name__})
        return problem(
            503, "the database is unavailable or busy: retry shortly", headers={"Retry-After": "1"}
        )

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return app.extensions["ipt_api"].handle_http_exception(error)
        log.exception("unhandled error")
        return problem(500, "the server could not complete the request; it has been logged")
