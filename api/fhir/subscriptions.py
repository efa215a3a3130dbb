"""FHIR Subscriptions (R5 Backport, R4 profile): the Subscription resource of its owner,
``$status`` and ``$events``, and the topic definitions (``Basic``) it subscribes to.

A subscription is its owner's alone: the client that created it, with the same patient
context. For any other caller it does not exist (the same 404 as an id nobody holds).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, request
from werkzeug.exceptions import BadRequest, PreconditionFailed, UnsupportedMediaType

from api.auth.principal import current_principal
from api.body import json_body
from api.config import Settings
from api.fhir.http import if_match, json_response, no_content, version_headers
from api.fhir.openapi import request_body, responses
from api.fhir.parameters import InvalidParameter, count_param
from api.fhir.resources import base_url, blp
from api.fhir.writes import JSON_TYPES
from api.http import database
from fhir_mappings import topics
from fhir_mappings.notifications import channel_headers, notification_bundle, seal_headers
from fhir_mappings.subscriptions import SubscriptionRequest, read_subscription, render
from service import subscriptions
from service.db import transaction_time
from service.endpoint_policy import EndpointRefused, check
from service.errors import Gone, NotFound
from service.instants import InvalidInstant, parse_range
from service.models import Subscription, new_id, utcnow
from service.subscriptions import Owner, SubscriptionQuery

SEARCH_PARAMETERS = ("_id", "status", "url", "criteria", "_lastUpdated")
_RESULT_PARAMETERS = ("_count", "_format", "_pretty")
DEFAULT_COUNT = 50
MAX_COUNT = 500
_SUBSCRIPTION = {"defaults": {"resource_type": "Subscription"}}
_BASIC = {"defaults": {"resource_type": "Basic"}}


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ipt_settings"]
    return settings


def _owner() -> Owner:
    principal = current_principal()
    assert principal is not None  # the guard authenticated the request
    return Owner(principal.client_id, " ".join(sorted(principal.scopes)), principal.patient)


def _absent(resource_id: str) -> NotFound:
    return NotFound(f"Subscription/{resource_id} does not exist")


def _endpoint_refusal(url: str) -> str | None:
    try:
        check(url, _settings().subscription_allowed_destinations)
    except EndpointRefused as refused:
        return str(refused)
    return None


def _read_body(current_status: str | None = None) -> SubscriptionRequest:
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the body as {' or '.join(JSON_TYPES)}, not {request.mimetype or 'nothing'}"
        )
    body = json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        found = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise BadRequest(f"the body must be a Subscription resource, not {found!r}")
    return read_subscription(
        body,
        now=utcnow(),
        check_endpoint=_endpoint_refusal,
        patient=_owner().patient,
        current_status=current_status,
    )


def _fields(subscription_id: str, written: SubscriptionRequest) -> dict[str, Any]:
    return {
        "status": written.status,
        "topic": written.topic,
        "filters": written.filters,
        "endpoint": written.endpoint,
        "headers_sealed": seal_headers(subscription_id, written.headers),
        "payload": written.payload,
        "content_type": written.content_type,
        "heartbeat_seconds": written.heartbeat_seconds,
        "timeout_seconds": written.timeout_seconds,
        "max_count": written.max_count,
        "end": written.end,
        "content": json.dumps(written.content, ensure_ascii=False),
    }


def resource_of(subscription: Subscription) -> dict[str, Any]:
    """The subscription as its owner reads it (its headers included)."""
    return render(
        json.loads(subscription.content),
        subscription_id=subscription.id,
        version_id=subscription.version_id,
        last_updated=subscription.last_updated,
        status=subscription.status,
        reason=subscription.reason,
        headers=channel_headers(subscription),
    )


def _respond(subscription: Subscription, status: int = 200) -> Response:
    headers = version_headers(subscription.version_id, subscription.last_updated)
    if status == 201:
        location = f"{base_url()}/Subscription/{subscription.id}/_history/{subscription.version_id}"
        headers["Location"] = headers["Content-Location"] = location
    return json_response(resource_of(subscription), status, headers)


def _live(subscription: Subscription | None, resource_id: str) -> Subscription:
    if subscription is None:
        raise _absent(resource_id)
    if subscription.deleted:
        raise Gone(f"Subscription/{resource_id} was deleted")
    return subscription


@blp.route("/Subscription", methods=["POST"], **_SUBSCRIPTION)
@blp.doc(
    requestBody=request_body("FhirSubscription"),
    responses=responses({201: ("Created", "FhirSubscription")}, 400, 413, 415, 422),
)
def subscription_create(resource_type: str) -> Response:
    """Create a Subscription to a topic (backport-subscription profile)

    `criteria` is a topic's canonical URL (listed in the CapabilityStatement);
    `_criteria.extension` (backport-filter-criteria) narrows it, each `Type?param=value`;
    the channel is a rest-hook to an https endpoint with `application/fhir+json` payload
    (backport-payload-content empty, id-only or full-resource). A client sets status
    `requested` (or `off`); the service makes it `active` once the endpoint answered the
    handshake. The subscription belongs to the token's client and patient context.
    """
    written = _read_body()
    subscription_id = new_id()
    with database().writing() as session:
        now = transaction_time(session)
        fields = _fields(subscription_id, written)
        subscription = subscriptions.create(
            session, {"id": subscription_id, **fields}, _owner(), now
        )
    return _respond(subscription, 201)


@blp.route("/Subscription/<resource_id>", methods=["GET"], **_SUBSCRIPTION)
@blp.doc(responses=responses({200: ("The subscription", "FhirSubscription")}, 404, 410))
def subscription_read(resource_type: str, resource_id: str) -> Response:
    """Read one of the caller's Subscriptions

    With its channel headers: only the client that created it reads it.
    """
    with database().reading() as session:
        subscription = _live(subscriptions.owned(session, resource_id, _owner()), resource_id)
    return _respond(subscription)


@blp.route("/Subscription/<resource_id>", methods=["PUT"], **_SUBSCRIPTION)
@blp.doc(
    requestBody=request_body("FhirSubscription"),
    responses=responses({200: ("Updated", "FhirSubscription")}, 404, 410, 412, 413, 415, 422),
)
def subscription_update(resource_type: str, resource_id: str) -> Response:
    """Update one of the caller's Subscriptions

    `If-Match: W/"n"` makes it conditional on the version (412 on a mismatch). A client
    may set status `requested` (the service handshakes again) or `off`, or send back the
    status it read. Subscriptions are created with POST only: an id nobody holds is 404.
    """
    expected = if_match()
    owner = _owner()
    body = json_body()  # a body no route could read is refused before anything is looked up
    with database().reading() as session:
        found = _live(subscriptions.owned(session, resource_id, owner), resource_id)
    if isinstance(body, dict) and body.get("id") not in (None, resource_id):
        raise BadRequest(f"the body's id {body.get('id')!r} is not the URL's {resource_id!r}")
    written = _read_body(current_status=found.status)
    with database().writing() as session:
        subscription = _live(
            subscriptions.owned(session, resource_id, owner, for_update=True), resource_id
        )
        if expected is not None and expected != subscription.version_id:
            raise PreconditionFailed(
                f'If-Match W/"{expected}" does not match the current version '
                f'W/"{subscription.version_id}"'
            )
        fields = _fields(resource_id, written)
        subscriptions.update(session, subscription, fields, transaction_time(session))
    return _respond(subscription)


@blp.route("/Subscription/<resource_id>", methods=["DELETE"], **_SUBSCRIPTION)
@blp.doc(responses=responses({204: ("Deleted", None)}, 404))
def subscription_delete(resource_type: str, resource_id: str) -> Response:
    """Delete one of the caller's Subscriptions: nothing more is sent to its endpoint"""
    with database().writing() as session:
        subscription = subscriptions.owned(session, resource_id, _owner(), for_update=True)
        if subscription is None:
            raise _absent(resource_id)
        if not subscription.deleted:
            subscriptions.remove(subscription, transaction_time(session))
    return no_content()


