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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from sqlalchemy import Connection
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from api.auth.access import allowed, compartment, require, subject_patient
from api.auth.principal import current_principal
from api.fhir import search_clauses
from api.fhir.http import body_response
from api.fhir.openapi import responses
from api.fhir.parameters import InvalidParameter, check_text, count_param
from api.fhir.resources import (
    CONFORMANCE_TYPES,
    PLAN_TYPES,
    base_url,
    blp,
    check_type,
    search_conformance,
)
from api.http import database, read_connection
from fhir_mappings.search_parameters import INCLUDES, REVINCLUDES, SORTS
from fhir_mappings.summary import (
    SUMMARY_MODES,
    InvalidShape,
    element_names,
    reshape,
    summary_mode,
)
from service import resource_search as rs
from service.instants import InvalidInstant, clamp, parse_instant

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
# Ids that JSON takes as they are (every FHIR id is one).
_PLAIN_ID = re.compile(r"[A-Za-z0-9.\-]+").fullmatch
# A FHIR id (http://hl7.org/fhir/R4/datatypes.html#id).
_FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}").fullmatch


def _strict() -> bool:
    prefer = request.headers.get("Prefer", "")
    return "handling=strict" in prefer.replace(" ", "")


def _cursor(value: str | None, sort: str) -> rs.Cursor | None:
    """The position a ``next``/``previous`` link carries, checked against the sort it was
    issued for: anything else, however it was made, is a 400."""
    if value is None:
        return None
    refused = InvalidParameter("_cursor", "not a cursor this server issued for this sort")
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    if not isinstance(data, dict) or set(data) - {"v", "i", "b", "t"}:
        raise refused
    sort_value, last_id, backwards = data.get("v"), data.get("i"), data.get("b", False)
    if not isinstance(last_id, str) or not _FHIR_ID(last_id) or not isinstance(backwards, bool):
        raise refused
    if sort == "_id":
        if data.get("t") is not None or not isinstance(sort_value, str):
            raise refused
        if not _FHIR_ID(sort_value):
            raise refused
    else:
        if data.get("t") != "dt" or not isinstance(sort_value, str):
            raise refused
        try:
            sort_value = parse_instant(sort_value)
        except InvalidInstant:
            raise refused from None
    return rs.Cursor(sort_value, last_id, backwards)


def _require_searchable(clause: rs.Clause) -> None:
    """A chain reads the resources it follows: the caller must be allowed to search them."""
    if current_principal() is None:
        return
    if isinstance(clause, rs.ChainClause):
        require(clause.target_type, "s")
    elif isinstance(clause, rs.HasClause):
        require(clause.source_type, "s")


