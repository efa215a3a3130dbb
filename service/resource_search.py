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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import aliased

from service.db import run_on_driver
from service.instants import shifted
from service.models import CarePlan, SearchDate, SearchReference, SearchToken, StoredResource

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


# --- shapes: a search with its values taken out ------------------------------------------


class Slot(str):
    """Where a value goes in a shape: the name of the parameter it is bound to."""


def _bound(slot: Any) -> Any:
    return bindparam(str(slot))


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
        conditions = _filtered(self.resource_type, self.clauses)
        if self.count:
            return select(func.count()).select_from(StoredResource).where(*conditions)
        sort = _sort_column(self.resource_type, self.sort)
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
            SearchReference.resource_id.in_([_bound(f"v{n}") for n in range(self.ids)]),
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
                SearchReference.target.in_([_bound(f"v{n}") for n in range(self.targets)]),
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
            StoredResource.id.in_([_bound(f"v{n}") for n in range(self.ids)]),
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


# --- the SQL of each clause -----------------------------------------------------------

# What a search reads of a stored resource: no version data, digest or extras.
_FOUND = (StoredResource.resource_type, StoredResource.id, StoredResource.content)


_INDEX_MODELS: dict[str, Any] = {
    "token": SearchToken,
    "reference": SearchReference,
    "date": SearchDate,
}


def _indexed(
    model: Any,
    resource_type: str,
    param: str,
    condition: ColumnElement[bool],
    drives: bool,
    resource: Any = StoredResource,
) -> ColumnElement[bool]:
    """Resources (rows of ``resource``) with an index row of ``param`` meeting ``condition``.

    The clause that ``drives`` the search lists its resources from the index's lookup
    columns (``id IN (...)``); every other clause is checked per candidate through the
    index on (type, resource id) (``EXISTS``). Two ``IN`` lists would make SQLite build
    the full list of each, e.g. every active CarePlan, to intersect them.
    """
    if drives:
        return resource.id.in_(
            select(model.resource_id).where(
                model.resource_type == resource_type, model.param == param, condition
            )
        )
    return (
        select(model.resource_id)
        .where(
            model.resource_type == resource_type,
            model.resource_id == resource.id,
            model.param == param,
            condition,
        )
        .exists()
    )


def _number(value: int) -> Any:
    """A small integer written into the SQL (not bound: PostgreSQL picks ``substr`` by
    its argument types, and a bound Python int may arrive as a bigint)."""
    return literal_column(str(int(value)))


def _chain(
    resource_type: str, clause: ChainClause, drives: bool, resource: Any
) -> ColumnElement[bool]:
    """Resources whose ``clause.param`` reference points to a live matching target.

    Driving, the targets are found first (by their own most selective clause) and the
    references to them by the lookup index; otherwise each candidate's references are
    read by the resource index and each target by its primary key.
    """
    link = aliased(SearchReference)
    target = aliased(StoredResource)
    prefix = f"{clause.target_type}/"
    matching = _filtered(clause.target_type, clause.inner, target, drive=drives)
    linked = [link.resource_type == resource_type, link.param == clause.param]
    if drives:
        found = select(link.resource_id).where(
            *linked, link.target == literal(prefix) + target.id, *matching
        )
        return resource.id.in_(found)
    return (
        select(link.resource_id)
        .where(
            *linked,
            link.resource_id == resource.id,
            func.substr(link.target, 1, _number(len(prefix))) == prefix,
            target.id == func.substr(link.target, _number(len(prefix) + 1)),
            *matching,
        )
        .exists()
    )


def _has(resource_type: str, clause: HasClause, drives: bool, resource: Any) -> ColumnElement[bool]:
    """Resources a live matching ``clause.source_type`` resource points to through
    ``clause.param``: the reverse of :func:`_chain`."""
    link = aliased(SearchReference)
    source = aliased(StoredResource)
    prefix = f"{resource_type}/"
    matching = _filtered(clause.source_type, clause.inner, source, drive=drives)
    linked = [
        link.resource_type == clause.source_type,
        link.param == clause.param,
        link.resource_id == source.id,
    ]
    if drives:
        found = select(func.substr(link.target, _number(len(prefix) + 1))).where(
            *linked, func.substr(link.target, 1, _number(len(prefix))) == prefix, *matching
        )
        return resource.id.in_(found)
    return (
        select(link.resource_id)
        .where(*linked, link.target == literal(prefix) + resource.id, *matching)
        .exists()
    )


def _token_option(system: Any, code: str | None) -> ColumnElement[bool]:
    conditions = []
    if code is not None:
        conditions.append(SearchToken.code == _bound(code))
    if system is None:
        conditions.append(SearchToken.system.is_(None))
    elif system is not ANY_SYSTEM:
        conditions.append(SearchToken.system == _bound(system))
    return and_(true(), *conditions)