@blp.route("/Subscription", methods=["GET"], **_SUBSCRIPTION)
@blp.doc(
    parameters=[
        {"in": "query", "name": name, "required": False, "schema": {"type": "string"}}
        for name in (*SEARCH_PARAMETERS, "_count")
    ],
    responses=responses({200: ("A searchset Bundle", "FhirBundle")}),
)
def subscription_search(resource_type: str) -> Response:
    """Search the caller's Subscriptions

    By `_id`, `status`, `url` (the endpoint), `criteria` (the topic) and `_lastUpdated`
    (with ge, gt, le, lt or eq); comma-separated values are alternatives. Only the
    caller's own subscriptions are found.
    """
    query = _search_query()
    with database().reading() as session:
        total, found = subscriptions.search(session, _owner(), query)
    base = base_url()
    kept = [
        (k, v) for k, v in request.args.items(multi=True) if k in (*SEARCH_PARAMETERS, "_count")
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": f"{base}/Subscription?{urlencode(kept)}".rstrip("?")}],
        "entry": [
            {
                "fullUrl": f"{base}/Subscription/{s.id}",
                "resource": resource_of(s),
                "search": {"mode": "match"},
            }
            for s in found
        ],
    }
    return json_response(bundle)


def _search_query() -> SubscriptionQuery:
    values: dict[str, list[str]] = {}
    after = before = None
    for name, value in request.args.items(multi=True):
        if name in _RESULT_PARAMETERS:
            continue
        if name not in SEARCH_PARAMETERS:
            raise InvalidParameter(
                name, f"Subscription is searched by {', '.join(SEARCH_PARAMETERS)}"
            )
        if name == "_lastUpdated":
            after, before = _last_updated(value, after, before)
            continue
        parts = [part for part in value.split(",") if part]
        if not parts:
            raise InvalidParameter(name, "takes a value")
        values[name] = parts if name not in values else [p for p in values[name] if p in parts]
    count = count_param("_count", request.args.get("_count"), DEFAULT_COUNT, MAX_COUNT)
    return SubscriptionQuery(
        ids=values.get("_id"),
        statuses=values.get("status"),
        endpoints=values.get("url"),
        topics=values.get("criteria"),
        updated_after=after,
        updated_before=before,
        limit=count,
    )


