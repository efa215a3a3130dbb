"""The SQL condition of each search clause, answered from the search index tables.

Every condition is an index-backed subquery on the stored resources (or an alias of them,
for the resources a chain follows). The clause that drives a search lists its candidates
(``id IN (...)``); every other clause is checked per candidate (``EXISTS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
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
from sqlalchemy.orm import aliased

from service.models import CarePlan, SearchDate, SearchReference, SearchToken, StoredResource
from service.search_query import (
    ANY_SYSTEM,
    ChainClause,
    Clause,
    DateClause,
    DatePrefix,
    HasClause,
    IdClause,
    MissingClause,
    PatientClause,
    ReferenceClause,
    SortKey,
    TokenClause,
)


def bound(slot: Any) -> Any:
    """The bound parameter a value's slot (see ``resource_search.Slot``) names."""
    return bindparam(str(slot))


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
    matching = filtered(clause.target_type, clause.inner, target, drive=drives)
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
    matching = filtered(clause.source_type, clause.inner, source, drive=drives)
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
        conditions.append(SearchToken.code == bound(code))
    if system is None:
        conditions.append(SearchToken.system.is_(None))
    elif system is not ANY_SYSTEM:
        conditions.append(SearchToken.system == bound(system))
    return and_(true(), *conditions)


def _date_option(low_col: Any, high_col: Any, prefix: DatePrefix, low: Any, high: Any) -> Any:
    """FHIR date prefixes over ranges: the resource's [low_col, high_col] against [low, high]
    (for ``ap``, the range already :func:`widened`)."""
    low, high = bound(low), bound(high)
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
        return resource.id.in_([bound(i) for i in clause.ids])
    if isinstance(clause, PatientClause):
        plans = select(CarePlan.id).where(CarePlan.patient == bound(clause.patient))
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
        targets = SearchReference.target.in_([bound(t) for t in clause.targets])
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


def sort_column(resource_type: str, sort: SortKey) -> Any:
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


def filtered(
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
