"""Finding published resources by their indexed values, a page at a time.

Every clause is answered from the search index tables with an index-backed subquery.
Pages are cut by keyset (the sort value and id of the last row seen), so writes between
two page requests neither shift nor repeat the rows still to come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from service.models import CarePlan, SearchDate, SearchReference, SearchToken, StoredResource

ANY_SYSTEM = object()  # a token without "system|": any system matches
DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True)
class TokenClause:
    param: str
    # (system, code): system ANY_SYSTEM for "code", None for "|code", a URI for "system|code";
    # code None for "system|".
    options: list[tuple[Any, str | None]]
    negate: bool = False


@dataclass(frozen=True)
class ReferenceClause:
    param: str
    targets: list[str]
    negate: bool = False


@dataclass(frozen=True)
class DateClause:
    param: str | None  # None: the resource's last update (_lastUpdated)
    options: list[tuple[DatePrefix, datetime, datetime]]


@dataclass(frozen=True)
class MissingClause:
    param: str
    kind: Literal["token", "reference", "date"]
    missing: bool


@dataclass(frozen=True)
class IdClause:
    ids: list[str]


@dataclass(frozen=True)
class PatientClause:
    """Only resources published from this patient's plans (a compartment)."""

    patient: str


Clause = TokenClause | ReferenceClause | DateClause | MissingClause | IdClause | PatientClause
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


# What a search reads of a stored resource: no version data, digest or extras.
_FOUND = (StoredResource.resource_type, StoredResource.id, StoredResource.content)


_INDEX_MODELS: dict[str, Any] = {
    "token": SearchToken,
    "reference": SearchReference,
    "date": SearchDate,
}


def _indexed(
    model: Any, resource_type: str, param: str, condition: ColumnElement[bool], drives: bool
) -> ColumnElement[bool]:
    """Resources with an index row of ``param`` meeting ``condition``.

    The clause that ``drives`` the search lists its resources from the index's lookup
    columns (``id IN (...)``); every other clause is checked per candidate through the
    index on (type, resource id) (``EXISTS``). Two ``IN`` lists would make SQLite build
    the full list of each, e.g. every active CarePlan, to intersect them.
    """
    if drives:
        return StoredResource.id.in_(
            select(model.resource_id).where(
                model.resource_type == resource_type, model.param == param, condition
            )
        )
    return (
        select(model.resource_id)
        .where(
            model.resource_type == resource_type,
            model.resource_id == StoredResource.id,
            model.param == param,
            condition,
        )
        .exists()
    )


def _token_option(system: Any, code: str | None) -> ColumnElement[bool]:
    conditions = []
    if code is not None:
        conditions.append(SearchToken.code == code)
    if system is None:
        conditions.append(SearchToken.system.is_(None))
    elif system is not ANY_SYSTEM:
        conditions.append(SearchToken.system == system)
    return and_(true(), *conditions)


def _date_option(
    low_col: Any, high_col: Any, prefix: DatePrefix, low: datetime, high: datetime
) -> ColumnElement[bool]:
    """FHIR date prefixes over ranges: the resource's [low_col, high_col] against [low, high]."""
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
    # ap: within a tenth of the distance to now, and at least a day, either side.
    margin = max(abs(datetime.now(low.tzinfo) - low) / 10, timedelta(days=1))
    return and_(low_col <= high + margin, high_col >= low - margin)


def _condition(resource_type: str, clause: Clause, drives: bool) -> ColumnElement[bool]:
    if isinstance(clause, IdClause):
        return StoredResource.id.in_(clause.ids)
    if isinstance(clause, PatientClause):
        plans = select(CarePlan.id).where(CarePlan.patient == clause.patient)
        if drives:
            return StoredResource.plan_id.in_(plans)
        return plans.where(CarePlan.id == StoredResource.plan_id).exists()
    if isinstance(clause, MissingClause):
        model = _INDEX_MODELS[clause.kind]
        indexed = _indexed(model, resource_type, clause.param, true(), drives=False)
        return not_(indexed) if clause.missing else indexed
    if isinstance(clause, TokenClause):
        matching = or_(false(), *(_token_option(s, c) for s, c in clause.options))
        found = _indexed(SearchToken, resource_type, clause.param, matching, drives)
        return not_(found) if clause.negate else found
    if isinstance(clause, ReferenceClause):
        targets = SearchReference.target.in_(clause.targets)
        found = _indexed(SearchReference, resource_type, clause.param, targets, drives)
        return not_(found) if clause.negate else found
    if clause.param is None:
        column = StoredResource.last_updated
        return or_(
            false(), *(_date_option(column, column, p, lo, hi) for p, lo, hi in clause.options)
        )
    matching = or_(
        false(),
        *(_date_option(SearchDate.low, SearchDate.high, p, lo, hi) for p, lo, hi in clause.options),
    )
    return _indexed(SearchDate, resource_type, clause.param, matching, drives)


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
    return None