def _last_updated(value: str, after: Any, before: Any) -> tuple[Any, Any]:
    prefix, text = (
        (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
    )
    try:
        low, high = parse_range(text)
    except InvalidInstant as error:
        raise InvalidParameter("_lastUpdated", str(error)) from None
    if prefix in ("ge", "eq"):
        after = max(after, low) if after else low
    if prefix == "gt":
        after = max(after, high) if after else high
    if prefix in ("le", "eq"):
        before = min(before, high) if before else high
    if prefix == "lt":
        before = min(before, low) if before else low
    return after, before


# --- $status and $events ------------------------------------------------------------------


@blp.route("/Subscription/<resource_id>/$status", methods=["GET"], **_SUBSCRIPTION)
@blp.doc(responses=responses({200: ("A query-status Bundle", "FhirBundle")}, 404, 410))
def subscription_status(resource_type: str, resource_id: str) -> Response:
    """The status of one of the caller's Subscriptions (backport $status)

    A `history` Bundle holding its SubscriptionStatus (a Parameters): status, topic, and
    the number of events since it started.
    """
    return _status_bundle([resource_id])


@blp.route("/Subscription/$status", methods=["GET"], **_SUBSCRIPTION)
@blp.doc(
    parameters=[{"in": "query", "name": "id", "required": True, "schema": {"type": "string"}}],
    responses=responses({200: ("A query-status Bundle", "FhirBundle")}, 404),
)
def subscription_status_type(resource_type: str) -> Response:
    """The status of the caller's Subscriptions named by `id` (backport $status)

    One SubscriptionStatus per subscription, in a `history` Bundle; `id` repeats or
    lists ids separated by commas.
    """
    ids = [part for value in request.args.getlist("id") for part in value.split(",") if part]
    if not ids:
        raise InvalidParameter("id", "names the subscriptions whose status is asked for")
    return _status_bundle(ids)


def _status_bundle(ids: list[str]) -> Response:
    owner, base = _owner(), base_url()
    entries: list[dict[str, Any]] = []
    unique = list(dict.fromkeys(ids))
    # The counters reported take in every event committed by now.
    subscriptions.number_pending(database(), unique)
    with database().reading() as session:
        for resource_id in unique:
            subscription = _live(subscriptions.owned(session, resource_id, owner), resource_id)
            bundle = notification_bundle(session, subscription, "query-status", [], base_url=base)
            entries.extend(bundle["entry"])
    bundle["entry"] = entries
    return json_response(bundle)


@blp.route("/Subscription/<resource_id>/$events", methods=["GET", "POST"], **_SUBSCRIPTION)
@blp.doc(
    parameters=[
        {"in": "query", "name": name, "required": False, "schema": {"type": schema}}
        for name, schema in (
            ("eventsSinceNumber", "integer"),
            ("eventsUntilNumber", "integer"),
            ("content", "string"),
        )
    ],
    responses=responses({200: ("A query-event Bundle", "FhirBundle")}, 404, 410),
)
def subscription_events(resource_type: str, resource_id: str) -> Response:
    """Events of one of the caller's Subscriptions again (backport $events)

    `eventsSinceNumber` and `eventsUntilNumber` bound the range (inclusive; default: the
    last `max count` events); `content` (empty, id-only, full-resource) overrides the
    subscription's payload. Events older than the retention window
    (`IPT_SUBSCRIPTION_RETENTION_DAYS`) are gone: the Bundle carries those still kept,
    and an OperationOutcome in its `issue` says from which number on they are.
    """
    arguments = _operation_arguments()
    owner, base = _owner(), base_url()
    # Every event committed by now is numbered, and so answered for.
    subscriptions.number_pending(database(), [resource_id])
    with database().reading() as session:
        subscription = _live(subscriptions.owned(session, resource_id, owner), resource_id)
        last_number = subscription.events_since_start
        until = _number_argument(arguments, "eventsUntilNumber", last_number)
        until = min(until, last_number)
        since = _number_argument(
            arguments, "eventsSinceNumber", max(1, until - subscription.max_count + 1)
        )
        if since > until and "eventsSinceNumber" in arguments and "eventsUntilNumber" in arguments:
            raise InvalidParameter(
                "eventsSinceNumber", "must not be greater than eventsUntilNumber"
            )
        content = arguments.get("content")
        if content is not None and content not in ("empty", "id-only", "full-resource"):
            raise InvalidParameter("content", "is empty, id-only or full-resource")
        kept_since = subscriptions.retention_start(
            utcnow(), _settings().subscription_retention_days
        )
        found = subscriptions.events(session, subscription.id, since, until, kept_since=kept_since)
        first = subscriptions.first_kept(session, subscription.id, kept_since)
        session.expunge(subscription)
        if content is not None:
            subscription.payload = content
        bundle = notification_bundle(session, subscription, "query-event", found, base_url=base)
    missing = _gone(since, until, found, first, last_number)
    if missing:
        bundle["entry"][0]["response"]["outcome"] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "not-found", "diagnostics": missing}],
        }
    return json_response(bundle)


