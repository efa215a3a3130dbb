"""Finding published resources by their indexed values, a page at a time.

Every clause is answered from the search index tables with an index-backed subquery.
Pages are cut by keyset (the sort value and id of the last row seen), so writes between
two page requests neither shift nor repeat the rows still to come.

A search is run as a statement prepared for its shape: the clauses, their parameters and
modifiers, the number of values of each, the sort and whether a cursor is given. The
values themselves are bound. Each shape is built and compiled once and then run on the
driver's cursor, without SQLAlchemy's per-execution work, which costs several times the
queries themselves (see ``service.db.fetch_first``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, Select, and_, bindparam, func, or_, select
from sqlalchemy.engine import Dialect

from service.db import run_on_driver
from service.instants import shifted
from service.models import SearchReference, StoredResource
from service.search_conditions import bound, filtered, sort_column
from service.search_query import (
    ANY_SYSTEM,
    ChainClause,
    Clause,
    Cursor,
    DateClause,
    DatePrefix,
    Found,
    HasClause,
    IdClause,
    MissingClause,
    PatientClause,
    ReferenceClause,
    Row,
    SearchQuery,
    SortKey,
    TokenClause,
)

# The query model is part of this module's interface (``rs.TokenClause``, ``rs.Cursor``…).
__all__ = [
    "ANY_SYSTEM",
    "ChainClause",
    "Clause",
    "Cursor",
    "DateClause",
    "DatePrefix",
    "Found",
    "HasClause",
    "IdClause",
    "MissingClause",
    "PatientClause",
    "ReferenceClause",
    "Row",
    "SearchQuery",
    "SortKey",
    "TokenClause",
    "count",
    "load",
    "referenced",
    "referring",
    "search",
    "snapshot",
    "widened",
]

# --- shapes: a search with its values taken out ------------------------------------------


class Slot(str):
    """Where a value goes in a shape: the name of the parameter it is bound to."""


class _Values:
    """The values taken out of a search, by the names of their slots."""

    def __init__(self) -> None:
        self.bound: dict[str, Any] = {}

    def __call__(self, value: Any) -> Any:
        name = f"v{len(self.bound)}"
        self.bound[name] = value
        return Slot(name)


def _padded(values: Sequence[Any]) -> Sequence[Any]:
    """A list of values for ``IN``, repeated up to a power of two long: a few shapes serve
    every length (a value twice in ``IN`` matches nothing more)."""
    size = 1
    while size < len(values):
        size *= 2
    return [*values, *[values[-1]] * (size - len(values))] if values else values


def widened(low: datetime, high: datetime) -> tuple[datetime, datetime]:
    """The range ``ap`` (approximately) matches: a tenth of the distance to now, and at
    least a day, either side."""
    margin = max(abs(datetime.now(low.tzinfo) - low) / 10, timedelta(days=1))
    return shifted(low, -margin), shifted(high, margin)


def _shaped(clause: Clause, value: _Values) -> Clause:
    """The clause with each of its values replaced by a slot."""
    if isinstance(clause, IdClause):
        return IdClause(tuple(value(i) for i in _padded(clause.ids)))
    if isinstance(clause, PatientClause):
        return PatientClause(value(clause.patient))
    if isinstance(clause, MissingClause):
        return clause
    if isinstance(clause, ChainClause | HasClause):
        return replace(clause, inner=tuple(_shaped(c, value) for c in clause.inner))
    if isinstance(clause, TokenClause):
        options = tuple(
            (
                system if system is None or system is ANY_SYSTEM else value(system),
                None if code is None else value(code),
            )
            for system, code in clause.options
        )
        return replace(clause, options=options)
    if isinstance(clause, ReferenceClause):
        return replace(clause, targets=tuple(value(t) for t in clause.targets))
    dates = []
    for prefix, low, high in clause.options:
        if prefix == "ap":
            low, high = widened(low, high)
        dates.append((prefix, value(low), value(high)))
    return replace(clause, options=tuple(dates))


@dataclass(frozen=True)
class _Search:
    """The shape of a search: a page of it, or (``count``) the number of its matches."""

    resource_type: str
    clauses: tuple[Clause, ...]
    sort: SortKey = "_id"
    descending: bool = False
    cursor: bool = False
    count: bool = False

    def statement(self) -> Select[*tuple[Any, ...]]:
        conditions = filtered(self.resource_type, self.clauses)
        if self.count:
            return select(func.count()).select_from(StoredResource).where(*conditions)
        sort = sort_column(self.resource_type, self.sort)
        descending = self.descending
        if self.cursor:
            value: Any = bindparam("after_value")
            last_id: Any = bindparam("after_id")
            if self.sort == "_id":
                conditions.append(
                    StoredResource.id < last_id if descending else StoredResource.id > last_id
                )
            elif descending:
                conditions.append(
                    or_(sort < value, and_(sort == value, StoredResource.id < last_id))
                )
            else:
                conditions.append(
                    or_(sort > value, and_(sort == value, StoredResource.id > last_id))
                )
        order = [sort.desc(), StoredResource.id.desc()] if descending else [sort, StoredResource.id]
        return (
            select(*_FOUND, sort)
            .where(*conditions)
            .order_by(*order)
            .limit(bindparam("limit", type_=Integer))
        )


@dataclass(frozen=True)
class _Referenced:
    """The targets resources of one type point to through one parameter."""

    ids: int

    def statement(self) -> Select[*tuple[Any, ...]]:
        return select(SearchReference.target).where(
            SearchReference.resource_type == bindparam("resource_type"),
            SearchReference.param == bindparam("param"),
            SearchReference.resource_id.in_([bound(f"v{n}") for n in range(self.ids)]),
        )


@dataclass(frozen=True)
class _Referring:
    """The resources of one type that point to any of some targets through one parameter."""

    targets: int

    def statement(self) -> Select[*tuple[Any, ...]]:
        return (
            select(SearchReference.resource_id)
            .where(
                SearchReference.resource_type == bindparam("resource_type"),
                SearchReference.param == bindparam("param"),
                SearchReference.target.in_([bound(f"v{n}") for n in range(self.targets)]),
            )
            .distinct()
        )


@dataclass(frozen=True)
class _Load:
    """Live stored resources of one type by id."""

    ids: int

    def statement(self) -> Select[*tuple[Any, ...]]:
        return select(*_FOUND).where(
            StoredResource.resource_type == bindparam("resource_type"),
            StoredResource.id.in_([bound(f"v{n}") for n in range(self.ids)]),
            StoredResource.deleted.is_(False),
        )


_Shape = _Search | _Referenced | _Referring | _Load


# --- running prepared statements on the driver ------------------------------------------

_Convert = Any  # a type's bind or result processor, or None
_GIVEN = object()


@dataclass(frozen=True)
class _Prepared:
    """A shape's statement compiled for one dialect, with its parameters in the driver's
    order and the conversions of its column types."""

    sql: str
    # (name, value the statement itself holds or _GIVEN, conversion) per parameter.
    parameters: tuple[tuple[str, Any, _Convert], ...]
    positional: bool
    results: tuple[_Convert, ...]

    def arguments(self, values: Mapping[str, Any]) -> Any:
        converted = [
            (
                name,
                (convert(values[name]) if convert else values[name]) if fixed is _GIVEN else fixed,
            )
            for name, fixed, convert in self.parameters
        ]
        if self.positional:
            return tuple(value for _, value in converted)
        return dict(converted)


# Shapes with more values than this (long OR lists) are compiled each time, not kept.
_KEPT_VALUES = 512


def _compile(shape: _Shape, dialect: Dialect) -> _Prepared:
    statement = shape.statement()
    compiled = statement.compile(dialect=dialect)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    names = compiled.positiontup if dialect.positional else list(binds)
    parameters = []
    for name in names or ():
        bind = binds[name]
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required:
            parameters.append((name, _GIVEN, convert))
        else:
            value = bind.effective_value
            parameters.append((name, convert(value) if convert else value, None))
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    )
    return _Prepared(str(compiled), tuple(parameters), dialect.positional, results)


_prepare = functools.lru_cache(maxsize=256)(_compile)


def _fetch(connection: Connection, shape: _Shape, values: Mapping[str, Any]) -> list[Any]:
    """Every row of a shape's statement with these values, converted by the column types.

    A driver error is raised as SQLAlchemy's, and a connection found lost is invalidated.
    """
    dialect = connection.dialect
    prepared = (_prepare if len(values) <= _KEPT_VALUES else _compile)(shape, dialect)
    rows = run_on_driver(connection, prepared.sql, prepared.arguments(values), first=False)
    if not any(prepared.results):
        return list(rows)
    results = prepared.results
    return [
        tuple(convert(v) if convert else v for v, convert in zip(row, results, strict=True))
        for row in rows
    ]


def _execute(connection: Connection, sql: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


@contextmanager
def snapshot(connection: Connection) -> Iterator[Connection]:
    """The statements of one search on a connection outside any transaction, seeing one
    state of the database.

    On SQLite that takes a read transaction (the driver runs without implicit ones). On
    PostgreSQL a transaction at its READ COMMITTED level would give each statement its own
    snapshot all the same, so the statements there run alone.
    """
    if connection.dialect.name != "sqlite":
        yield connection
        return
    _execute(connection, "BEGIN")
    try:
        yield connection
    finally:
        _execute(connection, "ROLLBACK")


# What a search reads of a stored resource: no version data, digest or extras.
_FOUND = (StoredResource.resource_type, StoredResource.id, StoredResource.content)

# --- searching --------------------------------------------------------------------------


def _shape(query: SearchQuery, count: bool = False) -> tuple[_Search, dict[str, Any]]:
    value = _Values()
    clauses = tuple(_shaped(clause, value) for clause in query.clauses)
    if count:
        return _Search(query.resource_type, clauses, count=True), value.bound
    cursor = query.cursor
    descending = query.descending
    if cursor is not None:
        value.bound.update(after_value=cursor.value, after_id=cursor.id)
        if cursor.backwards:
            descending = not descending
    value.bound["limit"] = query.limit
    shape = _Search(query.resource_type, clauses, query.sort, descending, cursor is not None)
    return shape, value.bound


def count(connection: Connection, query: SearchQuery) -> int:
    shape, values = _shape(query, count=True)
    return int(_fetch(connection, shape, values)[0][0] or 0)


def search(connection: Connection, query: SearchQuery) -> list[Row]:
    """One page (``limit`` rows) in sort order, starting at the cursor."""
    shape, values = _shape(query)
    rows = [
        Row(Found(resource_type, resource_id, content), value)
        for resource_type, resource_id, content, value in _fetch(connection, shape, values)
    ]
    backwards = query.cursor is not None and query.cursor.backwards
    return list(reversed(rows)) if backwards else rows


def _listed(values: Sequence[str], **named: str) -> dict[str, Any]:
    return {**named, **{f"v{n}": v for n, v in enumerate(values)}}


def referenced(
    connection: Connection, resource_type: str, ids: Sequence[str], param: str
) -> list[str]:
    """The targets ("Type/id") the given resources point to through ``param``, in order.

    Duplicates are dropped here rather than by DISTINCT, which would lead SQLite to read
    every reference of ``param`` in target order instead of those of the resources.
    """
    if not ids:
        return []
    listed = _padded(ids)
    values = _listed(listed, resource_type=resource_type, param=param)
    return sorted({target for (target,) in _fetch(connection, _Referenced(len(listed)), values)})


def referring(
    connection: Connection, resource_type: str, param: str, targets: Sequence[str]
) -> list[str]:
    """Ids of resources of ``resource_type`` pointing at any target through ``param``."""
    if not targets:
        return []
    listed = _padded(targets)
    values = _listed(listed, resource_type=resource_type, param=param)
    return [resource_id for (resource_id,) in _fetch(connection, _Referring(len(listed)), values)]


def load(connection: Connection, keys: Sequence[tuple[str, str]]) -> list[Found]:
    """The live stored resources with these (type, id) keys."""
    found: list[Found] = []
    for resource_type in dict.fromkeys(t for t, _ in keys):
        listed = _padded([i for t, i in keys if t == resource_type])
        values = _listed(listed, resource_type=resource_type)
        found += (Found(*row) for row in _fetch(connection, _Load(len(listed)), values))
    return found
