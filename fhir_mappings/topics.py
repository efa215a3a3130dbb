"""The subscription topics the service offers: one declaration, for every use.

A topic names a kind of change a client may subscribe to (Subscriptions R5 Backport, R4
profile): the resource type it is about, the interactions that raise it, the filters a
subscription may narrow it with, and what a notification carries. The same list feeds the
CapabilityStatement, the validation of subscriptions, the matching of published versions
in the outbox, and the topic definitions served as ``Basic`` resources (R4 has no
SubscriptionTopic: the backport represents one with R5 cross-version extensions on Basic).

Filters are the type's own search parameters (token and reference ones), so a filter
``Goal?lifecycle-status=active`` matches exactly what a search with it finds.
Adding a topic is adding one entry to ``TOPICS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_mappings.conformance_terminology import DATE, PUBLISHER, VERSION, narrative
from fhir_mappings.search_parameters import (
    SEARCH_PARAMETERS,
    SearchParameter,
    Token,
    normalise_reference,
)
from fhir_mappings.terminology import CANONICAL_BASE
from service.instruments import INSTRUMENTS

TRIGGERS = ("create", "update", "delete")
# Cross-version extensions that carry R5 SubscriptionTopic elements on an R4 Basic.
_R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
_TOPIC_TYPE = {"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"


@dataclass(frozen=True)
class Change:
    """A published version as the topics see it.

    ``interaction`` is create, update or delete; ``resource`` the version's content (for a
    deletion, the content it deleted); ``causes`` the domain changes of the edit that led
    to this version, as ``entity.action`` (``session.create``: a session was recorded).
    """

    resource_type: str
    resource_id: str
    version_id: int
    interaction: str
    resource: dict[str, Any]
    causes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Topic:
    """One topic: its id (the last segment of its canonical URL) and what it matches."""

    id: str
    title: str
    description: str
    resource_type: str
    triggers: tuple[str, ...]
    filters: tuple[str, ...]
    # What a notification's focus is, in words (the topic's notificationShape).
    notification: str
    # A further condition on the change, beyond type and interaction; None: any change.
    condition: Callable[[Change], bool] | None = field(default=None, compare=False)
    # The condition in words, for the topic definition.
    condition_text: str | None = None

    @property
    def url(self) -> str:
        return f"{CANONICAL_BASE}/SubscriptionTopic/{self.id}"

    def parameter(self, name: str) -> SearchParameter | None:
        """The search parameter a filter names, if the topic allows filtering on it."""
        if name not in self.filters:
            return None
        return SEARCH_PARAMETERS[self.resource_type].get(name)

    def matches(self, change: Change) -> bool:
        """Whether a published version raises this topic (before any filter)."""
        return (
            change.resource_type == self.resource_type
            and change.interaction in self.triggers
            and (self.condition is None or self.condition(change))
        )


def _kind(resource: dict[str, Any]) -> str:
    return "phase" if resource.get("partOf") else "episode"


def _is_phase(change: Change) -> bool:
    return _kind(change.resource) == "phase"


def _session_recorded(change: Change) -> bool:
    return _is_phase(change) and "session.create" in change.causes


_SCORE_CODES = {instrument.total_code for instrument in INSTRUMENTS.values()}


def _is_score(change: Change) -> bool:
    codings = (change.resource.get("code") or {}).get("coding", [])
    return any(coding.get("code") in _SCORE_CODES for coding in codings)


_INSTRUMENT_NAMES = " or ".join(i.key.upper() for i in INSTRUMENTS.values())

TOPICS: tuple[Topic, ...] = (
    Topic(
        id="careplan",
        title="Care plan changed",
        description="An IPT care plan (the episode CarePlan or one of its phase CarePlans) "
        "was created, updated or deleted.",
        resource_type="CarePlan",
        triggers=TRIGGERS,
        filters=("patient", "status", "category", "part-of", "intent"),
        notification="The CarePlan version that was written (or deleted).",
    ),
    Topic(
        id="goal",
        title="Goal changed",
        description="A goal of an IPT care plan was created, updated (its lifecycle or "
        "achievement status, its target, its progress) or deleted.",
        resource_type="Goal",
        triggers=TRIGGERS,
        filters=("patient", "lifecycle-status", "achievement-status", "category"),
        notification="The Goal version that was written (or deleted).",
    ),
    Topic(
        id="session-recorded",
        title="Therapy session recorded",
        description="A therapy session was recorded. Sessions are activities of the phase "
        "CarePlan whose session range holds the session's number: the notification's focus "
        "is the new version of that phase CarePlan, written by the recording of the session.",
        resource_type="CarePlan",
        triggers=("update",),
        filters=("patient", "part-of"),
        notification="The phase CarePlan version holding the recorded session.",
        condition=_session_recorded,
        condition_text="A phase CarePlan (with partOf) updated by an edit that recorded a "
        "new session.",
    ),
    Topic(
        id="score-recorded",
        title="Rating-scale score recorded",
        description=f"A {_INSTRUMENT_NAMES} total score was recorded: an Observation of the "
        "total was created.",
        resource_type="Observation",
        triggers=("create",),
        filters=("patient", "code", "based-on", "status"),
        notification="The Observation of the total score.",
        condition=_is_score,
        condition_text=f"The Observation's code is the LOINC code of a {_INSTRUMENT_NAMES} total.",
    ),
    Topic(
        id="safety-signal",
        title="Safety signal raised",
        description="A safety signal was raised: a Flag was created (a positive item on a "
        "rating scale's suicidality question, say).",
        resource_type="Flag",
        triggers=("create",),
        filters=("patient", "status", "code", "category"),
        notification="The Flag that was raised.",
    ),
)

BY_URL: dict[str, Topic] = {topic.url: topic for topic in TOPICS}
BY_ID: dict[str, Topic] = {topic.id: topic for topic in TOPICS}
# The resource types some topic is about: a change to another type is never looked at.
TOPIC_TYPES = frozenset(topic.resource_type for topic in TOPICS)


def matching(change: Change) -> list[Topic]:
    """The topics a published version raises."""
    if change.resource_type not in TOPIC_TYPES:
        return []
    return [topic for topic in TOPICS if topic.matches(change)]


def definition(topic: Topic) -> dict[str, Any]:
    """The topic as the Backport IG represents one in R4: a Basic resource carrying the
    R5 SubscriptionTopic elements as cross-version extensions."""
    trigger: list[dict[str, Any]] = [
        {"url": "description", "valueMarkdown": topic.description},
        {
            "url": "resource",
            "valueUri": f"http://hl7.org/fhir/StructureDefinition/{topic.resource_type}",
        },
        *({"url": "supportedInteraction", "valueCode": code} for code in topic.triggers),
    ]
    if topic.condition_text is not None:
        trigger.append(
            {
                "url": "queryCriteria",
                "extension": [{"url": "current", "valueString": topic.condition_text}],
            }
        )
    extensions: list[dict[str, Any]] = [
        {"url": f"{_R5}.url", "valueUri": topic.url},
        {"url": f"{_R5}.version", "valueString": VERSION},
        {"url": f"{_R5}.name", "valueString": _pascal(topic.id)},
        {"url": f"{_R5}.title", "valueString": topic.title},
        {"url": f"{_R5}.date", "valueDateTime": DATE},
        {"url": f"{_R5}.publisher", "valueString": PUBLISHER},
        {"url": f"{_R5}.description", "valueMarkdown": topic.description},
        {"url": f"{_R5}.status", "valueCode": "active"},
        {"url": f"{_R5}.resourceTrigger", "extension": trigger},
    ]
    for name in topic.filters:
        parameter = SEARCH_PARAMETERS[topic.resource_type][name]
        extensions.append(
            {
                "url": f"{_R5}.canFilterBy",
                "extension": [
                    {"url": "description", "valueMarkdown": f"{topic.resource_type}.{name}"},
                    {"url": "resource", "valueUri": topic.resource_type},
                    {"url": "filterParameter", "valueString": name},
                    {"url": "filterDefinition", "valueUri": parameter.definition},
                ],
            }
        )
    extensions.append(
        {
            "url": f"{_R5}.notificationShape",
            "extension": [
                {"url": "resource", "valueUri": topic.resource_type},
                {"url": "description", "valueString": topic.notification},
            ],
        }
    )
    return {
        "resourceType": "Basic",
        "id": topic.id,
        "meta": {"versionId": "1", "lastUpdated": f"{DATE}T00:00:00.000Z"},
        "text": narrative(
            topic.title,
            topic.description,
            f"Canonical URL: {topic.url}. Raised by: {', '.join(topic.triggers)} of "
            f"{topic.resource_type}. Filters: {', '.join(topic.filters)}.",
        ),
        "extension": extensions,
        "code": {"coding": [_TOPIC_TYPE]},
    }


def _pascal(text: str) -> str:
    return "".join(part.capitalize() for part in text.split("-"))


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One filter criterion of a subscription, ``Type?parameter=value[,value...]``: the
    resource matches when the parameter has any of the values (as a search would find it).
    """

    resource_type: str
    parameter: SearchParameter
    values: tuple[str, ...]

    def matches(self, resource: dict[str, Any]) -> bool:
        found = list(self.parameter.extract(resource))
        return any(_value_matches(self.parameter, value, found) for value in self.values)


