"""Subscriptions kept for their owners: stored, found, changed and removed, and their events.

A subscription belongs to the client that created it, with the access it had then (its
scopes and patient context). Only that client, with the same patient context, finds it:
to anyone else it does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.models import Subscription, SubscriptionEvent, new_id

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
        query = query.with_for_update()
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
