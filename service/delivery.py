"""Delivery of subscription notifications: which subscription is due, and what an attempt
changes. At least once, in order, never two workers at once for one subscription.

A worker *claims* due subscriptions in one short transaction per poll, in which it first
numbers the events committed since it last looked (``service.subscriptions.number_events``
for each subscription that has some), then takes a lease on each due one
(``lease_owner``, ``lease_until``), the rows locked ``SELECT … FOR NO KEY UPDATE SKIP
LOCKED`` on PostgreSQL, so that several workers share the outbox and a subscription
another worker is claiming, or has just leased, is left out. Skipping locked rows starves
no subscription: the writes that raise events only insert them and lock no subscription
row (their foreign key's ``FOR KEY SHARE`` does not conflict with ``FOR NO KEY UPDATE``),
so a row is locked only for the moments a numbering, a claim, a finish or a client's
change of the subscription takes. It then sends
with no transaction open (a receiver may take the subscription's whole timeout), and
*finishes* in a second short transaction that records the outcome and gives the lease
back. The lease lasts the subscription's timeout plus a margin: a subscription leased to
a live worker is never claimed by another, so one subscription's notifications go out one
at a time and in order. A worker killed mid-delivery loses nothing: nothing was marked
delivered, its lease runs out and another worker sends the same events again (a receiver
sees a duplicate, recognisable by its event numbers, never a gap).

What is due, in a claim:

- a ``requested`` subscription: the handshake; its success makes the subscription
  ``active``;
- an ``active`` one with events past ``delivered_through`` whose ``next_attempt_at`` has
  come: an event-notification of the next ``max_count`` events, in order;
- an ``active`` one with nothing to send whose heartbeat period has passed since the last
  notification: a heartbeat.

A failed attempt is retried after an exponential backoff with full jitter, capped, until
the subscription's ``end`` or until it has failed for the retention window; then it is put
in ``error`` with the reason, its events kept for ``$events``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from service.db import Database
from service.models import AuditRecord, Subscription, SubscriptionEvent, new_id, utcnow
from service.subscriptions import number_events, unnumbered

HANDSHAKE = "handshake"
HEARTBEAT = "heartbeat"
EVENT_NOTIFICATION = "event-notification"
KINDS = (HANDSHAKE, HEARTBEAT, EVENT_NOTIFICATION)
# How an attempt ended, as counted in the metrics and the audit trail.
DELIVERED = "delivered"
FAILED = "failed"
REFUSED = "refused"  # the endpoint failed the destination check when sent: no connection

_AUDIT_EVENTS = cast(Table, AuditRecord.__table__)
_EVENTS = cast(Table, SubscriptionEvent.__table__)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often and how long a worker tries."""

    backoff_base: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=7)
    lease_margin: timedelta = timedelta(seconds=30)

    def backoff(self, failures: int, rng: random.Random | None = None) -> timedelta:
        """The wait before the next attempt after ``failures`` failures in a row:
        uniformly random up to base * 2^(failures - 1), capped (full jitter, so that the
        retries of many subscriptions to one receiver that was down do not come together).
        """
        ceiling = min(
            self.backoff_max.total_seconds(),
            self.backoff_base.total_seconds() * 2 ** min(max(failures - 1, 0), 32),
        )
        return timedelta(seconds=(rng or random).uniform(0, ceiling))


