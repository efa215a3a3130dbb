"""What a search asks for: its clauses, sort, cursor and page size, and what it finds.

A clause holds the values of one query parameter as the search layer applies them
(:mod:`service.search_conditions` turns each into SQL, :mod:`service.resource_search`
runs them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

ANY_SYSTEM = object()  # a token without "system|": any system matches
DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True)
class TokenClause:
    param: str
    # (system, code): system ANY_SYSTEM for "code", None for "|code", a URI for "system|code";
    # code None for "system|".
    options: tuple[tuple[Any, str | None], ...]
    negate: bool = False


@dataclass(frozen=True)
class ReferenceClause:
    param: str
    targets: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class DateClause:
    param: str | None  # None: the resource's last update (_lastUpdated)
    options: tuple[tuple[DatePrefix, datetime, datetime], ...]


@dataclass(frozen=True)
class MissingClause:
    param: str
    kind: Literal["token", "reference", "date"]
    missing: bool


@dataclass(frozen=True)
class IdClause:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class PatientClause:
    """Only resources published from this patient's plans (a compartment)."""

    patient: str


@dataclass(frozen=True)
class ChainClause:
    """Resources whose reference ``param`` points to a live ``target_type`` resource that
    meets every ``inner`` clause (``part-of.status=active``)."""

    param: str
    target_type: str
    inner: tuple[Clause, ...]


@dataclass(frozen=True)
class HasClause:
    """Resources that a live ``source_type`` resource meeting every ``inner`` clause points
    to through its reference ``param`` (``_has:CarePlan:part-of:status=active``)."""

    source_type: str
    param: str
    inner: tuple[Clause, ...]


Clause = (
    TokenClause
    | ReferenceClause
    | DateClause
    | MissingClause
    | IdClause
    | PatientClause
    | ChainClause
    | HasClause
)
SortKey = Literal["_id", "_lastUpdated", "date"]


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after (or, going back, before) this sort value and id."""

    value: Any
    id: str
    backwards: bool = False


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    sort: SortKey = "_id"
    descending: bool = False
    cursor: Cursor | None = None
    limit: int = 50


@dataclass(frozen=True)
class Found:
    """A matching resource as a search serves it: its stored content, nothing else loaded."""

    resource_type: str
    id: str
    content: str


@dataclass(frozen=True)
class Row:
    resource: Found
    sort_value: Any