def _gone(since: int, until: int, found: list[Any], first: int | None, last: int) -> str | None:
    """What the answer says of the asked-for events it does not hold: those past the
    retention window are gone for good."""
    if since > until or until < 1:
        return None
    if len(found) == until - since + 1:
        return None
    kept = f"event {first} onwards" if first is not None else "no event"
    return (
        f"events {since} to {until} were asked for; events older than the retention window "
        f"are gone: {kept} of the {last} raised so far is kept"
    )


def _operation_arguments() -> dict[str, str]:
    """An operation's arguments: the query, or a Parameters body on POST."""
    arguments = {k: v for k, v in request.args.items() if k not in _RESULT_PARAMETERS}
    if request.method == "POST" and request.get_data(cache=True):
        body = json_body()
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("the body of $events is a Parameters resource")
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                raise BadRequest("each parameter of the Parameters body has a name")
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            if value is not None:
                arguments[parameter["name"]] = str(value)
    return arguments


def _number_argument(arguments: dict[str, str], name: str, default: int) -> int:
    value = arguments.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise InvalidParameter(name, f"takes a whole number, not {value!r}")
    return int(value)


# --- topics -------------------------------------------------------------------------------


@blp.route("/Basic/<resource_id>", methods=["GET"], **_BASIC)
@blp.doc(
    responses=responses({200: ("A topic definition", "FhirResource")}, 404, public=True),
    security=[],
)
def topic_read(resource_type: str, resource_id: str) -> Response:
    """Read a subscription topic's definition (R4 backport: a Basic with R5 extensions)"""
    topic = topics.BY_ID.get(resource_id)
    if topic is None:
        raise NotFound(f"Basic/{resource_id} does not exist")
    return json_response(topics.definition(topic))


@blp.route("/Basic", methods=["GET"], **_BASIC)
@blp.doc(
    parameters=[
        {"in": "query", "name": name, "required": False, "schema": {"type": "string"}}
        for name in ("_id", "code")
    ],
    responses=responses({200: ("A searchset Bundle of topics", "FhirBundle")}, public=True),
    security=[],
)
def topic_search(resource_type: str) -> Response:
    """Search the subscription topics' definitions, by `_id` or `code` (SubscriptionTopic)"""
    wanted = request.args.get("_id")
    code = request.args.get("code")
    for name in request.args:
        if name not in ("_id", "code", *_RESULT_PARAMETERS):
            raise InvalidParameter(name, "Basic is searched by _id and code")
    found = [
        topics.definition(topic)
        for topic in topics.TOPICS
        if (wanted is None or topic.id in wanted.split(","))
        and (code is None or code.rpartition("|")[2] == "SubscriptionTopic")
    ]
    base = base_url()
    return json_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {"fullUrl": f"{base}/Basic/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in found
            ],
        }
    )
