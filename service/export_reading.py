"""The published resources of one type as they were at an instant, a page at a time.

An export is consistent as of its transaction time ``T``, a history horizon: every version
stamped before ``T`` had committed when it was taken, and none stamped later is read. A
resource is exported as its version current at ``T`` (the newest one stamped before it),
unless that version is a deletion; one created at or after ``T`` is not exported.

The current rows are read in pages, in id order (keyset on the primary key), never all at
once. A row last changed before ``T`` is its own version at ``T``; only rows changed since
are looked up in the history, one statement per page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select

from service.models import CarePlan, ResourceVersion, StoredResource

PAGE_SIZE = 1000

_stored = StoredResource.__table__.c
_plans = CarePlan.__table__.c
_versions = ResourceVersion.__table__.c


@dataclass(frozen=True)
class Exported:
    """One resource as exported: its id, its JSON at ``T`` and its patient."""

    id: str
    content: str
    patient: str


@dataclass(frozen=True)
class Selection:
    """Which resources of a type an export holds: as of ``at``; changed at or after
    ``since`` (None: all); of one patient (None: every patient)."""

    resource_type: str
    at: datetime
    since: datetime | None = None
    patient: str | None = None


# Given the ids of a page's exported resources, the ids a _typeFilter keeps (None: all).
Filter = Callable[[Connection, list[str]], set[str]]


def _page(selection: Selection, after: str | None) -> object:
    query = (
        select(
            _stored.id,
            _stored.last_updated,
            _stored.deleted,
            _stored.content,
            _plans.patient,
        )
        .join_from(StoredResource.__table__, CarePlan.__table__, _plans.id == _stored.plan_id)
        .where(_stored.resource_type == selection.resource_type)
        .order_by(_stored.id)
        .limit(PAGE_SIZE)
    )
    if after is not None:
        query = query.where(_stored.id > after)
    if selection.patient is not None:
        query = query.where(_plans.patient == selection.patient)
    return query


def _versions_at(
    connection: Connection, resource_type: str, ids: Sequence[str], at: datetime
) -> dict[str, tuple[datetime, bool, str | None]]:
    """The version current at ``at`` of each of these resources that had one."""
    newest = (
        select(_versions.id, func.max(_versions.version_id).label("version_id"))
        .where(
            _versions.resource_type == resource_type,
            _versions.id.in_(list(ids)),
            _versions.last_updated < at,
        )
        .group_by(_versions.id)
        .subquery()
    )
    rows = connection.execute(
        select(_versions.id, _versions.last_updated, _versions.deleted, _versions.content).join(
            newest,
            and_(
                _versions.resource_type == resource_type,
                _versions.id == newest.c.id,
                _versions.version_id == newest.c.version_id,
            ),
        )
    )
    return {row.id: (row.last_updated, row.deleted, row.content) for row in rows}


def pages(
    connection_for: Callable[[], Connection],
    selection: Selection,
    keep: Filter | None = None,
) -> Iterator[list[Exported]]:
    """The exported resources, a page (at most :data:`PAGE_SIZE`) at a time, in id order.

    ``connection_for`` gives the connection each page is read on (a page's statements are
    few and short; nothing is held open between pages)."""
    after: str | None = None
    while True:
        connection = connection_for()
        rows = connection.execute(_page(selection, after)).all()  # type: ignore[call-overload]
        if not rows:
            return
        after = rows[-1].id
        changed = [row.id for row in rows if row.last_updated >= selection.at]
        earlier = (
            _versions_at(connection, selection.resource_type, changed, selection.at)
            if changed
            else {}
        )
        found: list[Exported] = []
        for row in rows:
            if row.last_updated < selection.at:
                version = (row.last_updated, row.deleted, row.content)
            else:
                version = earlier.get(row.id)  # type: ignore[assignment]
                if version is None:
                    continue  # created after T
            last_updated, deleted, content = version
            if deleted or content is None:
                continue
            if selection.since is not None and last_updated < selection.since:
                continue
            found.append(Exported(row.id, content, row.patient))
        if keep is not None and found:
            kept = keep(connection, [resource.id for resource in found])
            found = [resource for resource in found if resource.id in kept]
        if found:
            yield found
        if len(rows) < PAGE_SIZE:
            return


def estimated(connection: Connection, resource_type: str, patient: str | None) -> int:
    """How many resources of the type there are now (a progress bar's total)."""
    query = (
        select(func.count())
        .select_from(StoredResource.__table__)
        .where(_stored.resource_type == resource_type)
    )
    if patient is not None:
        query = query.join(CarePlan.__table__, _plans.id == _stored.plan_id).where(
            _plans.patient == patient
        )
    return int(connection.execute(query).scalar_one())
