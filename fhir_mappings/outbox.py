"""The subscriptions' outbox: events written in the transaction of the change they report.

Every published version is matched against the topics, then against the live
subscriptions to those topics (status requested, active or error, not deleted, not past
their end) and their filters. Each match is an event, inserted without a number: a
rolled-back change takes its events with it, and a write neither updates nor locks the
subscriptions it raises events for, so concurrent writes matching one subscription never
wait for each other. (On PostgreSQL the events' foreign key takes ``FOR KEY SHARE`` on
the subscription's row, which conflicts with no lock the service takes on it: those are
``FOR NO KEY UPDATE`` or plain updates of columns no key uses.)

Once committed, the events are numbered by :func:`service.subscriptions.number_events`,
one short transaction per subscription under its row lock: after its last number, with no
gap and no repeat, in the order they are found (the order their writes committed in, not
necessarily their ids'). The delivery worker numbers them before it claims, and
``$status``/``$events`` before they report the counter.

A write whose versions no topic is about costs nothing; otherwise one indexed query finds
the live subscriptions to the topics it may raise, and nothing more is done without one
(with one, a single insert writes every event).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select
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
    rows: list[dict[str, Any]] = []
    for subscription_id, topic, filters in live:
        criteria = _filters(topic, filters)
        if criteria is None:
            continue
        rows.extend(
            _event(subscription_id, topic, change, now)
            for change, topics in raised
            if topic in topics and _passes(criteria, change)
        )
    if rows:
        session.connection().execute(_INSERT_EVENTS, rows)


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


def _event(subscription_id: str, topic: str, change: Change, now: datetime) -> dict[str, Any]:
    """An event row, unnumbered: it gets its number once its write has committed."""
    return {
        "subscription_id": subscription_id,
        "event_number": None,
        "topic": topic,
        "focus_type": change.resource_type,
        "focus_id": change.resource_id,
        "focus_version": change.version_id,
        "patient": patient_of(change.resource),
        "occurred_at": now,
        "delivered_at": None,
    }
