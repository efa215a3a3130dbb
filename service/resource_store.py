"""Published documents of a plan: their current version and every earlier one.

The documents are opaque here; a publisher outside the domain renders them. The store
keeps each version exactly as written so that it can be served again unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Insert,
    and_,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from service.db import fetch_first
from service.models import (
    CarePlan,
    ResourceIdentifier,
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchToken,
    StoredResource,
)


@dataclass(frozen=True)
class Document:
    """A rendered document ready to store: its content, and a digest without version data."""

    resource_type: str
    id: str
    content: str
    digest: str


def current(session: Session, resource_type: str, resource_id: str) -> StoredResource | None:
    return session.get(StoredResource, (resource_type, resource_id))


@dataclass(frozen=True)
class Served:
    """What a read answers with: the current version's metadata and its stored content."""

    version_id: int
    last_updated: datetime
    deleted: bool
    content: str
    # The patient of the plan it was published from (what the read's audit record names).
    patient: str | None


_stored = StoredResource.__table__.c
_plans = CarePlan.__table__.c
_SERVED = (
    select(_stored.version_id, _stored.last_updated, _stored.deleted, _stored.content)
    .add_columns(_plans.patient)
    .outerjoin_from(StoredResource.__table__, CarePlan.__table__, _plans.id == _stored.plan_id)
    .where(_stored.resource_type == bindparam("resource_type"), _stored.id == bindparam("id"))
)


def served(connection: Connection, resource_type: str, resource_id: str) -> Served | None:
    """The current version as a read serves it, with its plan's patient: one prepared
    statement, no ORM object (reads are the most frequent request). Outside a
    transaction, as a single statement."""
    row = fetch_first(connection, _SERVED, {"resource_type": resource_type, "id": resource_id})
    return Served(*row) if row is not None else None


def of_plan(session: Session, plan_id: str) -> list[StoredResource]:
    return list(session.scalars(select(StoredResource).where(StoredResource.plan_id == plan_id)))


# A version's row, as history stores it (its sequence is the database's to number).
VersionRow = dict[str, Any]
_INSERT_VERSION = insert(ResourceVersion)


@dataclass
class Appends:
    """The rows one write appends, collected while it publishes and written at its end
    with one statement per table (:func:`write_appends`): the versions for the history,
    and the new search index rows of every resource it published."""

    versions: list[VersionRow] = field(default_factory=list)
    index_rows: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)


def save(
    session: Session,
    plan_id: str,
    document: Document,
    version_id: int,
    when: datetime,
    method: str,
    extras: dict | None = None,
    *,
    stored: StoredResource | None,
    appends: Appends,
) -> StoredResource:
    """Store a new current version, and add it to ``appends``: the caller appends them
    to the history with the others of its write (:func:`write_appends`).

    ``stored`` is the resource's current row, None when it has none (the caller has
    looked: a publish reads the rows of every resource it renders).
    """
    if stored is None:
        stored = StoredResource(resource_type=document.resource_type, id=document.id, extras={})
        session.add(stored)
    stored.plan_id = plan_id
    stored.version_id = version_id
    stored.last_updated = when
    stored.deleted = False
    stored.content = document.content
    stored.digest = document.digest
    if extras is not None:
        stored.extras = extras
    appends.versions.append(_version_row(stored, method, document.content))
    return stored


def _version_row(stored: StoredResource, method: str, content: str | None) -> VersionRow:
    """The history row of the version ``stored`` now holds."""
    return {
        "resource_type": stored.resource_type,
        "id": stored.id,
        "version_id": stored.version_id,
        "last_updated": stored.last_updated,
        "deleted": stored.deleted,
        "method": method,
        "content": content,
    }


def write_appends(session: Session, appends: Appends) -> None:
    """Append a write's versions to the history and its new index rows to their tables, in
    the order collected, with one statement per table (no ORM objects: nothing in a write
    reads them back). An identifier another live resource has claimed fails here, with an
    IntegrityError."""
    connection = session.connection()
    for model, rows in appends.index_rows.items():
        connection.execute(_insert(model), rows)
    if appends.versions:
        connection.execute(_INSERT_VERSION, appends.versions)


_OF_KEYS = select(StoredResource).where(
    StoredResource.plan_id == bindparam("plan_id"),
    StoredResource.id.in_(bindparam("ids", expanding=True)),
)


def of_keys(session: Session, plan_id: str, keys: set[tuple[str, str]]) -> list[StoredResource]:
    """The stored resources of a plan with these (type, id) keys."""
    if not keys:
        return []
    found = session.scalars(_OF_KEYS, {"plan_id": plan_id, "ids": sorted({i for _, i in keys})})
    return [s for s in found if (s.resource_type, s.id) in keys]


