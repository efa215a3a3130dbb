"""The subscriptions' outbox: events written in the transaction of the change they report.

Every published version is matched against the topics, then against the live
subscriptions to those topics (status requested, active or error, not deleted, not past
their end) and their filters. Each match is an event, numbered after the subscription's
last one: the subscription's counter is raised with ``UPDATE … RETURNING``, which on
PostgreSQL holds the row's lock until the transaction ends, so concurrent writers number
their events one after the other with no gap and no repeat, and a rolled-back change takes
its numbers back with it. A subscription with new events and no delivery scheduled is
scheduled now, for the delivery worker to pick up.

A write whose versions no topic is about costs nothing; otherwise one indexed query finds
the live subscriptions to the topics it may raise, and nothing more is done without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from fhir_mappings.search_parameters import SEARCH_PARAMETERS
from fhir_mappings.topics import (
    BY_URL,
    TOPICS,
    Change,
    Filter,
    InvalidFilter,
    matching,
    parse_filter,
)
from service.models import Subscription, SubscriptionEvent
from service.resource_store import VersionRow

# The statuses of a subscription that collects events: off and deleted ones do not.
COLLECTING = ("requested", "active", "error")
_subscriptions = Subscription.__table__.c
_LIVE = select(_subscriptions.id, _subscriptions.topic, _subscriptions.filters).where(
    _subscriptions.topic.in_(bindparam("topics", expanding=True)),
    _subscriptions.status.in_(COLLECTING),
    _subscriptions.deleted.is_(False),
    or_(_subscriptions.end.is_(None), _subscriptions.end > bindparam("now")),
)
_COUNT = (
    update(Subscription)
    .where(
        _subscriptions.id == bindparam("subscription"),
        _subscriptions.status.in_(COLLECTING),
        _subscriptions.deleted.is_(False),
    )
    .values(
        events_since_start=_subscriptions.events_since_start + bindparam("added"),
        next_attempt_at=func.coalesce(_subscriptions.next_attempt_at, bindparam("now")),
    )
    .returning(_subscriptions.events_since_start)
)
_INSERT_EVENTS = insert(SubscriptionEvent)


def _interaction(version: VersionRow) -> str:
    if version["deleted"]:
        return "delete"
    return "create" if version["method"] == "POST" else "update"


def _topic_urls(versions: Iterable[VersionRow]) -> list[str]:
    """The topics the versions may raise, judged by their type and interaction only."""
    kinds = {(v["resource_type"], _interaction(v)) for v in versions}
    return sorted(
        {t.url for t in TOPICS if any(t.resource_type == r and i in t.triggers for r, i in kinds)}
    )


def record(
    session: Session,
    versions: Sequence[VersionRow],
    deleted_content: Mapping[tuple[str, str], str],
    causes: Mapping[tuple[str, str], frozenset[str]],
    now: datetime,
) -> None:
    """Write the events the published ``versions`` raise, in the caller's transaction.

    ``deleted_content`` holds, for each deleted resource, the content it had (a deletion
    is matched and filtered on what it deleted); ``causes`` the domain changes behind a
    version (see :class:`fhir_mappings.topics.Change`).
    """
    urls = _topic_urls(versions)
    if not urls:
        return
    live = session.execute(_LIVE, {"topics": urls, "now": now}).all()
    if not live:
        return
    changes = [_change(v, deleted_content, causes) for v in versions]
    raised = [(change, {t.url for t in matching(change)}) for change in changes]
    # In id order: two writers raising events for the same subscriptions lock them in the
    # same order, and so never wait for each other in a cycle.
    for subscription_id, topic, filters in sorted(live, key=lambda row: row[0]):
        criteria = _filters(topic, filters)
        if criteria is None:
            continue
        matched = [c for c, topics in raised if topic in topics and _passes(criteria, c)]
        if matched:
            _add_events(session, subscription_id, topic, matched, now)


def _change(
    version: VersionRow,
    deleted_content: Mapping[tuple[str, str], str],
    causes: Mapping[tuple[str, str], frozenset[str]],
) -> Change:
    key = (version["resource_type"], version["id"])
    content = version["content"] if version["content"] is not None else deleted_content.get(key)
    return Change(
        resource_type=key[0],
        resource_id=key[1],
        version_id=version["version_id"],
        interaction=_interaction(version),
        resource=json.loads(content) if content else {"resourceType": key[0], "id": key[1]},
        causes=causes.get(key, frozenset()),
    )


def _filters(topic_url: str, written: Any) -> list[Filter] | None:
    """A stored subscription's filters; None when they no longer apply to its topic (they
    were validated when written): such a subscription matches nothing, not everything."""
    topic = BY_URL.get(topic_url)
    if topic is None:
        return None
    try:
        return [parse_filter(topic, text) for text in written or []]
    except InvalidFilter:
        return None


def _passes(criteria: list[Filter], change: Change) -> bool:
    return all(criterion.matches(change.resource) for criterion in criteria)


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a published resource is about, as its ``patient`` search finds it."""
    parameter = SEARCH_PARAMETERS.get(resource.get("resourceType", ""), {}).get("patient")
    if parameter is None:
        return None
    return next((str(value) for value in parameter.extract(resource)), None)


def _add_events(
    session: Session, subscription_id: str, topic: str, matched: list[Change], now: datetime
) -> None:
    connection = session.connection()
    last = connection.execute(
        _COUNT, {"subscription": subscription_id, "added": len(matched), "now": now}
    ).scalar()
    if last is None:  # turned off or deleted since it was read: it collects nothing
        return
    first = last - len(matched) + 1
    connection.execute(
        _INSERT_EVENTS,
        [
            {
                "subscription_id": subscription_id,
                "event_number": first + position,
                "topic": topic,
                "focus_type": change.resource_type,
                "focus_id": change.resource_id,
                "focus_version": change.version_id,
                "patient": patient_of(change.resource),
                "occurred_at": now,
                "delivered_at": None,
            }
            for position, change in enumerate(matched)
        ],
    )