@dataclass(frozen=True)
class Claim:
    """A subscription leased to one worker for one attempt: what to send."""

    subscription_id: str
    kind: str
    first: int  # the first and last event numbers sent (0, 0 without events)
    last: int
    owner: str
    timeout: float
    version: int  # the subscription's version when claimed


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``reason`` names what went wrong, never the endpoint itself."""

    result: str  # DELIVERED, FAILED or REFUSED
    status: int | None = None
    reason: str | None = None
    address: str | None = None


def _due(now: datetime) -> Any:
    free = or_(Subscription.lease_until.is_(None), Subscription.lease_until < now)
    pending = Subscription.delivered_through < Subscription.events_since_start
    waiting = or_(
        Subscription.next_attempt_at <= now,
        # Not failing, with something to send: due at once, whatever time the next
        # heartbeat was set for (a failing one waits for its retry time).
        and_(
            Subscription.failed_attempts == 0,
            or_(Subscription.status == "requested", pending),
        ),
    )
    return and_(
        Subscription.deleted.is_(False),
        Subscription.status.in_(("requested", "active")),
        free,
        waiting,
    )


def _what_to_send(row: Subscription, now: datetime) -> tuple[str, int, int] | None:
    """The kind and event numbers of the attempt a due subscription needs, or None."""
    if row.status == "requested":
        return HANDSHAKE, 0, 0
    if row.delivered_through < row.events_since_start:
        first = row.delivered_through + 1
        return EVENT_NOTIFICATION, first, min(row.events_since_start, first + row.max_count - 1)
    if row.heartbeat_seconds:
        since = row.last_delivered_at or row.created_at
        if since + timedelta(seconds=row.heartbeat_seconds) <= now or row.failed_attempts:
            return HEARTBEAT, 0, 0
    return None


def _next_heartbeat(row: Subscription, now: datetime) -> datetime | None:
    if not row.heartbeat_seconds:
        return None
    since = row.last_delivered_at or row.created_at
    return max(since + timedelta(seconds=row.heartbeat_seconds), now)


def claim_due(
    database: Database,
    owner: str,
    limit: int,
    policy: DeliveryPolicy,
    now: datetime | None = None,
) -> list[Claim]:
    """Lease up to ``limit`` due subscriptions to ``owner``, most overdue first."""
    if limit <= 0:
        return []
    now = now or utcnow()
    claims: list[Claim] = []
    # The subscriptions with events to number and the candidates, read without a lock,
    # most overdue first: an idle poll takes no write transaction (on SQLite, not the
    # writers' turn that every request's write waits for).
    with database.reading() as session:
        pending = unnumbered(session)
        candidates = list(
            session.scalars(
                select(Subscription.id)
                .where(_due(now))
                .order_by(Subscription.next_attempt_at.asc().nulls_first(), Subscription.id)
                .limit(limit * 3)
            )
        )
    candidates += [p for p in pending if p not in candidates]
    if not candidates:
        return []
    with database.writing() as session:
        # Events committed since they were last numbered are numbered first, in this
        # transaction: one write transaction per poll, however many subscriptions have
        # some (on SQLite each would wait its turn behind the requests' writes). One whose
        # row another worker holds locked (numbering or claiming it) is skipped: that
        # worker numbers it, or the next poll does.
        for subscription_id in sorted(pending):
            number_events(
                session,
                subscription_id,
                now,
                row_locks=database.supports_row_locks,
                skip_locked=True,
            )
        # The conditions are evaluated again on the rows as committed (the counters just
        # raised included); a row another worker holds locked is skipped, and one it has
        # just leased is left out.
        query = select(Subscription).where(Subscription.id.in_(candidates), _due(now))
        if database.supports_row_locks:
            query = query.with_for_update(key_share=True, skip_locked=True)
        rows = sorted(session.scalars(query), key=lambda row: candidates.index(row.id))[:limit]
        for row in rows:
            sending = _what_to_send(row, now)
            if sending is None:
                # Woken with nothing to send (an event already delivered): sleep until
                # the next heartbeat, or until an event wakes it.
                row.next_attempt_at = _next_heartbeat(row, now)
                continue
            kind, first, last = sending
            row.lease_owner = owner
            row.lease_until = now + timedelta(seconds=row.timeout_seconds) + policy.lease_margin
            claims.append(
                Claim(
                    subscription_id=row.id,
                    kind=kind,
                    first=first,
                    last=last,
                    owner=owner,
                    timeout=float(row.timeout_seconds),
                    version=row.version_id,
                )
            )
    return claims


def events_of(session: Session, claim: Claim) -> list[SubscriptionEvent]:
    """The events a claim sends, in order."""
    if claim.kind != EVENT_NOTIFICATION:
        return []
    query = (
        select(SubscriptionEvent)
        .where(
            SubscriptionEvent.subscription_id == claim.subscription_id,
            SubscriptionEvent.event_number.between(claim.first, claim.last),
        )
        .order_by(SubscriptionEvent.event_number)
    )
    return list(session.scalars(query))


def _locked(session: Session, database: Database, subscription_id: str) -> Subscription | None:
    query = select(Subscription).where(Subscription.id == subscription_id)
    if database.supports_row_locks:
        # Not FOR UPDATE, which would wait for every uncommitted write inserting events
        # (they hold FOR KEY SHARE on the row).
        query = query.with_for_update(key_share=True)
    return session.scalars(query).first()


def finish(
    database: Database,
    claim: Claim,
    outcome: Outcome,
    policy: DeliveryPolicy,
    patients: Sequence[str | None] = (),
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> str | None:
    """Record how an attempt ended and give the lease back; audit it.

    Returns the subscription's new status when the attempt changed it (``active`` after a
    handshake, ``error`` when retrying ends), else None. A worker whose lease ran out and
    was taken over only records the attempt: the new holder decides what comes next.
    """
    now = now or utcnow()
    changed: str | None = None
    with database.writing() as session:
        row = _locked(session, database, claim.subscription_id)
        _audit(session, row, claim, outcome, patients, now)
        if row is None or row.lease_owner != claim.owner:
            return None
        row.lease_owner = None
        row.lease_until = None
        if row.deleted or row.status not in ("requested", "active"):
            return None
        if row.version_id != claim.version:
            # The client changed it meanwhile (another endpoint, set to requested again):
            # what was sent says nothing about the new version, which starts afresh.
            return None
        if outcome.result == DELIVERED:
            changed = _delivered(session, row, claim, now)
        else:
            changed = _failed(row, outcome, policy, now, rng)
    return changed


def _delivered(session: Session, row: Subscription, claim: Claim, now: datetime) -> str | None:
    changed = None
    if claim.kind == HANDSHAKE and row.status == "requested":
        row.status = "active"
        changed = "active"
    if claim.kind == EVENT_NOTIFICATION and claim.last > row.delivered_through:
        session.execute(
            update(_EVENTS)
            .where(
                _EVENTS.c.subscription_id == row.id,
                _EVENTS.c.event_number.between(claim.first, claim.last),
                _EVENTS.c.delivered_at.is_(None),
            )
            .values(delivered_at=now)
        )
        row.delivered_through = claim.last
    row.last_delivered_at = now
    row.failed_attempts = 0
    row.failing_since = None
    if row.delivered_through < row.events_since_start:
        row.next_attempt_at = now
    else:
        row.next_attempt_at = _next_heartbeat(row, now)
    return changed


def _failed(
    row: Subscription,
    outcome: Outcome,
    policy: DeliveryPolicy,
    now: datetime,
    rng: random.Random | None,
) -> str | None:
    row.failed_attempts += 1
    row.failing_since = row.failing_since or now
    reason = outcome.reason or "the notification could not be delivered"
    if row.end is not None and now >= row.end:
        row.status = "error"
        row.reason = f"delivery failed until the subscription's end: {reason}"
    elif now - row.failing_since >= policy.retention:
        days = policy.retention.total_seconds() / 86400
        row.status = "error"
        row.reason = (
            f"delivery failed for {days:g} days ({row.failed_attempts} attempts), "
            f"the retention window; last: {reason}"
        )
    else:
        row.next_attempt_at = now + policy.backoff(row.failed_attempts, rng)
        return None
    row.next_attempt_at = None
    return "error"


def _audit(
    session: Session,
    row: Subscription | None,
    claim: Claim,
    outcome: Outcome,
    patients: Sequence[str | None],
    now: datetime,
) -> None:
    """One AuditEvent per patient whose events the attempt carried (BALP: a record per
    patient), or one without a patient for a handshake or heartbeat."""
    client = row.owner_client_id if row is not None else None
    if outcome.result == DELIVERED:
        code = "0"
    elif outcome.result == REFUSED or (outcome.status is not None and outcome.status < 500):
        code = "4"
    else:
        code = "8"
    distinct: list[str | None] = [*sorted({p for p in patients if p})] or [None]
    rows = [
        {
            "id": new_id(),
            "recorded": now,
            "started": now,
            "action": "E",
            "outcome": code,
            "agent": client or "subscription",
            "client_id": client,
            "interaction": claim.kind,
            "status": outcome.status,
            "address": outcome.address,
            "entity": f"Subscription/{claim.subscription_id}",
            "patient": patient,
        }
        for patient in distinct
    ]
    session.execute(insert(_AUDIT_EVENTS), rows)


def release(database: Database, owner: str) -> None:
    """Give back every lease ``owner`` still holds (a worker stopping with claims it never
    started): they are due again at once for the next worker."""
    with database.writing() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


@dataclass(frozen=True)
class Backlog:
    """What waits to be delivered, across every subscription that is sending."""

    undelivered: int
    oldest_age_seconds: float
    by_status: dict[str, int]


def backlog(database: Database, now: datetime | None = None) -> Backlog:
    """The queue depth, the age of the oldest undelivered event and the subscriptions by
    status: cheap reads for the metrics (the events table is read by its primary key)."""
    now = now or utcnow()
    with database.reading() as session:
        by_status = {
            status: count
            for status, count in session.execute(
                select(Subscription.status, func.count())
                .where(Subscription.deleted.is_(False))
                .group_by(Subscription.status)
            )
        }
        undelivered = session.execute(
            select(
                func.coalesce(
                    func.sum(Subscription.events_since_start - Subscription.delivered_through), 0
                )
            ).where(Subscription.deleted.is_(False), Subscription.status == "active")
        ).scalar_one()
        # Events committed and not numbered yet (a moment's worth) wait too.
        unnumbered, oldest_unnumbered = session.execute(
            select(func.count(), func.min(SubscriptionEvent.occurred_at))
            .select_from(SubscriptionEvent)
            .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
            .where(
                SubscriptionEvent.event_number.is_(None),
                Subscription.deleted.is_(False),
                Subscription.status == "active",
            )
        ).one()
        oldest = session.execute(
            select(func.min(SubscriptionEvent.occurred_at))
            .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
            .where(
                Subscription.deleted.is_(False),
                Subscription.status == "active",
                SubscriptionEvent.event_number == Subscription.delivered_through + 1,
            )
        ).scalar_one()
    undelivered += unnumbered
    first = min((t for t in (oldest, oldest_unnumbered) if t is not None), default=None)
    age = max((now - first).total_seconds(), 0.0) if first is not None else 0.0
    return Backlog(undelivered=int(undelivered), oldest_age_seconds=age, by_status=by_status)