def _date_option(low_col: Any, high_col: Any, prefix: DatePrefix, low: Any, high: Any) -> Any:
    """FHIR date prefixes over ranges: the resource's [low_col, high_col] against [low, high]
    (for ``ap``, the range already :func:`widened`)."""
    low, high = _bound(low), _bound(high)
    if prefix == "eq":
        return and_(low_col >= low, high_col <= high)
    if prefix == "ne":
        return not_(and_(low_col >= low, high_col <= high))
    if prefix == "gt":
        return high_col > high
    if prefix == "lt":
        return low_col < low
    if prefix == "ge":
        return high_col >= low
    if prefix == "le":
        return low_col <= high
    if prefix == "sa":
        return low_col > high
    if prefix == "eb":
        return high_col < low
    return and_(low_col <= high, high_col >= low)


def _condition(
    resource_type: str, clause: Clause, drives: bool, resource: Any = StoredResource
) -> ColumnElement[bool]:
    if isinstance(clause, IdClause):
        return resource.id.in_([_bound(i) for i in clause.ids])
    if isinstance(clause, PatientClause):
        plans = select(CarePlan.id).where(CarePlan.patient == _bound(clause.patient))
        if drives:
            return resource.plan_id.in_(plans)
        return plans.where(CarePlan.id == resource.plan_id).exists()
    if isinstance(clause, ChainClause):
        return _chain(resource_type, clause, drives, resource)
    if isinstance(clause, HasClause):
        return _has(resource_type, clause, drives, resource)
    if isinstance(clause, MissingClause):
        model = _INDEX_MODELS[clause.kind]
        indexed = _indexed(model, resource_type, clause.param, true(), False, resource)
        return not_(indexed) if clause.missing else indexed
    if isinstance(clause, TokenClause):
        matching = or_(false(), *(_token_option(s, c) for s, c in clause.options))
        found = _indexed(SearchToken, resource_type, clause.param, matching, drives, resource)
        return not_(found) if clause.negate else found
    if isinstance(clause, ReferenceClause):
        targets = SearchReference.target.in_([_bound(t) for t in clause.targets])
        found = _indexed(SearchReference, resource_type, clause.param, targets, drives, resource)
        return not_(found) if clause.negate else found
    if clause.param is None:
        column = resource.last_updated
        return or_(
            false(), *(_date_option(column, column, p, lo, hi) for p, lo, hi in clause.options)
        )
    matching = or_(
        false(),
        *(_date_option(SearchDate.low, SearchDate.high, p, lo, hi) for p, lo, hi in clause.options),
    )
    return _indexed(SearchDate, resource_type, clause.param, matching, drives, resource)


def _selectivity(clause: Clause) -> int | None:
    """How few resources a clause is expected to match (lower is fewer); None when it
    cannot list its resources (negations, :missing, _lastUpdated)."""
    if isinstance(clause, IdClause):
        return 0
    if isinstance(clause, PatientClause):
        return 1
    if isinstance(clause, TokenClause | ReferenceClause) and clause.negate:
        return None
    if isinstance(clause, TokenClause):
        return 1 if clause.param == "identifier" else 4
    if isinstance(clause, ReferenceClause):
        return 2
    if isinstance(clause, DateClause) and clause.param is not None:
        return 3
    if isinstance(clause, ChainClause | HasClause):
        # A chain starts from its targets only when one of its own clauses can list them.
        ranks = [rank for c in clause.inner if (rank := _selectivity(c)) is not None]
        return min(ranks) + 2 if ranks else None
    return None


def _driver(clauses: Sequence[Clause]) -> int | None:
    """The position of the clause the search starts from, if any: the most selective one."""
    ranked = [(rank, i) for i, c in enumerate(clauses) if (rank := _selectivity(c)) is not None]
    if not ranked or any(isinstance(c, IdClause) for c in clauses):
        return None  # with _id the primary key starts the search
    return min(ranked)[1]


def _sort_column(resource_type: str, sort: SortKey) -> Any:
    if sort == "_lastUpdated":
        return StoredResource.last_updated
    if sort == "date":
        earliest = (
            select(func.min(SearchDate.low))
            .where(
                SearchDate.resource_type == resource_type,
                SearchDate.resource_id == StoredResource.id,
                SearchDate.param == "date",
            )
            .scalar_subquery()
        )
        return func.coalesce(earliest, datetime(9999, 12, 31))
    return StoredResource.id


def _filtered(
    resource_type: str,
    clauses: Sequence[Clause],
    resource: Any = StoredResource,
    drive: bool = True,
) -> list[ColumnElement[bool]]:
    """The conditions on live ``resource`` rows of a type meeting every clause; with
    ``drive``, the most selective clause lists the candidates."""
    driver = _driver(clauses) if drive else None
    return [
        resource.resource_type == resource_type,
        resource.deleted.is_(False),
        *(
            _condition(resource_type, clause, i == driver, resource)
            for i, clause in enumerate(clauses)
        ),
    ]


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