def _encode_cursor(row: rs.Row, backwards: bool) -> str:
    value = row.sort_value
    data: dict[str, Any] = {"i": row.resource.id, "b": backwards}
    if isinstance(value, datetime):
        # Full precision (a date's range may end within a millisecond), in UTC.
        moment = clamp(value if value.tzinfo else value.replace(tzinfo=UTC))
        data.update(v=moment.isoformat(), t="dt")
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
        bound = compartment()
        for name, value in params.items(multi=True):
            check_text(name, value)
            if name in RESULT_PARAMETERS:
                self.results.setdefault(name, []).append(value)
                if name != "_cursor":
                    self.kept.append((name, value))
                continue
            try:
                clause = search_clauses.clause(resource_type, name, value, bound)
            except search_clauses.Unsupported as unsupported:
                if self.strict:
                    raise InvalidParameter(name, str(unsupported)) from None
                self.ignored.append(name)
                continue
            _require_searchable(clause)
            self.query.clauses.append(clause)
            self.used.append((name, value))
        if bound is not None:
            self.query.clauses.append(rs.PatientClause(bound))
        self.count = self._count()
        self.query.limit = self.count + 1
        self._sort()
        self.cursor = self._first("_cursor")
        self.query.cursor = _cursor(self.cursor, self.query.sort)
        try:
            self.summary = summary_mode(self._first("_summary"), SUMMARY_MODES)
            self.elements = element_names(resource_type, self._first("_elements"))
        except InvalidShape as error:
            raise InvalidParameter(error.parameter, str(error)) from None
        total = self._first("_total")
        self.total = "accurate" if total is None else total
        if self.total not in ("none", "estimate", "accurate"):
            raise InvalidParameter("_total", f"takes none, estimate or accurate, not {total!r}")
        self.includes = self._includes("_include", INCLUDES)
        self.revincludes = self._includes("_revinclude", REVINCLUDES)

    def _first(self, name: str) -> str | None:
        values = self.results.get(name)
        return values[0] if values else None

    def _count(self) -> int:
        return count_param("_count", self._first("_count"), DEFAULT_COUNT, MAX_COUNT)

    def _sort(self) -> None:
        value = self._first("_sort")
        if not value:
            return
        keys = value.split(",")
        if len(keys) > 1:
            raise InvalidParameter("_sort", "takes one key (the id breaks ties)")
        key = keys[0]
        self.query.descending = key.startswith("-")
        name = key.lstrip("-")
        if name not in SORTS:
            raise InvalidParameter(
                "_sort", f"sorting by {name!r} is not supported; use one of {', '.join(SORTS)}"
            )
        self.query.sort = name  # type: ignore[assignment]

    def _includes(self, name: str, allowed: dict[str, tuple[str, ...]]) -> list[tuple[str, bool]]:
        """(source:param, iterate) pairs; ``_include:iterate`` follows includes of includes."""
        found = []
        for iterate in (False, True):
            for value in self.results.get(f"{name}:iterate" if iterate else name, ()):
                known = any(value in values for values in allowed.values())
                if value not in allowed.get(self.resource_type, ()) and not (iterate and known):
                    raise InvalidParameter(
                        name, f"{value} is not supported for {self.resource_type}"
                    )
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
        frontier = [r for r in rs.load(connection, new) if _may_include(r)]
        found += frontier
    return found


def _may_include(found: rs.Found) -> bool:
    """An included resource is served only to a caller who may read it: its type's ``r``
    scope, and its patient when the caller is confined to one (a plan's goals and phases
    are its patient's, but a reference may point anywhere)."""
    if current_principal() is None:
        return True
    if not allowed(found.resource_type, "r"):
        return False
    bound = compartment()
    return bound is None or subject_patient(json.loads(found.content)) == bound


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
    """Search a type of resource

    Every parameter in the CapabilityStatement, with `system|code` tokens, reference forms,
    date prefixes, comma for OR, repetition for AND, `:missing`, `:not`; chains one link
    deep (`part-of.status`, `goal.lifecycle-status`) and `_has`; `_include`,
    `_revinclude` (`:iterate`), `_sort`, `_count` with keyset paging, `_total`, `_summary`
    and `_elements`. A parameter that cannot be applied (unknown name, modifier or chain)
    is ignored and left out of the self link, unless `Prefer: handling=strict` asks for a
    400 naming it. The conformance resources (Questionnaire, StructureDefinition, CodeSystem,
    ValueSet) are searched by `url` (or `url|version`), `_id`, `name`, `version` and `status`.
    """
    if resource_type in CONFORMANCE_TYPES:
        return search_conformance(resource_type, request.args.items(multi=True))
    check_type(resource_type)
    return body_response(run(Search(resource_type, request.args)))


@blp.route("/<resource_type>/_search", methods=["POST"])
@blp.doc(responses=responses({200: ("A searchset Bundle", "FhirBundle")}, 400, 404, 406))
def search_post(resource_type: str) -> Response:
    """Search a type of resource with a form body

    The same parameters as the GET search, sent as `application/x-www-form-urlencoded`.
    """
    if resource_type not in CONFORMANCE_TYPES:
        check_type(resource_type)
    if request.mimetype != "application/x-www-form-urlencoded":
        raise BadRequest("POST _search takes an application/x-www-form-urlencoded body")
    params: MultiDict[str, str] = MultiDict(request.args)
    for name, value in request.form.items(multi=True):
        params.add(name, value)
    if resource_type in CONFORMANCE_TYPES:
        return search_conformance(resource_type, params.items(multi=True))
    return body_response(run(Search(resource_type, params)))
