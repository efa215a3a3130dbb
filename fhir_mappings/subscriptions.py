"""The Subscription resource (R4, profiled by the Subscriptions R5 Backport): reading what a
client writes into the columns delivery uses, and rendering a stored one back.

A subscription names a topic (``criteria``, a canonical of ``fhir_mappings.topics``), its
filters (``_criteria`` extensions, each ``Type?parameter=value``), a rest-hook channel
(endpoint, headers, ``application/fhir+json`` payload with its content: empty, id-only
or full-resource) and the backport's channel extensions (heartbeat period, timeout, max
count). Every problem is reported with the element it is about.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings.parse import validate_structure
from fhir_mappings.parse_common import MappingError
from fhir_mappings.projection import instant
from fhir_mappings.topics import BY_URL, InvalidFilter, filter_patients, parse_filter
from service.instants import InvalidInstant, parse_range

PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER_CRITERIA = f"{_BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{_BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD = f"{_BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{_BACKPORT}/backport-timeout"
MAX_COUNT = f"{_BACKPORT}/backport-max-count"
PAYLOAD_TYPE = "application/fhir+json"
PAYLOAD_CONTENTS = ("empty", "id-only", "full-resource")
CHANNEL_TYPES = ("rest-hook",)
# Statuses a client may write; active and error are the service's to set.
CLIENT_STATUSES = ("requested", "off")
DEFAULT_PAYLOAD = "id-only"
DEFAULT_TIMEOUT = 10
DEFAULT_MAX_COUNT = 100
LIMITS = {
    "heartbeat": (10, 86400),
    "timeout": (1, 60),
    "max_count": (1, 100),
}
MAX_HEADERS = 10
MAX_FILTERS = 20
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# Headers the service sets itself on every notification: a client cannot replace them.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


@dataclass(frozen=True)
class SubscriptionRequest:
    """A subscription as a client wrote it, checked: what the columns hold."""

    status: str
    topic: str
    filters: list[str]
    endpoint: str
    headers: list[tuple[str, str]]
    payload: str
    content_type: str
    heartbeat_seconds: int | None
    timeout_seconds: int
    max_count: int
    end: datetime | None
    # The resource as stored: the client's, without its headers (kept sealed apart).
    content: dict[str, Any]


def read_subscription(
    resource: Any,
    *,
    now: datetime,
    check_endpoint: Callable[[str], str | None],
    patient: str | None,
    current_status: str | None = None,
) -> SubscriptionRequest:
    """Check a Subscription a client sent and read it (MappingError naming every problem).

    ``check_endpoint`` says why an endpoint is refused (None: allowed). ``patient`` is the
    patient the writer's token is bound to: its filters must keep it to that patient.
    ``current_status`` is the stored status on an update: sending it back unchanged is
    allowed, whatever it is.
    """
    _check_text_elements(resource)
    validate_structure(resource, "Subscription")
    problems: list[tuple[str, str]] = []
    status = resource.get("status")
    if status not in CLIENT_STATUSES and status != current_status:
        problems.append(
            (
                "Subscription.status",
                f"a client may set status requested or off, not {status!r}: active and error "
                "are set by the service",
            )
        )
    topic_url = resource.get("criteria")
    topic = BY_URL.get(topic_url) if isinstance(topic_url, str) else None
    if topic is None:
        problems.append(
            (
                "Subscription.criteria",
                f"unknown topic {topic_url!r}: the topics are {', '.join(sorted(BY_URL))}",
            )
        )
    filters = _filter_texts(resource, problems)
    parsed = []
    if topic is not None:
        for index, text in enumerate(filters):
            try:
                parsed.append(parse_filter(topic, text))
            except InvalidFilter as error:
                problems.append((f"Subscription.criteria.extension[{index}]", str(error)))
        if patient is not None and len(parsed) == len(filters):
            confined = filter_patients(parsed)
            if confined is None or not confined or confined - {patient}:
                problems.append(
                    (
                        "Subscription.criteria.extension",
                        f"this token is limited to {patient}: the subscription needs a filter "
                        f"{topic.resource_type}?patient={patient}",
                    )
                )
    channel = resource.get("channel") or {}
    if channel.get("type") not in CHANNEL_TYPES:
        problems.append(
            (
                "Subscription.channel.type",
                f"only rest-hook is supported, not {channel.get('type')!r}",
            )
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        problems.append(("Subscription.channel.endpoint", "a rest-hook needs an endpoint"))
    else:
        refused = check_endpoint(endpoint)
        if refused is not None:
            problems.append(("Subscription.channel.endpoint", refused))
    payload_type = channel.get("payload", PAYLOAD_TYPE)
    if payload_type != PAYLOAD_TYPE:
        problems.append(
            (
                "Subscription.channel.payload",
                f"the payload must be {PAYLOAD_TYPE}, not {payload_type!r}",
            )
        )
    content = _one_code(
        channel.get("_payload"), PAYLOAD_CONTENT, problems, "Subscription.channel.payload"
    )
    if content is None:
        content = DEFAULT_PAYLOAD
    elif content not in PAYLOAD_CONTENTS:
        problems.append(
            (
                "Subscription.channel.payload.extension",
                f"the payload content is one of {', '.join(PAYLOAD_CONTENTS)}, not {content!r}",
            )
        )
    headers = _headers(channel.get("header") or [], problems)
    extensions = channel.get("extension") or []
    heartbeat = _number(extensions, HEARTBEAT_PERIOD, "heartbeat", problems)
    timeout = _number(extensions, TIMEOUT, "timeout", problems)
    max_count = _number(extensions, MAX_COUNT, "max_count", problems)
    end = None
    if resource.get("end"):
        try:
            end = parse_range(resource["end"])[0]
        except InvalidInstant:
            problems.append(("Subscription.end", f"{resource['end']!r} is not an instant"))
        else:
            if end <= now:
                problems.append(("Subscription.end", "the end is in the past"))
    if problems:
        raise MappingError(problems)
    assert topic is not None and isinstance(endpoint, str)
    stored = copy.deepcopy(dict(resource))
    stored.get("channel", {}).pop("header", None)
    stored.pop("error", None)
    stored.pop("text", None)
    return SubscriptionRequest(
        status=status,
        topic=topic.url,
        filters=filters,
        endpoint=endpoint,
        headers=headers,
        payload=content,
        content_type=PAYLOAD_TYPE,
        heartbeat_seconds=heartbeat,
        timeout_seconds=timeout if timeout is not None else DEFAULT_TIMEOUT,
        max_count=max_count if max_count is not None else DEFAULT_MAX_COUNT,
        end=end,
        content=stored,
    )


def _check_text_elements(resource: Any) -> None:
    """The elements read as text before their FHIR type is checked, named when they hold
    another JSON type."""
    if not isinstance(resource, dict):
        return
    problems = []
    channel = resource.get("channel")
    if isinstance(channel, dict) and not isinstance(channel.get("endpoint", ""), str):
        problems.append(("Subscription.channel.endpoint", "must be a URL (text)"))
    for path, listed in (
        (
            "Subscription.channel.extension",
            channel.get("extension") if isinstance(channel, dict) else None,
        ),
        (
            "Subscription.criteria.extension",
            (resource.get("_criteria") or {}).get("extension")
            if isinstance(resource.get("_criteria"), dict)
            else None,
        ),
    ):
        for index, extension in enumerate(listed if isinstance(listed, list) else []):
            if isinstance(extension, dict) and not isinstance(extension.get("url", ""), str):
                problems.append((f"{path}[{index}].url", "must be a URI (text)"))
    if problems:
        raise MappingError(problems)


def _filter_texts(resource: dict[str, Any], problems: list[tuple[str, str]]) -> list[str]:
    texts = []
    for index, extension in enumerate((resource.get("_criteria") or {}).get("extension") or []):
        if extension.get("url") != FILTER_CRITERIA:
            continue
        value = extension.get("valueString")
        if not isinstance(value, str):
            problems.append(
                (f"Subscription.criteria.extension[{index}]", "a filter criterion is a valueString")
            )
            continue
        texts.append(value)
    if len(texts) > MAX_FILTERS:
        problems.append(("Subscription.criteria.extension", f"at most {MAX_FILTERS} filters"))
    return texts


def _one_code(element: Any, url: str, problems: list[tuple[str, str]], path: str) -> str | None:
    values = [
        e.get("valueCode") for e in (element or {}).get("extension") or [] if e.get("url") == url
    ]
    if len(values) > 1:
        problems.append((f"{path}.extension", f"{url} is given more than once"))
    return values[0] if values else None


def _number(
    extensions: list[dict[str, Any]], url: str, name: str, problems: list[tuple[str, str]]
) -> int | None:
    values = [
        e.get("valueUnsignedInt", e.get("valuePositiveInt", e.get("valueInteger")))
        for e in extensions
        if e.get("url") == url
    ]
    if not values:
        return None
    low, high = LIMITS[name]
    value = values[0]
    if (
        len(values) > 1
        or not isinstance(value, int)
        or isinstance(value, bool)
        or not low <= value <= high
    ):
        problems.append(
            (
                f"Subscription.channel.extension({url.rpartition('/')[2]})",
                f"must be given once, a whole number from {low} to {high}",
            )
        )
        return None
    return value


def _headers(listed: list[Any], problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``Name: value`` headers; the message never quotes a value (it may be a secret)."""
    headers = []
    if len(listed) > MAX_HEADERS:
        problems.append(("Subscription.channel.header", f"at most {MAX_HEADERS} headers"))
    for index, text in enumerate(listed):
        path = f"Subscription.channel.header[{index}]"
        name, colon, value = str(text).partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _HEADER_NAME.match(name):
            problems.append((path, "a header is written 'Name: value' with a valid header name"))
        elif name.lower() in _RESERVED_HEADERS:
            problems.append((path, f"the service sets {name} itself"))
        elif any(ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 4096:
            problems.append((path, "a header value holds no control characters (4096 at most)"))
        else:
            headers.append((name, value))
    return headers


def render(
    content: dict[str, Any],
    *,
    subscription_id: str,
    version_id: int,
    last_updated: datetime,
    status: str,
    reason: str | None,
    headers: list[tuple[str, str]],
) -> dict[str, Any]:
    """A stored subscription as its owner reads it: the resource as written, with the
    service's id, meta, status (and error), and the channel's headers."""
    resource = copy.deepcopy(content)
    resource["id"] = subscription_id
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    profiles = list(meta.get("profile") or [])
    if PROFILE not in profiles:
        profiles.append(PROFILE)
    resource["meta"] = {
        "versionId": str(version_id),
        "lastUpdated": instant(last_updated),
        **meta,
        "profile": profiles,
    }
    resource["status"] = status
    if status in ("error", "off") and reason:
        resource["error"] = reason
    else:
        resource.pop("error", None)
    channel = resource.setdefault("channel", {})
    if headers:
        channel["header"] = [f"{name}: {value}" for name, value in headers]
    return _ordered(resource)


_ORDER = (
    "resourceType",
    "id",
    "meta",
    "contained",
    "extension",
    "status",
    "contact",
    "end",
    "reason",
    "criteria",
    "_criteria",
    "error",
    "channel",
)


def _ordered(resource: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: resource[k] for k in _ORDER if k in resource}
    ordered.update({k: v for k, v in resource.items() if k not in ordered})
    return ordered
