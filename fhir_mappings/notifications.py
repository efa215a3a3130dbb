"""Subscription notifications: the Bundles a receiver gets and ``$status``/``$events`` answer.

The R4 shape of the Subscriptions R5 Backport: a ``history`` Bundle whose first entry is a
``Parameters`` resource with the backport-subscription-status-r4 profile (the
subscription, its topic, its status, the kind of notification, how many events it has
had, and one ``notification-event`` per event carried), followed by the focus of each
event as the subscription's payload asks: nothing (empty), the focus's URL and the
interaction (id-only), or the version of the resource the event reports (full-resource).

A notification carries only what the subscription's owner may see: each event's focus is
checked against the scopes and patient context the subscription was created with, when
the Bundle is built. An event the owner may not see keeps its number (numbers have no
gaps) but names no focus.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from fhir_mappings.projection import instant
from service import scopes, sealing
from service.models import ResourceVersion, Subscription, SubscriptionEvent, utcnow

KINDS = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")
STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
# The kinds whose Bundle reports events (the others report only the subscription's status).
_WITH_EVENTS = ("event-notification", "query-event")


def notification_bundle(
    session: Session,
    subscription: Subscription,
    kind: str,
    events: Sequence[SubscriptionEvent],
    *,
    base_url: str,
) -> dict[str, Any]:
    """The notification Bundle of ``kind`` for ``subscription`` reporting ``events``.

    ``base_url`` is the service's FHIR base (``{IPT_PUBLIC_BASE_URL}/fhir``): the full
    URLs of the subscription and of each focus start with it. ``events`` are reported in
    the order given; for handshake, heartbeat and query-status they are normally empty.
    Reads the resource versions a full-resource payload carries through ``session``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}: one of {', '.join(KINDS)}")
    base = base_url.rstrip("/")
    visible = [_visible(subscription, event) for event in events]
    parameters = status_parameters(subscription, kind, events, visible, base=base)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"Subscription/{subscription.id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if kind in _WITH_EVENTS and subscription.payload != "empty":
        full = subscription.payload == "full-resource"
        shown_events = [event for event, shown in zip(events, visible, strict=True) if shown]
        stored = _versions(session, shown_events)
        for event in shown_events:
            entries.append(_focus_entry(stored.get(_key(event)), event, base, full=full))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(utcnow())},
        "type": "history",
        "timestamp": instant(utcnow()),
        "entry": entries,
    }


def status_parameters(
    subscription: Subscription,
    kind: str,
    events: Sequence[SubscriptionEvent],
    visible: Sequence[bool],
    *,
    base: str,
) -> dict[str, Any]:
    """The SubscriptionStatus (R4: a profiled Parameters) a notification starts with."""
    parameter: list[dict[str, Any]] = [
        {
            "name": "subscription",
            "valueReference": {"reference": f"{base}/Subscription/{subscription.id}"},
        },
        {"name": "topic", "valueCanonical": subscription.topic},
        {"name": "status", "valueCode": subscription.status},
        {"name": "type", "valueCode": kind},
        {
            "name": "events-since-subscription-start",
            "valueString": str(subscription.events_since_start),
        },
    ]
    if kind in _WITH_EVENTS:
        for event, shown in zip(events, visible, strict=True):
            part: list[dict[str, Any]] = [
                {"name": "event-number", "valueString": str(event.event_number)},
                {"name": "timestamp", "valueInstant": instant(event.occurred_at)},
            ]
            if shown and subscription.payload != "empty":
                part.append(
                    {"name": "focus", "valueReference": {"reference": _focus_url(event, base)}}
                )
            parameter.append({"name": "notification-event", "part": part})
    if subscription.status == "error":
        parameter.append(
            {
                "name": "error",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                            "code": "no-response",
                        }
                    ],
                    "text": subscription.reason or "notifications could not be delivered",
                },
            }
        )
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameter,
    }


def _visible(subscription: Subscription, event: SubscriptionEvent) -> bool:
    """Whether the owner's stored access lets it read the event's focus: a scope granting
    read on its type in the owner's context, and, for an owner bound to a patient, a focus
    of that patient."""
    granted = subscription.owner_scopes.split()
    patient = subscription.owner_patient
    if not scopes.allows(granted, event.focus_type, "r", patient):
        return False
    return patient is None or event.patient == patient


def _focus_url(event: SubscriptionEvent, base: str) -> str:
    return f"{base}/{event.focus_type}/{event.focus_id}/_history/{event.focus_version}"


def _key(event: SubscriptionEvent) -> tuple[str, str, int]:
    return (event.focus_type, event.focus_id, event.focus_version)


def _versions(
    session: Session, events: Sequence[SubscriptionEvent]
) -> dict[tuple[str, str, int], ResourceVersion]:
    """The stored versions the events are about, in one statement whatever their number
    (a notification carries up to a hundred)."""
    keys = sorted({_key(event) for event in events})
    if not keys:
        return {}
    found = session.scalars(
        select(ResourceVersion).where(
            tuple_(
                ResourceVersion.resource_type, ResourceVersion.id, ResourceVersion.version_id
            ).in_(keys)
        )
    )
    return {(v.resource_type, v.id, v.version_id): v for v in found}


def _focus_entry(
    stored: ResourceVersion | None, event: SubscriptionEvent, base: str, *, full: bool
) -> dict[str, Any]:
    reference = f"{event.focus_type}/{event.focus_id}"
    deleted = stored is None or stored.deleted
    if deleted:
        request, status = {"method": "DELETE", "url": reference}, "204"
    elif stored is not None and stored.method == "POST":
        request, status = {"method": "POST", "url": event.focus_type}, "201"
    else:
        request, status = {"method": "PUT", "url": reference}, "200"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{reference}"}
    if full and stored is not None and not deleted and stored.content is not None:
        entry["resource"] = json.loads(stored.content)
    entry["request"] = request
    entry["response"] = {"status": status}
    return entry


def channel_headers(subscription: Subscription) -> list[tuple[str, str]]:
    """The channel's headers as the client wrote them (``Name: value``), unsealed with
    this process's key-encryption key (see :mod:`service.sealing`): sent with every
    request to the endpoint, and never logged."""
    if not subscription.headers_sealed:
        return []
    listed = json.loads(
        sealing.unseal(subscription.headers_sealed, subscription.id, sealing.process_key())
    )
    return [(str(name), str(value)) for name, value in listed]


def seal_headers(subscription_id: str, headers: Sequence[tuple[str, str]]) -> str | None:
    """The channel headers sealed for storage (None when there are none)."""
    if not headers:
        return None
    listed = [[name, value] for name, value in headers]
    return sealing.seal(json.dumps(listed), subscription_id, sealing.process_key())