def _value_matches(parameter: SearchParameter, wanted: str, found: list[Any]) -> bool:
    """Whether a value of the filter matches one the resource is indexed with, as the
    same search would: references by ``Type/id``, tokens as ``code``, ``system|code``,
    ``|code`` (no system) or ``system|`` (any code of the system)."""
    if parameter.type == "reference":
        if parameter.canonical:
            return wanted in found
        if "/" not in wanted and parameter.target is not None:
            wanted = f"{parameter.target}/{wanted}"
        return normalise_reference(wanted) in found
    tokens = [token for token in found if isinstance(token, Token)]
    if "|" not in wanted:
        return any(token.code == wanted for token in tokens)
    system, code = wanted.split("|", 1)
    return any(
        token.system == (system or None) and (not code or token.code == code) for token in tokens
    )


class InvalidFilter(ValueError):
    """A filter criterion the topic does not allow; the message says why."""


def parse_filter(topic: Topic, text: str) -> Filter:
    """The filter ``text`` (``Type?parameter=value``) of a subscription to ``topic``."""
    resource_type, mark, query = text.partition("?")
    if not mark:
        raise InvalidFilter(f"filter {text!r} must be written Type?parameter=value")
    if resource_type != topic.resource_type:
        raise InvalidFilter(
            f"filter {text!r}: topic {topic.url} is about {topic.resource_type}, "
            f"not {resource_type or 'no type'}"
        )
    name, equals, value = query.partition("=")
    if not equals or not name:
        raise InvalidFilter(f"filter {text!r} must be written Type?parameter=value")
    if "&" in value or "&" in name:
        raise InvalidFilter(f"filter {text!r} holds more than one parameter: write one per filter")
    if ":" in name:
        raise InvalidFilter(f"filter {text!r}: modifiers are not supported in filters")
    parameter = topic.parameter(name)
    if parameter is None:
        raise InvalidFilter(
            f"filter {text!r}: topic {topic.url} cannot be filtered by {name!r}; "
            f"it allows {', '.join(topic.filters)}"
        )
    values = tuple(part.strip() for part in value.split(","))
    if not all(values):
        raise InvalidFilter(f"filter {text!r} has an empty value")
    if parameter.type == "reference" and parameter.target and not parameter.canonical:
        for part in values:
            reference = normalise_reference(part)
            kind, _, ident = reference.rpartition("/")
            if (kind and kind != parameter.target) or not _ID.match(ident):
                raise InvalidFilter(
                    f"filter {text!r}: {name} takes a {parameter.target} reference "
                    f"({parameter.target}/id), not {part!r}"
                )
    return Filter(resource_type, parameter, values)


def filter_patients(filters: list[Filter]) -> set[str] | None:
    """The patients a subscription's ``patient`` filters confine it to (None: no such
    filter, any patient). Several patient filters must all hold: their common patients."""
    confined: set[str] | None = None
    for criterion in filters:
        if criterion.parameter.name != "patient":
            continue
        patients = {
            normalise_reference(v if "/" in v else f"Patient/{v}") for v in criterion.values
        }
        confined = patients if confined is None else confined & patients
    return confined


_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
