"""FHIR search: GET /fhir/{type}?… and POST /fhir/{type}/_search, answered as searchset Bundles.

Parameters come from the one table in ``fhir_mappings.search_parameters``. Matches are
served from their stored JSON; only ``_summary`` and ``_elements`` reshape them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from sqlalchemy import Connection
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from api.auth.access import compartment
from api.fhir.http import body_response
from api.fhir.openapi import responses
from api.fhir.resources import PLAN_TYPES, base_url, blp, check_type
from api.http import database, read_connection
from fhir_mappings.search_parameters import (
    INCLUDES,
    REVINCLUDES,
    SEARCH_PARAMETERS,
    SORTS,
    normalise_reference,
    parse_date_range,
)
from fhir_mappings.summary import SUMMARY_MODES, reshape
from service import resource_search as rs

DEFAULT_COUNT = 20
MAX_COUNT = 200
MAX_ITERATIONS = 5
RESULT_PARAMETERS = {
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_include:iterate",
    "_revinclude:iterate",
    "_summary",
    "_elements",
    "_total",
    "_cursor",
    "_format",
    "_pretty",
}
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Ids that JSON takes as they are (every FHIR id is one).
_PLAIN_ID = re.compile(r"[A-Za-z0-9.\-]+").fullmatch


def _strict() -> bool:
    prefer = request.headers.get("Prefer", "")
    return "handling=strict" in prefer.replace(" ", "")


def _split(value: str) -> list[str]:
    """Comma-separated values (OR); a backslash escapes a comma."""
    if "\\" not in value:
        return value.split(",")
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _token_options(value: str) -> tuple[tuple[Any, str | None], ...]:
    options: list[tuple[Any, str | None]] = []
    for part in _split(value):
        if "|" not in part:
            options.append((rs.ANY_SYSTEM, part))
        else:
            system, code = part.split("|", 1)
            options.append((system or None, code or None))
    return tuple(options)


def _reference_targets(value: str, target: str | None, name: str) -> tuple[str, ...]:
    targets = []
    for part in _split(value):
        if "/" in part:
            targets.append(normalise_reference(part))
        elif target is not None:
            targets.append(f"{target}/{part}")
        elif part:
            targets.append(part)
        else:
            raise BadRequest(f"{name}: an empty reference")
    return tuple(targets)


def _date_options(value: str, name: str) -> tuple[tuple[Any, datetime, datetime], ...]:
    options = []
    for part in _split(value):
        prefix = part[:2] if part[:2] in DATE_PREFIXES else "eq"
        text = part[2:] if part[:2] in DATE_PREFIXES else part
        try:
            found = parse_date_range(text)
        except ValueError:
            raise BadRequest(f"{name}: {part!r} is not a FHIR date, dateTime or instant") from None
        options.append((prefix, found.low, found.high))
    return tuple(options)


def _clause(resource_type: str, name: str, value: str) -> rs.Clause | None:
    """The clause of one query parameter; None when the parameter is unknown."""
    base, _, modifier = name.partition(":")
    if base == "_id":
        return rs.IdClause(tuple(_split(value)))
    if base == "_lastUpdated":
        return rs.DateClause(None, _date_options(value, name))
    parameter = SEARCH_PARAMETERS[resource_type].get(base)
    if parameter is None:
        return None
    if modifier == "missing":
        if value not in ("true", "false"):
            raise BadRequest(f"{name} takes true or false, not {value!r}")
        return rs.MissingClause(base, parameter.type, value == "true")
    if parameter.type == "token" and modifier in ("", "not"):
        return rs.TokenClause(base, _token_options(value), negate=modifier == "not")
    if parameter.canonical and modifier in ("", "not"):
        return rs.ReferenceClause(base, tuple(_split(value)), negate=modifier == "not")
    if parameter.type == "reference" and (modifier in ("", "not") or modifier[:1].isupper()):
        target = modifier if modifier[:1].isupper() else parameter.target
        return rs.ReferenceClause(
            base, _reference_targets(value, target, name), negate=modifier == "not"
        )
    if parameter.type == "date" and modifier == "":
        return rs.DateClause(base, _date_options(value, name))
    raise BadRequest(
        f"the modifier :{modifier} is not supported on {parameter.type} parameter {base}"
    )


def _cursor(value: str | None) -> rs.Cursor | None:
    if value is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
        sort_value = data["v"]
        if data.get("t") == "dt":
            sort_value = datetime.fromisoformat(sort_value)
        return rs.Cursor(sort_value, str(data["i"]), bool(data.get("b")))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest("_cursor is not a cursor this server issued") from None


def _encode_cursor(row: rs.Row, backwards: bool) -> str:
    value = row.sort_value
    data: dict[str, Any] = {"i": row.resource.id, "b": backwards}
    if isinstance(value, datetime):
        data.update(v=value.isoformat(), t="dt")
    else:
        data["v"] = value
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


class Search:
    """One search request, parsed."""

    def __init__(
        self, resource_type: str, params: MultiDict[str, str], strict: bool | None = None
    ) -> None:
        self.resource_type = resource_type
        self.base = base_url()
        self.strict = _strict() if strict is None else strict
        self.params = params
        self.used: list[tuple[str, str]] = []
        self.ignored: list[str] = []
        # The result parameters given, each with its values, and all of them in order.
        self.results: dict[str, list[str]] = {}
        self.kept: list[tuple[str, str]] = []
        self.query = rs.SearchQuery(resource_type)
        for name, value in params.items(multi=True):
            if name in RESULT_PARAMETERS:
                self.results.setdefault(name, []).append(value)
                if name != "_cursor":
                    self.kept.append((name, value))
                continue
            clause = _clause(resource_type, name, value)
            if clause is None:
                if self.strict:
                    raise BadRequest(f"unknown search parameter {name!r} for {resource_type}")
                self.ignored.append(name)
                continue
            self.query.clauses.append(clause)
            self.used.append((name, value))
        bound = compartment()
        if bound is not None:
            self.query.clauses.append(rs.PatientClause(bound))
        self.count = self._count()
        self.query.limit = self.count + 1
        self._sort()
        self.cursor = self._first("_cursor")
        self.query.cursor = _cursor(self.cursor)
        self.summary = self._first("_summary")
        if self.summary is not None and self.summary not in SUMMARY_MODES:
            raise BadRequest(f"_summary must be one of {', '.join(SUMMARY_MODES)}")
        elements = self._first("_elements")
        self.elements = [e.strip() for e in elements.split(",") if e.strip()] if elements else None
        total = self._first("_total")
        self.total = "accurate" if total is None else total
        if self.total not in ("none", "estimate", "accurate"):
            raise BadRequest("_total must be none, estimate or accurate")
        self.includes = self._includes("_include", INCLUDES)
        self.revincludes = self._includes("_revinclude", REVINCLUDES)

    def _first(self, name: str) -> str | None:
        values = self.results.get(name)
        return values[0] if values else None

    def _count(self) -> int:
        value = self._first("_count")
        if value is None:
            return DEFAULT_COUNT
        if not value.isdigit():
            raise BadRequest(f"_count must be a whole number, not {value!r}")
        return min(int(value), MAX_COUNT)

    def _sort(self) -> None:
        value = self._first("_sort")
        if not value:
            return
        keys = value.split(",")
        if len(keys) > 1:
            raise BadRequest("_sort takes one key (the id breaks ties)")
        key = keys[0]
        self.query.descending = key.startswith("-")
        name = key.lstrip("-")
        if name not in SORTS:
            raise BadRequest(f"_sort by {name!r} is not supported; use one of {', '.join(SORTS)}")
        self.query.sort = name  # type: ignore[assignment]

    def _includes(self, name: str, allowed: dict[str, tuple[str, ...]]) -> list[tuple[str, bool]]:
        """(source:param, iterate) pairs; ``_include:iterate`` follows includes of includes."""
        found = []
        for iterate in (False, True):
            for value in self.results.get(f"{name}:iterate" if iterate else name, ()):
                known = any(value in values for values in allowed.values())
                if value not in allowed.get(self.resource_type, ()) and not (iterate and known):
                    raise BadRequest(f"{name}={value} is not supported for {self.resource_type}")
                found.append((value, iterate))
        return found

    def link(self, cursor: str | None = None) -> str:
        """A link to this search at a cursor, carrying every parameter that was applied."""
        query = [*self.used, *self.kept]
        if cursor:
            query.append(("_cursor", cursor))
        return f"{self.base}/{self.resource_type}?{urlencode(query)}"


@contextmanager
def _reading() -> Iterator[Connection]:
    """The connection a search reads on.

    Inside a transaction (a Bundle's), the transaction's own. Otherwise the request's
    connection for single-statement reads, its statements seeing one state of the database.
    """
    with database().reading() as session:
        if session.in_transaction():
            session.flush()
            yield session.connection()
            return
    with rs.snapshot(read_connection()) as connection:
        yield connection


def matching_ids(search: Search, limit: int = 2) -> list[str]:
    """Ids of (up to ``limit``) live matches: enough for a conditional request to decide."""
    search.query.limit = limit
    search.query.clauses = list(search.query.clauses)
    with _reading() as connection:
        return [row.resource.id for row in rs.search(connection, search.query)]


def run(search: Search) -> str:
    with _reading() as connection:
        if search.summary == "count":
            total = rs.count(connection, search.query) if search.total != "none" else None
            return _bundle(search, [], [], total, None, None)
        rows = rs.search(connection, search.query)
        backwards = search.query.cursor is not None and search.query.cursor.backwards
        more = len(rows) > search.count
        total = _total(connection, search, rows, more)
        if more:
            rows = rows[1:] if backwards else rows[:-1]
        next_cursor = prev_cursor = None
        if rows and (more or backwards):
            next_cursor = _encode_cursor(rows[-1], False)
        if rows and search.query.cursor is not None and (more or not backwards):
            prev_cursor = _encode_cursor(rows[0], True)
        matches = [row.resource for row in rows]
        included = _included(connection, search, matches) if matches else []
    return _bundle(search, matches, included, total, next_cursor, prev_cursor)


def _total(connection: Connection, search: Search, rows: list[rs.Row], more: bool) -> int | None:
    """The number of matches: a first page that holds them all is its own count, read in
    the same transaction; any other page asks the database."""
    if search.total == "none":
        return None
    if search.query.cursor is None and not more:
        return len(rows)
    return rs.count(connection, search.query)


def _included(connection: Connection, search: Search, matches: list[rs.Found]) -> list[rs.Found]:
    if not search.includes and not search.revincludes:
        return []
    seen = {(r.resource_type, r.id) for r in matches}
    found: list[rs.Found] = []
    frontier = matches
    for depth in range(MAX_ITERATIONS):
        keys: list[tuple[str, str]] = []
        for source in {r.resource_type for r in frontier}:
            ids = [r.id for r in frontier if r.resource_type == source]
            for value, iterate in search.includes:
                source_type, param = value.split(":")
                if source_type == source and (depth == 0 or iterate):
                    for target in rs.referenced(connection, source, ids, param):
                        keys.append(tuple(target.split("/", 1)))  # type: ignore[arg-type]
            for value, iterate in search.revincludes:
                source_type, param = value.split(":")
                if depth == 0 or iterate:
                    targets = [f"{source}/{i}" for i in ids]
                    keys += [
                        (source_type, i)
                        for i in rs.referring(connection, source_type, param, targets)
                    ]
        new = [k for k in dict.fromkeys(keys) if k not in seen and k[0] in PLAN_TYPES]
        if not new:
            break
        seen.update(new)
        frontier = rs.load(connection, new)
        found += frontier
    return found


def _bundle(
    search: Search,
    matches: list[rs.Found],
    included: list[rs.Found],
    total: int | None,
    next_cursor: str | None,
    prev_cursor: str | None,
) -> str:
    """The searchset Bundle, its entries spliced in from the stored JSON."""
    links = [{"relation": "self", "url": search.link(search.cursor)}]
    if next_cursor:
        links.append({"relation": "next", "url": search.link(next_cursor)})
    if prev_cursor:
        links.append({"relation": "previous", "url": search.link(prev_cursor)})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = links
    encoded = json.dumps(head)
    if not matches and not included:
        return encoded
    reshaping = search.summary not in (None, "false") or bool(search.elements)
    prefixes: dict[str, str] = {}
    parts = [encoded[:-1], ',"entry":[']
    for mode, found in (("match", matches), ("include", included)):
        closing = f',"search":{{"mode":"{mode}"}}}},'
        for stored in found:
            prefix = prefixes.get(stored.resource_type)
            if prefix is None:
                url = json.dumps(f"{search.base}/{stored.resource_type}/")
                prefix = prefixes[stored.resource_type] = '{"fullUrl":' + url[:-1]
            content = stored.content
            if reshaping:
                content = json.dumps(reshape(json.loads(content), search.summary, search.elements))
            escaped = stored.id if _PLAIN_ID(stored.id) else json.dumps(stored.id)[1:-1]
            parts += (prefix, escaped, '","resource":', content, closing)
    parts[-1] = parts[-1][:-1]
    parts.append("]}")
    return "".join(parts)


@blp.route("/<resource_type>", methods=["GET"])
@blp.doc(responses=responses({200: ("A searchset Bundle", "FhirBundle")}, 400, 404, 406))
def search_type(resource_type: str) -> Response:
    """Search CarePlans or Goals

    Every parameter in the CapabilityStatement, with `system|code` tokens, reference forms,
    date prefixes, comma for OR, repetition for AND, `:missing`, `:not`; `_include`,
    `_revinclude` (`:iterate`), `_sort`, `_count` with keyset paging, `_total`, `_summary`
    and `_elements`. Unknown parameters are ignored (and left out of the self link) unless
    `Prefer: handling=strict` asks for a 400.
    """
    check_type(resource_type)
    return body_response(run(Search(resource_type, request.args)))


@blp.route("/<resource_type>/_search", methods=["POST"])
@blp.doc(responses=responses({200: ("A searchset Bundle", "FhirBundle")}, 400, 404, 406))
def search_post(resource_type: str) -> Response:
    """Search CarePlans or Goals with a form body

    The same parameters as the GET search, sent as `application/x-www-form-urlencoded`.
    """
    check_type(resource_type)
    if request.mimetype != "application/x-www-form-urlencoded":
        raise BadRequest("POST _search takes an application/x-www-form-urlencoded body")
    params: MultiDict[str, str] = MultiDict(request.args)
    for name, value in request.form.items(multi=True):
        params.add(name, value)
    return body_response(run(Search(resource_type, params)))
