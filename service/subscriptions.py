"""Subscriptions kept for their owners: stored, found, changed and removed, and their events.

A subscription belongs to the client that created it, with the access it had then (its
scopes and patient context). Only that client, with the same patient context, finds it:
to anyone else it does not exist.

Events are written unnumbered by the writes that raise them (``fhir_mappings.outbox``)
and numbered here afterwards (:func:`number_events`), each subscription in a short
transaction of its own under its row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, select
from sqlalchemy import update as update_rows
from sqlalchemy.orm import Session

from service.db import Database
from service.models import Subscription, SubscriptionEvent, new_id, utcnow

# Columns a client's write sets (the rest is the service's: owner, events, delivery).
WRITTEN = (
    "status",
    "topic",
    "filters",
    "endpoint",
    "headers_sealed",
    "payload",
    "content_type",
    "heartbeat_seconds",
    "timeout_seconds",
    "max_count",
    "end",
    "content",
)


@dataclass(frozen=True)
class Owner:
    """Who a subscription belongs to: the creating token's client, scopes and patient."""

    client_id: str
    scopes: str
    patient: str | None


def _owned_by(owner: Owner) -> Any:
    return (Subscription.owner_client_id == owner.client_id) & (
        Subscription.owner_patient.is_not_distinct_from(owner.patient)
    )


def owned(
    session: Session, subscription_id: str, owner: Owner, *, for_update: bool = False
) -> Subscription | None:
    """The owner's subscription with this id (a deleted one included), or None."""
    query = select(Subscription).where(Subscription.id == subscription_id, _owned_by(owner))
    if for_update:
        # FOR NO KEY UPDATE: the writes inserting events hold FOR KEY SHARE on the row
        # until they commit, which FOR UPDATE would wait for.
        query = query.with_for_update(key_share=True)
    return session.scalar(query)


def create(session: Session, fields: dict[str, Any], owner: Owner, now: datetime) -> Subscription:
    """Store a new subscription; one requested is due for its handshake at once."""
    subscription = Subscription(
        id=fields.pop("id", None) or new_id(),
        version_id=1,
        last_updated=now,
        deleted=False,
        owner_client_id=owner.client_id,
        owner_scopes=owner.scopes,
        owner_patient=owner.patient,
        events_since_start=0,
        delivered_through=0,
        failed_attempts=0,
        created_at=now,
        **fields,
    )
    subscription.next_attempt_at = now if subscription.status == "requested" else None
    session.add(subscription)
    session.flush()
    return subscription


def update(
    session: Session, subscription: Subscription, fields: dict[str, Any], now: datetime
) -> None:
    """Apply a client's new version. A subscription set to requested (again) or pointed
    at another endpoint starts over, requested, with a handshake; one turned off is due
    for nothing."""
    moved = fields["endpoint"] != subscription.endpoint
    requested_again = fields["status"] != "off" and (
        moved or (fields["status"] == "requested" and subscription.status != "requested")
    )
    for name, value in fields.items():
        setattr(subscription, name, value)
    subscription.version_id += 1
    subscription.last_updated = now
    if fields["status"] == "off":
        subscription.next_attempt_at = None
        subscription.reason = None
    elif requested_again:
        subscription.status = "requested"
        subscription.reason = None
        subscription.next_attempt_at = now
        subscription.failed_attempts = 0
        subscription.failing_since = None


def remove(subscription: Subscription, now: datetime) -> None:
    """Delete a subscription: it collects and sends nothing more; its events go with the
    retention window."""
    subscription.deleted = True
    subscription.status = "off"
    subscription.next_attempt_at = None
    subscription.version_id += 1
    subscription.last_updated = now


@dataclass(frozen=True)
class SubscriptionQuery:
    """A search of an owner's subscriptions: every given criterion must hold."""

    ids: Sequence[str] | None = None
    statuses: Sequence[str] | None = None
    endpoints: Sequence[str] | None = None
    topics: Sequence[str] | None = None
    updated_after: datetime | None = None  # inclusive
    updated_before: datetime | None = None  # exclusive
    limit: int = 50


def search(
    session: Session, owner: Owner, query: SubscriptionQuery
) -> tuple[int, list[Subscription]]:
    """The owner's live subscriptions matching ``query``: how many, and the first page
    (oldest first)."""
    conditions = [_owned_by(owner), Subscription.deleted.is_(False)]
    if query.ids is not None:
        conditions.append(Subscription.id.in_(query.ids))
    if query.statuses is not None:
        conditions.append(Subscription.status.in_(query.statuses))
    if query.endpoints is not None:
        conditions.append(Subscription.endpoint.in_(query.endpoints))
    if query.topics is not None:
        conditions.append(Subscription.topic.in_(query.topics))
    if query.updated_after is not None:
        conditions.append(Subscription.last_updated >= query.updated_after)
    if query.updated_before is not None:
        conditions.append(Subscription.last_updated < query.updated_before)
    total = session.scalar(select(func.count()).select_from(Subscription).where(*conditions)) or 0
    found = session.scalars(
        select(Subscription)
        .where(*conditions)
        .order_by(Subscription.created_at, Subscription.id)
        .limit(query.limit)
    )
    return total, list(found)