def mark_deleted(
    session: Session,
    stored: StoredResource,
    when: datetime,
    *,
    previous: IndexEntries | None = None,
    appends: Appends,
) -> None:
    """A deletion is a version too: the history keeps what was there before.

    A deleted resource is found by no search. ``previous`` are the entries its index rows
    were written from, when the caller knows them (see :func:`reindex`). The version is
    added to ``appends``, as :func:`save` does.
    """
    reindex(
        session, stored.resource_type, stored.id, EMPTY_INDEX, previous=previous, appends=appends
    )
    stored.version_id += 1
    stored.last_updated = when
    stored.deleted = True
    appends.versions.append(_version_row(stored, "DELETE", None))


def version(
    session: Session, resource_type: str, resource_id: str, version_id: int
) -> ResourceVersion | None:
    return session.scalar(
        select(ResourceVersion).where(
            ResourceVersion.resource_type == resource_type,
            ResourceVersion.id == resource_id,
            ResourceVersion.version_id == version_id,
        )
    )


@dataclass(frozen=True)
class HistoryQuery:
    """Which versions to list: one resource, one type or all; a time window; a page."""

    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    # Only versions written before this instant (the read's horizon).
    until: datetime | None = None
    at: datetime | None = None
    # Keyset position: versions strictly before (newest first) this sequence number.
    before_sequence: int | None = None
    limit: int = 50
    # Only these resource types (None: all) and only this patient's resources (None: all).
    resource_types: tuple[str, ...] | None = None
    patient: str | None = None


_versions = ResourceVersion.__table__.c
_VERSIONS = select(
    _versions.sequence,
    _versions.resource_type,
    _versions.id,
    _versions.version_id,
    _versions.last_updated,
    _versions.deleted,
    _versions.method,
    _versions.content,
).where(_versions.sequence.in_(bindparam("sequences", expanding=True)))


def history(session: Session, query: HistoryQuery) -> Sequence[Any]:
    """Versions newest first, as FHIR history lists them: rows with the columns of
    ``ResourceVersion`` (a page is served as it is read, without ORM objects)."""
    conditions = []
    if query.resource_type is not None:
        conditions.append(ResourceVersion.resource_type == query.resource_type)
    if query.resource_id is not None:
        conditions.append(ResourceVersion.id == query.resource_id)
    if query.since is not None:
        conditions.append(ResourceVersion.last_updated >= query.since)
    if query.until is not None:
        conditions.append(ResourceVersion.last_updated < query.until)
    if query.before_sequence is not None:
        conditions.append(ResourceVersion.sequence < query.before_sequence)
    if query.resource_types is not None:
        conditions.append(ResourceVersion.resource_type.in_(query.resource_types))
    if query.patient is not None:
        conditions.append(_of_patient(query.patient))
    page = select(ResourceVersion.sequence).where(*conditions)
    if query.at is not None:
        page = page.where(_current_at(query.at))
    # The page is chosen on the indexes alone, then only its versions are read: sorting
    # whole versions (with their content) by sequence would read every version since
    # ``_since`` for each page.
    sequences = list(
        session.scalars(page.order_by(ResourceVersion.sequence.desc()).limit(query.limit))
    )
    if not sequences:
        return []
    ordered = _VERSIONS.order_by(_versions.sequence.desc())
    return session.execute(ordered, {"sequences": sequences}).all()


def _of_patient(patient: str) -> ColumnElement[bool]:
    """Versions of resources published from one patient's plans."""
    return (
        select(StoredResource.id)
        .join(CarePlan, CarePlan.id == StoredResource.plan_id)
        .where(
            StoredResource.resource_type == ResourceVersion.resource_type,
            StoredResource.id == ResourceVersion.id,
            CarePlan.patient == patient,
        )
        .exists()
    )


def _current_at(moment: datetime) -> ColumnElement[bool]:
    """Versions that were the current one at ``moment``: written by then, not yet replaced."""
    later = ResourceVersion.__table__.alias("later")
    replaced = (
        select(later.c.sequence)
        .where(
            and_(
                later.c.resource_type == ResourceVersion.resource_type,
                later.c.id == ResourceVersion.id,
                later.c.version_id > ResourceVersion.version_id,
                later.c.last_updated <= moment,
            )
        )
        .exists()
    )
    return and_(ResourceVersion.last_updated <= moment, ~replaced)


@dataclass(frozen=True)
class IndexEntries:
    """What a resource is found by: tokens (param, system, code), references
    (param, target) and date ranges (param, low, high)."""

    tokens: list[tuple[str, str | None, str]]
    references: list[tuple[str, str]]
    dates: list[tuple[str, datetime, datetime]]


