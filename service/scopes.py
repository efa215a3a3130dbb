"""SMART on FHIR scopes, v2 (``system/CarePlan.cruds``) and v1 (``user/Goal.read``).

A scope grants interactions on a resource type (or ``*``) in a context: ``patient`` (one
patient's compartment), ``user`` or ``system``. Interactions are SMART v2's letters:
c(reate), r(ead), u(pdate), d(elete), s(earch). v1's ``read`` is ``rs``, ``write`` is
``cud`` and ``*`` is ``cruds``.

The audit trail is for auditors: a wildcard (``system/*.rs``) never grants AuditEvent,
only a scope naming it (``system/AuditEvent.rs``) does, in granting and in registering.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

INTERACTIONS = "cruds"
# Types a wildcard scope does not reach: they must be named.
NAMED_ONLY = ("AuditEvent",)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]+)\."
    r"(?P<permissions>read|write|\*|c?r?u?d?s?)(?:\?.*)?$"
)


@dataclass(frozen=True)
class Scope:
    context: str
    resource: str
    interactions: frozenset[str]

    def names(self, resource: str) -> bool:
        """Whether the scope is about ``resource``: by name, or as ``*`` unless the type
        must be named (AuditEvent)."""
        if self.resource == "*":
            return resource not in NAMED_ONLY
        return self.resource == resource

    def allows(self, resource: str, interaction: str) -> bool:
        return self.names(resource) and interaction in self.interactions

    def covers(self, other: Scope) -> bool:
        """Whether this scope grants everything ``other`` asks (same context)."""
        return (
            self.context == other.context
            and (
                self.resource == other.resource
                or (self.resource == "*" and self.names(other.resource))
            )
            and other.interactions <= self.interactions
        )


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Scope | None:
    """A resource scope, or None for other scopes (``openid``, ``launch/patient``…).

    A v2 scope with a query (``?category=…``) is not granted: its restriction cannot be
    honoured here. Results are remembered (scopes are immutable): every request checks
    its token's few scopes.
    """
    match = _SCOPE.match(text)
    if not match or "?" in text or not match.group("permissions"):
        return None
    permissions = match.group("permissions")
    letters = _V1.get(permissions, permissions)
    return Scope(match.group("context"), match.group("resource"), frozenset(letters))


def parse_all(texts: Iterable[str]) -> list[Scope]:
    return [scope for scope in map(parse, texts) if scope is not None]


def grant(requested: Iterable[str], registered: Iterable[str]) -> list[str]:
    """The requested scopes a client's registration covers, as requested."""
    allowed = parse_all(registered)
    granted = []
    for text in requested:
        scope = parse(text)
        if scope is not None and any(a.covers(scope) for a in allowed):
            granted.append(text)
    return granted


def usable(scopes: Iterable[str], patient: str | None) -> list[Scope]:
    """The scopes that grant anything for a token with this patient context.

    Each scope applies in its own context: a ``patient/`` scope grants access only inside
    the token's patient context, so without one it grants nothing; ``user/`` and
    ``system/`` scopes apply as they say.
    """
    return [s for s in parse_all(scopes) if s.context != "patient" or patient is not None]


def allows(
    scopes: Iterable[str], resource: str, interaction: str, patient: str | None = None
) -> bool:
    """Whether any of the scopes usable with the patient context grants ``interaction``
    on ``resource``."""
    return any(scope.allows(resource, interaction) for scope in usable(scopes, patient))