def _driver(clauses: list[Clause]) -> int | None:
    """The position of the clause the search starts from, if any: the most selective one."""
    ranked = [(rank, i) for i, c in enumerate(clauses) if (rank := _selectivity(c)) is not None]
    if not ranked or any(isinstance(c, IdClause) for c in clauses):
        return None  # with _id the primary key starts the search
    return min(ranked)[1]


def _sort_column(query: SearchQuery) -> Any:
    if query.sort == "_lastUpdated":
        return StoredResource.last_updated
    if query.sort == "date":
        earliest = (
            select(func.min(SearchDate.low))
            .where(
                SearchDate.resource_type == query.resource_type,
                SearchDate.resource_id == StoredResource.id,
                SearchDate.param == "date",
            )
            .scalar_subquery()
        )
        return func.coalesce(earliest, datetime(9999, 12, 31))
    return StoredResource.id


def _filtered(query: SearchQuery) -> list[ColumnElement[bool]]:
    driver = _driver(query.clauses)
    return [
        StoredResource.resource_type == query.resource_type,
        StoredResource.deleted.is_(False),
        *(
            _condition(query.resource_type, clause, drives=i == driver)
            for i, clause in enumerate(query.clauses)
        ),
    ]


def count(session: Session, query: SearchQuery) -> int:
    statement = select(func.count()).select_from(StoredResource).where(*_filtered(query))
    return int(session.scalar(statement) or 0)


def search(session: Session, query: SearchQuery) -> list[Row]:
    """One page (``limit`` rows) in sort order, starting at the cursor."""
    sort = _sort_column(query)
    descending = query.descending
    backwards = query.cursor is not None and query.cursor.backwards
    if backwards:
        descending = not descending
    conditions = _filtered(query)
    if query.cursor is not None:
        value, last_id = query.cursor.value, query.cursor.id
        if query.sort == "_id":
            conditions.append(
                StoredResource.id < last_id if descending else StoredResource.id > last_id
            )
        elif descending:
            conditions.append(or_(sort < value, and_(sort == value, StoredResource.id < last_id)))
        else:
            conditions.append(or_(sort > value, and_(sort == value, StoredResource.id > last_id)))
    order = [sort.desc(), StoredResource.id.desc()] if descending else [sort, StoredResource.id]
    statement = select(*_FOUND, sort).where(*conditions).order_by(*order).limit(query.limit)
    rows = [
        Row(Found(resource_type, resource_id, content), value)
        for resource_type, resource_id, content, value in session.execute(statement)
    ]
    return list(reversed(rows)) if backwards else rows


def referenced(session: Session, resource_type: str, ids: Sequence[str], param: str) -> list[str]:
    """The targets ("Type/id") the given resources point to through ``param``, in order.

    Duplicates are dropped here rather than by DISTINCT, which would lead SQLite to read
    every reference of ``param`` in target order instead of those of the resources.
    """
    if not ids:
        return []
    targets = session.scalars(
        select(SearchReference.target).where(
            SearchReference.resource_type == resource_type,
            SearchReference.param == param,
            SearchReference.resource_id.in_(ids),
        )
    )
    return sorted(set(targets))


def referring(
    session: Session, resource_type: str, param: str, targets: Sequence[str]
) -> list[str]:
    """Ids of resources of ``resource_type`` pointing at any target through ``param``."""
    if not targets:
        return []
    return list(
        session.scalars(
            select(SearchReference.resource_id)
            .where(
                SearchReference.resource_type == resource_type,
                SearchReference.param == param,
                SearchReference.target.in_(targets),
            )
            .distinct()
        )
    )


def load(session: Session, keys: Sequence[tuple[str, str]]) -> list[Found]:
    """The live stored resources with these (type, id) keys."""
    found: list[Found] = []
    for resource_type in {t for t, _ in keys}:
        ids = [i for t, i in keys if t == resource_type]
        found += (
            Found(*row)
            for row in session.execute(
                select(*_FOUND).where(
                    StoredResource.resource_type == resource_type,
                    StoredResource.id.in_(ids),
                    StoredResource.deleted.is_(False),
                )
            )
        )
    return found
