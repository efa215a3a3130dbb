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

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, true
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
class Row:
    resource: StoredResource
    sort_value: Any


_INDEX_MODELS: dict[str, Any] = {
    "token": SearchToken,
    "reference": SearchReference,
    "date": SearchDate,
}


def _ids(model: Any, resource_type: str, param: str, condition: ColumnElement[bool]) -> Select[Any]:
    return select(model.resource_id).where(
        model.resource_type == resource_type, model.param == param, condition
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


def _condition(resource_type: str, clause: Clause) -> ColumnElement[bool]:
    if isinstance(clause, IdClause):
        return StoredResource.id.in_(clause.ids)
    if isinstance(clause, PatientClause):
        return StoredResource.plan_id.in_(
            select(CarePlan.id).where(CarePlan.patient == clause.patient)
        )
    if isinstance(clause, MissingClause):
        indexed = StoredResource.id.in_(
            _ids(_INDEX_MODELS[clause.kind], resource_type, clause.param, true())
        )
        return not_(indexed) if clause.missing else indexed
    if isinstance(clause, TokenClause):
        matching = or_(false(), *(_token_option(s, c) for s, c in clause.options))
        found = StoredResource.id.in_(_ids(SearchToken, resource_type, clause.param, matching))
        return not_(found) if clause.negate else found
    if isinstance(clause, ReferenceClause):
        found = StoredResource.id.in_(
            _ids(
                SearchReference,
                resource_type,
                clause.param,
                SearchReference.target.in_(clause.targets),
            )
        )
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
    return StoredResource.id.in_(_ids(SearchDate, resource_type, clause.param, matching))


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
    return [
        StoredResource.resource_type == query.resource_type,
        StoredResource.deleted.is_(False),
        *(_condition(query.resource_type, clause) for clause in query.clauses),
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
    statement = select(StoredResource, sort).where(*conditions).order_by(*order).limit(query.limit)
    rows = [Row(resource, value) for resource, value in session.execute(statement).all()]
    return list(reversed(rows)) if backwards else rows


def referenced(session: Session, resource_type: str, ids: Sequence[str], param: str) -> list[str]:
    """The targets ("Type/id") the given resources point to through ``param``."""
    if not ids:
        return []
    return list(
        session.scalars(
            select(SearchReference.target)
            .where(
                SearchReference.resource_type == resource_type,
                SearchReference.param == param,
                SearchReference.resource_id.in_(ids),
            )
            .distinct()
        )
    )


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


def load(session: Session, keys: Sequence[tuple[str, str]]) -> list[StoredResource]:
    """The live stored resources with these (type, id) keys."""
    found: list[StoredResource] = []
    for resource_type in {t for t, _ in keys}:
        ids = [i for t, i in keys if t == resource_type]
        found += session.scalars(
            select(StoredResource).where(
                StoredResource.resource_type == resource_type,
                StoredResource.id.in_(ids),
                StoredResource.deleted.is_(False),
            )
        ).all()
    return found
