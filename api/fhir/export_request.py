"""What a ``$export`` kick-off asks for: its parameters, read from the query or a Parameters
body, checked, and the ``_typeFilter`` queries turned into the search layer's clauses.

Supported: ``_outputFormat`` (NDJSON), ``_type``, ``_since`` and ``_typeFilter``. Any other
parameter (``_elements``, ``patient``, ``includeAssociatedData``, ``_until``…) is refused
with a 400 naming it, unless ``Prefer: handling=lenient`` asks for it to be ignored: it is
then reported as a warning in the manifest's error file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

from flask import request
from sqlalchemy import Connection

from api.auth.access import PLAN_TYPES
from api.fhir import search_clauses
from api.fhir.http import FhirError
from api.fhir.parameters import InvalidParameter, check_text
from api.fhir.search import RESULT_PARAMETERS
from service import resource_search as rs
from service.export_reading import Filter
from service.instants import InvalidInstant, parse_instant

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
SUPPORTED = ("_outputFormat", "_type", "_since", "_typeFilter")
# Parameters of the FHIR interface as a whole, not of the operation.
_GENERAL = ("_format", "_pretty")
# A _typeFilter list is split before each "Type?" (a comma may also separate a query's values).
_NEXT_QUERY = re.compile(r",(?=[A-Z][A-Za-z]*\?)")


@dataclass
class ExportRequest:
    """A kick-off's parameters, checked."""

    types: list[str] | None = None
    since: datetime | None = None
    type_filters: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def lenient() -> bool:
    return "handling=lenient" in request.headers.get("Prefer", "").replace(" ", "")


def respond_async() -> bool:
    prefer = request.headers.get("Prefer", "").replace(" ", "")
    return any(part == "respond-async" for part in re.split(r"[,;]", prefer))


def _parameters() -> list[tuple[str, str]]:
    """(name, value) pairs of the query, or of a POST's Parameters resource."""
    if request.method != "POST":
        return [
            (name, value) for name, value in request.args.items(multi=True) if name not in _GENERAL
        ]
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(
            400, "invalid", "POST $export takes a Parameters resource (application/fhir+json)"
        )
    found = []
    for position, parameter in enumerate(body.get("parameter") or []):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        values = [
            value
            for key, value in (parameter.items() if isinstance(parameter, dict) else ())
            if key.startswith("value")
        ]
        if not isinstance(name, str) or len(values) != 1 or not isinstance(values[0], str):
            raise InvalidParameter(
                f"Parameters.parameter[{position}]",
                "each parameter needs a name and one value of a string type "
                "(valueString, valueInstant, valueCode…)",
            )
        found.append((name, values[0]))
    return found


def parse(bound: str | None) -> ExportRequest:
    """The kick-off's parameters; ``bound`` the patient the caller is confined to (the
    resources a ``_typeFilter`` chain looks at stay within it)."""
    relaxed = lenient()
    parsed = ExportRequest()
    filters: list[str] = []
    for name, value in _parameters():
        check_text(name, value)
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise InvalidParameter(
                    name, f"{value!r} is not supported: use {', '.join(OUTPUT_FORMATS)}"
                )
        elif name == "_type":
            parsed.types = [*(parsed.types or []), *_types(value, parsed, relaxed)]
        elif name == "_since":
            if parsed.since is not None:
                raise InvalidParameter(name, "is given once")
            try:
                parsed.since = parse_instant(value)
            except InvalidInstant as error:
                raise InvalidParameter(name, str(error)) from None
        elif name == "_typeFilter":
            filters += split_type_filters(value)
        elif relaxed:
            parsed.warnings.append(f"the parameter {name} is not supported and was ignored")
        else:
            raise InvalidParameter(
                name,
                f"{name} is not supported by this server's $export (it takes "
                f"{', '.join(SUPPORTED)}); send Prefer: handling=lenient to have it ignored",
            )
    if parsed.types is not None:
        parsed.types = list(dict.fromkeys(parsed.types))
    for query in filters:
        try:
            type_filter(query, bound)
        except search_clauses.Unsupported as unsupported:
            if not relaxed:
                raise InvalidParameter("_typeFilter", f"{query}: {unsupported}") from None
            parsed.warnings.append(f"the _typeFilter {query} is not supported and was ignored")
            continue
        resource_type = query.split("?", 1)[0]
        if parsed.types is not None and resource_type not in parsed.types:
            raise InvalidParameter(
                "_typeFilter", f"{query}: {resource_type} is not among the _type requested"
            )
        parsed.type_filters.append(query)
    return parsed


def split_type_filters(value: str) -> list[str]:
    """The queries of a ``_typeFilter`` value: several are separated by a comma before each
    ``Type?`` (a comma elsewhere separates the values of a parameter)."""
    return [query for query in _NEXT_QUERY.split(value) if query]


def _types(value: str, parsed: ExportRequest, relaxed: bool) -> list[str]:
    found = []
    for resource_type in (part.strip() for part in value.split(",")):
        if resource_type in PLAN_TYPES:
            found.append(resource_type)
        elif relaxed:
            parsed.warnings.append(f"{resource_type} resources are not served and were ignored")
        else:
            raise InvalidParameter(
                "_type",
                f"this server exports no {resource_type or 'empty'} resources; "
                f"it exports {', '.join(PLAN_TYPES)}",
            )
    return found


def type_filter(query: str, bound: str | None) -> tuple[str, list[rs.Clause]]:
    """A ``_typeFilter`` query as its type and clauses. A parameter this server cannot
    apply raises :class:`search_clauses.Unsupported`; one it cannot read, a 400."""
    resource_type, mark, text = query.partition("?")
    if not mark or resource_type not in PLAN_TYPES:
        raise InvalidParameter(
            "_typeFilter",
            f"{query!r} is not a search query on a type this server exports "
            f"(such as Goal?lifecycle-status=active)",
        )
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs:
        raise InvalidParameter("_typeFilter", f"{query!r} has no search parameter")
    clauses: list[rs.Clause] = []
    for name, value in pairs:
        check_text(name, value)
        if name in RESULT_PARAMETERS:
            raise search_clauses.Unsupported(f"{name} does not select resources")
        clauses.append(search_clauses.clause(resource_type, name, value, bound))
    return resource_type, clauses


def filters(queries: list[str], bound: str | None) -> dict[str, Filter]:
    """Each type's filter: the ids of a page that match one of its queries at least."""
    by_type: dict[str, list[list[rs.Clause]]] = {}
    for query in queries:
        resource_type, clauses = type_filter(query, bound)
        by_type.setdefault(resource_type, []).append(clauses)
    return {name: _filter(name, listed) for name, listed in by_type.items()}


def _filter(resource_type: str, queries: list[list[rs.Clause]]) -> Filter:
    def keep(connection: Connection, ids: list[str]) -> set[str]:
        kept: set[str] = set()
        for clauses in queries:
            search = rs.SearchQuery(
                resource_type, [*clauses, rs.IdClause(tuple(ids))], limit=len(ids) + 1
            )
            kept.update(row.resource.id for row in rs.search(connection, search))
        return kept

    return keep


def operation_outcome_lines(warnings: list[str]) -> list[str]:
    """The warnings as OperationOutcomes, one JSON document each (the error file)."""
    return [
        json.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": text}],
            },
            separators=(",", ":"),
        )
        for text in warnings
    ]
