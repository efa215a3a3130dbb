"""FHIR HTTP details: media types, content negotiation, resource responses, OperationOutcome."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from flask import Response, request
from werkzeug.exceptions import BadRequest

FHIR_JSON = "application/fhir+json"
# The media types this server answers with; */* and application/* match them too.
_ACCEPTED_TYPES = frozenset({"application/fhir+json", "application/json"})
_WILDCARDS = frozenset({"*/*", "application/*"})
_FORMATS = {"json": "application/json", "application/json": None, "application/fhir+json": None}
# The value of the fhirVersion media-type parameter for FHIR R4 (versioning.html#mt-version).
FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})
_UTF8 = frozenset({"utf-8", "utf8"})


class FhirError(Exception):
    """An error only the FHIR interface has, with its OperationOutcome issue code."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def media_ranges(header: str) -> list[tuple[str, dict[str, str], float]]:
    """The media ranges of an ``Accept`` value: (type, parameters, q), as RFC 9110 §12.5.1."""
    ranges = []
    for item in header.split(","):
        kind, _, rest = item.partition(";")
        kind = kind.strip().lower()
        if not kind:
            continue
        parameters: dict[str, str] = {}
        for parameter in rest.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip():
                parameters[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(parameters.pop("q", "1"))
        except ValueError:
            quality = 1.0
        ranges.append((kind, parameters, quality))
    return ranges


def _unsuitable(parameters: dict[str, str]) -> str | None:
    """Why a media type with these parameters is not one this server reads or writes."""
    version = parameters.get("fhirversion")
    if version is not None and version not in FHIR_VERSIONS:
        return f"this server speaks FHIR R4 (fhirVersion=4.0), not fhirVersion={version}"
    charset = parameters.get("charset")
    if charset is not None and charset.lower() not in _UTF8:
        return f"FHIR JSON is UTF-8, not charset={charset}"
    return None


def negotiate() -> None:
    """Refuse requests for anything but FHIR R4 JSON, as ``_format`` (which wins over
    ``Accept``) or ``Accept`` ask (406), and bodies of another FHIR version or charset
    (415). Media-type parameters are read as the FHIR specification defines them."""
    content_type = request.headers.get("Content-Type")
    if content_type and request.mimetype in _ACCEPTED_TYPES:
        reason = _unsuitable({k.lower(): v for k, v in request.mimetype_params.items()})
        if reason:
            raise FhirError(415, "not-supported", f"cannot read the body: {reason}")
    fmt = request.args.get("_format")
    if fmt is not None:
        for kind, parameters, _ in media_ranges(fmt) or [("", {}, 1.0)]:
            if kind not in _FORMATS:
                raise FhirError(
                    406, "not-supported", f"_format={fmt} is not supported: this server speaks JSON"
                )
            reason = _unsuitable(parameters)
            if reason:
                raise FhirError(406, "not-supported", f"cannot answer with _format={fmt}: {reason}")
        return
    header = request.headers.get("Accept", "").strip()
    if not header:
        return
    reasons = []
    for kind, parameters, quality in media_ranges(header):
        if quality <= 0 or not (kind in _ACCEPTED_TYPES or kind in _WILDCARDS):
            continue
        reason = _unsuitable(parameters)
        if reason is None:
            return
        reasons.append(reason)
    raise FhirError(
        406,
        "not-supported",
        f"cannot answer with {header}: " + (reasons[0] if reasons else "use application/fhir+json"),
    )


def _pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def body_response(
    content: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A FHIR JSON body sent as stored (re-indented only when ``_pretty=true``).

    Stored JSON is valid UTF-8; a message quoting what a client sent might hold a lone
    surrogate, which goes out as its JSON escape rather than failing the response.
    """
    if _pretty():
        content = json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    encoded = content.encode("utf-8", "backslashreplace")
    response = Response(encoded, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_response(
    resource: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return body_response(json.dumps(resource, ensure_ascii=False), status, headers)


def no_content(status: int = 204) -> Response:
    """A response without a body, and so without a Content-Type (RFC 9110 §8.3)."""
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


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


def if_match() -> int | None:
    """The version the ``If-Match`` header asks for; None without the header.

    Raises BadRequest when the header is not a version ETag such as ``W/"3"``.
    """
    header = request.headers.get("If-Match")
    if header is None:
        return None
    version = parse_etag(header)
    if version is None:
        raise BadRequest(f'If-Match must be a version ETag such as W/"3", not {header!r}')
    return version


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