EMPTY_INDEX = IndexEntries([], [], [])


def _claimed(entries: IndexEntries) -> set[tuple[Any, ...]]:
    return {(s or "", c) for p, s, c in entries.tokens if p == "identifier"}


def _wanted(entries: IndexEntries) -> list[tuple[Any, list[str], set[tuple[Any, ...]]]]:
    """Per index table: the model, its value columns and the rows ``entries`` make."""
    return [
        (SearchToken, ["param", "system", "code"], set(entries.tokens)),
        (SearchReference, ["param", "target"], set(entries.references)),
        (SearchDate, ["param", "low", "high"], set(entries.dates)),
        (ResourceIdentifier, ["system", "value"], _claimed(entries)),
    ]


def reindex(
    session: Session,
    resource_type: str,
    resource_id: str,
    entries: IndexEntries,
    *,
    fresh: bool = False,
    previous: IndexEntries | None = None,
    appends: Appends,
) -> None:
    """Make what a resource is found by ``entries``: only the rows that differ are written.
    Rows that go are deleted now; new ones are added to ``appends``, for the caller to
    insert with those of the other resources of its write (:func:`write_appends`).

    ``fresh`` says the resource has never been indexed, so there is nothing to compare.
    ``previous`` are the entries of its current (live) version, which its index rows were
    written from: a table whose rows would stay the same is not read at all.
    Its identifiers are claimed too: one claimed by another live resource of the type makes
    the write fail with an IntegrityError (the caller's conflict) once they are inserted.
    """
    before = [rows for _, _, rows in _wanted(previous)] if previous is not None else None
    # Index rows are never ORM objects: Core statements skip the ORM's bookkeeping.
    connection = session.connection()
    for position, (model, columns, rows) in enumerate(_wanted(entries)):
        if before is not None:
            # The rows held are those of the previous entries: change only the difference.
            held = before[position]
            if held == rows:
                continue
            gone = held - rows
            key = {"resource_type": resource_type, "resource_id": resource_id}
            if gone and not rows:
                connection.execute(_delete_all(model), key)
            elif gone:
                connection.execute(
                    _delete_one(model, tuple(columns)),
                    [{**key, **dict(zip(columns, row, strict=True))} for row in gone],
                )
            rows = rows - held
        elif not fresh:
            rows = _drop_unwanted(session, model, columns, resource_type, resource_id, rows)
        if rows:
            key = {"resource_type": resource_type, "resource_id": resource_id}
            appends.index_rows.setdefault(model, []).extend(
                {**key, **dict(zip(columns, row, strict=True))} for row in sorted(rows, key=repr)
            )


@functools.cache
def _insert(model: Any) -> Insert:
    return insert(model.__table__)


def _of_resource(model: Any) -> ColumnElement[bool]:
    return and_(
        model.resource_type == bindparam("resource_type"),
        model.resource_id == bindparam("resource_id"),
    )


@functools.cache
def _delete_all(model: Any) -> Delete:
    """Delete every index row of a resource in ``model``'s table (built once)."""
    return delete(model.__table__).where(_of_resource(model))


@functools.cache
def _delete_one(model: Any, columns: tuple[str, ...]) -> Delete:
    """Delete the index row of a resource holding these values (built once, run with many
    parameter sets). A missing value is NULL, which only ``IS`` matches."""
    values = []
    for name in columns:
        column = model.__table__.c[name]
        values.append(
            column.is_not_distinct_from(bindparam(name))
            if column.nullable
            else column == bindparam(name)
        )
    return delete(model.__table__).where(_of_resource(model), *values)


def _drop_unwanted(
    session: Session,
    model: Any,
    columns: list[str],
    resource_type: str,
    resource_id: str,
    rows: set[tuple[Any, ...]],
) -> set[tuple[Any, ...]]:
    """Delete a resource's index rows of ``model`` that are not in ``rows``; return the
    rows still to insert."""
    of_resource = and_(model.resource_type == resource_type, model.resource_id == resource_id)
    # Index rows are deleted by their key: a NULL system never compares equal.
    keys = [model.row] if hasattr(model, "row") else [model.system, model.value]
    held: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for found in session.execute(
        select(*keys, *(getattr(model, c) for c in columns)).where(of_resource)
    ):
        held[tuple(found[len(keys) :])] = tuple(found[: len(keys)])
    gone = [key for row, key in held.items() if row not in rows]
    if gone:
        session.execute(delete(model).where(of_resource, tuple_(*keys).in_(gone)))
    return rows - held.keys()
