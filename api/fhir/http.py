"""FHIR HTTP details: media types, content negotiation, resource responses, OperationOutcome."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from flask import Response, request

FHIR_JSON = "application/fhir+json"
# Wildcards in the Accept header (*/*, application/*) match these.
_ACCEPTED_TYPES = ("application/fhir+json", "application/json")
_FORMATS = {"json", "application/json", "application/fhir+json"}


class FhirError(Exception):
    """An error only the FHIR interface has, with its OperationOutcome issue code."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def negotiate() -> None:
    """Refuse requests for anything but JSON (``_format`` wins over ``Accept``)."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip() not in _FORMATS:
            raise FhirError(
                406, "not-supported", f"_format={fmt} is not supported: this server speaks JSON"
            )
        return
    accept = request.accept_mimetypes
    if accept and not any(accept[t] for t in _ACCEPTED_TYPES):
        raise FhirError(
            406,
            "not-supported",
            f"cannot answer with {request.headers.get('Accept')}: use application/fhir+json",
        )


def _pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def body_response(
    content: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A FHIR JSON body sent as stored (re-indented only when ``_pretty=true``)."""
    if _pretty():
        content = json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    response = Response(content, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_response(
    resource: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return body_response(json.dumps(resource, ensure_ascii=False), status, headers)


def weak_etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def version_headers(version_id: int, last_updated: datetime) -> dict[str, str]:
    return {"ETag": weak_etag(version_id), "Last-Modified": http_date(last_updated)}


def parse_etag(value: str) -> int | None:
    """The version in ``W/"3"`` (or ``"3"``); None when the value is not such an ETag."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"' and value[1:-1].isdigit():
        return int(value[1:-1])
    return None


def not_modified(version_id: int, last_updated: datetime) -> bool:
    """Conditional read: ``If-None-Match`` first, else ``If-Modified-Since``."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [parse_etag(tag) for tag in if_none_match.split(",")]
        return if_none_match.strip() == "*" or version_id in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        return last_updated.replace(microsecond=0) <= moment
    return False


def operation_outcome(
    status: int,
    code: str,
    diagnostics: str,
    expressions: list[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    severity: str = "error",
) -> Response:
    """An OperationOutcome; with ``expressions`` one issue per (FHIRPath, message)."""
    if expressions:
        issues = [
            {"severity": severity, "code": code, "diagnostics": message, "expression": [path]}
            for path, message in expressions
        ]
    else:
        issues = [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    outcome = {"resourceType": "OperationOutcome", "issue": issues}
    return json_response(outcome, status, headers)