def retention_start(now: datetime, retention_days: int) -> datetime:
    """The oldest instant whose events are still kept."""
    return now - timedelta(days=retention_days)


def events(
    session: Session,
    subscription_id: str,
    first: int,
    last: int,
    *,
    kept_since: datetime,
) -> list[SubscriptionEvent]:
    """The subscription's events numbered ``first`` to ``last`` still kept, in order."""
    return list(
        session.scalars(
            select(SubscriptionEvent)
            .where(
                SubscriptionEvent.subscription_id == subscription_id,
                SubscriptionEvent.event_number >= first,
                SubscriptionEvent.event_number <= last,
                SubscriptionEvent.occurred_at >= kept_since,
            )
            .order_by(SubscriptionEvent.event_number)
        )
    )


def first_kept(session: Session, subscription_id: str, kept_since: datetime) -> int | None:
    """The number of the subscription's oldest event still kept (None: none is)."""
    return session.scalar(
        select(func.min(SubscriptionEvent.event_number)).where(
            SubscriptionEvent.subscription_id == subscription_id,
            SubscriptionEvent.occurred_at >= kept_since,
        )
    )


def purge_events(session: Session, kept_since: datetime) -> int:
    """Delete every event older than the retention window; how many went."""
    result = session.execute(
        delete(SubscriptionEvent).where(SubscriptionEvent.occurred_at < kept_since)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- numbering ------------------------------------------------------------------------------

_EVENTS = cast(Table, SubscriptionEvent.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
_UNNUMBERED = _EVENTS.c.event_number.is_(None)
_NUMBER = (
    update_rows(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(event_number=bindparam("number"))
)


def unnumbered(session: Session, subscription_ids: Sequence[str] | None = None) -> list[str]:
    """The subscriptions (of ``subscription_ids``, or any) with committed events still to
    number: one read of the partial index of unnumbered events."""
    query = select(_EVENTS.c.subscription_id).where(_UNNUMBERED).distinct()
    if subscription_ids is not None:
        query = query.where(_EVENTS.c.subscription_id.in_(subscription_ids))
    return sorted(session.scalars(query))


def number_events(
    session: Session,
    subscription_id: str,
    now: datetime,
    *,
    row_locks: bool,
    skip_locked: bool = False,
) -> int | None:
    """Number the subscription's committed unnumbered events after its last one, in the
    order found (id order), and raise its counter; the new counter, or None when the
    subscription is gone or, with ``skip_locked``, its row is locked by another.

    Run it in a short transaction of its own: it locks the subscription's row (``FOR NO
    KEY UPDATE`` on PostgreSQL, which the writes inserting events do not conflict with;
    SQLite has one writer at a time anyway) until that ends, so numberings of one
    subscription follow one another and none repeats or skips a number. After the lock is
    granted, the events are read in a statement of their own, which on PostgreSQL sees
    everything committed by then, the previous numbering included. An event's number is
    therefore given in the order events are found, not necessarily in id order: a write
    that took its id first and committed last is numbered last.
    """
    lock = select(_SUBSCRIPTIONS.c.events_since_start).where(_SUBSCRIPTIONS.c.id == subscription_id)
    if row_locks:
        lock = lock.with_for_update(key_share=True, skip_locked=skip_locked)
    last = session.execute(lock).scalar()
    if last is None:
        return None
    found = list(
        session.scalars(
            select(_EVENTS.c.id)
            .where(_EVENTS.c.subscription_id == subscription_id, _UNNUMBERED)
            .order_by(_EVENTS.c.id)
        )
    )
    if not found:
        return int(last)
    session.execute(
        _NUMBER,
        [{"event_id": event, "number": last + position} for position, event in enumerate(found, 1)],
    )
    raised = last + len(found)
    session.execute(
        update_rows(_SUBSCRIPTIONS)
        .where(_SUBSCRIPTIONS.c.id == subscription_id)
        .values(
            events_since_start=raised,
            # Due now unless a delivery is already scheduled (a retry keeps its time); one
            # turned off or deleted since its events were written stays unscheduled.
            next_attempt_at=case(
                (
                    _SUBSCRIPTIONS.c.status.in_(("requested", "active", "error"))
                    & _SUBSCRIPTIONS.c.deleted.is_(False),
                    func.coalesce(_SUBSCRIPTIONS.c.next_attempt_at, now),
                ),
                else_=_SUBSCRIPTIONS.c.next_attempt_at,
            ),
        )
    )
    return int(raised)


def number_pending(
    database: Database,
    subscription_ids: Sequence[str] | None = None,
    *,
    pending: Sequence[str] | None = None,
    skip_locked: bool = False,
    now: datetime | None = None,
) -> None:
    """Number the committed unnumbered events of ``subscription_ids`` (or of every
    subscription), a short transaction per subscription that has some. ``pending``: those
    subscriptions, when the caller has already read them (:func:`unnumbered`).

    Whatever reports a subscription's counter calls it first, so that the counter takes in
    every event committed by then. Nothing is written when no event waits.
    """
    if pending is None:
        with database.reading() as session:
            pending = unnumbered(session, subscription_ids)
    for subscription_id in pending:
        with database.writing() as session:
            number_events(
                session,
                subscription_id,
                now or utcnow(),
                row_locks=database.supports_row_locks,
                skip_locked=skip_locked,
            )
